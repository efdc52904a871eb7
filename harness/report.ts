// The run's report: plain data written as JSON, and a table for the terminal (pure).

import { INVARIANTS, type InvariantName, type Violation } from './invariants.ts';
import type { Schedule } from './schedule.ts';
import type { RequestKind } from './fault-proxy.ts';
import type { LatencySummary } from './stats.ts';
import type { HarnessOptions } from './options.ts';

export interface ProcessFault {
  target: 'worker' | 'gateway';
  /** Which process (`gateway-2`, `worker-1`, …). */
  name?: string;
  /** A worker kill: the lease it held, and how long until another holder had it (kill to take-over). */
  lease?: { tenant: string; from: string; to: string | null; takeoverMs: number | null; limitMs: number; withinTtl: boolean };
  /** Planned and actual moment of the kill -9, ms after the devices started. */
  plannedAtMs: number;
  atMs: number;
  killedPid: number | null;
  /** How long until the restarted process said it was ready. */
  backAfterMs: number | null;
  error?: string;
}

export interface Report {
  ok: boolean;
  /** How to reproduce the fault schedule. */
  reproduce: string;
  seed: number;
  runTag: string;
  startedAt: string;
  durationMs: number;
  options: Omit<HarnessOptions, 'databaseUrl' | 'natsUrl' | 'couchdbUrl' | 'report'>;
  tenants: string[];
  counts: {
    devices: number;
    mutations: number;
    byState: Record<string, number>;
    byOutcome: Record<string, number>;
    patients: number;
    events: number;
  };
  faults: {
    network: {
      enabled: boolean;
      requests: number;
      /** Device requests by what they are for (`requestKind` in fault-proxy.ts). */
      byKind: Record<RequestKind, number>;
      latencyMs: [number, number];
      addedLatencyMsTotal: number;
      bandwidthBytesPerSec: number;
      throttledResponses: number;
      reset: number;
      dropResponse: number;
      duplicate: number;
      offlineRefused: number;
    };
    offlineSpells: number;
    /** How long every core was kept busy by CPU hogs (`--starve`), 0 when off. */
    starvedCpuMs: number;
    processes: ProcessFault[];
    tokens: { expiredHanded: number; refreshedAfter401: number; refreshes: number; reLogins: number };
    tenantSwitch: { device: string; from: string; to: string; queuedInFrom: number; leftQueued: number; completed: boolean; error?: string } | null;
    concurrentEdit: { entity: string; devices: [string, string]; committed: string | null; conflict: string | null; merge: string | null; error?: string } | null;
    injected: string[];
    /** Unhandled rejections in the device process (PouchDB replication's unguarded `info()`): network ones, and any other. */
    unhandledRejections: { network: number; other: number };
  };
  figures: {
    /** Mutations that reached a terminal status per second, first capture to last terminal status. */
    throughputPerSec: number | null;
    /** Capture on the device to terminal status on the device. */
    syncLatencyMs: LatencySummary;
    /** Capture on the device to the worker's terminal status doc (upload, worker, service). */
    toServerMs: LatencySummary;
    /** The worker's terminal status doc to the device seeing it (the pull back). */
    backToDeviceMs: LatencySummary;
  };
  invariants: Array<{ name: InvariantName; ok: boolean; violations: number }>;
  violations: Violation[];
  /** Where the logs and data were (kept only with --keep). */
  dataDir: string;
  kept: boolean;
}

export function invariantTable(violations: readonly Violation[]): Report['invariants'] {
  return INVARIANTS.map((name) => {
    const n = violations.filter((v) => v.invariant === name).length;
    return { name, ok: n === 0, violations: n };
  });
}

function fmt(n: number | string | null, unit = ''): string {
  return n === null ? '–' : `${n}${unit}`;
}

