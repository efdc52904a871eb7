import { collectDefaultMetrics, Registry, type Counter, type Gauge, type Histogram } from 'prom-client';

// Ferry's metrics live on prom-client registries (text exposition format 0.0.4). Each stack gets
// its own registry, so several stacks in one test process never share a series; the process
// figures (CPU, memory, handles, GC, event-loop lag) are one registry per process, because they
// describe the process, not a stack. Label values are route classes, tenants, modules, codes and
// states only: never ids, paths or anything a user typed.

export type { Counter, Gauge, Histogram, Registry };
export type Labels = Record<string, string>;
export type MetricsRegistry = Registry;

export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createRegistry(): MetricsRegistry {
  return new Registry();
}

let processMetrics: Registry | null = null;

/** The default Node process metrics (`process_*`, `nodejs_*`, event-loop lag), once per process. */
export function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics, eventLoopMonitoringPrecision: 10 });
  }
  return processMetrics;
}

/** All registries in one exposition; prom-client collects asynchronously (gauges read the database). */
export async function renderAll(registries: readonly Registry[]): Promise<string> {
  const parts = await Promise.all(registries.map((r) => r.metrics()));
  return parts.map((p) => (p === '' || p.endsWith('\n') ? p : `${p}\n`)).join('');
}

function sameLabels(have: Partial<Record<string, string | number>>, want: Labels): boolean {
  const keys = Object.keys(have);
  return keys.length === Object.keys(want).length && keys.every((k) => String(have[k]) === want[k]);
}

/** One series' value of a counter or gauge (0 when absent), for tests, benches and summaries. */
export async function valueOf(metric: Counter<string> | Gauge<string>, labels: Labels = {}): Promise<number> {
  const { values } = await metric.get();
  return values.find((v) => sameLabels(v.labels, labels))?.value ?? 0;
}

/** Count and sum of one histogram series. */
export async function histogramOf(metric: Histogram<string>, labels: Labels = {}): Promise<{ count: number; sum: number }> {
  const { name, values } = await metric.get();
  const pick = (suffix: string) => values.find((v) => v.metricName === `${name}${suffix}` && sameLabels(v.labels, labels))?.value ?? 0;
  return { count: pick('_count'), sum: pick('_sum') };
}
