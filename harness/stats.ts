// Figures for the report: percentiles and throughput (pure).

/** Nearest-rank percentile (p in (0, 100]) of unsorted samples; null when there are none. */
export function percentile(samples: readonly number[], p: number): number | null {
  if (samples.length === 0) return null;
  if (!(p > 0 && p <= 100)) throw new RangeError('p must be in (0, 100]');
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.max(0, rank - 1)]!;
}

export interface LatencySummary {
  count: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

export function summarise(samples: readonly number[]): LatencySummary {
  return {
    count: samples.length,
    p50: percentile(samples, 50),
    p90: percentile(samples, 90),
    p99: percentile(samples, 99),
    max: samples.length ? Math.max(...samples) : null,
  };
}

/** Mutations that reached a terminal status per second, from the first capture to the last terminal status. */
export function throughput(items: ReadonlyArray<{ capturedAt: number; terminalAt: number | null }>): number | null {
  const done = items.filter((i) => i.terminalAt !== null);
  if (done.length === 0) return null;
  const start = Math.min(...items.map((i) => i.capturedAt));
  const end = Math.max(...done.map((i) => i.terminalAt!));
  const seconds = (end - start) / 1000;
  return seconds > 0 ? Math.round((done.length / seconds) * 100) / 100 : null;
}
