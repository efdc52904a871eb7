import { Router, raw, type Request, type Response, type NextFunction } from 'express';
import { FerryError } from '../../validators/codes.ts';
import { correlationOf } from '../../http/correlation.ts';
import { bearerToken, type TokenVerifier } from '../../identity/tokens.ts';
import type { RateLimiter } from '../edge/rate-limit.ts';

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
}

export function v1Proxy(opts: V1ProxyOptions): Router {
  const router = Router();
  const doFetch = opts.fetch ?? fetch;
  const byCollection = new Map(opts.routes.map((r) => [r.collection, r.serviceUrl.replace(/\/$/, '')]));
  if (opts.verifyToken) {
    const verify = opts.verifyToken;
    router.use(function v1Authenticate(req: Request, res: Response, next: NextFunction) {
      const token = bearerToken(req.get('authorization'));
      if (!token) return next(new FerryError('UNAUTHENTICATED'));
      verify(token)
        .then((claims) => {
          res.locals.tenant = claims.tid;
          const limited = opts.perUser?.take(`${claims.tid}\u0000${claims.owner}`);
          if (limited?.kind === 'limited') {
            res.setHeader('Retry-After', String(limited.retryAfterSeconds));
            throw new FerryError('RATE_LIMITED');
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
