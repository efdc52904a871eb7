import { createHash } from 'node:crypto';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { Logger } from '../../http/log.ts';
import type { TokenVerifier } from '../../identity/tokens.ts';
import type { Database } from '../../sql/database.ts';
import { FerryError } from '../../validators/codes.ts';
import type { Liveness } from '../auth/liveness.ts';
import { createRateLimiter } from '../edge/rate-limit.ts';
import { DEFAULT_LIMITS, createLiveFeeds, idCountOf } from '../sync/bounds.ts';
import { couchError, sendJson, type SyncContext } from '../sync/context.ts';
import { createFeedIndex, createHeadWatchers, type HeadWatchers } from '../sync/feed.ts';
import type { LocalKey, LocalStore } from '../sync/local-store.ts';
import type { Caller } from '../sync/policy.ts';
import { DEFAULT_QUOTAS, type SyncQuotas } from '../sync/quotas.ts';
import { INSTANCE_START_TIME, serverRoot } from '../sync/read.ts';
import { syncAuthentication, syncErrors } from '../sync/router.ts';
import type { Upstream } from '../sync/upstream.ts';
import { deleteLocal, getLocal, putLocal } from '../sync/write.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';
import { replicaScopeOf } from '../tenant/scope.ts';
import { changes } from './changes.ts';
import type { ReplicaContext } from './context.ts';
import { allDocs, bulkGet, dbInfo, getDoc, revsDiff } from './read.ts';
import { resolveReplicaRoute, type ReplicaRoute } from './routes.ts';
import { scopeTag } from './seq.ts';
import { createReplicaStore, replicaSettings } from './store.ts';
import { closeSignal } from '../../http/deadline.ts';

// `/replica/{tenant}`: the read-only, facility-scoped replica of the server's records (DESIGN §8),
// a CouchDB-protocol endpoint for the same Bearer token as /sync. Default-deny:
//   authenticate (the /sync code) → resolve the route from the allow-list → tenant check →
//   per-user read budget → scope from the membership, read for this request → thin handler.
// Writes to records are 403 READ_ONLY; anything not on the list is 404.

export interface ReplicaDeps {
  /** The records databases (`records_{tenant}`), as `ferry-gateway`. */
  records: Upstream;
  verifyToken: TokenVerifier;
  liveness?: Liveness;
  memberships: Pick<MembershipDirectory, 'membershipOf'>;
  /** The platform database: the replica index, and `_local` docs (namespaced apart from /sync's). */
  db: Database;
  local: LocalStore;
  quotas?: Partial<SyncQuotas>;
  /** Shared per-tenant watchers of `feed:head` in the records databases; made here when absent. */
  watchers?: HeadWatchers;
  /** How long a woken longpoll waits for more commits before answering (default 200 ms). */
  coalesceMs?: number;
  /** How often a waiting longpoll reads the caller's scope again (default 5 s). */
  scopeCheckMs?: number;
  logger?: Logger;
}

export interface ReplicaRouter extends Router {
  close(): void;
}

type Handler = (ctx: ReplicaContext, id: string) => Promise<void> | void;

/** `_local` docs of /replica live beside /sync's in the same table, under their own tenant key. */
function replicaLocal(store: LocalStore): LocalStore {
  const key = (k: LocalKey): LocalKey => ({ ...k, tenant: `replica:${k.tenant}` });
  return {
    get: (k) => store.get(key(k)),
    count: (tenant, owner) => store.count(`replica:${tenant}`, owner),
    put: (k, rev, body) => store.put(key(k), rev, body),
    remove: (k, rev) => store.remove(key(k), rev),
  };
}

const BODY_LIMITS: Record<ReplicaRoute['kind'], number> = {
  root: DEFAULT_LIMITS.bodyBytes.other,
  db: DEFAULT_LIMITS.bodyBytes.other,
  local: DEFAULT_LIMITS.bodyBytes.local,
  revs_diff: DEFAULT_LIMITS.bodyBytes.ids,
  changes: DEFAULT_LIMITS.bodyBytes.other,
  bulk_get: DEFAULT_LIMITS.bodyBytes.ids,
  all_docs: DEFAULT_LIMITS.bodyBytes.ids,
  ensure_full_commit: DEFAULT_LIMITS.bodyBytes.other,
  doc: DEFAULT_LIMITS.bodyBytes.other,
  'read-only': DEFAULT_LIMITS.bodyBytes.other,
};

function rawPathOf(req: Request): string {
  const q = req.url.indexOf('?');
  return q === -1 ? req.url : req.url.slice(0, q);
}

