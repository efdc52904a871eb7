import { readFileSync } from 'node:fs';
import type { Report } from './run.ts';
import { mutation } from '../test/sync/support.ts';
import { startStackProcess, type StackProcess, type StackProcessOptions } from '../test/sync/stack-process.ts';

// The attack of issue 10: six parallel 14.6 MB `_revs_diff` calls by one user, while another user
// of the same tenant reads `_all_docs`. What is measured is the victim's latency (the goal: under
// 1 s) and the gateway's resident memory, at rest and under attack, with the gateway's limits.
// `BENCH_ATTACK_UNBOUNDED=1` runs the same attack once more against a gateway with the limits of
// before (16 MB bodies everywhere, no id cap), for comparison; it takes a minute or more.
// The gateway runs in its own process (test/sync/stack-process.ts), the attackers and the victim
// here; the victim's latency is wall time from this process.

const ATTACKERS = 6;
const IDS = 172_000; // ~14.6 MB of `{"m:ada:…":["1-…"]}`
const ATTACK_MS = Number(process.env.BENCH_ATTACK_MS ?? 10_000);
const VICTIM_DOCS = 200;

function revsDiffBody(): string {
  const entries = Array.from({ length: IDS }, (_, i) => [`m:ada:${String(i).padStart(36, '0')}`, ['1-00000000000000000000000000000000']]);
  return JSON.stringify(Object.fromEntries(entries));
}

function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

interface Run {
  victimMs: number[];
  attackMs: number[];
  statuses: Map<number, number>;
  rssPeakMb: number | null;
  rssRestMb: number | null;
}

async function timed(url: string, init: RequestInit): Promise<{ ms: number; status: number }> {
  const t = performance.now();
  try {
    const res = await fetch(url, init);
    await res.arrayBuffer();
    return { ms: performance.now() - t, status: res.status };
  } catch {
    return { ms: performance.now() - t, status: 0 };
  }
}

async function attackRun(opts: StackProcessOptions, body: string, until: 'time' | 'once'): Promise<Run> {
  let stack: StackProcess | undefined;
  try {
    stack = await startStackProcess(opts);
    const s = stack;
    const ada = await s.token('ada');
    const ben = await s.token('ben');
    const base = `${s.url}/sync/north`;
    const docs = Array.from({ length: VICTIM_DOCS }, () => mutation('ben'));
    const pushed = await fetch(`${base}/_bulk_docs`, { method: 'POST', headers: { authorization: `Bearer ${ben}`, 'content-type': 'application/json' }, body: JSON.stringify({ docs }) });
    await pushed.arrayBuffer();
    await s.writeStatuses('north', 'ben', VICTIM_DOCS);
    const victim = () => timed(`${base}/_all_docs?include_docs=true&limit=100`, { headers: { authorization: `Bearer ${ben}` } });
    for (let i = 0; i < 5; i++) await victim(); // warm
    const rssRestMb = rssMb(s.pid);

    let stop = false;
    let rssPeakMb = rssRestMb;
    const sampler = setInterval(() => {
      const r = rssMb(s.pid);
      if (r !== null && (rssPeakMb === null || r > rssPeakMb)) rssPeakMb = r;
    }, 100);
    const attackMs: number[] = [];
    const statuses = new Map<number, number>();
    const attacker = async () => {
      do {
        const r = await timed(`${base}/_revs_diff`, { method: 'POST', headers: { authorization: `Bearer ${ada}`, 'content-type': 'application/json' }, body });
        attackMs.push(r.ms);
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      } while (until === 'time' && !stop);
    };
    const attacks = Promise.all(Array.from({ length: ATTACKERS }, attacker));
    if (until === 'time') setTimeout(() => (stop = true), ATTACK_MS);
    else void attacks.then(() => (stop = true));
    const victimMs: number[] = [];
    while (!stop) {
      victimMs.push((await victim()).ms);
      await new Promise((r) => setTimeout(r, 50));
    }
    await attacks;
    clearInterval(sampler);
    return { victimMs, attackMs, statuses, rssPeakMb, rssRestMb };
  } finally {
    await stack?.close();
  }
}

async function restRun(): Promise<number[]> {
  let stack: StackProcess | undefined;
  try {
    stack = await startStackProcess({});
    const ben = await stack.token('ben');
    await stack.writeStatuses('north', 'ben', VICTIM_DOCS);
    const out: number[] = [];
    for (let i = 0; i < 40; i++) out.push((await timed(`${stack.url}/sync/north/_all_docs?include_docs=true&limit=100`, { headers: { authorization: `Bearer ${ben}` } })).ms);
    return out.slice(5);
  } finally {
    await stack?.close();
  }
}

function reportRun(report: Report, label: string, run: Run): void {
  const v = [...run.victimMs].sort((a, b) => a - b);
  const a = [...run.attackMs].sort((x, y) => x - y);
  report.figure(`victim _all_docs p50 ${label}`, quantile(v, 0.5), 'ms', { baseline: 'victim _all_docs p50 at rest' });
  report.figure(`victim _all_docs max ${label}`, v[v.length - 1] ?? NaN, 'ms', { note: 'goal < 1,000 ms' });
  report.figure(`attack _revs_diff answer p50 ${label}`, quantile(a, 0.5), 'ms');
  if (run.rssRestMb !== null && run.rssPeakMb !== null) report.figure(`gateway RSS growth ${label}`, run.rssPeakMb - run.rssRestMb, 'MB');
  report.note(`${label}: ${run.attackMs.length} attack calls answered ${[...run.statuses].map(([st, n]) => `${n}× ${st}`).join(', ')}; ${run.victimMs.length} victim reads`);
}

export default async function attackBench(report: Report): Promise<void> {
  const body = revsDiffBody();
  const rest = [...(await restRun())].sort((a, b) => a - b);
  report.figure('victim _all_docs p50 at rest', quantile(rest, 0.5), 'ms');
  reportRun(report, 'under attack', await attackRun({}, body, 'time'));
  if (process.env.BENCH_ATTACK_UNBOUNDED === '1') {
    // The limits of before: one 16 MB body limit for every route, no id cap.
    const unbounded: StackProcessOptions = { limits: { maxIds: Number.MAX_SAFE_INTEGER, bodyBytes: { ids: 16 * 1024 * 1024 } } };
    reportRun(report, 'under attack, limits of before', await attackRun(unbounded, body, 'once'));
  }
  report.note(`${ATTACKERS} attackers (one user) each sending a ${(body.length / 1e6).toFixed(1)} MB _revs_diff of ${IDS.toLocaleString('en-US')} ids in a loop for ${ATTACK_MS / 1000} s; victim: another user's _all_docs?include_docs=true&limit=100 every 50 ms`);
}
