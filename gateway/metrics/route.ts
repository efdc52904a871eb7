import { sameSecret } from '../../identity/secret.ts';
import { Router, type Request } from 'express';
import { FerryError } from '../../validators/codes.ts';
import { bearerToken, type TokenVerifier } from '../../identity/tokens.ts';
import type { Liveness } from '../auth/liveness.ts';
import { renderAll, type MetricsRegistry } from './registry.ts';
import type { HttpMetrics } from './http.ts';

// `/metrics` (DESIGN §5): Prometheus text for a platform-admin token or FERRY_METRICS_TOKEN, and
// for loopback callers in embedded dev mode. Every figure is on a prom-client registry: the process
// registry (default Node metrics), the stack's (HTTP, worker, and the gauges read at scrape time
// from the platform database and the service outboxes; see platform.ts).

export interface MetricsRouteOptions {
  registries: readonly MetricsRegistry[];
  /** Request durations per route class; the gateway observes every request when set. */
  http?: HttpMetrics;
  verifier: TokenVerifier;
  /** The token's live roles (a revoked session or a demoted admin stops scraping within seconds). */
  liveness?: Liveness;
  metricsToken?: string | undefined;
  openToLoopback: boolean;
}

function isLoopback(address: string | undefined): boolean {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

export function metricsRoute(opts: MetricsRouteOptions): Router {
  const router = Router();
  async function allowed(req: Request): Promise<boolean> {
    const token = bearerToken(req.get('authorization'));
    if (token) {
      if (opts.metricsToken && sameSecret(token, opts.metricsToken)) return true;
      const claims = await opts.verifier(token);
      const roles = opts.liveness ? await opts.liveness.check(claims) : claims.roles;
      return roles.includes('platform-admin');
    }
    return opts.openToLoopback && isLoopback(req.socket.remoteAddress);
  }
  router.get('/metrics', (req, res, next) => {
    allowed(req)
      .then(async (ok) => {
        if (!ok) throw new FerryError(bearerToken(req.get('authorization')) ? 'FORBIDDEN' : 'UNAUTHENTICATED');
        const body = await renderAll(opts.registries);
        res.setHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
        res.setHeader('Cache-Control', 'no-store');
        res.send(body);
      })
      .catch(next);
  });
  return router;
}
