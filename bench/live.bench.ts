import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { createCouchServer } from '../couchdb/client.ts';
import { GATEWAY_PASSWORD_ENV, WORKER_PASSWORD_ENV } from '../couchdb/identities.ts';
import { provisionTenant } from '../couchdb/provision.ts';
import { createLeaseStore } from '../gateway/worker/lease.ts';
import { createPositionStore } from '../gateway/worker/position.ts';
import { createStatusWriter, type StatusWrite, type StatusWriter } from '../gateway/worker/status-writer.ts';
import type { Platform } from '../gateway/platform/open.ts';
import { createTokenIssuer, type TokenIssuer } from '../identity/tokens.ts';
import { startInfra, ISSUER, type Infra } from '../harness/infra.ts';
import { GATEWAY_ENTRY, managedProcess, type ManagedProcess } from '../harness/processes.ts';
import { percentile } from '../harness/stats.ts';
import { mid, status } from '../test/sync/support.ts';
import { mutationDoc, newEntity, patientPayload } from '../test/worker/fixture.ts';
import { cpuSecondsOf, rssBytesOf } from './cpu.ts';
import { Device, addressOf, send, type DeviceCounters, type DeviceSpec, type Seen } from './live-devices.ts';
import type { Report } from './run.ts';

// 1. Live devices at scale (issue 13 item 3). The harness's stack, each piece in its own process:
//    gateway (scripts/gateway.ts), worker (scripts/worker.ts), registration service, on PostgreSQL
//    (127.0.0.1:5432) with the embedded CouchDB. Up to 1,000 devices, each a distinct user with its
//    own session and token, hold a longpoll `_changes` on /sync/{tenant} with heartbeats and pull
//    as Ferry's device does (bench/live-devices.ts). The device count steps up (100, 250, 500,
//    1,000): at each step the gateway's RSS and CPU are read from /proc over a quiet interval, then
//    random devices' users push one `patient.create` each through /sync at a steady rate; the real
//    worker commits it with the registration service and writes its status; the figure is commit
//    (the status doc's `updatedAt`, stamped when the service has answered) → the status doc on the
//    device (after its `_bulk_get`). Then, with every device connected, the commit rate steps up
//    to find where p99 passes 1 s.
// 2. One user's pull cost with 10 other users in the tenant against 1,000, each user holding as
//    many statuses (written by the worker's own status writer): a fresh one-shot pull of the
//    user's statuses with the sequence PouchDB sends, timed, with the gateway's CouchDB requests
//    and bytes counted by a proxy in front of CouchDB, and feed_index tuples read from
//    pg_stat_user_indexes. DESIGN §4: the cost must not grow with the tenant's users.

