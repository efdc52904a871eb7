import { Gauge } from 'prom-client';
import type { Queryable } from '../../sql/database.ts';
import type { MetricsRegistry } from './registry.ts';

// Figures read at scrape time from the databases, so they are right wherever the worker and the
// relay run: the worker's durable queue and leases (platform database), and each service's
// outbox (the service's own database; DESIGN §6, the events wait there until the relay has them
// acked by JetStream). Each is declared once, here.

/** What the readiness check and the gauges need from a service's outbox relay. */
export interface RelayProbe {
  status(): { running: boolean; connected: boolean; consecutiveFailures: number };
}

export interface ServiceOutbox {
  /** The owning service, a label value (e.g. `registration`). */
  service: string;
  db: Queryable;
  /** Null when this process runs no relay for it (the events are published elsewhere). */
  relay: RelayProbe | null;
}

export interface OutboxBacklog {
  /** Events not yet acked by JetStream. */
  events: number;
  /** Age of the oldest of them, 0 when there are none. */
  oldestSeconds: number;
}

export async function outboxBacklog(db: Queryable): Promise<OutboxBacklog> {
  const { rows } = await db.query<{ n: string | number; age: string | number | null }>(
    'SELECT count(*) AS n, EXTRACT(EPOCH FROM (now() - min(created_at))) AS age FROM outbox WHERE published_at IS NULL',
  );
  return { events: Number(rows[0]?.n ?? 0), oldestSeconds: Math.max(0, Number(rows[0]?.age ?? 0)) };
}

export interface PlatformMetricsOptions {
  platformDb: Queryable;
  outboxes?: readonly ServiceOutbox[];
}

export function registerPlatformMetrics(registry: MetricsRegistry, opts: PlatformMetricsOptions): void {
  const registers = [registry];
  type Lease = { tenant: string; holder: string; fence: string | number; live: boolean };
  // One leases query per scrape serves both lease gauges.
  let leases: Promise<Lease[]> | null = null;
  const readLeases = () =>
    (leases ??= opts.platformDb
      .query<Lease>('SELECT tenant, holder, fence, (expires_at > now()) AS live FROM worker_leases ORDER BY tenant')
      .then((r) => r.rows)
      // The worker has not created its tables yet: nothing to report.
      .catch(() => [])
      .finally(() => setImmediate(() => (leases = null))));

  new Gauge({
    name: 'ferry_queue_depth',
    help: "Mutations waiting or retrying in the worker's durable pending table, per tenant and state",
    labelNames: ['tenant', 'state'],
    registers,
    async collect() {
      this.reset();
      const rows = await opts.platformDb
        .query<{ tenant: string; state: string; n: string | number }>('SELECT tenant, state, count(*) AS n FROM worker_pending GROUP BY tenant, state')
        .then((r) => r.rows)
        .catch(() => []);
      for (const r of rows) this.set({ tenant: r.tenant, state: r.state }, Number(r.n));
    },
  });
  new Gauge({
    name: 'ferry_worker_lease_live',
    help: "1 while a worker holds the tenant's lease",
    labelNames: ['tenant', 'holder'],
    registers,
    async collect() {
      this.reset();
      for (const r of await readLeases()) this.set({ tenant: r.tenant, holder: r.holder }, r.live ? 1 : 0);
    },
  });
  new Gauge({
    name: 'ferry_worker_lease_fence',
    help: "The current fencing token of the tenant's lease",
    labelNames: ['tenant'],
    registers,
    async collect() {
      this.reset();
      for (const r of await readLeases()) this.set({ tenant: r.tenant }, Number(r.fence));
    },
  });

  const outboxes = opts.outboxes ?? [];
  if (outboxes.length === 0) return;
  type Read = { service: string; backlog: OutboxBacklog | null; relay: RelayProbe | null };
  let reads: Promise<Read[]> | null = null;
  const readOutboxes = () =>
    (reads ??= Promise.all(
      outboxes.map(async (o) => ({ service: o.service, relay: o.relay, backlog: await outboxBacklog(o.db).catch(() => null) })),
    ).finally(() => setImmediate(() => (reads = null))));
  new Gauge({
    name: 'ferry_outbox_backlog',
    help: 'Events waiting in a service outbox, not yet acked by JetStream',
    labelNames: ['service'],
    registers,
    async collect() {
      this.reset();
      for (const r of await readOutboxes()) if (r.backlog) this.set({ service: r.service }, r.backlog.events);
    },
  });
  new Gauge({
    name: 'ferry_relay_backlog_seconds',
    help: 'How far the outbox relay is behind: age of the oldest unpublished event (0 when caught up)',
    labelNames: ['service'],
    registers,
    async collect() {
      this.reset();
      for (const r of await readOutboxes()) if (r.backlog) this.set({ service: r.service }, r.backlog.oldestSeconds);
    },
  });
  new Gauge({
    name: 'ferry_relay_connected',
    help: '1 while the outbox relay of this process is connected to NATS',
    labelNames: ['service'],
    registers,
    collect() {
      this.reset();
      for (const o of outboxes) if (o.relay) this.set({ service: o.service }, o.relay.status().connected ? 1 : 0);
    },
  });
}
