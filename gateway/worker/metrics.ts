import { createRegistry, type Counter, type Gauge, type Histogram, type MetricsRegistry } from '../metrics/registry.ts';

// What the worker reports (DESIGN §5 "Health and metrics"): queue depth per tenant, commit
// latency, outcomes by code, retries and lease state. The gateway renders `registry` at /metrics.

export interface WorkerMetrics {
  registry: MetricsRegistry;
  /** Pending (waiting + retrying) mutations per tenant. */
  queueDepth: Gauge;
  /** Terminal and non-terminal outcomes written, by tenant, state and code. */
  outcomes: Counter;
  /** Seconds per service call, by tenant and module. */
  commitLatency: Histogram;
  /** Service calls that ended `retrying`, by tenant. */
  retries: Counter;
  /** 1 for the state this worker is in for a tenant (`held` or `standby`), 0 for the other. */
  lease: Gauge;
  /** Mutation docs read from the feed, by tenant. */
  received: Counter;
}

export function createWorkerMetrics(registry: MetricsRegistry = createRegistry()): WorkerMetrics {
  return {
    registry,
    queueDepth: registry.gauge('ferry_worker_queue_depth', 'Mutations waiting or retrying, per tenant'),
    outcomes: registry.counter('ferry_worker_outcomes_total', 'Status outcomes written, by tenant, state and code'),
    commitLatency: registry.histogram('ferry_worker_commit_seconds', 'Latency of service calls made by the worker'),
    retries: registry.counter('ferry_worker_retries_total', 'Service calls that ended retrying'),
    lease: registry.gauge('ferry_worker_lease', 'Lease state per tenant: 1 for the current state'),
    received: registry.counter('ferry_worker_mutations_received_total', 'Mutation docs read from the inbox feed'),
  };
}

export function setLeaseState(metrics: WorkerMetrics, tenant: string, held: boolean): void {
  metrics.lease.set({ tenant, state: 'held' }, held ? 1 : 0);
  metrics.lease.set({ tenant, state: 'standby' }, held ? 0 : 1);
}
