import { Counter, Gauge, Histogram } from 'prom-client';
import { DEFAULT_BUCKETS, type MetricsRegistry } from '../metrics/registry.ts';

// The projection's figures on /metrics. Labels are outcomes only, never ids.

export interface ReplicaMetrics {
  /** Events still waiting for this deployment's consumer: the projection's lag. */
  lagEvents: Gauge<string>;
  /** Seconds from a record's commit (its `updatedAt`) to its doc being listed in the replica. */
  freshness: Histogram<string>;
  /** Records per outcome: `projected`, `current` (already listed), `absent` (the service has none), `invalid`. */
  events: Counter<'outcome'>;
  written: Counter<string>;
  failures: Counter<string>;
}

export function createReplicaMetrics(registry: MetricsRegistry): ReplicaMetrics {
  return {
    lagEvents: new Gauge({ name: 'ferry_replica_lag_events', help: 'Events the replica projection has not yet projected', registers: [registry] }),
    freshness: new Histogram({
      name: 'ferry_replica_freshness_seconds',
      help: 'Seconds from a committed change to its record doc in the replica',
      buckets: [...DEFAULT_BUCKETS],
      registers: [registry],
    }),
    events: new Counter({ name: 'ferry_replica_records_total', help: 'Records named by events, by what the projection did', labelNames: ['outcome'], registers: [registry] }),
    written: new Counter({ name: 'ferry_replica_docs_written_total', help: 'Record docs written to the records databases', registers: [registry] }),
    failures: new Counter({ name: 'ferry_replica_round_failures_total', help: 'Projection rounds that failed and were retried', registers: [registry] }),
  };
}
