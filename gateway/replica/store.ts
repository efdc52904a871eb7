import { randomBytes } from 'node:crypto';
import type { Database, Queryable } from '../../sql/database.ts';
import type { ReplicaScope } from '../tenant/scope.ts';
import { indexChangesOf, type IndexedRecord } from './decide.ts';
import type { FeedPlan } from './seq.ts';

// The replica's index in the platform database (tables: gateway/platform/schema.ts). The
// projection lists each record at the counter of its latest version and its current facility, in
// the transaction that allocates the counter; a caller's `_changes` reads the rows of their
// facilities past `since`, plus the records that left them. Every query is bounded by the caller's
// facilities and counters, so a pull costs what changed in the caller's scope, not the tenant.

/** One row of a caller's feed: a record in scope (`present`) or one that left it. */
export interface ReplicaFeedRow {
  id: string;
  counter: number;
  /** The record's current version (a present row's doc; a deleted row's tombstone parent). */
  version: number;
  present: boolean;
}

export interface ReplicaStore {
  /** The versions the index lists for these records (absent: never projected). */
  indexed(tenant: string, patientIds: readonly string[]): Promise<Map<string, IndexedRecord>>;
  /**
   * Lists records just written to the records database: each moves to its new version and
   * facility at a fresh counter (never back to an older version), leaving a departure where its
   * facility changed. One transaction, serialised per tenant by the counter row, so counters
   * become visible in order. Returns the tenant's counter afterwards.
   */
  apply(tenant: string, records: readonly IndexedRecord[]): Promise<number>;
  /** The highest counter allocated for the tenant (0 when none). */
  head(tenant: string): Promise<number>;
  /** The highest counter of a record in scope (0 when none): what a caller's db info shows, never the tenant's. */
  latest(tenant: string, scope: ReplicaScope): Promise<number>;
  /** One page of a caller's feed in counter order (at most `limit` rows). */
  feed(tenant: string, scope: ReplicaScope, plan: FeedPlan, oldScope: ReplicaScope | null, limit: number): Promise<ReplicaFeedRow[]>;
  /** Records in scope by id range, in id order (for `_all_docs`). */
  range(tenant: string, scope: ReplicaScope, opts: { lo: string; hi: string; hiInclusive: boolean; descending: boolean; limit: number }): Promise<IndexedRecord[]>;
  /** Remembers that `owner` was served a feed under the scope with `tag`. */
  rememberScope(tenant: string, owner: string, tag: string, scope: ReplicaScope): Promise<void>;
  /** A scope `owner` was served under `tag`, or null when they never were. */
  scopeOf(tenant: string, owner: string, tag: string): Promise<ReplicaScope | null>;
}

type IndexRow = { record_id: string; facility: string; version: number | string; counter?: number | string };
const toIndexed = (r: IndexRow): IndexedRecord => ({ id: r.record_id, facility: r.facility, version: Number(r.version) });

/** SQL text with numbered parameters, built piece by piece. */
class Sql {
  readonly params: unknown[] = [];
  param(v: unknown): string {
    this.params.push(v);
    return `$${this.params.length}`;
  }
  /** `col` is in the scope (null scope: in none). */
  inScope(col: string, scope: ReplicaScope | null): string {
    if (scope === null) return 'FALSE';
    if (scope.kind === 'all') return 'TRUE';
    return `${col} = ANY(${this.param([...scope.facilities])}::text[])`;
  }
}

