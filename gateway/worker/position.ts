import type { Queryable } from '../../sql/database.ts';
import { isTerminal, STATUS_STATES, type StatusState } from '../../validators/mutation.ts';
import { LEASE_HELD } from './schema.ts';
import { LeaseLost, type Fence } from './lease.ts';

// The worker's durable positions per tenant: the inbox feed checkpoint, the next feed counter
// for status docs (pull feed, DESIGN §4) with the feed index it feeds (platform table
// `feed_index`), and the index of mutation ids seen.

/** One status doc of a batch, as the feed index and the pending quota need it. */
export interface FeedEntry {
  /** `s:{owner}:{mid}` */
  id: string;
  owner: string;
  mid: string;
  /** The doc makes its mutation terminal (committed, rejected, conflict). */
  terminal: boolean;
}

export interface PositionStore {
  checkpoint(tenant: string): Promise<string | null>;
  /** Fenced: throws LeaseLost when the lease lapsed. */
  saveCheckpoint(lease: Fence, since: string): Promise<void>;
  /** Allocates `n` consecutive counters under the lease; returns the first. */
  allocateCounters(lease: Fence, n: number): Promise<number>;
  /**
   * Allocates one counter per entry under the lease (entry i gets first + i) and, in the same
   * statement, moves each doc in the feed index to its new counter (never down: a doc is listed
   * once, at its latest counter) and marks terminal mutations so the pending quota drops them.
   * Returns the first counter. Fenced like `allocateCounters`.
   */
  allocateFeed(lease: Fence, entries: ReadonlyArray<FeedEntry>): Promise<number>;
  /**
   * Records the revs a batch's `_bulk_docs` produced, each for the counter it was written at (a row
   * a later allocation has moved keeps its old rev, which then no longer counts). The writer calls
   * it before the head may pass the batch, so a reader never sees a landed counter without it.
   */
  recordRevs(tenant: string, rows: ReadonlyArray<{ id: string; counter: number; rev: string }>): Promise<void>;
  /** The highest counter ever allocated (0 when none). */
  lastCounter(tenant: string): Promise<number>;
  /** True while the tenant's status docs predate the feed index and still have to be indexed. */
  feedBackfillPending(tenant: string): Promise<boolean>;
  /** Fenced: indexes docs already in the inbox (counters as stamped, never lowering a newer one). */
  backfillFeed(lease: Fence, page: FeedBackfillPage): Promise<void>;
  /** Fenced: the tenant's index is complete; the gateway serves its feed from now on. */
  finishFeedBackfill(lease: Fence): Promise<void>;
  /** Remembers which owner and entity each mutation id belongs to. */
  recordSeen(tenant: string, rows: ReadonlyArray<{ mid: string; owner: string; entity: string | null }>): Promise<void>;
  /** `purgedState`: the terminal state of a mutation whose docs retention purged from the inbox. */
  seen(tenant: string, mid: string): Promise<{ owner: string; entity: string | null; purgedState: StatusState | null } | null>;
}

/** A page of what the inbox already holds, for `backfillFeed`. */
export interface FeedBackfillPage {
  statuses: ReadonlyArray<{ id: string; owner: string; counter: number }>;
  /** Mutations of the page (each counts as pending until terminal). */
  mutations: ReadonlyArray<{ owner: string; mid: string }>;
  /** Mutations whose status doc is terminal. */
  terminal: ReadonlyArray<{ owner: string; mid: string }>;
}

