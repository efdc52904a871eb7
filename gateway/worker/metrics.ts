import { Counter, Gauge, Histogram } from 'prom-client';
import { createRegistry, DEFAULT_BUCKETS, type MetricsRegistry } from '../metrics/registry.ts';

// What the worker reports (DESIGN §5 "Health and metrics"): queue depth per tenant, commit
// latency, outcomes by code, retries and lease state. The gateway renders `registry` at /metrics.
// Each metric is declared here once, with its fixed label names.

export interface WorkerMetrics {
  registry: MetricsRegistry;
  /** Pending (waiting + retrying) mutations per tenant, as this worker holds them in memory. */
  queueDepth: Gauge<'tenant'>;
  /** Terminal and non-terminal outcomes written, by tenant, state and code. */
  outcomes: Counter<'tenant' | 'state' | 'code'>;
  /** Seconds per service call, by tenant and module. */
  commitLatency: Histogram<'tenant' | 'module'>;
  /** Service calls that ended `retrying`, by tenant. */
  retries: Counter<'tenant'>;
  /** 1 for the state this worker is in for a tenant (`held` or `standby`), 0 for the other. */
  lease: Gauge<'tenant' | 'state'>;
  /** Mutation docs read from the feed, by tenant. */
  received: Counter<'tenant'>;
  /** Retention: mutations whose docs were purged from the inbox, by tenant. */
  retentionPurged: Counter<'tenant'>;
  /** Retention's re-purge guard: purged mutations whose docs were found back and purged again, by tenant. */
  retentionRepurged: Counter<'tenant'>;
}

export function createWorkerMetrics(registry: MetricsRegistry = createRegistry()): WorkerMetrics {
  const registers = [registry];
  return {
    registry,
    queueDepth: new Gauge({ name: 'ferry_worker_queue_depth', help: 'Mutations this worker holds waiting or retrying, per tenant', labelNames: ['tenant'], registers }),
    outcomes: new Counter({ name: 'ferry_worker_outcomes_total', help: 'Status outcomes written, by tenant, state and code', labelNames: ['tenant', 'state', 'code'], registers }),
    commitLatency: new Histogram({ name: 'ferry_worker_commit_seconds', help: 'Latency of service calls made by the worker', labelNames: ['tenant', 'module'], buckets: [...DEFAULT_BUCKETS], registers }),
    retries: new Counter({ name: 'ferry_worker_retries_total', help: 'Service calls that ended retrying', labelNames: ['tenant'], registers }),
    lease: new Gauge({ name: 'ferry_worker_lease', help: 'Lease state per tenant: 1 for the current state', labelNames: ['tenant', 'state'], registers }),
    received: new Counter({ name: 'ferry_worker_mutations_received_total', help: 'Mutation docs read from the inbox feed', labelNames: ['tenant'], registers }),
    retentionPurged: new Counter({ name: 'ferry_worker_retention_purged_total', help: 'Mutations whose mutation and status docs retention purged', labelNames: ['tenant'], registers }),
    retentionRepurged: new Counter({ name: 'ferry_worker_retention_repurged_total', help: 'Purged mutations whose docs came back and were purged again', labelNames: ['tenant'], registers }),
  };
}

export function setLeaseState(metrics: WorkerMetrics, tenant: string, held: boolean): void {
  metrics.lease.set({ tenant, state: 'held' }, held ? 1 : 0);
  metrics.lease.set({ tenant, state: 'standby' }, held ? 0 : 1);
}
