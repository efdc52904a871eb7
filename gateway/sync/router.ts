import { createHash } from 'node:crypto';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { correlationOf } from '../../http/correlation.ts';
import { toFerryError } from '../../http/errors.ts';
import { loggableError, silentLogger, type Logger } from '../../http/log.ts';
import { bearerToken, type TokenVerifier } from '../../identity/tokens.ts';
import { FerryError } from '../../validators/codes.ts';
import { changes } from './changes.ts';
import { COUCH_ERROR_NAMES, couchError, type SyncContext } from './context.ts';
import { createFeedIndex, createHeadWatchers, type HeadWatchers } from './feed.ts';
import type { LocalStore } from './local-store.ts';
import type { Caller } from './policy.ts';
import { DEFAULT_QUOTAS, createPendingEstimate, createPendingLedger, type SyncQuotas } from './quotas.ts';
import { createRateLimiter } from '../edge/rate-limit.ts';
import { DEFAULT_LIMITS, bodyClassOf, createLiveFeeds, idCountOf, isLiveFeed, type BodyClass, type SyncLimits, type SyncLimitsInput } from './bounds.ts';
import { allDocs, bulkGet, dbInfo, ensureFullCommit, getDoc, serverRoot } from './read.ts';
import { resolveSyncRoute, type SyncRoute } from './routes.ts';
import type { Upstream } from './upstream.ts';
import type { Liveness } from '../auth/liveness.ts';
import type { Database } from '../../sql/database.ts';
import { bulkDocs, createAbsentIds, deleteLocal, getLocal, noAbsentIds, putLocal, revsDiff } from './write.ts';
import { createPushGuard, type PushGuardOptions } from './push-guard.ts';
import { closeSignal } from '../../http/deadline.ts';

// `/sync/{tenant}`: a CouchDB-compatible, default-deny database endpoint (DESIGN §5).
//   authenticate (Bearer) → resolve the route from the allow-list → tenant check → thin handler.

export interface SyncDeps {
  /** The tenant inboxes, reached as CouchDB user `ferry-gateway`. */
  upstream: Upstream;
  verifyToken: TokenVerifier;
  /** Session and membership still live (gateway/auth/liveness.ts); absent, a token is trusted until it expires. */
  liveness?: Liveness;
  /** `_local` docs per user (platform database). */
  local: LocalStore;
  /**
   * The platform database: the pull feed's index (`feed_index`), the pending quota
   * (`pending_mutations`), and on PostgreSQL the per-user push lock shared by every gateway.
   */
  db: Database;
  /** Tuning of the push lock (push-guard.ts). */
  pushGuard?: PushGuardOptions;
  quotas?: Partial<SyncQuotas>;
  /** Shared per-tenant feed watchers; made here when absent. */
  watchers?: HeadWatchers;
  /** `uuid` of `GET /sync/`; stable across gateway processes so replication ids stay the same. */
  serverUuid?: string;
  /** Body limits per route class and the id cap (bounds.ts); defaults `DEFAULT_LIMITS`. */
  limits?: SyncLimitsInput;
  logger?: Logger;
}

export interface SyncRouter extends Router {
  /** Stops the feed watchers (aborts their upstream longpolls). */
  close(): void;
}

type Handler = (ctx: SyncContext, id: string) => Promise<void> | void;

/** What a client over its live-feed cap is told to wait: about one longpoll of another feed. */
const LIVE_FEED_RETRY_SECONDS = 10;

/**
 * Verifies the Bearer token; every failure is the same 401 (expired, forged, `alg:none`, a revoked
 * session, …). A user no longer in the token's tenant gets 403 TENANT_MISMATCH, as any non-member.
 */
export function syncAuthentication(opts: { verifyToken: TokenVerifier; liveness?: Liveness | undefined }) {
  return async function syncAuthenticate(req: Request, res: Response, next: NextFunction): Promise<void> {
    const token = bearerToken(req.get('authorization'));
    if (!token) throw new FerryError('UNAUTHENTICATED');
    const claims = await opts.verifyToken(token);
    // Cached per session (a map lookup on the hot path), not a query per request.
    if (opts.liveness) await opts.liveness.check(claims);
    const caller: Caller = { tenant: claims.tid, owner: claims.owner };
    res.locals.syncCaller = caller;
    res.locals.tenant = caller.tenant;
    next();
  };
}

