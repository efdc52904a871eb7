import express, { type Express, type Request, type Response, type NextFunction } from 'express';
import { correlationId } from '../http/correlation.ts';
import { errorHandler, notFound } from '../http/errors.ts';
import type { Logger } from '../http/log.ts';
import { jwksOf, type SigningKey } from '../identity/keys.ts';
import { devIdentityRoutes, type DevIdpDeps } from './auth/dev-idp.ts';
import { externalIdentityRoutes, type ExternalIdpDeps } from './auth/external-idp.ts';
import { v1Proxy, type V1Route } from './v1/proxy.ts';
import { syncRouter, type SyncDeps } from './sync/router.ts';
import { replicaRouter, type ReplicaDeps } from './replica/router.ts';
import { operatorRoutes, type OperatorDeps } from './operators/routes.ts';
import { cors } from './edge/cors.ts';
import { metricsRoute, type MetricsRouteOptions } from './metrics/route.ts';
import { httpMetrics } from './metrics/http.ts';
import { healthRoutes, type HealthDeps } from './health/routes.ts';
import { createRateLimiter, rateLimit, type RateLimit } from './edge/rate-limit.ts';
import { requestLog } from './edge/request-log.ts';
import type { TokenIssuer, TokenVerifier } from '../identity/tokens.ts';
import type { Liveness } from './auth/liveness.ts';
import { webAppRoutes, type WebAppOptions } from '../web/serve.ts';

export interface GatewayDeps {
  logger: Logger;
  signingKeys: readonly SigningKey[];
  /** Present when the built-in dev identity provider is on. */
  devIdp: DevIdpDeps | null;
  /** Present in external OIDC mode (`FERRY_AUTH_*`): `POST /auth/exchange` and `/auth/refresh`; never together with devIdp. */
  externalIdp?: ExternalIdpDeps | null;
  v1Routes: readonly V1Route[];
  /** `/readyz`: which dependencies are down or degraded (gateway/health/readiness.ts). */
  readiness: HealthDeps['readiness'];
  /** Fauxton and the CouchDB admin API for platform-admins; null when switched off. */
  operators?: OperatorDeps | null;
  /** `/metrics`; null serves none. */
  metrics?: MetricsRouteOptions | null;
  /** Origins allowed to call the gateway from a browser (the clinician app's own origin needs none). */
  corsOrigins?: readonly string[];
  /** `/sync/{tenant}` (gateway/sync); absent when the gateway runs without CouchDB. */
  sync?: SyncDeps | null;
  /** `/replica/{tenant}` (gateway/replica): the read-only, facility-scoped records; absent without CouchDB. */
  replica?: ReplicaDeps | null;
  /** The clinician web app (web/, built into web/dist): static files at /app/, `/` redirects browsers there. */
  webApp?: WebAppOptions | null;
  limits?: {
    /** Every request, per client IP. */
    perIp?: RateLimit;
    /** `/auth/*`, per client IP: slows password guessing. */
    authPerIp?: RateLimit;
    /** `/v1/*`, per user. */
    v1PerUser?: RateLimit;
  };
  /** Verifies Ferry access tokens at the edge (`/v1` per-user limits, tenant in the logs). */
  verifyToken?: TokenVerifier;
  /** `/v1`: refuse revoked sessions and removed members, and hand services the live roles (gateway/auth/liveness.ts). */
  liveness?: Liveness;
  /** `/v1`: mints the service's token when the live roles differ from the token's. */
  issuer?: Pick<TokenIssuer, 'mintAccess'>;
  /** Proxies whose X-Forwarded-Proto/-Host/-For are believed (express `trust proxy`); none when empty. */
  trustedProxies?: readonly string[];
}

const DEFAULT_LIMITS = {
  // Generous: a clinic's devices often share one public address.
  perIp: { rate: 200, burst: 1000 },
  authPerIp: { rate: 5, burst: 30 },
  v1PerUser: { rate: 50, burst: 200 },
} satisfies Required<NonNullable<GatewayDeps['limits']>>;

export function createGatewayApp(deps: GatewayDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  // Only a listed proxy's X-Forwarded-Proto makes `req.secure` true (the operator cookie's `Secure`).
  app.set('trust proxy', deps.trustedProxies && deps.trustedProxies.length > 0 ? [...deps.trustedProxies] : false);
  app.use(correlationId());
  if (deps.metrics?.http) app.use(httpMetrics(deps.metrics.http));
  app.use(requestLog(deps.logger));
  const limits = { ...DEFAULT_LIMITS, ...deps.limits };
  // The client's address: behind FERRY_TRUSTED_PROXIES, the one they forward (express `req.ip`
  // walks X-Forwarded-For only through trusted hops); without them, the socket's peer, as before.
  // Keyed on the socket alone, every client behind a TLS terminator would share one bucket.
  const ipOf = (req: Request) => req.ip ?? req.socket.remoteAddress ?? 'unknown';
  app.use(rateLimit({ limiter: createRateLimiter(limits.perIp), keyOf: ipOf }));
  app.use('/auth', rateLimit({ limiter: createRateLimiter(limits.authPerIp), keyOf: ipOf }));
  app.use(cors({ origins: deps.corsOrigins ?? [] }));
  app.use(function securityHeaders(_req: Request, res: Response, next: NextFunction) {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    next();
  });

  app.use(healthRoutes({ readiness: deps.readiness }));
  app.get('/.well-known/jwks.json', (_req, res) => {
    res.setHeader('Cache-Control', 'public, max-age=300');
    res.json(jwksOf(deps.signingKeys));
  });
  if (deps.devIdp) app.use('/auth', devIdentityRoutes(deps.devIdp));
  if (deps.devIdp && deps.externalIdp) throw new Error('the dev IdP and an external IdP cannot both be on');
  if (deps.externalIdp) app.use('/auth', externalIdentityRoutes(deps.externalIdp));
  if (deps.sync) app.use('/sync', syncRouter(deps.sync));
  if (deps.replica) app.use('/replica', replicaRouter(deps.replica));
  if (deps.metrics) app.use(metricsRoute(deps.metrics));
  // Before the operator proxy, which would otherwise take a browser's `GET /` (its Accept has */*).
  if (deps.webApp) app.use(webAppRoutes(deps.webApp));
  if (deps.operators) app.use(operatorRoutes(deps.operators));
  app.use(
    '/v1',
    v1Proxy({
      routes: deps.v1Routes,
      ...(deps.verifyToken ? { verifyToken: deps.verifyToken, perUser: createRateLimiter(limits.v1PerUser) } : {}),
      ...(deps.liveness ? { liveness: deps.liveness } : {}),
      ...(deps.issuer ? { issuer: deps.issuer } : {}),
    }),
  );

  app.use(notFound());
  app.use(errorHandler(deps.logger));
  return app;
}
