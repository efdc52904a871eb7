import { startTestStack, type TestStack } from '../test/support/stack.ts';
import { randomBytes, randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { NodePouch, openNodeSession, type Session, type TokenProvider } from '../client/node.ts';
import { isPending } from '../client/reconcile.ts';
import { DEFAULT_BATCH_SIZE } from '../client/sync.ts';
import { rawBulkDocsRate } from './raw.ts';
import type { Report } from './run.ts';

// The device library (client/) on Node, memory adapter:
//   1. local `mutate` throughput, encrypted store (the whole library: validation, seq counter,
//      crypto-pouch) beside plain PouchDB doing the same two writes per mutation (the device doc
//      and the mutation doc), interleaved in the same run; then the library with 20 calls in flight;
//   2. offline catch-up: one device with 2,000 queued mutations on 200 entities (a create and 9
//      chained updates each) comes online; timed until every terminal status is back on the device;
//   3. online write-to-committed-status latency, p50 and p99 over 500 mutations, one at a time.
// Against the full stack in this process (gateway, embedded CouchDB server, worker with default
// timings, registration service on PGlite, NATS).

const LOCAL = Number(process.env.BENCH_CLIENT_LOCAL ?? 2_000);
const WARM_UP = 200;
const SEGMENTS = 10;
const IN_FLIGHT = 20;
const ENTITIES = Number(process.env.BENCH_CLIENT_ENTITIES ?? 200);
const PER_ENTITY = 10;
const LATENCY = Number(process.env.BENCH_CLIENT_LATENCY ?? 500);

function letters(n: number): string {
  return Array.from(randomBytes(n), (b) => String.fromCharCode(97 + (b % 26))).join('');
}
function patient(): Record<string, unknown> {
  const tag = letters(8);
  return { givenName: `Bench${tag}`, familyName: `Synthetic${tag}`, birthDate: '1979-05-17', sex: 'other', facility: 'north-hc-1' };
}

function offlineTokens(owner: string): TokenProvider & { owner: string } {
  return { owner, getToken: async () => 'offline', refresh: async () => 'offline' };
}

async function devTokens(url: string, username: string): Promise<TokenProvider & { owner: string }> {
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return (await res.json()) as { access_token: string; refresh_token: string; user: { id: string } };
  };
  let s = await post('/auth/token', { username, password: 'ferry-dev', tenant: 'north' });
  return {
    owner: s.user.id,
    getToken: async () => s.access_token,
    refresh: async () => {
      s = await post('/auth/refresh', { refresh_token: s.refresh_token });
      return s.access_token;
    },
  };
}

function open(gatewayUrl: string, tokens: TokenProvider & { owner: string }, autoSync: boolean): Promise<Session> {
  return openNodeSession({
    gatewayUrl,
    tenant: 'north',
    owner: tokens.owner,
    passphrase: 'bench device passphrase',
    tokens,
    adapter: 'memory',
    prefix: `bench-${randomUUID()}-`,
    kdfIterations: 1_000,
    idleTimeoutMs: null,
    online: null,
    autoSync,
    backoff: { base: 200, cap: 2_000 },
  });
}

