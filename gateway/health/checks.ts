import type { Queryable } from '../../sql/database.ts';
import { outboxBacklog, type ServiceOutbox } from '../metrics/platform.ts';
import type { ComponentCheck, ProbeResult } from './readiness.ts';

// The probes the composition root wires into /readyz. Each says only up or down, with a reason
// from a closed set; the error itself stays here (it may carry a URL or a credential).

const up: ProbeResult = { ok: true };

export function databaseCheck(component: string, db: Queryable): ComponentCheck {
  return {
    component,
    impact: 'unready',
    async probe() {
      await db.query('SELECT 1');
      return up;
    },
  };
}

export function couchCheck(isUp: () => Promise<boolean>): ComponentCheck {
  return {
    component: 'couchdb',
    impact: 'unready',
    probe: async () => ((await isUp()) ? up : { ok: false, reason: 'unreachable' }),
  };
}

/** A service this stack runs: its database answers and its HTTP listener answers (any status). */
export function serviceCheck(component: string, deps: { db: Queryable; url: string }): ComponentCheck {
  return {
    component,
    impact: 'unready',
    async probe() {
      await deps.db.query('SELECT 1');
      const res = await fetch(`${deps.url}/`, { signal: AbortSignal.timeout(10_000) });
      await res.body?.cancel();
      return up;
    },
  };
}

/** NATS, as the service's relay sees it: down means events wait in the outbox (degraded). */
export function relayCheck(outbox: ServiceOutbox & { relay: NonNullable<ServiceOutbox['relay']> }): ComponentCheck {
  return {
    component: 'nats',
    impact: 'degraded',
    async probe() {
      const s = outbox.relay.status();
      return s.connected && s.consecutiveFailures === 0 ? up : { ok: false, reason: 'disconnected' };
    },
  };
}

/** More than `threshold` events waiting to be published (the relay is behind or NATS is away). */
export function outboxCheck(outbox: ServiceOutbox, threshold: number): ComponentCheck {
  return {
    component: 'outbox',
    impact: 'degraded',
    async probe() {
      const { events } = await outboxBacklog(outbox.db);
      return events > threshold ? { ok: false, reason: 'backlog' } : up;
    },
  };
}
