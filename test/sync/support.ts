import { randomUUID } from 'node:crypto';
import { createCouchServer, type CouchDb, type CouchServer } from '../../couchdb/client.ts';
import { prepareCouch, type PreparedCouch } from '../../couchdb/prepare.ts';
import { createGatewayApp } from '../../gateway/app.ts';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { createFeedIndex, createHeadWatchers, type HeadWatchers } from '../../gateway/sync/feed.ts';
import { createLocalStore, migrateSync } from '../../gateway/sync/local-store.ts';
import type { SyncQuotas } from '../../gateway/sync/quotas.ts';
import type { PushGuardOptions } from '../../gateway/sync/push-guard.ts';
import { createUpstream } from '../../gateway/sync/upstream.ts';
import { createLeaseStore, type Fence } from '../../gateway/worker/lease.ts';
import { createPositionStore, type PositionStore } from '../../gateway/worker/position.ts';
import { migrateWorker } from '../../gateway/worker/schema.ts';
import { createStatusWriter, type StatusWrite, type StatusWriter } from '../../gateway/worker/status-writer.ts';
import { silentLogger, type Logger } from '../../http/log.ts';
import type { SyncLimitsInput } from '../../gateway/sync/bounds.ts';
import { createGatewayServer, type ServerTimeouts } from '../../gateway/edge/server-timeouts.ts';
import { generateSigningKey, jwksOf, type SigningKey } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier, type TokenIssuer } from '../../identity/tokens.ts';
import { listen, listenOn, type Listening } from '../support/http.ts';
import { TEST_DATABASE_URL, dropSchema, tempDir, uniqueSchema, type TempDir } from '../support/services.ts';
import type { Database } from '../../sql/database.ts';
import net from 'node:net';

// The real stack behind /sync for tests: the embedded CouchDB (child process, service users,
// provisioned inboxes with the real design doc), the platform database (PostgreSQL or PGlite), the
// gateway app, and the worker's own status writer (lease, counters, feed index, `feed:head`) as
// `ferry-worker`, standing in for the rest of the worker.

export const ISSUER = 'ferry-sync-test';

export interface SyncStack {
  url: string;
  /** Server root of the CouchDB, for direct comparisons. */
  couchUrl: string;
  admin: CouchServer;
  worker: CouchServer;
  gatewayUser: CouchServer;
  /** Credentials of CouchDB user `ferry-gateway` (for direct comparisons in the bench). */
  gatewayAuth: { username: string; password: string };
  issuer: TokenIssuer;
  key: SigningKey;
  watchers: HeadWatchers;
  /** How many times the gateway read one owner's feed range (each `_changes` page, each wake-up). */
  feedReads: { range: number };
  platform: Platform;
  positions: PositionStore;
  token(owner: string, tenant?: string): Promise<string>;
  /** Writes status docs with the worker's status writer; resolves with the head once it has moved. */
  writeStatuses(tenant: string, docs: Array<Record<string, unknown>>): Promise<number>;
  /**
   * A status writer of the tenant's lease over `db` (default: the inbox as `ferry-worker`). Like the
   * worker, use one writer per tenant at a time: each orders only its own batches before the head.
   */
  statusWriter(tenant: string, db?: CouchDb): Promise<StatusWriter>;
  /**
   * Another gateway app on the same platform database (its own connection pool) and CouchDB, as a
   * second gateway process has: its own rate limits, pending estimate, push serialiser and feed
   * watchers. PostgreSQL only (PGlite is one process). Closed with the stack.
   */
  anotherGateway(opts?: Pick<StackOptions, 'quotas'> & { pushGuard?: PushGuardOptions }): Promise<{ url: string; platform: Platform }>;
  /** The PostgreSQL schema of the platform database, or null on PGlite. */
  schema: string | null;
  close(): Promise<void>;
}

export interface StackOptions {
  quotas?: Partial<SyncQuotas>;
  limits?: SyncLimitsInput;
  /** Gateway and embedded-CouchDB supervisor log here (default: silent). */
  logger?: Logger;
  /** Serve the gateway with these server timeouts (gateway/edge/server-timeouts.ts) instead of Node's defaults. */
  serverTimeouts?: Partial<ServerTimeouts>;
}

