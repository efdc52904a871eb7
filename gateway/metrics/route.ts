import { timingSafeEqual } from 'node:crypto';
import { Router, type Request } from 'express';
import { FerryError } from '../../validators/codes.ts';
import { bearerToken, type TokenVerifier } from '../../identity/tokens.ts';
import type { Queryable } from '../../sql/database.ts';
import type { MetricsRegistry } from './registry.ts';

// `/metrics` (DESIGN §5): Prometheus text for a platform-admin token or FERRY_METRICS_TOKEN, and
// for loopback callers in embedded dev mode. Queue depth and lease state are read from the platform
// database, so they are right wherever the worker runs; in-process registries add the rest.

export interface MetricsRouteOptions {
  registries: readonly MetricsRegistry[];
  /** The platform database, for queue depth and leases (absent before the worker's tables exist). */
  platformDb: Queryable;
  verifier: TokenVerifier;
  metricsToken?: string | undefined;
  openToLoopback: boolean;
}

function isLoopback(address: string | undefined): boolean {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Prometheus label value escaping. */
const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export async function platformMetrics(db: Queryable): Promise<string> {
  const lines: string[] = [];
  try {
    const pending = await db.query<{ tenant: string; state: string; n: string | number }>(
      'SELECT tenant, state, count(*) AS n FROM worker_pending GROUP BY tenant, state ORDER BY tenant, state',
    );
    lines.push('# HELP ferry_queue_depth Mutations waiting or retrying in the worker\'s durable pending table', '# TYPE ferry_queue_depth gauge');
    for (const r of pending.rows) lines.push(`ferry_queue_depth{tenant="${esc(r.tenant)}",state="${esc(r.state)}"} ${Number(r.n)}`);
    const leases = await db.query<{ tenant: string; holder: string; fence: string | number; live: boolean }>(
      'SELECT tenant, holder, fence, (expires_at > now()) AS live FROM worker_leases ORDER BY tenant',
    );
    lines.push('# HELP ferry_worker_lease_live 1 while a worker holds the tenant\'s lease', '# TYPE ferry_worker_lease_live gauge');
    for (const r of leases.rows) lines.push(`ferry_worker_lease_live{tenant="${esc(r.tenant)}",holder="${esc(r.holder)}"} ${r.live ? 1 : 0}`);
    lines.push('# HELP ferry_worker_lease_fence The current fencing token of the tenant\'s lease', '# TYPE ferry_worker_lease_fence gauge');
    for (const r of leases.rows) lines.push(`ferry_worker_lease_fence{tenant="${esc(r.tenant)}"} ${Number(r.fence)}`);
  } catch {
    // The worker has not created its tables yet: nothing to report.
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

export function metricsRoute(opts: MetricsRouteOptions): Router {
  const router = Router();
  async function allowed(req: Request): Promise<boolean> {
    const token = bearerToken(req.get('authorization'));
    if (token) {
      if (opts.metricsToken && sameSecret(token, opts.metricsToken)) return true;
      const claims = await opts.verifier(token);
      return claims.roles.includes('platform-admin');
    }
    return opts.openToLoopback && isLoopback(req.socket.remoteAddress);
  }
  router.get('/metrics', (req, res, next) => {
    allowed(req)
      .then(async (ok) => {
        if (!ok) throw new FerryError(bearerToken(req.get('authorization')) ? 'FORBIDDEN' : 'UNAUTHENTICATED');
        const body = opts.registries.map((r) => r.render()).join('') + (await platformMetrics(opts.platformDb));
        res.setHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
        res.setHeader('Cache-Control', 'no-store');
        res.send(body);
      })
      .catch(next);
  });
  return router;
}
