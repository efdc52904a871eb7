// A tiny Prometheus registry: counters, gauges and histograms with labels, rendered in the text
// exposition format (version 0.0.4). Label values are ids, tenants, codes and states only.

export type Labels = Record<string, string>;

interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  render(): string[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function keyOf(labels: Labels): string {
  return JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
}

function escapeValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(labels: Labels, extra?: [string, string]): string {
  const pairs = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${escapeValue(labels[k]!)}"`);
  if (extra) pairs.push(`${extra[0]}="${escapeValue(extra[1])}"`);
  return pairs.length ? `{${pairs.join(',')}}` : '';
}

function formatNumber(n: number): string {
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}

export interface Gauge {
  set(labels: Labels, value: number): void;
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
  remove(labels: Labels): void;
}

export interface Histogram {
  observe(labels: Labels, value: number): void;
  /** Count and sum of one series, for tests and summaries. */
  get(labels?: Labels): { count: number; sum: number };
}

export interface MetricsRegistry {
  counter(name: string, help: string): Counter;
  gauge(name: string, help: string): Gauge;
  histogram(name: string, help: string, buckets?: readonly number[]): Histogram;
  render(): string;
}

export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createRegistry(): MetricsRegistry {
  const metrics = new Map<string, Metric>();
  const register = <M extends Metric>(m: M): M => {
    if (!NAME.test(m.name)) throw new Error(`invalid metric name ${m.name}`);
    if (metrics.has(m.name)) throw new Error(`metric ${m.name} already registered`);
    metrics.set(m.name, m);
    return m;
  };

  const scalar = (name: string, help: string, type: 'counter' | 'gauge') => {
    const series = new Map<string, { labels: Labels; value: number }>();
    const add = (labels: Labels, by: number) => {
      const k = keyOf(labels);
      const s = series.get(k);
      if (s) s.value += by;
      else series.set(k, { labels: { ...labels }, value: by });
    };
    return {
      name,
      help,
      type,
      series,
      add,
      render: () => [...series.values()].map((s) => `${name}${formatLabels(s.labels)} ${formatNumber(s.value)}`),
    };
  };

  return {
    counter(name, help) {
      const m = register(scalar(name, help, 'counter'));
      return {
        inc(labels = {}, by = 1) {
          if (by < 0) throw new Error('a counter only goes up');
          m.add(labels, by);
        },
        get: (labels = {}) => m.series.get(keyOf(labels))?.value ?? 0,
      };
    },
    gauge(name, help) {
      const m = register(scalar(name, help, 'gauge'));
      return {
        set(labels, value) {
          m.series.set(keyOf(labels), { labels: { ...labels }, value });
        },
        inc: (labels = {}, by = 1) => m.add(labels, by),
        get: (labels = {}) => m.series.get(keyOf(labels))?.value ?? 0,
        remove(labels) {
          m.series.delete(keyOf(labels));
        },
      };
    },
    histogram(name, help, buckets = DEFAULT_BUCKETS) {
      const bounds = [...buckets].sort((a, b) => a - b);
      const series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
      register({
        name,
        help,
        type: 'histogram',
        render: () =>
          [...series.values()].flatMap((s) => {
            let cumulative = 0;
            const lines = bounds.map((b, i) => {
              cumulative += s.counts[i]!;
              return `${name}_bucket${formatLabels(s.labels, ['le', formatNumber(b)])} ${cumulative}`;
            });
            lines.push(`${name}_bucket${formatLabels(s.labels, ['le', '+Inf'])} ${s.count}`);
            lines.push(`${name}_sum${formatLabels(s.labels)} ${formatNumber(s.sum)}`);
            lines.push(`${name}_count${formatLabels(s.labels)} ${s.count}`);
            return lines;
          }),
      });
      return {
        observe(labels, value) {
          const k = keyOf(labels);
          let s = series.get(k);
          if (!s) {
            s = { labels: { ...labels }, counts: bounds.map(() => 0), sum: 0, count: 0 };
            series.set(k, s);
          }
          const i = bounds.findIndex((b) => value <= b);
          if (i >= 0) s.counts[i]! += 1;
          s.sum += value;
          s.count += 1;
        },
        get: (labels = {}) => {
          const s = series.get(keyOf(labels));
          return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
        },
      };
    },
    render() {
      const out: string[] = [];
      for (const m of metrics.values()) {
        out.push(`# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
        out.push(`# TYPE ${m.name} ${m.type}`);
        out.push(...m.render());
      }
      return out.join('\n') + '\n';
    },
  };
}