function table(rows: Array<[string, string]>): string[] {
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`);
}

export function renderReport(r: Report): string {
  const n = r.faults.network;
  const lines: string[] = [];
  lines.push(`Ferry replication harness — ${r.ok ? 'PASS' : 'FAIL'}  (seed ${r.seed}, run ${r.runTag}, ${(r.durationMs / 1000).toFixed(1)} s)`);
  lines.push('');
  lines.push('Run');
  lines.push(
    ...table([
      ['devices / tenants', `${r.counts.devices} / ${r.tenants.length}`],
      ['mutations', `${r.counts.mutations}  (${Object.entries(r.counts.byOutcome).map(([k, v]) => `${k} ${v}`).join(', ')})`],
      ['patients / events', `${r.counts.patients} / ${r.counts.events}`],
      ['throughput', `${fmt(r.figures.throughputPerSec)} mutations/s to terminal`],
      ...(
        [
          ['sync latency', r.figures.syncLatencyMs],
          ['  of which to the server', r.figures.toServerMs],
          ['  and back to the device', r.figures.backToDeviceMs],
        ] as const
      ).map(([label, l]): [string, string] => [label, `p50 ${fmt(l.p50, ' ms')}  p90 ${fmt(l.p90, ' ms')}  p99 ${fmt(l.p99, ' ms')}  max ${fmt(l.max, ' ms')}`]),
    ]),
  );
  lines.push('');
  lines.push('Faults');
  const proc = (t: 'worker' | 'gateway') => {
    const list = r.faults.processes.filter((p) => p.target === t);
    return list.length ? `${list.length} × kill -9 at ${list.map((p) => `${(p.atMs / 1000).toFixed(1)}s${p.name && p.name !== t ? ` (${p.name})` : ''}`).join(', ')}; back after ${list.map((p) => fmt(p.backAfterMs, 'ms')).join(', ')}` : 'none';
  };
  const takeovers = r.faults.processes.flatMap((p) => (p.lease ? [p.lease] : []));
  const sw = r.faults.tenantSwitch;
  const ce = r.faults.concurrentEdit;
  lines.push(
    ...table([
      ['network', n.enabled ? `${n.requests} requests; latency ${n.latencyMs[0]}–${n.latencyMs[1]} ms (${n.addedLatencyMsTotal} ms added); cap ${n.bandwidthBytesPerSec} B/s on ${n.throttledResponses} responses` : `off (${n.requests} requests)`],
      ['  by kind', Object.entries(n.byKind).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v}`).join(', ')],
      ['  per mutation', r.counts.mutations ? (n.requests / r.counts.mutations).toFixed(2) : '—'],
      ['  reset / dropped after commit / duplicated', `${n.reset} / ${n.dropResponse} / ${n.duplicate}`],
      ['offline spells (refused requests)', `${r.faults.offlineSpells} (${n.offlineRefused})`],
      ['CPU starvation', r.faults.starvedCpuMs > 0 ? `every core busy for ${r.faults.starvedCpuMs / 1000} s from the start of capture` : 'off'],
      ['worker', proc('worker')],
      ['gateway', proc('gateway')],
      ...takeovers.map((l): [string, string] => [`  lease of ${l.tenant}`, l.to ? `${l.from} → ${l.to} in ${l.takeoverMs} ms (limit ${l.limitMs} ms: TTL + one tick + 1 s${l.withinTtl ? '' : '; EXCEEDED'})` : `${l.from}: not taken over`]),
      ['expired tokens (401 → refresh)', `${r.faults.tokens.expiredHanded} handed, ${r.faults.tokens.refreshedAfter401} refreshed; ${r.faults.tokens.reLogins} re-logins`],
      ['tenant switch', sw ? `${sw.device}: ${sw.from} → ${sw.to} → back; ${sw.leftQueued} left queued${sw.completed ? '' : ` (incomplete${sw.error ? `: ${sw.error}` : ''})`}` : 'not planned (needs 2 tenants)'],
      ['concurrent edit', ce ? `${ce.entity} by ${ce.devices.join(' & ')}: committed ${fmt(ce.committed)}, conflict ${fmt(ce.conflict)}, merge ${fmt(ce.merge)}${ce.error ? ` (${ce.error})` : ''}` : 'not planned (needs devices > tenants)'],
      ['injected', r.faults.injected.length ? r.faults.injected.join(', ') : 'none'],
      ['unhandled rejections (device side)', `${r.faults.unhandledRejections.network} network, ${r.faults.unhandledRejections.other} other`],
    ]),
  );
  lines.push('');
  lines.push('Invariants');
  lines.push(...table(r.invariants.map((i) => [i.name, i.ok ? 'ok' : `VIOLATED (${i.violations})`])));
  if (r.violations.length) {
    lines.push('');
    lines.push('Violations');
    for (const v of r.violations) lines.push(`  [${v.invariant}] ${v.detail}: ${v.ids.join(' ')}`);
  }
  lines.push('');
  lines.push(`Reproduce the fault schedule: ${r.reproduce}`);
  return lines.join('\n');
}

/** The schedule as recorded in the report file next to the report (it can be long). */
export interface ReportFile extends Report {
  schedule: Schedule;
}