export function createPositionStore(db: Queryable): PositionStore {
  return {
    async checkpoint(tenant) {
      const { rows } = await db.query<{ since: string }>('SELECT since FROM worker_checkpoints WHERE tenant = $1', [tenant]);
      return rows[0]?.since ?? null;
    },
    async saveCheckpoint(lease, since) {
      const res = await db.query(
        `INSERT INTO worker_checkpoints (tenant, since, fence) SELECT $1::text, $4::text, $3::bigint WHERE ${LEASE_HELD}
         ON CONFLICT (tenant) DO UPDATE SET since = EXCLUDED.since, fence = EXCLUDED.fence, updated_at = now()`,
        [lease.tenant, lease.holder, lease.fence, since],
      );
      if (res.rowCount !== 1) throw new LeaseLost(lease.tenant);
    },
    async allocateCounters(lease, n) {
      const { rows } = await db.query<{ next: string }>(
        `INSERT INTO worker_feed_counters (tenant, next) SELECT $1::text, 1 + $4::bigint WHERE ${LEASE_HELD}
         ON CONFLICT (tenant) DO UPDATE SET next = worker_feed_counters.next + $4::bigint
         RETURNING next`,
        [lease.tenant, lease.holder, lease.fence, n],
      );
      if (!rows[0]) throw new LeaseLost(lease.tenant);
      return Number(rows[0].next) - n;
    },
    async allocateFeed(lease, entries) {
      const n = entries.length;
      // One row per doc id (its last, i.e. highest, offset): ON CONFLICT may touch a row only once.
      const offsets = new Map<string, { owner: string; offset: number }>();
      entries.forEach((e, i) => offsets.set(e.id, { owner: e.owner, offset: i }));
      const terminal = new Map<string, { owner: string; mid: string }>();
      for (const e of entries) if (e.terminal) terminal.set(`${e.owner}\u0000${e.mid}`, { owner: e.owner, mid: e.mid });
      const { rows } = await db.query<{ next: string }>(
        `WITH alloc AS (
           INSERT INTO worker_feed_counters (tenant, next) SELECT $1::text, 1 + $4::bigint WHERE ${LEASE_HELD}
           ON CONFLICT (tenant) DO UPDATE SET next = worker_feed_counters.next + $4::bigint
           RETURNING next
         ), feed AS (
           INSERT INTO feed_index (tenant, doc_id, owner, counter)
           SELECT $1::text, u.id, u.owner, alloc.next - $4::bigint + u.off
           FROM alloc, unnest($5::text[], $6::text[], $7::int[]) AS u(id, owner, off)
           ON CONFLICT (tenant, doc_id) DO UPDATE SET counter = GREATEST(feed_index.counter, EXCLUDED.counter)
         ), done AS (
           INSERT INTO pending_mutations (tenant, owner, mid, terminal, terminal_at)
           SELECT $1::text, t.owner, t.mid, true, now() FROM alloc, unnest($8::text[], $9::text[]) AS t(owner, mid)
           ON CONFLICT (tenant, owner, mid) DO UPDATE SET terminal = true,
             -- A purged mutation pushed again gets a status again: back in the inbox, so back to retention.
             terminal_at = CASE WHEN pending_mutations.purged_at IS NULL THEN COALESCE(pending_mutations.terminal_at, now()) ELSE now() END,
             purged_at = NULL
         )
         SELECT next FROM alloc`,
        [
          lease.tenant,
          lease.holder,
          lease.fence,
          n,
          [...offsets.keys()],
          [...offsets.values()].map((v) => v.owner),
          [...offsets.values()].map((v) => v.offset),
          [...terminal.values()].map((v) => v.owner),
          [...terminal.values()].map((v) => v.mid),
        ],
      );
      if (!rows[0]) throw new LeaseLost(lease.tenant);
      return Number(rows[0].next) - n;
    },
    async lastCounter(tenant) {
      const { rows } = await db.query<{ next: string }>('SELECT next FROM worker_feed_counters WHERE tenant = $1', [tenant]);
      return rows[0] ? Number(rows[0].next) - 1 : 0;
    },
    async recordRevs(tenant, rows) {
      if (rows.length === 0) return;
      await db.query(
        `UPDATE feed_index f SET rev = u.rev, rev_counter = u.counter
         FROM unnest($2::text[], $3::bigint[], $4::text[]) AS u(id, counter, rev)
         WHERE f.tenant = $1 AND f.doc_id = u.id AND f.counter = u.counter`,
        [tenant, rows.map((r) => r.id), rows.map((r) => r.counter), rows.map((r) => r.rev)],
      );
    },
    async feedBackfillPending(tenant) {
      const { rows } = await db.query('SELECT 1 FROM worker_feed_backfill WHERE tenant = $1', [tenant]);
      return rows.length > 0;
    },
    async backfillFeed(lease, page) {
      const uniq = <T>(items: ReadonlyArray<T>, key: (t: T) => string) => [...new Map(items.map((t) => [key(t), t])).values()];
      const statuses = uniq(page.statuses, (r) => r.id);
      const mutations = uniq(page.mutations, (r) => `${r.owner}\u0000${r.mid}`);
      const terminal = uniq(page.terminal, (r) => `${r.owner}\u0000${r.mid}`);
      const res = await db.query<{ ok: number }>(
        `WITH held AS (SELECT 1 AS ok WHERE ${LEASE_HELD}), feed AS (
           INSERT INTO feed_index (tenant, doc_id, owner, counter)
           SELECT $1::text, u.id, u.owner, u.counter FROM held, unnest($4::text[], $5::text[], $6::bigint[]) AS u(id, owner, counter)
           ON CONFLICT (tenant, doc_id) DO UPDATE SET counter = GREATEST(feed_index.counter, EXCLUDED.counter)
         ), open AS (
           INSERT INTO pending_mutations (tenant, owner, mid, terminal)
           SELECT $1::text, m.owner, m.mid, false FROM held, unnest($7::text[], $8::text[]) AS m(owner, mid)
           WHERE NOT (m.owner, m.mid) IN (SELECT t.owner, t.mid FROM unnest($9::text[], $10::text[]) AS t(owner, mid))
           ON CONFLICT (tenant, owner, mid) DO NOTHING
         ), done AS (
           INSERT INTO pending_mutations (tenant, owner, mid, terminal, terminal_at)
           SELECT $1::text, t.owner, t.mid, true, now() FROM held, unnest($9::text[], $10::text[]) AS t(owner, mid)
           ON CONFLICT (tenant, owner, mid) DO UPDATE SET terminal = true, terminal_at = COALESCE(pending_mutations.terminal_at, now())
         )
         SELECT ok FROM held`,
        [
          lease.tenant,
          lease.holder,
          lease.fence,
          statuses.map((r) => r.id),
          statuses.map((r) => r.owner),
          statuses.map((r) => r.counter),
          mutations.map((r) => r.owner),
          mutations.map((r) => r.mid),
          terminal.map((r) => r.owner),
          terminal.map((r) => r.mid),
        ],
      );
      if (res.rows.length !== 1) throw new LeaseLost(lease.tenant);
    },
    async finishFeedBackfill(lease) {
      const res = await db.query<{ ok: number }>(
        `WITH held AS (SELECT 1 AS ok WHERE ${LEASE_HELD}), gone AS (DELETE FROM worker_feed_backfill WHERE tenant = $1::text AND EXISTS (SELECT 1 FROM held))
         SELECT ok FROM held`,
        [lease.tenant, lease.holder, lease.fence],
      );
      if (res.rows.length !== 1) throw new LeaseLost(lease.tenant);
    },
    async recordSeen(tenant, rows) {
      if (rows.length === 0) return;
      await db.query(
        `INSERT INTO worker_mutations (tenant, mid, owner, entity)
         SELECT $1::text, u.mid, u.owner, u.entity FROM unnest($2::text[], $3::text[], $4::text[]) AS u(mid, owner, entity)
         ON CONFLICT (tenant, mid) DO NOTHING`,
        [tenant, rows.map((r) => r.mid), rows.map((r) => r.owner), rows.map((r) => r.entity)],
      );
    },
    async seen(tenant, mid) {
      const { rows } = await db.query<{ owner: string; entity: string | null; purged_state: string | null }>(
        `SELECT w.owner, w.entity, p.purged_state FROM worker_mutations w
         LEFT JOIN pending_mutations p ON p.tenant = w.tenant AND p.owner = w.owner AND p.mid = w.mid
         WHERE w.tenant = $1 AND w.mid = $2`,
        [tenant, mid],
      );
      const row = rows[0];
      if (!row) return null;
      const purged = STATUS_STATES.find((s) => s === row.purged_state);
      return { owner: row.owner, entity: row.entity, purgedState: purged !== undefined && isTerminal(purged) ? purged : null };
    },
  };
}