/** `db` with its reads of one owner's feed range counted into `counts.range`. */
function countingFeedReads(db: Database, counts: { range: number }): Database {
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === 'query') {
        return (sql: string, params?: readonly unknown[]) => {
          if (/FROM feed_index WHERE tenant = \$1 AND owner = \$2 AND counter > \$3/.test(sql)) counts.range++;
          return target.query(sql, params);
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

export async function startSyncStack(opts: StackOptions = {}): Promise<SyncStack> {
  const feedReads = { range: 0 };
  const dir: TempDir = tempDir('ferry-sync-');
  let platform: Platform | undefined;
  let prepared: PreparedCouch | undefined;
  let server: Listening | undefined;
  let watchers: HeadWatchers | undefined;
  let schema: string | undefined;
  try {
    // PostgreSQL when it is there (much quicker to start than PGlite on a busy machine), else PGlite.
    schema = (await postgresReachable()) ? uniqueSchema('sync') : undefined;
    platform = await openPlatform(schema ? { databaseUrl: TEST_DATABASE_URL, schema } : {});
    await migrateSync(platform.db);
    await migrateWorker(platform.db);
    prepared = await prepareCouch({ dataDir: dir.path, couchdbUrl: undefined }, { tenants: platform.tenants }, opts.logger);
    const ids = prepared.identities;
    const key = await generateSigningKey();
    const issuer = createTokenIssuer({ key, issuer: ISSUER });
    const verifyToken = createTokenVerifier({ jwks: jwksOf([key]), issuer: ISSUER });
    const upstream = createUpstream({ url: ids.url, auth: ids.gateway });
    // The feed reads of the gateway are counted (a longpoll woken for nothing costs one).
    const syncDb = countingFeedReads(platform.db, feedReads);
    const feedIndex = createFeedIndex(syncDb);
    watchers = createHeadWatchers({ upstream, lingerMs: 200, retryMs: 100, ownersWithRows: (...a) => feedIndex.ownersWithRows(...a) });
    const gatewayApp = (db: Database, w: HeadWatchers, quotas: Partial<SyncQuotas> | undefined, pushGuard?: PushGuardOptions) =>
      createGatewayApp({
        logger: opts.logger ?? silentLogger(),
        signingKeys: [key],
        devIdp: null,
        v1Routes: [],
        readiness: async () => undefined,
        limits: { perIp: { rate: 100_000, burst: 100_000 } },
        sync: {
          upstream,
          verifyToken,
          local: createLocalStore(db),
          db,
          watchers: w,
          ...(quotas ? { quotas } : {}),
          ...(pushGuard ? { pushGuard } : {}),
          ...(opts.limits ? { limits: opts.limits } : {}),
          ...(opts.logger ? { logger: opts.logger } : {}),
        },
      });
    const app = gatewayApp(syncDb, watchers, opts.quotas);
    const others: Array<() => Promise<void>> = [];
    server = opts.serverTimeouts ? await listenOn(createGatewayServer(app, opts.serverTimeouts)) : await listen(app);
    const worker = createCouchServer({ url: ids.url, auth: ids.worker });
    const leases = createLeaseStore(platform.db);
    const positions = createPositionStore(platform.db);
    const writers = new Map<string, StatusWriter>();
    const held = new Map<string, Fence>();
    // One lease per tenant for the stack's life: taking it again would bump the fence and fence out
    // the writers made before.
    const statusWriter = async (tenant: string, db?: CouchDb): Promise<StatusWriter> => {
      let lease = held.get(tenant);
      if (!lease) {
        const got = await leases.acquire(tenant, 'sync-test-worker', 3_600_000);
        if (!got) throw new Error('sync test stack: lease not acquired');
        held.set(tenant, got);
        lease = got;
      }
      return createStatusWriter({ db: db ?? worker.db(`inbox_${tenant}`), lease, positions, assertLease: () => undefined });
    };
    const p = platform;
    const pr = prepared;
    const s = server;
    const w = watchers;
    return {
      url: server.url,
      couchUrl: ids.url,
      admin: prepared.server,
      worker,
      gatewayUser: createCouchServer({ url: ids.url, auth: ids.gateway }),
      gatewayAuth: ids.gateway,
      issuer,
      key,
      watchers,
      feedReads,
      platform,
      positions,
      token: (owner, tenant = 'north') => issuer.mintAccess({ sub: owner, owner, tid: tenant, roles: ['registrar'], sid: randomUUID() }),
      statusWriter,
      schema: schema ?? null,
      async anotherGateway(o = {}) {
        if (!schema) throw new Error('sync test stack: a second gateway needs PostgreSQL');
        const platform2 = await openPlatform({ databaseUrl: TEST_DATABASE_URL, schema });
        const feed2 = createFeedIndex(platform2.db);
        const watchers2 = createHeadWatchers({ upstream, lingerMs: 200, retryMs: 100, ownersWithRows: (...a) => feed2.ownersWithRows(...a) });
        const server2 = await listen(gatewayApp(platform2.db, watchers2, o.quotas ?? opts.quotas, o.pushGuard));
        others.push(async () => {
          watchers2.close();
          await server2.close();
          await platform2.close();
        });
        return { url: server2.url, platform: platform2 };
      },
      async writeStatuses(tenant, docs) {
        let writer = writers.get(tenant);
        if (!writer) {
          writer = await statusWriter(tenant);
          writers.set(tenant, writer);
        }
        const wr = writer;
        // A boundary: the tests' docs are plain records shaped like the worker's.
        await Promise.all(docs.map((d) => wr.write(d as unknown as StatusWrite)));
        await wr.settled();
        return positions.lastCounter(tenant);
      },
      async close() {
        for (const c of others.splice(0)) await c();
        w.close();
        await s.close();
        await pr.stop();
        await p.close();
        if (schema) await dropSchema(schema);
        dir.remove();
      },
    };
  } catch (err) {
    watchers?.close();
    await server?.close();
    await prepared?.stop();
    await platform?.close();
    if (schema) await dropSchema(schema);
    dir.remove();
    throw err;
  }
}

function postgresReachable(): Promise<boolean> {
  const u = new URL(TEST_DATABASE_URL);
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port: Number(u.port || 5432) });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Synthetic docs (no real person: the payload is a fixed placeholder)

export function mid(): string {
  // UUIDv7-shaped, lowercase hex.
  const hex = randomUUID().replace(/-/g, '');
  return `0190f${hex.slice(5, 8)}-${hex.slice(8, 12)}-7${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

export function mutation(owner: string, id = mid(), tenant = 'north', over: Record<string, unknown> = {}): Record<string, unknown> & { _id: string } {
  return {
    _id: `m:${owner}:${id}`,
    type: 'mutation',
    v: 1,
    tenant,
    owner,
    device: 'dev-test',
    seq: 1,
    op: 'patient.create',
    entity: `pat_${mid()}`,
    after: null,
    resolves: null,
    baseVersion: null,
    payload: { givenName: 'Synthetic', familyName: 'Person' },
    createdAt: '2026-11-25T10:00:00.000Z',
    ...over,
  };
}

export function status(owner: string, id: string, tenant = 'north', over: Record<string, unknown> = {}): Record<string, unknown> & { _id: string } {
  return {
    _id: `s:${owner}:${id}`,
    type: 'status',
    v: 1,
    tenant,
    owner,
    mutation: id,
    state: 'committed',
    code: null,
    attempts: 1,
    updatedAt: '2026-11-25T10:00:01.000Z',
    ...over,
  };
}

export async function call(
  url: string,
  opts: { method?: string; token?: string | null; body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; text: string; json: unknown; headers: Headers }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, {
    method: opts.method ?? (opts.body !== undefined ? 'POST' : 'GET'),
    headers,
    ...(opts.body !== undefined ? { body: typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body) } : {}),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text.trim() ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, text, json, headers: res.headers };
}
