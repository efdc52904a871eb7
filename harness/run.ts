// One harness run: start the infrastructure, drive the devices through the seeded fault schedule,
// drain, collect the facts, check the invariants and build the report. The decisions it relies
// on (schedule, checks, figures) are pure and live in their own files.

import { join } from 'node:path';
import { startFaultProxy, type FaultProxy } from './fault-proxy.ts';
import { forkRandom, type Random } from './random.ts';
import { starveCpu, type Starvation } from './starvation.ts';
import { buildSchedule, type Schedule } from './schedule.ts';
import { editedPatient, phiNeedles, syntheticPatient, type SyntheticPatient } from './synthetic.ts';
import { checkAll, type Facts, type MutationRecord } from './invariants.ts';
import { summarise, throughput } from './stats.ts';
import { invariantTable, type ProcessFault, type ReportFile } from './report.ts';
import type { HarnessOptions } from './options.ts';
import type { ProgressSnapshot } from './progress.ts';
import { ISSUER, startInfra, type Infra } from './infra.ts';
import type { ManagedProcess } from './processes.ts';
import { createLeaseStore } from '../gateway/worker/lease.ts';
import { SimDevice } from './devices.ts';
import { inboxDocs, publishDuplicateCreated, readLogs, serverFacts, streamEvents, streamLastSeq, unpublished } from './collect.ts';

export interface RunHooks {
  progress?(s: ProgressSnapshot): void;
  note?(line: string): void;
}

/** Scheduling allowance of a lease take-over on a loaded machine, beyond TTL + one tick. */
const TAKEOVER_SLACK_MS = 1_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

async function waitFor(check: () => boolean, timeoutMs: number, stepMs = 250): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(stepMs);
  }
  return check();
}

const TERMINAL = new Set(['committed', 'rejected', 'conflict']);
const isTerminal = (r: MutationRecord) => TERMINAL.has(r.state);
const asPayload = (p: SyntheticPatient) => p as unknown as Record<string, unknown>;

/** Runs `n` async jobs at most `limit` at a time. */
async function inBatches<T>(items: readonly T[], limit: number, fn: (t: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += limit) await Promise.all(items.slice(i, i + limit).map(fn));
}

/**
 * PouchDB 9's replication calls `src.info().then(…)` without a catch after each pulled batch
 * (pouchdb-replication lib/index.js, "writingCheckpoint"), so a connection reset at that moment is
 * an unhandled rejection, which ends a Node process. The harness hosts the devices, so during a
 * run it owns unhandled rejections: network failures from the device side are counted and shown
 * in the report; anything else is counted apart and printed.
 */
function hostRejections(note: (line: string) => void): { counts: { network: number; other: number }; restore(): void } {
  const saved = process.listeners('unhandledRejection');
  process.removeAllListeners('unhandledRejection');
  const counts = { network: 0, other: 0 };
  const handler = (reason: unknown) => {
    const e = reason as { name?: string; message?: string; cause?: { code?: string } } | null;
    // A reset connection: undici's "fetch failed", or a body cut short ("Unexpected end of JSON input").
    const network = (e?.name === 'TypeError' && e.message === 'fetch failed') || (e?.name === 'SyntaxError' && /end of JSON input/.test(e.message ?? ''));
    if (network) counts.network++;
    else {
      counts.other++;
      note(`harness: unhandled rejection in the device process: ${e?.name ?? typeof reason}: ${e?.message ?? ''}`);
    }
  };
  process.on('unhandledRejection', handler);
  return {
    counts,
    restore() {
      process.off('unhandledRejection', handler);
      for (const l of saved) process.on('unhandledRejection', l);
    },
  };
}

