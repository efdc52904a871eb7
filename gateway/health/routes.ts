import { Router } from 'express';
import { httpStatusOf, type ReadinessReport } from './readiness.ts';

// `/healthz` is liveness only: the process answers. `/readyz` is readiness (readiness.ts).

export interface HealthDeps {
  /** The readiness report; a bare function resolving nothing means there is nothing to check. */
  readiness: () => Promise<ReadinessReport | void>;
}

const UNREADY: ReadinessReport = { status: 'unready', components: { readiness: { status: 'down', reason: 'unreachable' } } };

export function healthRoutes(deps: HealthDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.json({ ok: true });
  });
  router.get('/readyz', (_req, res) => {
    deps.readiness().then(
      (r) => send(r ?? { status: 'ready', components: {} }),
      () => send(UNREADY),
    );
    function send(report: ReadinessReport) {
      const status = httpStatusOf(report);
      res.setHeader('Cache-Control', 'no-store');
      res.status(status).json({ ok: status === 200, ...report });
    }
  });
  return router;
}