export function createReplicaStore(db: Database): ReplicaStore {
  return {
    async indexed(tenant, ids) {
      if (ids.length === 0) return new Map();
      const { rows } = await db.query<IndexRow>('SELECT record_id, facility, version FROM record_index WHERE tenant = $1 AND record_id = ANY($2::text[])', [tenant, [...ids]]);
      return new Map(rows.map((r) => [r.record_id, toIndexed(r)]));
    },
    async apply(tenant, records) {
      return db.transaction(async (tx) => {
        // The counter row's lock orders this tenant's writers: a later counter commits later.
        const locked = await tx.query<{ counter: string | number }>(
          `INSERT INTO record_counters (tenant, counter) VALUES ($1, 0)
           ON CONFLICT (tenant) DO UPDATE SET counter = record_counters.counter RETURNING counter`,
          [tenant],
        );
        const before = Number(locked.rows[0]!.counter);
        if (records.length === 0) return before;
        const current = await currentOf(tx, tenant, records.map((r) => r.id));
        const changes = indexChangesOf(current, records);
        if (changes.length === 0) return before;
        const rows = changes.map((c, i) => ({ ...c, counter: before + 1 + i }));
        await tx.query('UPDATE record_counters SET counter = $2 WHERE tenant = $1', [tenant, before + rows.length]);
        await tx.query(
          `INSERT INTO record_index (tenant, record_id, facility, version, counter)
           SELECT $1, r.id, r.facility, r.version, r.counter FROM jsonb_to_recordset($2::jsonb) AS r(id text, facility text, version integer, counter bigint)
           ON CONFLICT (tenant, record_id) DO UPDATE SET facility = EXCLUDED.facility, version = EXCLUDED.version, counter = EXCLUDED.counter`,
          [tenant, JSON.stringify(rows)],
        );
        const departures = rows.filter((r) => r.from !== null);
        if (departures.length > 0) {
          await tx.query(
            `INSERT INTO record_departures (tenant, facility, record_id, counter)
             SELECT $1, d.facility, d.id, d.counter FROM jsonb_to_recordset($2::jsonb) AS d(id text, facility text, counter bigint)
             ON CONFLICT (tenant, facility, record_id) DO UPDATE SET counter = EXCLUDED.counter`,
            [tenant, JSON.stringify(departures.map((d) => ({ id: d.id, facility: d.from, counter: d.counter })))],
          );
        }
        return before + rows.length;
      });
    },
    async head(tenant) {
      const { rows } = await db.query<{ counter: string | number }>('SELECT counter FROM record_counters WHERE tenant = $1', [tenant]);
      return rows[0] ? Number(rows[0].counter) : 0;
    },
    async latest(tenant, scope) {
      const q = new Sql();
      const { rows } = await db.query<{ counter: string | number | null }>(
        `SELECT max(counter) AS counter FROM record_index WHERE tenant = ${q.param(tenant)} AND ${q.inScope('facility', scope)}`,
        q.params,
      );
      const c = rows[0]?.counter;
      return c === null || c === undefined ? 0 : Number(c);
    },
    async feed(tenant, scope, plan, oldScope, limit) {
      if (limit <= 0) return [];
      const q = new Sql();
      const t = q.param(tenant);
      const lim = q.param(limit);
      const parts: string[] = [];
      if (plan.kind === 'normal') {
        const after = q.param(plan.after);
        parts.push(`(SELECT record_id, counter, version, TRUE AS present FROM record_index
          WHERE tenant = ${t} AND counter > ${after} AND ${q.inScope('facility', scope)} ORDER BY counter LIMIT ${lim})`);
        // From 0 the device holds nothing, so nothing can leave it.
        if (plan.after > 0) {
          parts.push(`(SELECT d.record_id, max(d.counter) AS counter, max(r.version) AS version, FALSE AS present
            FROM record_departures d JOIN record_index r ON r.tenant = d.tenant AND r.record_id = d.record_id
            WHERE d.tenant = ${t} AND d.counter > ${after} AND ${q.inScope('d.facility', scope)} AND NOT ${q.inScope('r.facility', scope)}
            GROUP BY d.record_id ORDER BY 2 LIMIT ${lim})`);
        }
      } else {
        const cursor = q.param(plan.cursor);
        const base = q.param(plan.base);
        // Records now in scope: past `base` where the device held their facility, else all of them.
        parts.push(`(SELECT record_id, counter, version, TRUE AS present FROM record_index
          WHERE tenant = ${t} AND counter > ${cursor} AND ${q.inScope('facility', scope)} AND (counter > ${base} OR NOT ${q.inScope('facility', oldScope)})
          ORDER BY counter LIMIT ${lim})`);
        // Records now at a facility the device held and no longer does.
        parts.push(`(SELECT record_id, counter, version, FALSE AS present FROM record_index
          WHERE tenant = ${t} AND counter > ${cursor} AND ${q.inScope('facility', oldScope)} AND NOT ${q.inScope('facility', scope)}
          ORDER BY counter LIMIT ${lim})`);
        // Records that left a facility the device held, since `base`, for one it never held.
        parts.push(`(SELECT d.record_id, max(d.counter) AS counter, max(r.version) AS version, FALSE AS present
          FROM record_departures d JOIN record_index r ON r.tenant = d.tenant AND r.record_id = d.record_id
          WHERE d.tenant = ${t} AND d.counter > GREATEST(${cursor}, ${base}) AND ${q.inScope('d.facility', oldScope)}
            AND NOT ${q.inScope('r.facility', scope)} AND NOT ${q.inScope('r.facility', oldScope)}
          GROUP BY d.record_id ORDER BY 2 LIMIT ${lim})`);
      }
      const { rows } = await db.query<{ record_id: string; counter: string | number; version: string | number; present: boolean }>(
        `SELECT record_id, counter, version, present FROM (${parts.join(' UNION ALL ')}) AS f ORDER BY counter LIMIT ${lim}`,
        q.params,
      );
      return rows.map((r) => ({ id: r.record_id, counter: Number(r.counter), version: Number(r.version), present: r.present }));
    },
    async range(tenant, scope, o) {
      const q = new Sql();
      const sql = `SELECT record_id, facility, version FROM record_index WHERE tenant = ${q.param(tenant)} AND ${q.inScope('facility', scope)}
        AND record_id >= ${q.param(o.lo)} AND record_id ${o.hiInclusive ? '<=' : '<'} ${q.param(o.hi)}
        ORDER BY record_id ${o.descending ? 'DESC' : 'ASC'} LIMIT ${q.param(o.limit)}`;
      const { rows } = await db.query<IndexRow>(sql, q.params);
      return rows.map(toIndexed);
    },
    async rememberScope(tenant, owner, tag, scope) {
      await db.query(
        `INSERT INTO replica_scopes (tenant, owner, tag, every, facilities) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant, owner, tag) DO NOTHING`,
        [tenant, owner, tag, scope.kind === 'all', scope.kind === 'all' ? [] : [...scope.facilities]],
      );
    },
    async scopeOf(tenant, owner, tag) {
      const { rows } = await db.query<{ every: boolean; facilities: string[] }>('SELECT every, facilities FROM replica_scopes WHERE tenant = $1 AND owner = $2 AND tag = $3', [tenant, owner, tag]);
      const r = rows[0];
      if (!r) return null;
      return r.every ? { kind: 'all' } : { kind: 'facilities', facilities: r.facilities };
    },
  };
}