export async function runHarness(o: HarnessOptions, hooks: RunHooks = {}): Promise<ReportFile> {
  const startedAt = new Date();
  const schedule: Schedule = buildSchedule({ seed: o.seed, devices: o.devices, tenants: o.tenants, mutations: o.mutations, chaos: o.chaos, kills: o.kills, thinkMs: o.thinkMs });
  const note = hooks.note ?? (() => undefined);
  note(`harness: seed ${o.seed}; starting PostgreSQL schemas, ${o.couchdbUrl ? 'the external CouchDB' : 'embedded CouchDB'}, registration service, ${o.gateways} gateway(s) and ${o.workers} worker(s)…`);
  const infra: Infra = await startInfra({ tenants: o.tenants, databaseUrl: o.databaseUrl, natsUrl: o.natsUrl, couchdbUrl: o.couchdbUrl, gateways: o.gateways, workers: o.workers });
  const leases = createLeaseStore(infra.platform.db);
  const rejections = hostRejections(note);
  let proxy: FaultProxy | null = null;
  const timers: Array<ReturnType<typeof setTimeout>> = [];
  const devices: SimDevice[] = [];
  let starvation: Starvation | null = null;
  let starvedFor = 0;
  try {
    const tenants = infra.tenants;
    const startSeq = await streamLastSeq(infra.natsUrl);
    proxy = await startFaultProxy({ target: infra.gatewayUrls, plan: schedule.plan, randomFor: (d) => forkRandom(o.seed, `net:${d}`) });
    const records = new Map<string, MutationRecord>();
    const phi: Facts['phi'] = [];
    let phase = 'setup';
    let t0 = Date.now();
    const processFaults: ProcessFault[] = [];
    let offlineSpells = 0;

    const snapshot = (): ProgressSnapshot => {
      const all = [...records.values()];
      const c = proxy!.counts();
      return {
        phase,
        elapsedMs: Date.now() - startedAt.getTime(),
        captured: all.length,
        planned: o.devices * o.mutations + (schedule.contested ? 4 : 0) + (schedule.tenantSwitch ? 4 : 0),
        terminal: all.filter(isTerminal).length,
        committed: all.filter((r) => r.state === 'committed').length,
        conflict: all.filter((r) => r.state === 'conflict').length,
        rejected: all.filter((r) => r.state === 'rejected').length,
        faults: { reset: c.reset, dropResponse: c['drop-response'], duplicate: c.duplicate, offlineRefused: c['offline-refused'] },
        kills: processFaults.length,
        offlineDevices: devices.filter((d) => d.offline).length,
      };
    };
    const ticker = setInterval(() => hooks.progress?.(snapshot()), 500);
    timers.push(ticker as unknown as ReturnType<typeof setTimeout>);

    // Devices: one synthetic user each; the switching device's user is a member of two tenants.
    for (const ds of schedule.devices) {
      const name = `d${ds.index}`;
      const own = [tenants[ds.tenant]!];
      if (schedule.tenantSwitch?.device === ds.index) own.push(tenants[schedule.tenantSwitch.to]!);
      const user = await infra.addUser(`u${ds.index}-${infra.runTag}`, own);
      devices.push(
        new SimDevice({
          name,
          user,
          // Sign-in and refresh go straight to a gateway (not through the proxy), spread over all of
          // them; sync goes round robin through the proxy, so a token one gateway minted is used on all.
          gatewayUrl: infra.gatewayUrls[ds.index % infra.gatewayUrls.length]!,
          proxyUrl: proxy.deviceUrl(name),
          setProxyOffline: (off) => proxy!.setOffline(name, off),
          key: infra.key,
          issuer: ISSUER,
          reportsOnline: ds.index % 2 === 0,
          records,
          onChange: () => undefined,
        }),
      );
    }
    phase = 'login';
    await inBatches(devices, 4, async (d) => d.open(tenants[schedule.devices[devices.indexOf(d)]!.tenant]!));
    note(`harness: ${devices.length} devices open in ${tenants.length} tenants (${tenants.join(', ')}); capturing…`);

    phase = 'capture';
    t0 = Date.now();
    const at = (ms: number, fn: () => void) => timers.push(setTimeout(fn, ms));
    for (const ds of schedule.devices) {
      const dev = devices[ds.index]!;
      for (const spell of ds.offline) {
        at(spell.atMs, () => {
          offlineSpells++;
          dev.spell(true);
        });
        at(spell.atMs + spell.forMs, () => dev.spell(false));
      }
      for (const ms of ds.expireTokenAtMs) at(ms, () => void dev.expireToken());
    }

    // kill -9, then restart after the planned down time. With several gateways the k-th kill takes
    // gateway k mod N; a worker kill takes the holder of tenant k's lease, found in the lease table,
    // and times how long until another holder has it (a standby, or the victim restarted under a new id).
    const killIndex = { worker: 0, gateway: 0 };
    const victimOf = async (target: 'worker' | 'gateway'): Promise<{ proc: ManagedProcess; lease?: { tenant: string; holder: string } }> => {
      const k = killIndex[target]++;
      if (target === 'gateway') return { proc: infra.gateways[k % infra.gateways.length]! };
      const tenant = tenants[k % tenants.length]!;
      const h = await leases.holderOf(tenant);
      const holder = h?.live ? infra.workers.find((w) => w.id() === h.holder) : undefined;
      return holder ? { proc: holder, lease: { tenant, holder: h!.holder } } : { proc: infra.workers[k % infra.workers.length]! };
    };
    const takeover = async (tenant: string, from: string, killedAt: number): Promise<NonNullable<ProcessFault['lease']>> => {
      // The lease lapses within one TTL of the kill and the standby looks once a tick; its look is a
      // few sequential queries from a busy event loop, so 1 s more is allowed for a loaded machine.
      const limit = infra.lease.ttlMs + infra.lease.tickMs + TAKEOVER_SLACK_MS;
      for (;;) {
        const h = await leases.holderOf(tenant).catch(() => null);
        const ms = Date.now() - killedAt;
        if (h?.live && h.holder !== from) return { tenant, from, to: h.holder, takeoverMs: ms, limitMs: limit, withinTtl: ms <= limit };
        if (ms > limit + 30_000) return { tenant, from, to: null, takeoverMs: null, limitMs: limit, withinTtl: false };
        await sleep(25);
      }
    };
    const killChain = async (target: 'worker' | 'gateway') => {
      for (const k of schedule.kills.filter((x) => x.target === target)) {
        await sleep(t0 + k.atMs - Date.now());
        const { proc, lease } = await victimOf(target);
        const fault: ProcessFault = { target, name: proc.name, plannedAtMs: k.atMs, atMs: Date.now() - t0, killedPid: proc.pid() ?? null, backAfterMs: null };
        processFaults.push(fault);
        const killedAt = Date.now();
        await proc.kill9();
        infra.logger.info({ component: 'harness', target, name: proc.name, pid: fault.killedPid }, 'kill -9');
        note(`harness: kill -9 ${proc.name} (pid ${fault.killedPid}${lease ? `, holder of ${lease.tenant}'s lease` : ''}) at ${(fault.atMs / 1000).toFixed(1)} s`);
        // With a standby the take-over happens while the victim is down.
        const taken = lease && infra.workers.length > 1 ? takeover(lease.tenant, lease.holder, killedAt) : null;
        await sleep(k.downMs);
        const restartAt = Date.now();
        try {
          await proc.start();
          fault.backAfterMs = Date.now() - restartAt + k.downMs;
        } catch (err) {
          fault.error = (err as Error).message;
          // One more try: a run without its gateway or worker can only fail.
          await sleep(2_000);
          await proc.start().then(
            () => (fault.backAfterMs = Date.now() - restartAt + k.downMs),
            (e: Error) => (fault.error = e.message),
          );
        }
        // Alone, there is no standby: the worker's restart (backAfterMs) is the whole story.
        const t = taken ? await taken : null;
        if (t) {
          fault.lease = t;
          note(`harness: ${t.tenant}'s lease ${t.to ? `taken by ${t.to} ${t.takeoverMs} ms after the kill (limit ${t.limitMs} ms: TTL + one tick + 1 s)` : 'not taken over'}`);
        }
      }
    };

    const dataRandom = new Map<string, Random>();
    const dataFor = (label: string) => {
      let r = dataRandom.get(label);
      if (!r) dataRandom.set(label, (r = forkRandom(o.seed, `data:${label}`)));
      return r;
    };
    const remember = (entity: string, p: SyntheticPatient) => {
      for (const value of phiNeedles(p)) phi.push({ value, patient: entity });
    };

    const randomFlow = async (dev: SimDevice, di: number) => {
      const ds = schedule.devices[di]!;
      const r = dataFor(dev.name);
      const facility = `fac-${ds.tenant + 1}`;
      const mine: Array<{ entity: string; patient: SyntheticPatient }> = [];
      let next = t0;
      for (const step of ds.steps) {
        next += step.thinkMs;
        await sleep(next - Date.now());
        if (step.kind === 'create' || mine.length === 0) {
          const p = syntheticPatient(r, facility);
          const rec = await dev.capture('patient.create', asPayload(p));
          remember(rec.entity, p);
          mine.push({ entity: rec.entity, patient: p });
        } else {
          const target = mine[Math.floor(step.pick * mine.length)]!;
          const p = editedPatient(r, target.patient);
          await dev.capture('patient.update', asPayload(p), { entity: target.entity });
          remember(target.entity, p);
          target.patient = p;
        }
      }
    };

    let tenantSwitch: ReportFile['faults']['tenantSwitch'] = null;
    const switchFlow = async (dev: SimDevice) => {
      const sw = schedule.tenantSwitch!;
      const from = tenants[sw.from]!;
      const to = tenants[sw.to]!;
      tenantSwitch = { device: dev.name, from, to, queuedInFrom: 0, leftQueued: 0, completed: false };
      const r = dataFor(`${dev.name}:switch`);
      try {
        // Offline in `from`: these stay queued in from's store while the user works in `to`.
        dev.forceOffline(true);
        const p = syntheticPatient(r, `fac-${sw.from + 1}`);
        const c = await dev.capture('patient.create', asPayload(p));
        remember(c.entity, p);
        const p2 = editedPatient(r, p);
        await dev.capture('patient.update', asPayload(p2), { entity: c.entity });
        remember(c.entity, p2);
        tenantSwitch.queuedInFrom = 2;
        const { leftQueued } = await dev.switchTo(to);
        tenantSwitch.leftQueued = leftQueued;
        dev.forceOffline(false);
        const q = syntheticPatient(r, `fac-${sw.to + 1}`);
        const cq = await dev.capture('patient.create', asPayload(q));
        remember(cq.entity, q);
        const q2 = editedPatient(r, q);
        const uq = await dev.capture('patient.update', asPayload(q2), { entity: cq.entity });
        remember(cq.entity, q2);
        await waitFor(() => isTerminal(cq) && isTerminal(uq), o.drainTimeoutMs);
        // Back to `from`: its queue flushes now, with a `from` token.
        await dev.switchTo(from);
        tenantSwitch.completed = true;
      } catch (err) {
        tenantSwitch.error = (err as Error).message;
        dev.forceOffline(false);
      }
    };

    let concurrentEdit: ReportFile['faults']['concurrentEdit'] = null;
    const contestedFlow = async () => {
      const plan = schedule.contested!;
      await sleep(t0 + plan.atMs - Date.now());
      const a = devices[plan.a]!;
      const b = devices[plan.b]!;
      const r = dataFor('contested');
      const p = syntheticPatient(r, `fac-${schedule.devices[plan.a]!.tenant + 1}`);
      const create = await a.capture('patient.create', asPayload(p));
      remember(create.entity, p);
      const ce = { entity: create.entity, devices: [a.name, b.name] as [string, string], committed: null as string | null, conflict: null as string | null, merge: null as string | null } as NonNullable<typeof concurrentEdit>;
      concurrentEdit = ce;
      try {
        if (!(await waitFor(() => create.state === 'committed', o.drainTimeoutMs))) throw new Error(`create ${create.mid} did not commit (${create.state})`);
        const pa = editedPatient(r, p);
        const pb = editedPatient(r, p);
        remember(create.entity, pa);
        remember(create.entity, pb);
        const [ua, ub] = await Promise.all([
          a.capture('patient.update', asPayload(pa), { entity: create.entity, baseVersion: 1 }, 'contested'),
          b.capture('patient.update', asPayload(pb), { entity: create.entity, baseVersion: 1 }, 'contested'),
        ]);
        if (!(await waitFor(() => isTerminal(ua) && isTerminal(ub), o.drainTimeoutMs))) throw new Error('the concurrent edits did not both reach a terminal status');
        const winner = [ua, ub].find((x) => x.state === 'committed');
        const loser = [ua, ub].find((x) => x.state === 'conflict');
        ce.committed = winner?.mid ?? null;
        ce.conflict = loser?.mid ?? null;
        if (loser) {
          const merge = await (loser === ua ? a : b).resolveByMerge(loser.mid);
          ce.merge = merge.mid;
        }
      } catch (err) {
        ce.error = (err as Error).message;
      }
    };

    const work: Array<Promise<void>> = devices.map(async (dev, i) => {
      await randomFlow(dev, i);
      if (schedule.tenantSwitch?.device === i) await switchFlow(dev);
    });
    if (schedule.contested) work.push(contestedFlow());
    const kills = [killChain('worker'), killChain('gateway')];
    if (o.starveMs > 0) {
      starvation = starveCpu(o.starveMs);
      starvedFor = o.starveMs;
      note(`harness: starving the CPU (every core busy) for ${o.starveMs / 1000} s`);
    }
    const results = await Promise.allSettled([...work, ...kills]);
    const failed = results.filter((x): x is PromiseRejectedResult => x.status === 'rejected');
    for (const f of failed) note(`harness: a device flow failed: ${(f.reason as Error).message}`);

    // Drain: every device online, every mutation to a terminal status (chaos stays on).
    phase = 'drain';
    for (const t of timers.splice(1)) clearTimeout(t);
    for (const d of devices) d.allOnline();
    note(`harness: captured ${records.size} mutations; draining (up to ${o.drainTimeoutMs / 1000} s)…`);
    await waitFor(() => {
      for (const d of devices) d.refreshRecords();
      return [...records.values()].every(isTerminal);
    }, o.drainTimeoutMs, 500);

    phase = 'check';
    for (const d of devices) await d.close().catch((err: Error) => note(`harness: closing ${d.name} failed: ${err.message}`));
    clearInterval(ticker);
    hooks.progress?.(snapshot());
    let relayDrained = false;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline && !relayDrained; ) {
      relayDrained = (await unpublished(infra.serviceDb)) === 0;
      if (!relayDrained) await sleep(250);
    }
    if (!relayDrained) note('harness: the outbox relay did not drain within 60 s; missing events will show as violations');

    const mutations = [...records.values()].sort((x, y) => x.capturedAt - y.capturedAt);
    const injected: string[] = [];
    if (o.inject.includes('duplicate-event')) {
      const victim = mutations.filter((m) => m.op === 'patient.create' && m.state === 'committed').sort((x, y) => x.entity.localeCompare(y.entity))[0];
      if (victim) {
        await publishDuplicateCreated(infra.natsUrl, { tenant: victim.tenant, patientId: victim.entity, actingUser: victim.owner });
        injected.push(`duplicate-event:${victim.entity}`);
      }
    }
    if (o.inject.includes('phi-log')) {
      const leak = phi[0];
      if (leak) {
        // Deliberately unsafe: a log line carrying a generated name, as careless code would write it.
        infra.logger.info({ component: 'harness-inject', note: leak.value }, 'injected PHI');
        injected.push(`phi-log:${leak.patient}`);
      }
    }

    const server = await serverFacts(infra.serviceDb, tenants);
    const events = await streamEvents(infra.natsUrl, startSeq, tenants);
    const inbox = await inboxDocs(infra.couch.server, tenants);
    const settled = new Map(inbox.flatMap((d) => (d.settledAt != null ? [[d.id.slice(d.id.lastIndexOf(':') + 1), d.settledAt] as const] : [])));
    const deviceLocals: Facts['devices'] = [];
    for (const d of devices) {
      for (const t of d.tenantsOpened) deviceLocals.push({ device: d.name, tenant: t, owner: d.owner, ids: await d.localIds(t), guardDropped: d.guardDropped });
    }
    // Flush the children's logs: stop them now (the harness's own log closes with the infra).
    for (const g of infra.gateways) await g.stop();
    for (const w of infra.workers) await w.stop();
    await new Promise<void>((r) => setTimeout(r, 200));
    const logs = readLogs(infra.logDir, [join(infra.dataDir, 'couch', 'couch.log')]);

    const facts: Facts = { tenants, mutations, ...server, events, inbox, devices: deviceLocals, logs, phi };
    const violations = checkAll(facts);

    const byState: Record<string, number> = {};
    const byOutcome: Record<string, number> = {};
    for (const m of mutations) {
      byState[m.state] = (byState[m.state] ?? 0) + 1;
      const k = m.code ? `${m.state}:${m.code}` : m.state;
      byOutcome[k] = (byOutcome[k] ?? 0) + 1;
    }
    const c = proxy.counts();
    const tr = proxy.traffic();
    const tokens = devices.reduce(
      (acc, d) => ({
        expiredHanded: acc.expiredHanded + d.tokenStats.expiredHanded,
        refreshedAfter401: acc.refreshedAfter401 + d.tokenStats.refreshedAfterExpiry,
        refreshes: acc.refreshes + d.tokenStats.refreshes,
        reLogins: acc.reLogins + d.tokenStats.reLogins,
      }),
      { expiredHanded: 0, refreshedAfter401: 0, refreshes: 0, reLogins: 0 },
    );
    const { databaseUrl: _d, natsUrl: _n, couchdbUrl: _c, report: _r, ...shown } = o;
    const reproduce = ['npm run harness --', `--devices ${o.devices}`, o.gateways > 1 ? `--gateways ${o.gateways}` : '', o.workers > 1 ? `--workers ${o.workers}` : '', `--tenants ${o.tenants}`, `--mutations ${o.mutations}`, o.chaos ? '--chaos' : '', `--kills ${o.kills}`, `--think-ms ${o.thinkMs.join(',')}`, o.starveMs > 0 ? `--starve ${o.starveMs / 1000}` : '', `--seed ${o.seed}`]
      .filter(Boolean)
      .join(' ');
    const report: ReportFile = {
      ok: violations.length === 0,
      reproduce,
      seed: o.seed,
      runTag: infra.runTag,
      startedAt: startedAt.toISOString(),
      durationMs: Date.now() - startedAt.getTime(),
      options: shown,
      tenants,
      counts: { devices: devices.length, mutations: mutations.length, byState, byOutcome, patients: server.patients.length, events: events.length },
      faults: {
        network: {
          enabled: o.chaos,
          requests: tr.requests,
          byKind: tr.byKind,
          latencyMs: schedule.plan.latencyMs,
          addedLatencyMsTotal: tr.delayedMs,
          bandwidthBytesPerSec: schedule.plan.bandwidthBytesPerSec,
          throttledResponses: tr.throttled,
          reset: c.reset,
          dropResponse: c['drop-response'],
          duplicate: c.duplicate,
          offlineRefused: c['offline-refused'],
        },
        offlineSpells,
        starvedCpuMs: starvedFor,
        processes: processFaults,
        tokens,
        tenantSwitch,
        concurrentEdit,
        injected,
        unhandledRejections: { ...rejections.counts },
      },
      figures: {
        throughputPerSec: throughput(mutations),
        syncLatencyMs: summarise(mutations.filter((m) => m.terminalAt !== null).map((m) => m.terminalAt! - m.capturedAt)),
        toServerMs: summarise(mutations.flatMap((m) => (settled.has(m.mid) ? [settled.get(m.mid)! - m.capturedAt] : []))),
        backToDeviceMs: summarise(mutations.flatMap((m) => (settled.has(m.mid) && m.terminalAt !== null ? [Math.max(0, m.terminalAt - settled.get(m.mid)!)] : []))),
      },
      invariants: invariantTable(violations),
      violations,
      dataDir: infra.dataDir,
      kept: o.keep,
      schedule,
    };
    return report;
  } finally {
    starvation?.stop();
    for (const t of timers) clearTimeout(t);
    clearInterval(timers[0] as unknown as ReturnType<typeof setInterval>);
    for (const d of devices) await d.close().catch(() => undefined);
    await proxy?.close();
    await infra.close({ keep: o.keep });
    rejections.restore();
  }
}
