import type { NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager, type Consumer, type JsMsg } from '@nats-io/jetstream';
import { connectNats, natsConnectionTarget, type NatsAuth } from '../../nats/connection.ts';
import type { CouchServer } from '../../couchdb/client.ts';
import { recordsName } from '../../couchdb/provision.ts';
import { FEED_HEAD_ID } from '../../couchdb/design/index.ts';
import { loggableError, silentLogger, type Logger } from '../../http/log.ts';
import type { TokenIssuer } from '../../identity/tokens.ts';
import { backoffDelay, type BackoffPolicy } from '../../retry/backoff.ts';
import type { Database } from '../../sql/database.ts';
import { STREAM_NAME } from '../../services/registration/events/outbox.ts';
import { LOOKUP_MAX_IDS } from '../../services/registration/patients/query.ts';
import { ensureStream } from '../../services/registration/events/stream.ts';
import { patientRecordSchema, recordDocOf } from '../../validators/record.ts';
import { alreadyProjected, decideDocWrite, headBehind, targetsOf, type IndexedRecord, type Target } from './decide.ts';
import type { ReplicaMetrics } from './metrics.ts';
import { revOf, revisionsOf } from './revisions.ts';
import { createReplicaStore, replicaSettings, streamPosition, type ReplicaStore } from './store.ts';
import { recordDocId } from '../../validators/record.ts';

// The projection (DESIGN §8): every committed patient change becomes a record doc in
// `records_{tenant}`, built only from committed server state. It reads the registration
// service's JetStream events in stream order from a durable position kept in the platform
// database (an ordered consumer from `position + 1`; no acks, which the deployment's NATS user may
// not be allowed to send) and, since events carry no demographics, reads the records from the
// service (POST /v1/patients/lookup, 200 a call, or GET /v1/patients/{id} from a service without
// it; as the replica's own service identity). Per batch: read the
// records, write the docs (revisions fixed by version, revisions.ts), list them in the index
// (store.ts), raise `feed:head`, and only then move the position. A crash or an outage anywhere
// before that reads the batch again, and every step is idempotent by version, so kill -9, NATS
// outages and duplicate deliveries all end in the same replica; setting the position back to 0
// (`rebuild`) replays the stream and writes the very same docs.

export interface ProjectionOptions {
  /** The platform database (index, counters, settings). */
  db: Database;
  /** CouchDB as the worker's identity, which the records databases' VDU lets write. */
  couch: CouchServer;
  issuer: Pick<TokenIssuer, 'mintDelegated'>;
  registrationUrl: string;
  natsUrl: string;
  natsAuth?: NatsAuth;
  /** Tenants whose events are projected (the tenant registry); others' are skipped. */
  tenants: () => Promise<readonly string[]>;
  logger?: Logger;
  metrics?: ReplicaMetrics;
  /** Events per fetch (default 200). */
  batchSize?: number;
  /** How long a fetch waits for events (default 1 s). */
  fetchExpiresMs?: number;
  /** Records read from the service at once (default 8). */
  readConcurrency?: number;
  backoff?: BackoffPolicy;
  fetch?: typeof fetch;
  /**
   * Test hook between the record docs' write and their listing in the index, the worst moment to
   * crash. Throwing from it leaves the batch unacked, exactly as a crash there would.
   */
  afterDocsWritten?: (tenant: string) => void | Promise<void>;
  /** Test hook between the index's transaction and raising `feed:head`; throwing leaves the batch unacked. */
  afterIndexed?: (tenant: string) => void | Promise<void>;
  /**
   * The service's database was created by this very start (a fresh embedded data directory), so
   * no event stored before `since` can be about its records: a first projection (no stored
   * position) reads from `since` instead of the start of the stream, which on a NATS shared with
   * other deployments may hold many thousands of other services' events, each costing a service
   * read that answers 404. `rebuild()` still replays from the start.
   */
  freshServiceSince?: Date;
}

export interface ProjectionStatus {
  running: boolean;
  connected: boolean;
  consecutiveFailures: number;
  /** Events projected (the position moved past them). */
  acked: number;
  /** Events still waiting, as last seen. */
  pending: number;
}

export interface Projection {
  start(): void;
  stop(): Promise<void>;
  /**
   * Sets the position back to the start of the stream; the next rounds replay every event, reading
   * each record from the service and checking its doc in the records database (a doc missing
   * there is written again, with the same revisions), until the replay has caught up.
   */
  rebuild(): Promise<void>;
  status(): ProjectionStatus;
}

