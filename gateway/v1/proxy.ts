import { Router, raw, type Request, type Response, type NextFunction } from 'express';
import { FerryError } from '../../validators/codes.ts';
import { correlationOf } from '../../http/correlation.ts';
import { bearerToken, type TokenIssuer, type TokenVerifier } from '../../identity/tokens.ts';
import type { AccessClaims } from '../../validators/identity.ts';
import type { RateLimiter } from '../edge/rate-limit.ts';
import type { Liveness } from '../auth/liveness.ts';

// The online REST path (DESIGN §5 `/v1/*`): forwards the caller's identity and the idempotency,
// precondition and correlation headers unchanged, strips inbound X-Ferry-*, and hands the
// service's answer back as it came, errors included.

const FORWARDED_REQUEST_HEADERS = ['authorization', 'idempotency-key', 'if-match', 'content-type', 'accept'];
const FORWARDED_RESPONSE_HEADERS = ['content-type', 'etag', 'location', 'idempotent-replayed', 'retry-after', 'cache-control'];

export interface V1Route {
  /** First path segment under /v1, e.g. `patients`. */
  collection: string;
  /** Base URL of the owning service. */
  serviceUrl: string;
}

export interface V1ProxyOptions {
  routes: readonly V1Route[];
  bodyLimit?: string;
  timeoutMs?: number;
  fetch?: typeof fetch;
  /** Checks the caller at the edge too (services check again), so limits can be per user. */
  verifyToken?: TokenVerifier;
  /** Per-user request budget, keyed by tenant and owner. */
  perUser?: RateLimiter;
  /**
   * Session and membership still live, with the roles the user holds now (needs `verifyToken`).
   * A revoked session is 401, a removed member 403 TENANT_MISMATCH, whatever the token says.
   */
  liveness?: Liveness;
  /** Mints the token the service sees when the live roles differ from the token's (needs `liveness`). */
  issuer?: Pick<TokenIssuer, 'mintAccess'>;
}

/** Same roles, whatever the order. Pure. */
export function sameRoles(a: readonly string[], b: readonly string[]): boolean {
  const x = new Set(a);
  const y = new Set(b);
  return x.size === y.size && [...x].every((r) => y.has(r));
}

/**
 * The Authorization header the service gets. Services apply RBAC to the token's roles, so a token
 * whose roles went stale (a role changed since it was minted) is swapped for one with the live
 * roles, same user, tenant and session; the device's own token is forwarded untouched otherwise.
 */
async function serviceAuthorization(claims: AccessClaims, liveRoles: readonly string[], header: string, issuer: Pick<TokenIssuer, 'mintAccess'> | undefined): Promise<string> {
  if (sameRoles(claims.roles, liveRoles)) return header;
  // Without an issuer a stale token cannot be corrected: refuse it, so the device refreshes.
  if (!issuer) throw new FerryError('UNAUTHENTICATED');
  return `Bearer ${await issuer.mintAccess({ sub: claims.sub, owner: claims.owner, tid: claims.tid, roles: liveRoles, sid: claims.sid })}`;
}

export function v1Proxy(opts: V1ProxyOptions): Router {
  const router = Router();
  const doFetch = opts.fetch ?? fetch;
  const byCollection = new Map(opts.routes.map((r) => [r.collection, r.serviceUrl.replace(/\/$/, '')]));
  /** The Authorization header to forward, when it is not the caller's own. */
  const authorizationFor = new WeakMap<Request, string>();
  if (opts.verifyToken) {
    const verify = opts.verifyToken;
    router.use(function v1Authenticate(req: Request, res: Response, next: NextFunction) {
      const token = bearerToken(req.get('authorization'));
      if (!token) return next(new FerryError('UNAUTHENTICATED'));
      verify(token)
        .then(async (claims) => {
          res.locals.tenant = claims.tid;
          const limited = opts.perUser?.take(`${claims.tid}\u0000${claims.owner}`);
          if (limited?.kind === 'limited') {
            res.setHeader('Retry-After', String(limited.retryAfterSeconds));
            throw new FerryError('RATE_LIMITED');
          }
          if (opts.liveness) {
            const roles = await opts.liveness.check(claims);
            authorizationFor.set(req, await serviceAuthorization(claims, roles, `Bearer ${token}`, opts.issuer));
          }
          next();
        })
        .catch(next);
    });
  }
  router.use(raw({ type: () => true, limit: opts.bodyLimit ?? '256kb' }));
  router.use(function forwardToService(req: Request, res: Response, next: NextFunction) {
    const collection = req.path.split('/')[1] ?? '';
    const base = byCollection.get(collection);
    if (!base) return next(new FerryError('NOT_FOUND'));
    // The service's URL parser would resolve `..`/`.` segments (also as `%2e`) and `\`, leaving the collection.
    if (!staysInPlace(req.originalUrl)) return next(new FerryError('NOT_FOUND'));
    // req.originalUrl is already percent-encoded; the path is re-based, never decoded and rebuilt.
    const url = `${base}${req.originalUrl}`;
    const headers: Record<string, string> = {};
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const v = req.get(name);
      if (v !== undefined) headers[name] = v;
    }
    const authorization = authorizationFor.get(req);
    if (authorization !== undefined) headers.authorization = authorization;
    const correlationId = correlationOf(res);
    if (correlationId) headers['x-correlation-id'] = correlationId;
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && Buffer.isBuffer(req.body) && req.body.length > 0;
    doFetch(url, {
      method: req.method,
      headers,
      ...(hasBody ? { body: new Uint8Array(req.body as Buffer) } : {}),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
      redirect: 'manual',
    })
      .then(async (upstream) => {
        res.status(upstream.status);
        for (const name of FORWARDED_RESPONSE_HEADERS) {
          const v = upstream.headers.get(name);
          if (v !== null) res.setHeader(name, v);
        }
        res.send(Buffer.from(await upstream.arrayBuffer()));
      })
      .catch(() => next(new FerryError('UNAVAILABLE')));
  });
  return router;
}

/** False when the raw path holds a `\\` or a segment that is `.` or `..` once decoded. */
function staysInPlace(originalUrl: string): boolean {
  const q = originalUrl.indexOf('?');
  const path = q === -1 ? originalUrl : originalUrl.slice(0, q);
  if (path.includes('\\')) return false;
  return path.split('/').every((segment) => {
    const s = segment.toLowerCase().replace(/%2e/g, '.');
    return s !== '.' && s !== '..';
  });
}