const env = process.env;
const STEPS = (env.BENCH_LIVE_STEPS ?? '100,250,500,1000').split(',').map(Number);
const RATE = Number(env.BENCH_LIVE_RATE ?? 20);
const RATES = (env.BENCH_LIVE_RATES ?? '50,100').split(',').filter(Boolean).map(Number);
/** Status rates written by the bench's own status writer after the worker stops (its ceiling is ~30–50/s here). */
const WRITER_RATES = (env.BENCH_LIVE_WRITER_RATES ?? '100,200,400').split(',').filter(Boolean).map(Number);
const COMMIT_SECONDS = Number(env.BENCH_LIVE_COMMIT_SECONDS ?? 10);
const QUIET_MS = Number(env.BENCH_LIVE_QUIET_MS ?? 10_000);
/** Devices per source address: a clinic's devices behind one NAT. */
const PER_ADDRESS = Number(env.BENCH_LIVE_PER_ADDRESS ?? 10);
const PULL_OWN = Number(env.BENCH_LIVE_PULL_OWN ?? 50);
const PULL_LIMIT = Number(env.BENCH_LIVE_PULL_LIMIT ?? 20);
const PULL_OTHERS = [10, Number(env.BENCH_LIVE_PULL_MANY ?? 1000)] as const;
const DELIVERY_GOAL_MS = 1000;
/** Which parts run: `live`, `pull` or both (default). */
const PARTS = (env.BENCH_LIVE_PARTS ?? 'live,pull').split(',');
const PROFILED_GATEWAY = fileURLToPath(new URL('./profiled-gateway.ts', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const load = () => loadavg().map((l) => l.toFixed(1)).join(' ');

/** Users with a membership, an open session and an hour-long access token each (no passwords: no scrypt for 1,000). */
async function makeUsers(platform: Platform, issuer: TokenIssuer, tenant: string, prefix: string, n: number): Promise<Array<{ owner: string; token: string }>> {
  const out: Array<{ owner: string; token: string }> = [];
  for (let i = 0; i < n; i++) {
    const owner = `${prefix}${i}`;
    await platform.users.ensureExternal(owner);
    await platform.memberships.set(tenant, owner, ['registrar']);
    const { sid } = await platform.sessions.open(owner, tenant);
    out.push({ owner, token: await issuer.mintAccess({ sub: owner, owner, tid: tenant, roles: ['registrar'], sid }) });
  }
  return out;
}

interface Quiet {
  rssBytes: number;
  /** CPU seconds per wall second (1 = one core). */
  cpu: number;
}

async function quietInterval(pid: number, ms: number): Promise<Quiet> {
  const cpu0 = cpuSecondsOf(pid) ?? 0;
  const t0 = Date.now();
  await sleep(ms);
  const cpu1 = cpuSecondsOf(pid) ?? cpu0;
  return { rssBytes: rssBytesOf(pid) ?? 0, cpu: (cpu1 - cpu0) / ((Date.now() - t0) / 1000) };
}

interface Phase {
  label: string;
  pushed: Map<string, number>;
  commitToSeen: number[];
  pushToSeen: number[];
  /** Commit → `feed:head` past the status's counter in CouchDB (the worker's share). */
  commitToHead: number[];
  /** `feed:head` visible in CouchDB → on the device (the gateway's share, and the device's `_bulk_get`). */
  headToSeen: number[];
  refused: number;
  /** `updatedAt` of each delivered status: the rate the worker actually committed at. */
  committedAt: number[];
  /** Gateway CPU seconds from the first push until the phase drained. */
  gatewayCpu: number;
  /** Cores each process used over the phase (the machine has two). */
  cores: Record<string, number>;
  headMoves: number;
}

/** CPU seconds so far of the processes that share the machine in this bench (PostgreSQL's backends aside). */
function cpuOfStack(infra: Infra, gatewayPid: number): Record<string, number> {
  const own = process.cpuUsage();
  return {
    gateway: cpuSecondsOf(gatewayPid) ?? 0,
    worker: cpuSecondsOf(infra.workers[0]!.pid()) ?? 0,
    registration: cpuSecondsOf(infra.registration.pid()) ?? 0,
    couchdb: cpuSecondsOf(infra.couch.embedded?.pid()) ?? 0,
    'bench (devices)': (own.user + own.system) / 1e6,
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/**
 * scripts/gateway.ts as its own process on the bench's platform schema, as the harness runs it
 * (embedded CouchDB of the data dir unless `extra` names a COUCHDB_URL). With `profileFile`, under
 * V8's CPU profiler (bench/profiled-gateway.ts), which writes the profile on SIGUSR2.
 */
async function gatewayProcess(infra: Infra, name: string, extra: Record<string, string>, profileFile?: string): Promise<{ proc: ManagedProcess; base: URL }> {
  const port = await freePort();
  const proc = managedProcess({
    name,
    entry: profileFile ? PROFILED_GATEWAY : GATEWAY_ENTRY,
    logFile: join(infra.logDir, `${name}.log`),
    env: () => ({
      FERRY_DATA_DIR: infra.dataDir,
      DATABASE_URL: infra.databaseUrl,
      NATS_URL: infra.natsUrl,
      FERRY_PLATFORM_SCHEMA: infra.platformSchema,
      FERRY_REGISTRATION_SCHEMA: infra.registrationSchema,
      // /v1 is not used here; the devices only sync.
      FERRY_REGISTRATION_URL: 'http://127.0.0.1:9',
      FERRY_ISSUER: ISSUER,
      FERRY_OPERATOR_API: 'off',
      NODE_ENV: 'test',
      FERRY_PORT: String(port),
      FERRY_HOST: '127.0.0.1',
      ...(profileFile ? { BENCH_PROFILE_FILE: profileFile } : {}),
      ...extra,
    }),
  });
  await proc.start();
  return { proc, base: new URL(`http://127.0.0.1:${port}`) };
}

/** When each `feed:head` counter became visible in the inbox: a longpoll on CouchDB itself, as the gateway's watcher does. */
function watchHead(infra: Infra, tenant: string): { visibleAt(counter: number): number | null; moves(): number; stop(): void } {
  const moves: Array<{ counter: number; at: number }> = [];
  const controller = new AbortController();
  const { username, password } = infra.couch.identities.gateway;
  const authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  const changes = `${infra.couch.identities.url}/inbox_${encodeURIComponent(tenant)}/_changes?feed=longpoll&filter=_doc_ids&doc_ids=${encodeURIComponent('["feed:head"]')}&include_docs=true&heartbeat=10000`;
  void (async () => {
    let since: string | number = 'now';
    while (!controller.signal.aborted) {
      try {
        const res = await fetch(`${changes}&since=${encodeURIComponent(String(since))}`, { headers: { authorization }, signal: controller.signal });
        // Headers come at once (heartbeats follow): the move is seen when the body ends.
        const text = await res.text();
        const at = Date.now();
        const page = JSON.parse(text.trim()) as { results: Array<{ doc?: { counter?: number } }>; last_seq: string | number };
        since = page.last_seq;
        for (const r of page.results) if (typeof r.doc?.counter === 'number') moves.push({ counter: r.doc.counter, at });
      } catch {
        if (!controller.signal.aborted) await sleep(200);
      }
    }
  })();
  return {
    visibleAt(counter) {
      // Moves are in counter order; the first at or past `counter` made it readable.
      for (const m of moves) if (m.counter >= counter) return m.at;
      return null;
    },
    moves: () => moves.length,
    stop: () => controller.abort(),
  };
}

/** Least-squares slope of y over x. */
function slope(points: ReadonlyArray<[number, number]>): number {
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxy = points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? 0 : sxy / sxx;
}

async function liveDevices(report: Report, infra: Infra, issuer: TokenIssuer): Promise<void> {
  const tenant = infra.tenants[0]!;
  const profileFile = env.BENCH_LIVE_CPU_PROF ? join(env.BENCH_LIVE_CPU_PROF, `live-gateway-${Date.now()}.cpuprofile`) : undefined;
  const { proc: gatewayProc, base } = await gatewayProcess(infra, 'live-gateway', { FERRY_LOG_LEVEL: 'info' }, profileFile);
  const pid = gatewayProc.pid()!;
  const head = watchHead(infra, tenant);
  const max = Math.max(...STEPS);
  const users = await makeUsers(infra.platform, issuer, tenant, 'dev', max);
  const counters: DeviceCounters = { requests: 0, limited: 0, errors: 0, emptyPolls: 0 };
  const phaseOf = new Map<string, Phase>();
  const onSeen = (s: Seen) => {
    const phase = phaseOf.get(s.id);
    if (!phase || s.doc.state !== 'committed') return;
    phaseOf.delete(s.id);
    const committed = Date.parse(String(s.doc.updatedAt));
    phase.commitToSeen.push(s.at - committed);
    phase.committedAt.push(committed);
    phase.pushToSeen.push(s.at - phase.pushed.get(s.id)!);
    const visible = typeof s.doc.counter === 'number' ? head.visibleAt(s.doc.counter) : null;
    if (visible !== null) {
      phase.commitToHead.push(visible - committed);
      phase.headToSeen.push(s.at - visible);
    }
  };
  const devices: Device[] = [];
  const pushAgent = new http.Agent({ keepAlive: true, maxSockets: 32, localAddress: '127.2.0.1' });

  // Set once the worker process is stopped: statuses then come straight from the worker's own
  // status writer (as test/sync/support.ts writes them), at rates past what one worker commits.
  let writer: StatusWriter | null = null;
  const commitPhase = async (label: string, rate: number): Promise<Phase> => {
    const phase: Phase = { label, pushed: new Map(), commitToSeen: [], pushToSeen: [], commitToHead: [], headToSeen: [], refused: 0, committedAt: [], gatewayCpu: 0, cores: {}, headMoves: 0 };
    const cpu0 = cpuSecondsOf(pid) ?? 0;
    const stack0 = cpuOfStack(infra, pid);
    const moves0 = head.moves();
    const t0 = Date.now();
    const total = Math.round(rate * COMMIT_SECONDS);
    const started = Date.now();
    const inflight: Array<Promise<void>> = [];
    for (let k = 0; k < total; k++) {
      const due = started + (k * 1000) / rate;
      if (due > Date.now()) await sleep(due - Date.now());
      const device = devices[Math.floor(Math.random() * devices.length)]!;
      if (writer) {
        const m = mid();
        const id = `s:${device.spec.owner}:${m}`;
        phaseOf.set(id, phase);
        phase.pushed.set(id, Date.now());
        const doc = status(device.spec.owner, m, tenant, { updatedAt: new Date().toISOString() }) as unknown as StatusWrite;
        inflight.push(writer.write(doc).then(() => undefined, () => void phase.refused++));
        continue;
      }
      const doc = mutationDoc({ owner: device.spec.owner, tenant, entity: newEntity(), op: 'patient.create', payload: patientPayload() });
      const id = `s:${device.spec.owner}:${doc.mid}`;
      phaseOf.set(id, phase);
      phase.pushed.set(id, Date.now());
      inflight.push(
        send(pushAgent, base, 'POST', `/sync/${tenant}/_bulk_docs`, device.spec.token, { docs: [doc], new_edits: true }).then(
          (a) => {
            if (a.status !== 201 || a.text.includes('"error"')) phase.refused++;
          },
          () => void phase.refused++,
        ),
      );
    }
    await Promise.all(inflight);
    // Drain: every committed status should reach its device.
    const deadline = Date.now() + 20_000;
    while (phase.commitToSeen.length + phase.refused < total && Date.now() < deadline) await sleep(100);
    phase.gatewayCpu = (cpuSecondsOf(pid) ?? cpu0) - cpu0;
    const stack1 = cpuOfStack(infra, pid);
    const wall = (Date.now() - t0) / 1000;
    for (const k of Object.keys(stack1)) phase.cores[k] = (stack1[k]! - stack0[k]!) / wall;
    phase.headMoves = head.moves() - moves0;
    return phase;
  };

  const summarise = (p: Phase, baseline?: string): void => {
    const lost = p.pushed.size - p.commitToSeen.length;
    const p50 = percentile(p.commitToSeen, 50) ?? NaN;
    const p99 = percentile(p.commitToSeen, 99) ?? NaN;
    report.figure(`status delivery p50, ${p.label}`, p50, 'ms');
    report.figure(`status delivery p99, ${p.label}`, p99, 'ms', baseline ? { baseline } : {});
    report.figure(`gateway CPU per delivered status, ${p.label}`, (p.gatewayCpu / Math.max(1, p.commitToSeen.length)) * 1000, 'ms', {
      note: 'its push through /sync, the wake-up, the re-poll, _bulk_get and the _local checkpoint',
    });
    const ms = (xs: number[], q: number) => percentile(xs, q) ?? NaN;
    // Pushed at the phase's rate; past the worker's own throughput, it commits more slowly (and push → seen grows).
    const span = (Math.max(...p.committedAt) - Math.min(...p.committedAt)) / 1000;
    const achieved = span > 0 ? (p.committedAt.length - 1) / span : NaN;
    report.note(
      `${p.label}: commit → feed:head moved in CouchDB (worker) p50 ${ms(p.commitToHead, 50)} / p99 ${ms(p.commitToHead, 99)} ms; ` +
        `feed:head moved → on the device (gateway + device's _bulk_get) p50 ${ms(p.headToSeen, 50)} / p99 ${ms(p.headToSeen, 99)} ms; ` +
        `worker committed ${achieved.toFixed(0)}/s; ${p.headMoves} head moves; cores used: ${Object.entries(p.cores).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`,
    );
    report.note(
      `${p.label}: ${p.commitToSeen.length} statuses delivered (commit → on the device), ${lost} not seen within 20 s, ${p.refused} pushes refused; ` +
        `push → on the device p50 ${percentile(p.pushToSeen, 50)} ms, p99 ${percentile(p.pushToSeen, 99)} ms (includes the worker's commit); load ${load()}`,
    );
  };

  try {
    await sleep(5_000);
    const idle0 = await quietInterval(pid, QUIET_MS);
    report.figure('gateway RSS, no devices', idle0.rssBytes / 2 ** 20, 'MB');
    report.figure('gateway CPU, no devices', idle0.cpu * 100, '% of a core');
    let firstP99: string | undefined;
    const over: string[] = [];
    const idlePoints: Array<{ n: number; idle: Quiet }> = [];
    for (const n of STEPS) {
      const added: Device[] = [];
      for (let i = devices.length; i < n; i++) {
        const spec: DeviceSpec = { owner: users[i]!.owner, tenant, token: users[i]!.token, address: addressOf(i, PER_ADDRESS) };
        const d = new Device(spec, base, onSeen, counters);
        devices.push(d);
        added.push(d);
      }
      // Connect in waves of 50, as devices coming online do, not all in one instant.
      const connectStarted = Date.now();
      for (let i = 0; i < added.length; i += 50) {
        const wave = added.slice(i, i + 50);
        for (const d of wave) d.start();
        await Promise.race([Promise.all(wave.map((d) => d.connected)), sleep(30_000)]);
      }
      report.note(`${n} devices: the ${added.length} new ones connected in ${((Date.now() - connectStarted) / 1000).toFixed(1)} s (longpoll headers back)`);
      // The first commits warm the worker, the service and every process's JIT: not measured.
      if (firstP99 === undefined) await commitPhase('warm-up', RATE);
      await sleep(2_000);
      const idle = await quietInterval(pid, QUIET_MS);
      idlePoints.push({ n, idle });
      report.figure(`gateway RSS, ${n} idle devices`, idle.rssBytes / 2 ** 20, 'MB', { baseline: 'gateway RSS, no devices' });
      report.figure(`gateway CPU, ${n} idle devices`, idle.cpu * 100, '% of a core');
      const phase = await commitPhase(`${n} devices, ${RATE} commits/s`, RATE);
      summarise(phase, firstP99);
      firstP99 ??= `status delivery p99, ${phase.label}`;
      if ((percentile(phase.commitToSeen, 99) ?? Infinity) > DELIVERY_GOAL_MS) over.push(phase.label);
    }
    const n = devices.length;
    // Slopes over the steps: a single difference is mostly where the GC happened to be. With one
    // step, the difference from no devices is all there is.
    if (idlePoints.length === 1) idlePoints.unshift({ n: 0, idle: idle0 });
    report.figure('gateway RSS per idle device', slope(idlePoints.map((p) => [p.n, p.idle.rssBytes])) / 1024, 'KB', {
      note: `least-squares slope of RSS over ${idlePoints.map((p) => p.n).join('/')} idle devices`,
    });
    report.figure('gateway CPU per idle device', slope(idlePoints.map((p) => [p.n, p.idle.cpu])) * 1e6, 'µs/s', {
      note: `slope over the steps; ${QUIET_MS / 1000} s quiet intervals: heartbeats every 10 s, few of the re-polls after the 60 s longpoll cap`,
    });
    for (const rate of RATES) {
      const phase = await commitPhase(`${n} devices, ${rate} commits/s`, rate);
      summarise(phase, firstP99);
      if ((percentile(phase.commitToSeen, 99) ?? Infinity) > DELIVERY_GOAL_MS) over.push(phase.label);
    }
    if (WRITER_RATES.length > 0) {
      // The gateway's own delivery ceiling: the worker process goes, its lease lapses, and the
      // bench writes the statuses under a lease of its own.
      for (const w of infra.workers) await w.stop();
      let lease = null;
      for (let i = 0; i < 50 && !lease; i++) {
        lease = await createLeaseStore(infra.platform.db).acquire(tenant, 'live-bench', 3_600_000);
        if (!lease) await sleep(200);
      }
      if (!lease) throw new Error('live bench: the worker lease did not lapse');
      const workerCouch = createCouchServer({ url: infra.couch.identities.url, auth: infra.couch.identities.worker });
      writer = createStatusWriter({ db: workerCouch.db(`inbox_${tenant}`), lease, positions: createPositionStore(infra.platform.db), assertLease: () => undefined });
      for (const rate of WRITER_RATES) {
        const phase = await commitPhase(`${n} devices, ${rate} statuses/s from the status writer`, rate);
        summarise(phase, firstP99);
        if ((percentile(phase.commitToSeen, 99) ?? Infinity) > DELIVERY_GOAL_MS) over.push(phase.label);
      }
    }
    report.note(
      over.length > 0
        ? `delivery p99 above ${DELIVERY_GOAL_MS} ms at: ${over.join('; ')} (a single step above it, between steps below, is the shared machine, not the load)`
        : `delivery p99 stayed under ${DELIVERY_GOAL_MS} ms at every step (up to ${n} devices and ${Math.max(RATE, ...RATES)} commits/s)`,
    );
    report.note(
      `devices sent ${counters.requests} requests; ${counters.limited} were 429, ${counters.errors} failed, ${counters.emptyPolls} longpolls ended empty; ` +
        `${PER_ADDRESS} devices per source address`,
    );
  } finally {
    await Promise.all(devices.map((d) => d.stop()));
    pushAgent.destroy();
    head.stop();
    if (profileFile) {
      process.kill(pid, 'SIGUSR2');
      for (let i = 0; i < 100 && !existsSync(profileFile); i++) await sleep(100);
      await sleep(500);
      report.note(`gateway CPU profile of the whole live run: ${profileFile}`);
    }
    await gatewayProc.stop(15_000);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Pull cost against the number of users in the tenant

interface Upstream {
  requests: Record<string, number>;
  bytes: number;
}

/** A pass-through HTTP proxy in front of CouchDB that counts what the gateway asks of it. */
async function countingProxy(target: string): Promise<{ url: string; counts: Upstream; reset(): void; close(): Promise<void> }> {
  const to = new URL(target);
  const counts: Upstream = { requests: {}, bytes: 0 };
  const kindOf = (path: string): string => {
    const p = decodeURIComponent(path.split('?')[0]!);
    if (p.endsWith('/feed:head')) return 'feed:head';
    const last = p.split('/').pop() ?? '';
    return last.startsWith('_') ? last : 'other';
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    const kind = kindOf(req.url ?? '/');
    counts.requests[kind] = (counts.requests[kind] ?? 0) + 1;
    const up = http.request({ agent, host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.on('data', (c: Buffer) => (counts.bytes += c.length));
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    reset() {
      counts.requests = {};
      counts.bytes = 0;
    },
    close: () =>
      new Promise<void>((r) => {
        agent.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The caller's queries of feed.ts (a page of the range, the newest counter) as PostgreSQL runs them: rows and pages touched. */
async function feedIndexPlan(infra: Infra, tenant: string, owner: string): Promise<{ rows: number; pages: number }> {
  type Plan = { 'Actual Rows': number; 'Shared Hit Blocks'?: number; 'Shared Read Blocks'?: number; Plans?: Plan[] };
  const walk = (p: Plan, leaf: (p: Plan) => void): void => {
    if (!p.Plans?.length) leaf(p);
    for (const c of p.Plans ?? []) walk(c, leaf);
  };
  // As autovacuum would have by now: the freshly written rows' statistics (the plan of max() depends on them).
  await infra.platform.db.query('ANALYZE feed_index');
  let rows = 0;
  let pages = 0;
  const queries: Array<[string, unknown[]]> = [
    [`SELECT doc_id, counter FROM feed_index WHERE tenant = $1 AND owner = $2 AND counter > $3 AND counter <= $4 ORDER BY counter ASC LIMIT $5`, [tenant, owner, 0, Number.MAX_SAFE_INTEGER, PULL_LIMIT]],
    ['SELECT max(counter) AS counter FROM feed_index WHERE tenant = $1 AND owner = $2 AND counter <= $3', [tenant, owner, Number.MAX_SAFE_INTEGER]],
  ];
  for (const [sql, params] of queries) {
    const { rows: out } = await infra.platform.db.query<{ 'QUERY PLAN': Array<{ Plan: Plan }> }>(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${sql}`, params);
    const plan = out[0]!['QUERY PLAN'][0]!.Plan;
    // Rows the scans at the leaves produced (what was read), pages from the top node (it sums its children).
    walk(plan, (leaf) => (rows += leaf['Actual Rows']));
    pages += (plan['Shared Hit Blocks'] ?? 0) + (plan['Shared Read Blocks'] ?? 0);
  }
  return { rows, pages };
}

interface PullCost {
  ms: number;
  gatewayRequests: number;
  couchRequests: number;
  couchBytes: number;
  /** feed_index rows read by the scans of one range page and one newest-counter probe. */
  tuples: number;
  pages: number;
  kinds: Record<string, number>;
}

/** A fresh one-shot pull of the caller's statuses, with the requests PouchDB sends for it. */
async function onePull(base: URL, tenant: string, token: string, expected: number): Promise<{ ms: number; requests: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const path = (p: string) => `/sync/${tenant}${p}`;
  const repid = `_local/${mid()}`;
  let requests = 0;
  const ask = async (method: string, p: string, body?: unknown) => {
    requests++;
    const a = await send(agent, base, method, path(p), token, body);
    if (a.status >= 400 && !(a.status === 404 && p.startsWith('/_local'))) throw new Error(`pull: ${method} ${p.split('?')[0]} answered ${a.status}`);
    return a;
  };
  const started = process.hrtime.bigint();
  await ask('GET', '');
  await ask('GET', `/${repid}`);
  let since = 0;
  let got = 0;
  let rev: string | null = null;
  for (;;) {
    const page = JSON.parse((await ask('GET', `/_changes?style=all_docs&since=${since}&limit=${PULL_LIMIT}`)).text) as {
      results: Array<{ id: string; changes: Array<{ rev: string }> }>;
      last_seq: number;
    };
    if (page.results.length > 0) {
      const docs = JSON.parse((await ask('POST', '/_bulk_get?revs=true&latest=true', { docs: page.results.map((r) => ({ id: r.id, rev: r.changes[0]!.rev })) })).text) as {
        results: unknown[];
      };
      got += docs.results.length;
      since = page.last_seq;
      await ask('GET', '');
      const put = await ask('PUT', `/${repid}`, { _id: repid, last_seq: since, ...(rev ? { _rev: rev } : {}) });
      rev = (JSON.parse(put.text) as { rev: string }).rev;
    }
    if (page.results.length < PULL_LIMIT) break;
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  agent.destroy();
  if (got !== expected) throw new Error(`pull fetched ${got} of ${expected} statuses`);
  return { ms, requests };
}

async function pullCost(report: Report, infra: Infra, issuer: TokenIssuer): Promise<void> {
  const positions = createPositionStore(infra.platform.db);
  const leases = createLeaseStore(infra.platform.db);
  const workerCouch = createCouchServer({ url: infra.couch.identities.url, auth: infra.couch.identities.worker });
  const tenants = PULL_OTHERS.map((n, i) => ({ others: n, tenant: `pull${i}-${infra.runTag}` }));
  const puller: Record<string, string> = {};
  for (const { others, tenant } of tenants) {
    await provisionTenant({ admin: infra.couch.server, tenant, registry: infra.platform.tenants });
    const [user] = await makeUsers(infra.platform, issuer, tenant, 'puller', 1);
    puller[tenant] = user!.token;
    const lease = await leases.acquire(tenant, 'live-bench', 3_600_000);
    if (!lease) throw new Error('pull bench: lease not acquired');
    const writer = createStatusWriter({ db: workerCouch.db(`inbox_${tenant}`), lease, positions, assertLease: () => undefined });
    // Round-robin over the users, so the puller's rows are spread over the tenant's whole counter range.
    const owners = ['puller0', ...Array.from({ length: others }, (_, u) => `other${u}`)];
    const started = Date.now();
    let pending: Array<Promise<unknown>> = [];
    for (let round = 0; round < PULL_OWN; round++) {
      for (const owner of owners) {
        pending.push(writer.write(status(owner, mid(), tenant) as unknown as StatusWrite));
        if (pending.length >= 2_000) {
          await Promise.all(pending);
          pending = [];
        }
      }
    }
    await Promise.all(pending);
    await writer.settled();
    report.note(`pull: ${owners.length * PULL_OWN} statuses written to inbox_${tenant} (${owners.length} users × ${PULL_OWN}) in ${((Date.now() - started) / 1000).toFixed(1)} s by the worker's status writer`);
  }

  // A gateway of its own whose CouchDB requests go through the counting proxy.
  const proxy = await countingProxy(infra.couch.identities.url);
  const { admin, gateway, worker } = infra.couch.identities;
  const proxied = new URL(proxy.url);
  proxied.username = encodeURIComponent(admin.username);
  proxied.password = encodeURIComponent(admin.password);
  const { proc: gw, base } = await gatewayProcess(infra, 'pull-gateway', {
    FERRY_LOG_LEVEL: 'warn',
    COUCHDB_URL: proxied.toString(),
    [GATEWAY_PASSWORD_ENV]: gateway.password,
    [WORKER_PASSWORD_ENV]: worker.password,
  });
  try {
    const costs: PullCost[] = [];
    // Warm: the first read of an inbox opens it.
    for (const { tenant } of tenants) await onePull(base, tenant, puller[tenant]!, PULL_OWN);
    for (const { tenant } of tenants) {
      const runs = 3;
      proxy.reset();
      const times: number[] = [];
      let requests = 0;
      for (let i = 0; i < runs; i++) {
        const r = await onePull(base, tenant, puller[tenant]!, PULL_OWN);
        times.push(r.ms);
        requests += r.requests;
      }
      const kinds = { ...proxy.counts.requests };
      const couchRequests = Object.values(kinds).reduce((a, b) => a + b, 0) / runs;
      const couchBytes = proxy.counts.bytes / runs;
      const plan = await feedIndexPlan(infra, tenant, 'puller0');
      costs.push({ ms: percentile(times, 50)!, gatewayRequests: requests / runs, couchRequests, couchBytes, tuples: plan.rows, pages: plan.pages, kinds });
    }
    const [few, many] = costs as [PullCost, PullCost];
    const label = (n: number) => `one user's pull of ${PULL_OWN} statuses, ${n} other users`;
    report.figure(`${label(PULL_OTHERS[0])}: time`, few.ms, 'ms');
    report.figure(`${label(PULL_OTHERS[1])}: time`, many.ms, 'ms', { baseline: `${label(PULL_OTHERS[0])}: time` });
    const pairs: Array<[string, keyof PullCost, string]> = [
      ['gateway requests', 'gatewayRequests', 'requests'],
      ['CouchDB requests', 'couchRequests', 'requests'],
      ['CouchDB bytes', 'couchBytes', 'bytes'],
      ['feed_index rows read by a page + a newest-counter probe', 'tuples', 'rows'],
      ['feed_index pages touched by a page + a newest-counter probe', 'pages', 'pages'],
    ];
    for (const [what, key, unit] of pairs) {
      report.figure(`${label(PULL_OTHERS[0])}: ${what}`, few[key] as number, unit);
      report.figure(`${label(PULL_OTHERS[1])}: ${what}`, many[key] as number, unit, { baseline: `${label(PULL_OTHERS[0])}: ${what}` });
    }
    report.note(`pull: CouchDB requests by kind per ${3} pulls, ${PULL_OTHERS[0]} others ${JSON.stringify(few.kinds)}, ${PULL_OTHERS[1]} others ${JSON.stringify(many.kinds)}; pages of ${PULL_LIMIT}; median of 3; load ${load()}`);
  } finally {
    await gw.stop();
    await proxy.close();
  }
}

export default async function liveBench(report: Report): Promise<void> {
  report.note(`loadavg at start ${load()} (2-core machine shared with other work)`);
  const infra = await startInfra({ tenants: 1 });
  try {
    const key = infra.key;
    // Tokens that outlive the bench (the gateway checks the session on every request anyway).
    const issuer = createTokenIssuer({ key, issuer: ISSUER, accessTtlSeconds: 3600 });
    // The harness's gateway is replaced by one this bench starts (so it can be profiled).
    for (const g of infra.gateways) await g.stop();
    if (PARTS.includes('live')) await liveDevices(report, infra, issuer);
    // The pull bench writes statuses under a lease of its own: no worker may hold the new tenants.
    for (const w of infra.workers) await w.stop();
    if (PARTS.includes('pull')) await pullCost(report, infra, issuer);
  } finally {
    await infra.close({ keep: false });
  }
}