/** The service identity the projection reads records as (a viewer of the tenant, acting as itself). */
export const REPLICA_ACTOR = 'ferry-replica';
const TOKEN_REUSE_MS = 60_000;

type RecordRead = { kind: 'record'; record: ReturnType<typeof patientRecordSchema.parse> } | { kind: 'gone' };

export function createProjection(opts: ProjectionOptions): Projection {
  const logger = opts.logger ?? silentLogger();
  const store: ReplicaStore = createReplicaStore(opts.db);
  const batchSize = opts.batchSize ?? 200;
  const expires = opts.fetchExpiresMs ?? 1000;
  const backoff = opts.backoff ?? { baseMs: 200, maxMs: 10_000 };
  const doFetch = opts.fetch ?? fetch;
  const target = natsConnectionTarget(opts.natsUrl, opts.natsAuth);
  let nc: NatsConnection | null = null;
  let consumer: Consumer | null = null;
  let stopped = true;
  let loop: Promise<void> | null = null;
  let failures = 0;
  let acked = 0;
  let pending = 0;
  let wake: (() => void) | null = null;
  let rebuilt = false;
  /** Set by `rebuild()` until the replay has caught up with the stream. */
  let rebuilding = false;
  const tokens = new Map<string, { token: string; at: number }>();
  let tenantCache: { at: number; set: Set<string> } | null = null;

  const positions = streamPosition(opts.db);
  const secret = replicaSettings(opts.db).then((s) => s.revisionSecret);
  secret.catch(() => undefined);

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = null;
        resolve();
      }
      wake = done;
    });

  async function connection(): Promise<NatsConnection> {
    if (nc && nc.isClosed()) {
      nc = null;
      consumer = null;
    }
    if (!nc) {
      nc = await connectNats(opts.natsUrl, opts.natsAuth ?? {}, {
        name: 'ferry-replica-projection',
        timeout: 2000,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        ignoreClusterUpdates: true,
      });
      logger.info({ component: 'replica-projection', servers: target.display }, 'connected to NATS');
    }
    return nc;
  }

  /**
   * An ordered consumer from the stored position: the stream is read in order from the first
   * event not yet projected. Made again after any failure (it has moved past what was not saved),
   * after a rebuild, or when the server lost its state.
   */
  async function reader(): Promise<Consumer> {
    const conn = await connection();
    if (consumer) return consumer;
    // The relay makes the stream too; whichever starts first does.
    await ensureStream(await jetstreamManager(conn, { timeout: 5000 }));
    const from = (await positions.read()) + 1;
    const js = jetstream(conn, { timeout: 5000 });
    if (from === 1 && opts.freshServiceSince && !rebuilt) {
      consumer = await js.consumers.get(STREAM_NAME, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: opts.freshServiceSince.toISOString() });
    } else {
      consumer = await js.consumers.get(STREAM_NAME, { opt_start_seq: from });
      if (from === 1) logger.info({ component: 'replica-projection' }, 'projecting from the start of the stream');
    }
    return consumer;
  }

  async function knownTenants(): Promise<Set<string>> {
    if (tenantCache && Date.now() - tenantCache.at < 10_000) return tenantCache.set;
    tenantCache = { at: Date.now(), set: new Set(await opts.tenants()) };
    return tenantCache.set;
  }

  async function tokenFor(tenant: string): Promise<string> {
    const had = tokens.get(tenant);
    if (had && Date.now() - had.at < TOKEN_REUSE_MS) return had.token;
    const token = await opts.issuer.mintDelegated({ sub: REPLICA_ACTOR, tid: tenant, owner: REPLICA_ACTOR, roles: ['viewer'] });
    tokens.set(tenant, { token, at: Date.now() });
    return token;
  }

  /** A read from the registration service as the replica's identity in `tenant`. */
  async function serviceRead(tenant: string, path: string, body?: unknown): Promise<Response> {
    return doFetch(`${opts.registrationUrl.replace(/\/$/, '')}${path}`, {
      ...(body === undefined ? {} : { method: 'POST', body: JSON.stringify(body) }),
      headers: { authorization: `Bearer ${await tokenFor(tenant)}`, accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      signal: AbortSignal.timeout(10_000),
    });
  }

  /** The committed record as the service shows it; `gone` when it has none (404, or not licensed). */
  async function readRecord(t: Target): Promise<RecordRead> {
    const res = await serviceRead(t.tenant, `/v1/patients/${encodeURIComponent(t.patientId)}`);
    if (res.status === 404 || res.status === 403) {
      await res.body?.cancel();
      return { kind: 'gone' };
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`registration service answered ${res.status}`);
    }
    return recordReadOf(t, await res.json());
  }

  /** A record as the service answered it, checked: anything else counts as gone. */
  function recordReadOf(t: Target, body: unknown): RecordRead {
    const parsed = patientRecordSchema.safeParse(body);
    if (!parsed.success || parsed.data.tenant !== t.tenant || parsed.data.id !== t.patientId) {
      opts.metrics?.events.inc({ outcome: 'invalid' });
      return { kind: 'gone' };
    }
    return { kind: 'record', record: parsed.data };
  }

  /** Set once a service answers the lookup route 404 (one without it): from then on, one GET per record. */
  let lookupMissing = false;

  /** One tenant's records in one call per 200 (POST /v1/patients/lookup); null when the service has no such route. */
  async function lookupRecords(tenant: string, targets: readonly Target[]): Promise<RecordRead[] | null> {
    const out: RecordRead[] = [];
    for (let i = 0; i < targets.length; i += LOOKUP_MAX_IDS) {
      const chunk = targets.slice(i, i + LOOKUP_MAX_IDS);
      const res = await serviceRead(tenant, '/v1/patients/lookup', { ids: chunk.map((t) => t.patientId) });
      if (res.status === 404) {
        await res.body?.cancel();
        return null;
      }
      if (res.status === 403) {
        // Not licensed (or no longer): as for a single read, the records are gone.
        await res.body?.cancel();
        out.push(...chunk.map((): RecordRead => ({ kind: 'gone' })));
        continue;
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`registration service answered ${res.status}`);
      }
      const { results } = (await res.json()) as { results?: unknown };
      const byId = new Map((Array.isArray(results) ? results : []).flatMap((r) => (typeof r === 'object' && r !== null && typeof (r as { id?: unknown }).id === 'string' ? [[(r as { id: string }).id, r] as const] : [])));
      for (const t of chunk) out.push(byId.has(t.patientId) ? recordReadOf(t, byId.get(t.patientId)) : { kind: 'gone' });
    }
    return out;
  }

  async function readAll(tenant: string, targets: readonly Target[]): Promise<RecordRead[]> {
    if (!lookupMissing) {
      const looked = await lookupRecords(tenant, targets);
      if (looked) return looked;
      lookupMissing = true;
      logger.warn({ component: 'replica' }, 'the registration service has no POST /v1/patients/lookup; the projection reads one record per request');
    }
    const out: RecordRead[] = new Array<RecordRead>(targets.length);
    let next = 0;
    const lane = async () => {
      while (next < targets.length) {
        const i = next++;
        out[i] = await readRecord(targets[i]!);
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.readConcurrency ?? 8, targets.length) }, lane));
    return out;
  }

  /** Projects one tenant's targets; every step is idempotent, so a retry of the batch is harmless. */
  async function projectTenant(tenant: string, targets: readonly Target[]): Promise<void> {
    const indexed = await store.indexed(tenant, targets.map((t) => t.patientId));
    // A rebuild checks every record against the records database itself, not only the index.
    const todo = rebuilding ? [...targets] : targets.filter((t) => !alreadyProjected(t, indexed.get(t.patientId)?.version));
    opts.metrics?.events.inc({ outcome: 'current' }, targets.length - todo.length);
    // Everything already listed: a batch read again after a crash between the index and
    // `feed:head` lands here, so the head is brought up to the index, or waiting longpolls sleep on.
    if (todo.length === 0) return raiseHead(tenant, await store.head(tenant));
    const reads = await readAll(tenant, todo);
    const records = reads.flatMap((r) => (r.kind === 'record' ? [r.record] : []));
    opts.metrics?.events.inc({ outcome: 'absent' }, reads.length - records.length);
    if (records.length === 0) return;
    const db = opts.couch.db(recordsName(tenant));
    const key = await secret;
    // Revisions are fixed by version, so a doc's generation is its version.
    const existing = await db.allDocs({ keys: records.map((r) => recordDocId(r.id)) });
    const have = new Map(existing.rows.flatMap((row) => (row.value && !row.value.deleted && !row.error ? [[row.key, Number(row.value.rev.split('-')[0])]] : [])));
    const docs = records
      .filter((r) => decideDocWrite(have.get(recordDocId(r.id)) ?? null, r.version) === 'write')
      .map((r) => {
        const rk = { secret: key, tenant, patientId: r.id };
        return { ...recordDocOf(r), _rev: revOf(rk, r.version), _revisions: revisionsOf(rk, r.version) };
      });
    if (docs.length > 0) {
      const results = await db.bulkDocs(docs, { new_edits: false });
      if (results.some((x) => x.error)) throw new Error('records write refused');
      opts.metrics?.written.inc(docs.length);
    }
    await opts.afterDocsWritten?.(tenant);
    const listed: IndexedRecord[] = records.map((r) => ({ id: r.id, facility: r.facility, version: r.version }));
    const head = await store.apply(tenant, listed);
    await opts.afterIndexed?.(tenant);
    await raiseHead(tenant, head);
    const now = Date.now();
    for (const r of records) opts.metrics?.freshness.observe(Math.max(0, (now - Date.parse(r.updatedAt)) / 1000));
    opts.metrics?.events.inc({ outcome: 'projected' }, records.length);
  }

  /** `feed:head` in the records database wakes the gateways' longpolls; it only ever moves up. */
  async function raiseHead(tenant: string, counter: number): Promise<void> {
    const db = opts.couch.db(recordsName(tenant));
    for (let attempt = 0; attempt < 5; attempt++) {
      const doc = await db.get<{ counter?: number }>(FEED_HEAD_ID);
      if (!headBehind(doc && typeof doc.counter === 'number' ? doc.counter : null, counter)) return;
      try {
        await db.put({ _id: FEED_HEAD_ID, ...(doc?._rev ? { _rev: doc._rev } : {}), type: 'feed-head', counter });
        return;
      } catch (err) {
        if ((err as { status?: number }).status !== 409) throw err;
      }
    }
  }

  async function handle(msgs: readonly JsMsg[]): Promise<void> {
    const payloads = msgs.map((m) => {
      try {
        return m.json<unknown>();
      } catch {
        return null;
      }
    });
    const known = await knownTenants();
    const byTenant = new Map<string, Target[]>();
    for (const t of targetsOf(payloads)) {
      if (!known.has(t.tenant)) continue;
      byTenant.set(t.tenant, [...(byTenant.get(t.tenant) ?? []), t]);
    }
    for (const [tenant, targets] of byTenant) await projectTenant(tenant, targets);
    // The position moves only once everything the batch names is written and listed.
    await positions.advance(msgs[msgs.length - 1]!.seq);
    acked += msgs.length;
  }

  async function round(): Promise<number> {
    const c = await reader();
    // A fetch answers once it holds `max_messages` (or expires): ask for what is known to wait, so a
    // caught-up projection takes a new event the moment it lands rather than at the fetch's expiry.
    const batch = await c.fetch({ max_messages: Math.max(1, Math.min(batchSize, pending)), expires });
    const msgs: JsMsg[] = [];
    for await (const m of batch) msgs.push(m);
    if (msgs.length === 0) {
      pending = 0;
      rebuilding = false;
      opts.metrics?.lagEvents.set(0);
      return 0;
    }
    pending = msgs[msgs.length - 1]!.info.pending;
    opts.metrics?.lagEvents.set(pending);
    await handle(msgs);
    return msgs.length;
  }

  async function run(): Promise<void> {
    while (!stopped) {
      try {
        await round();
        if (failures > 0) logger.info({ component: 'replica-projection', afterFailures: failures }, 'projection recovered');
        failures = 0;
      } catch (err) {
        if (stopped) break;
        failures++;
        opts.metrics?.failures.inc();
        // A consumer the server lost (or a rebuild) is made again on the next round.
        consumer = null;
        if (failures === 1 || failures % 20 === 0) logger.warn({ component: 'replica-projection', failures, err: loggableError(err) }, 'projection round failed; retrying');
        await sleep(backoffDelay(failures, backoff));
      }
    }
    const late = nc;
    nc = null;
    consumer = null;
    if (late) await late.close().catch(() => undefined);
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      loop = run();
    },
    async stop() {
      stopped = true;
      wake?.();
      const conn = nc;
      if (conn) await conn.close().catch(() => undefined);
      await loop;
      loop = null;
    },
    async rebuild() {
      rebuilt = true;
      rebuilding = true;
      await positions.reset();
      consumer = null;
    },
    status() {
      return { running: !stopped, connected: nc !== null && !nc.isClosed(), consecutiveFailures: failures, acked, pending };
    },
  };
}