function seconds(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function localThroughput(report: Report): Promise<void> {
  // Plain PouchDB: the same two writes per mutation as the library (device doc, then mutation
  // doc), no encryption, no validation. The two sides run interleaved in segments (which one
  // goes first alternates) after an untimed warm-up each, so load from other work on this
  // shared machine falls on both alike.
  const plain = new NodePouch(`bench-plain-${randomUUID()}`, { adapter: 'memory' });
  let device: { _id: string; _rev?: string; seq: number } = { _id: '_local/ferry-device', seq: 0 };
  const plainWrite = async (payload: Record<string, unknown>): Promise<void> => {
    device = { ...device, seq: device.seq + 1 };
    device._rev = (await plain.put(device)).rev;
    const mid = uuidv7();
    await plain.put({
      _id: `m:bench:${mid}`, type: 'mutation', v: 1, tenant: 'north', owner: 'bench', device: 'dev-bench', seq: device.seq,
      op: 'patient.create', entity: `pat_${uuidv7()}`, after: null, resolves: null, baseVersion: null, payload, createdAt: new Date().toISOString(),
    });
  };
  const session = await open('http://127.0.0.1:9', offlineTokens('bench'), false);
  const encWrite = async (payload: Record<string, unknown>): Promise<void> => {
    const r = await session.mutate('patient.create', payload);
    if (!r.ok) throw new Error(`refused: ${r.code}`);
  };
  const timed = async (write: (p: Record<string, unknown>) => Promise<void>, payloads: Record<string, unknown>[]): Promise<number> => {
    const started = process.hrtime.bigint();
    for (const payload of payloads) await write(payload);
    return seconds(started);
  };
  await timed(plainWrite, Array.from({ length: WARM_UP }, () => patient()));
  await timed(encWrite, Array.from({ length: WARM_UP }, () => patient()));
  const per = Math.ceil(LOCAL / SEGMENTS);
  let plainSeconds = 0;
  let encSeconds = 0;
  for (let i = 0; i < SEGMENTS; i++) {
    const payloads = Array.from({ length: per }, () => patient());
    if (i % 2 === 0) {
      plainSeconds += await timed(plainWrite, payloads);
      encSeconds += await timed(encWrite, payloads);
    } else {
      encSeconds += await timed(encWrite, payloads);
      plainSeconds += await timed(plainWrite, payloads);
    }
  }
  const plainName = 'local writes, plain PouchDB (device doc + mutation doc)';
  const encName = 'local mutate, encrypted store (client library)';
  report.figure(plainName, (per * SEGMENTS) / plainSeconds, 'mutations/s');
  report.figure(encName, (per * SEGMENTS) / encSeconds, 'mutations/s', { baseline: plainName });

  // Calls made while a write is under way join the next one (one device doc + one bulkDocs).
  const burst = Array.from({ length: LOCAL }, () => patient());
  const started = process.hrtime.bigint();
  for (let i = 0; i < burst.length; i += IN_FLIGHT) await Promise.all(burst.slice(i, i + IN_FLIGHT).map(encWrite));
  report.figure(`local mutate, encrypted store, ${IN_FLIGHT} calls in flight`, burst.length / seconds(started), 'mutations/s', { baseline: encName });
  await plain.destroy();
  await session.wipe({ confirm: true });
}

async function catchUp(report: Report, stack: TestStack): Promise<void> {
  const tokens = await devTokens(stack.url, 'ada');
  const session = await open(stack.url, tokens, false);
  try {
    for (let e = 0; e < ENTITIES; e++) {
      const p = patient();
      const created = await session.mutate('patient.create', p);
      if (!created.ok) throw new Error(`refused: ${created.code}`);
      for (let u = 1; u < PER_ENTITY; u++) {
        const r = await session.mutate('patient.update', { ...p, phone: `+23480000${String(u).padStart(5, '0')}` }, created.entity);
        if (!r.ok) throw new Error(`refused: ${r.code}`);
      }
    }
    const total = ENTITIES * PER_ENTITY;
    const started = process.hrtime.bigint();
    session.sync.start();
    const deadline = Date.now() + 120_000;
    for (;;) {
      const all = session.mutations();
      if (all.length === total && all.every((m) => !isPending(m.state))) break;
      if (Date.now() > deadline) throw new Error(`catch-up: ${all.filter((m) => isPending(m.state)).length} of ${total} still pending after 120 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const s = seconds(started);
    const states = new Map<string, number>();
    for (const m of session.mutations()) states.set(m.state.kind, (states.get(m.state.kind) ?? 0) + 1);
    report.figure(`offline catch-up, ${total} mutations on ${ENTITIES} entities`, s, 's');
    const raw = `raw _bulk_docs write rate of the same CouchDB (batches of 500)`;
    report.figure(raw, await rawBulkDocsRate(stack.couch.server, total), 'docs/s');
    report.figure('offline catch-up rate (push, worker, service, status back on the device)', total / s, 'mutations/s', { baseline: raw });
    report.note(`catch-up outcomes: ${[...states].map(([k, n]) => `${k} ${n}`).join(', ')}`);
  } finally {
    await session.wipe({ confirm: true });
  }
}

async function latency(report: Report, stack: TestStack): Promise<void> {
  const tokens = await devTokens(stack.url, 'ben');
  const session = await open(stack.url, tokens, true);
  try {
    const waiters = new Map<string, () => void>();
    session.on('status', (m) => {
      if (m.state.kind !== 'queued' && !isPending(m.state)) waiters.get(m.mid)?.();
    });
    // Warm up: the first round trip opens connections and the feed.
    const samples: number[] = [];
    for (let i = 0; i < LATENCY + 5; i++) {
      const started = process.hrtime.bigint();
      let mid = '';
      const done = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no status after 20 s (${i})`)), 20_000);
        const settle = () => {
          clearTimeout(timer);
          resolve();
        };
        void session.mutate('patient.create', patient()).then((r) => {
          if (!r.ok) return reject(new Error(`refused: ${r.code}`));
          mid = r.mid;
          if (session.mutation(mid)?.state.kind === 'committed') settle();
          else waiters.set(mid, settle);
        }, reject);
      });
      await done;
      waiters.delete(mid);
      if (session.mutation(mid)?.state.kind !== 'committed') throw new Error(`not committed: ${JSON.stringify(session.mutation(mid)?.state)}`);
      if (i >= 5) samples.push(seconds(started) * 1000);
    }
    samples.sort((a, b) => a - b);
    report.figure(`online write → committed status, p50 (${LATENCY} mutations)`, percentile(samples, 50), 'ms');
    report.figure(`online write → committed status, p99 (${LATENCY} mutations)`, percentile(samples, 99), 'ms');
  } finally {
    await session.wipe({ confirm: true });
  }
}

export default async function clientBench(report: Report): Promise<void> {
  report.note(`loadavg at start ${(await import('node:os')).loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  await localThroughput(report);
  const stack = await startTestStack({ webApp: false });
  try {
    await catchUp(report, stack);
    await latency(report, stack);
  } finally {
    // Let PouchDB's last requests settle before the servers go.
    await new Promise((r) => setTimeout(r, 300));
    await stack.stop();
  }
  report.note(`device: memory adapter, batch_size ${DEFAULT_BATCH_SIZE} (the library default), PBKDF2 1,000 iterations for the bench keyring; full stack in this process on loopback (default worker timings, PGlite, NATS)`);
}