export function replicaRouter(deps: ReplicaDeps): ReplicaRouter {
  const quotas: SyncQuotas = { ...DEFAULT_QUOTAS, ...deps.quotas };
  const store = createReplicaStore(deps.db);
  const watchers = deps.watchers ?? createHeadWatchers({ upstream: deps.records });
  const ownsWatchers = !deps.watchers;
  // A budget of its own: a device's replica pull never eats into its /sync reads, nor the reverse.
  const reads = createRateLimiter({ rate: quotas.readsPerSecond, burst: quotas.readBurst });
  const liveFeeds = createLiveFeeds(quotas.maxLiveFeeds);
  const secret = replicaSettings(deps.db).then((s) => s.revisionSecret);
  secret.catch(() => undefined);
  const localDeps = { local: replicaLocal(deps.local), quotas };
  const remembered = new Set<string>();
  const uuid = createHash('sha256').update('ferry-replica').digest('hex').slice(0, 32);
  const root = serverRoot(uuid);
  const asSync = (ctx: ReplicaContext): SyncContext => ({ caller: ctx.caller, inbox: ctx.records, feed: createFeedIndex(deps.db), req: ctx.req, res: ctx.res, signal: ctx.signal });

  const currentTag = async (ctx: ReplicaContext) => scopeTag(replicaScopeOf(await deps.memberships.membershipOf(ctx.caller.tenant, ctx.caller.owner)));
  const liveChanges = changes({ watchers, coalesceMs: deps.coalesceMs ?? 200, currentTag, ...(deps.scopeCheckMs ? { scopeCheckMs: deps.scopeCheckMs } : {}) });

  const handlers: Record<Exclude<ReplicaRoute['kind'], 'read-only'>, Partial<Record<string, Handler>>> = {
    root: { GET: (ctx) => root(asSync(ctx)), HEAD: (ctx) => root(asSync(ctx)) },
    db: { GET: dbInfo, HEAD: dbInfo },
    local: {
      GET: (ctx, id) => getLocal(localDeps)(asSync(ctx), id),
      HEAD: (ctx, id) => getLocal(localDeps)(asSync(ctx), id),
      PUT: (ctx, id) => putLocal(localDeps)(asSync(ctx), id),
      DELETE: (ctx, id) => deleteLocal(localDeps)(asSync(ctx), id),
    },
    revs_diff: { POST: revsDiff },
    changes: { GET: liveChanges, POST: liveChanges },
    bulk_get: { POST: bulkGet },
    all_docs: { GET: allDocs, POST: allDocs },
    ensure_full_commit: { POST: (ctx) => sendJson(ctx.res, 201, { ok: true, instance_start_time: INSTANCE_START_TIME }) },
    doc: { GET: getDoc, HEAD: getDoc },
  };

  const router = express.Router() as ReplicaRouter;
  router.use(syncAuthentication({ verifyToken: deps.verifyToken, liveness: deps.liveness }));
  router.use(function replicaRoute(req: Request, res: Response, next: NextFunction) {
    const route = resolveReplicaRoute(rawPathOf(req), req.method);
    const caller = res.locals.syncCaller as Caller;
    if (route && route.kind !== 'root' && route.tenant !== caller.tenant) throw new FerryError('TENANT_MISMATCH');
    if (!route) throw new FerryError('NOT_FOUND');
    if (route.kind === 'read-only') throw new FerryError('READ_ONLY');
    const user = `${caller.tenant}\u0000${caller.owner}`;
    const rate = reads.take(user);
    if (rate.kind === 'limited') throw couchError('RATE_LIMITED', { retryAfterSeconds: rate.retryAfterSeconds });
    if (route.kind === 'changes' && (req.query.feed === 'longpoll' || req.query.feed === 'continuous')) {
      if (!liveFeeds.acquire(user)) throw couchError('QUOTA_EXCEEDED', { retryAfterSeconds: 10 });
      res.once('close', () => liveFeeds.release(user));
    }
    res.locals.replicaRoute = route;
    express.json({ limit: BODY_LIMITS[route.kind], type: () => true })(req, res, (err?: unknown) => {
      if (err) return next(err);
      const ids = route.kind === 'local' || route.kind === 'changes' ? null : idCountOf(route.kind === 'root' ? 'db' : route.kind, req.body, req.query as Record<string, unknown>);
      if (ids !== null && ids > DEFAULT_LIMITS.maxIds) return next(couchError('TOO_MANY_IDS'));
      next();
    });
  });
  router.use(async function replicaDispatch(req: Request, res: Response) {
    const route = res.locals.replicaRoute as Exclude<ReplicaRoute, { kind: 'read-only' }>;
    const caller = res.locals.syncCaller as Caller;
    const handler = handlers[route.kind][req.method];
    if (!handler) throw new FerryError('NOT_FOUND');
    const signal = closeSignal(res);
    // Read for every request: a facility granted or taken away reaches the very next pull.
    const scope = replicaScopeOf(await deps.memberships.membershipOf(caller.tenant, caller.owner));
    const tag = scopeTag(scope);
    const seen = `${caller.tenant}\u0000${caller.owner}\u0000${tag}`;
    if ((route.kind === 'changes' || route.kind === 'db') && !remembered.has(seen)) {
      await store.rememberScope(caller.tenant, caller.owner, tag, scope);
      // A memo only (the insert is idempotent): bounded, forgotten wholesale when full.
      if (remembered.size >= 100_000) remembered.clear();
      remembered.add(seen);
    }
    const ctx: ReplicaContext = { caller, scope, tag, records: deps.records.inbox(caller.tenant), store, secret: await secret, req, res, signal };
    try {
      await handler(ctx, route.kind === 'doc' || route.kind === 'local' ? route.id : '');
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    }
  });
  router.use(syncErrors({ ...(deps.logger ? { logger: deps.logger } : {}) }));
  router.close = () => {
    if (ownsWatchers) watchers.close();
  };
  return router;
}