/** Errors as CouchDB clients read them (`{error, reason}`), plus the Ferry `code`; never a stack. */
export function syncErrors(opts: { logger?: Logger } = {}) {
  const logger = opts.logger ?? silentLogger();
  return function syncErrorHandler(err: unknown, req: Request, res: Response, _next: NextFunction): void {
    const ferry = toFerryError(err);
    const correlationId = correlationOf(res);
    if (ferry.status >= 500) {
      logger.error({ correlationId, method: req.method, route: 'sync', err: loggableError(err) }, 'sync request failed');
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    const retryAfter = ferry.details?.retryAfter;
    if (typeof retryAfter === 'number') res.setHeader('Retry-After', String(retryAfter));
    if (ferry.status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
    res.status(ferry.status).json({
      error: COUCH_ERROR_NAMES[ferry.status] ?? 'error',
      reason: ferry.message,
      code: ferry.code,
      ...(correlationId ? { correlationId } : {}),
    });
  };
}

function rawPathOf(req: Request): string {
  const url = req.url;
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

export function syncRouter(deps: SyncDeps): SyncRouter {
  const quotas: SyncQuotas = { ...DEFAULT_QUOTAS, ...deps.quotas };
  const feed = createFeedIndex(deps.db);
  const watchers = deps.watchers ?? createHeadWatchers({ upstream: deps.upstream, ownersWithRows: (...a) => feed.ownersWithRows(...a) });
  const ownsWatchers = !deps.watchers;
  const limits: SyncLimits = { ...DEFAULT_LIMITS, ...deps.limits, bodyBytes: { ...DEFAULT_LIMITS.bodyBytes, ...deps.limits?.bodyBytes } };
  const writes = createRateLimiter({ rate: quotas.writesPerSecond, burst: quotas.writeBurst });
  const reads = createRateLimiter({ rate: quotas.readsPerSecond, burst: quotas.readBurst });
  const liveFeeds = createLiveFeeds(quotas.maxLiveFeeds);
  // One parser per body class; each checks Content-Length before reading and stops at its limit.
  const parsers = Object.fromEntries(
    (Object.keys(limits.bodyBytes) as BodyClass[]).map((c) => [c, express.json({ limit: limits.bodyBytes[c], type: () => true })]),
  ) as Record<BodyClass, ReturnType<typeof express.json>>;
  const guard = createPushGuard(deps.db, deps.pushGuard);
  const writeDeps = {
    local: deps.local,
    quotas,
    // Per process: with N gateways a user may overshoot maxPending by up to N× (docs/ARCHITECTURE.md).
    pending: createPendingEstimate({ max: quotas.maxPending }),
    ledger: createPendingLedger(deps.db),
    // "Absent a moment ago" holds only while no other process writes the user's docs (write.ts).
    absent: guard.crossProcess ? noAbsentIds : createAbsentIds(),
    guard,
  };
  const uuid = deps.serverUuid ?? createHash('sha256').update('ferry-sync').digest('hex').slice(0, 32);

  const handlers: Record<SyncRoute['kind'], Partial<Record<string, Handler>>> = {
    root: { GET: serverRoot(uuid), HEAD: serverRoot(uuid) },
    db: { GET: dbInfo, HEAD: dbInfo },
    local: { GET: getLocal(writeDeps), HEAD: getLocal(writeDeps), PUT: putLocal(writeDeps), DELETE: deleteLocal(writeDeps) },
    revs_diff: { POST: revsDiff(writeDeps) },
    bulk_docs: { POST: bulkDocs(writeDeps) },
    changes: { GET: changes(watchers), POST: changes(watchers) },
    bulk_get: { POST: bulkGet },
    all_docs: { GET: allDocs, POST: allDocs },
    ensure_full_commit: { POST: ensureFullCommit },
    doc: { GET: getDoc, HEAD: getDoc },
  };
  const isWrite = (route: SyncRoute, method: string) => route.kind === 'bulk_docs' || (route.kind === 'local' && (method === 'PUT' || method === 'DELETE'));

  const router = express.Router() as SyncRouter;
  router.use(syncAuthentication({ verifyToken: deps.verifyToken, liveness: deps.liveness }));
  router.use(function syncRoute(req: Request, res: Response, next: NextFunction) {
    const route = resolveSyncRoute(rawPathOf(req), req.method);
    const caller = res.locals.syncCaller as Caller;
    if (route && route.kind !== 'root' && route.tenant !== caller.tenant) throw new FerryError('TENANT_MISMATCH');
    if (!route) throw new FerryError('NOT_FOUND');
    const user = `${caller.tenant}\u0000${caller.owner}`;
    // Reads have a budget of their own, so a user busy pulling never starves their own pushes.
    const rate = (isWrite(route, req.method) ? writes : reads).take(user);
    if (rate.kind === 'limited') throw couchError('RATE_LIMITED', { retryAfterSeconds: rate.retryAfterSeconds });
    if (isLiveFeed(route, req.query as Record<string, unknown>)) {
      if (!liveFeeds.acquire(user)) throw couchError('QUOTA_EXCEEDED', { retryAfterSeconds: LIVE_FEED_RETRY_SECONDS });
      res.once('close', () => liveFeeds.release(user));
    }
    res.locals.syncRoute = route;
    next();
  });
  router.use(function syncBody(req: Request, res: Response, next: NextFunction) {
    const route = res.locals.syncRoute as SyncRoute;
    parsers[bodyClassOf(route, req.method)](req, res, (err?: unknown) => {
      if (err) return next(err);
      const ids = idCountOf(route.kind, req.body, req.query as Record<string, unknown>);
      if (ids !== null && ids > limits.maxIds) return next(couchError('TOO_MANY_IDS'));
      next();
    });
  });
  router.use(async function syncDispatch(req: Request, res: Response) {
    const route = res.locals.syncRoute as SyncRoute;
    const caller = res.locals.syncCaller as Caller;
    const handler = handlers[route.kind][req.method];
    if (!handler) throw new FerryError('NOT_FOUND');
    const signal = closeSignal(res);
    const ctx: SyncContext = {
      caller,
      inbox: deps.upstream.inbox(caller.tenant),
      feed,
      req,
      res,
      signal,
    };
    try {
      await handler(ctx, route.kind === 'doc' || route.kind === 'local' ? route.id : '');
    } catch (err) {
      // A client that went away needs no answer, and its abort is not a server error.
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