async function currentOf(tx: Queryable, tenant: string, ids: readonly string[]): Promise<Map<string, IndexedRecord>> {
  const { rows } = await tx.query<IndexRow>('SELECT record_id, facility, version FROM record_index WHERE tenant = $1 AND record_id = ANY($2::text[])', [tenant, [...ids]]);
  return new Map(rows.map((r) => [r.record_id, toIndexed(r)]));
}

export interface ReplicaSettings {
  /** Keys the record revisions (revisions.ts). */
  revisionSecret: string;
}

/** This deployment's settings, made once (at random) and shared by every process on the platform database. */
export async function replicaSettings(db: Queryable): Promise<ReplicaSettings> {
  const wanted = { 'revision-secret': randomBytes(32).toString('hex') };
  await db.query(
    `INSERT INTO replica_settings (key, value) SELECT k, v FROM unnest($1::text[], $2::text[]) AS s(k, v) ON CONFLICT (key) DO NOTHING`,
    [Object.keys(wanted), Object.values(wanted)],
  );
  const { rows } = await db.query<{ key: string; value: string }>('SELECT key, value FROM replica_settings');
  const got = new Map(rows.map((r) => [r.key, r.value]));
  return { revisionSecret: got.get('revision-secret')! };
}

export interface StreamPosition {
  /** The stream sequence of the last event projected (0: none). */
  read(): Promise<number>;
  /** Moves the position forward to `seq` (never back: several processes may project at once). */
  advance(seq: number): Promise<void>;
  /** Back to the start of the stream, for a rebuild. */
  reset(): Promise<void>;
}

const POSITION_KEY = 'stream-position';

/** The projection's durable position in the REGISTRATION stream, in the platform database. */
export function streamPosition(db: Queryable): StreamPosition {
  return {
    async read() {
      const { rows } = await db.query<{ value: string }>('SELECT value FROM replica_settings WHERE key = $1', [POSITION_KEY]);
      return rows[0] ? Number(rows[0].value) : 0;
    },
    async advance(seq) {
      await db.query(
        `INSERT INTO replica_settings (key, value) VALUES ($1, $2::bigint::text)
         ON CONFLICT (key) DO UPDATE SET value = GREATEST(replica_settings.value::bigint, EXCLUDED.value::bigint)::text`,
        [POSITION_KEY, seq],
      );
    },
    async reset() {
      await db.query('DELETE FROM replica_settings WHERE key = $1', [POSITION_KEY]);
    },
  };
}
