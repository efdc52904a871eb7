import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireNats, requirePostgres, TEST_DATABASE_URL, TEST_NATS_URL } from '../support/services.ts';
import type { ReportFile } from '../../harness/report.ts';

// The harness end to end, as `npm run harness` runs it (a child process, so its exit code counts):
// a short chaos run whose invariants all hold, and a run with an injected duplicate event (and a
// PHI log line) that must fail, naming the ids.

const CLI = fileURLToPath(new URL('../../scripts/harness.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

let running: ChildProcess | null = null;

function runCli(args: string[], report: string, timeoutMs: number): Promise<{ code: number | null; output: string; report: ReportFile }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, ...args, '--report', report, '--progress', 'lines', '--database-url', TEST_DATABASE_URL, '--nats-url', TEST_NATS_URL], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    running = child;
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      running = null;
      try {
        resolve({ code, output, report: JSON.parse(readFileSync(report, 'utf8')) as ReportFile });
      } catch {
        reject(new Error(`harness exited ${code} without a report:\n${output.slice(-4000)}`));
      } finally {
        rmSync(report, { force: true });
      }
    });
  });
}

describe('harness: end to end', function () {
  this.timeout(300_000);

  before(async function () {
    await requirePostgres(this);
    await requireNats(this);
  });
  after(function () {
    // SIGINT lets the CLI's exit hook kill its gateway and worker.
    running?.kill('SIGINT');
  });

  it('the same run on a starved CPU (seed 11, every core busy for the first 40 s, kills included): no mutation is left without a terminal status', async function () {
    const { code, output, report } = await runCli(['--devices', '8', '--tenants', '2', '--mutations', '10', '--chaos', '--seed', '11', '--starve', '40'], join(tmpdir(), `harness-report-${process.pid}-starved.json`), 280_000);
    expect(report.violations, output.slice(-3000)).to.deep.equal([]);
    expect(code).to.equal(0);
    expect(report.faults.starvedCpuMs).to.equal(40_000);
    expect(report.faults.processes.map((p) => p.target).sort()).to.deep.equal(['gateway', 'worker']);
    expect(report.counts.byState.committed).to.be.at.least(8 * 10);
  });

  it('a short chaos run (8 devices, 2 tenants, 10 mutations, seed 7): every fault happens and every invariant holds', async function () {
    const { code, output, report } = await runCli(['--devices', '8', '--tenants', '2', '--mutations', '10', '--chaos', '--seed', '7'], join(tmpdir(), `harness-report-${process.pid}-short.json`), 280_000);
    expect(report.violations, output.slice(-3000)).to.deep.equal([]);
    expect(code).to.equal(0);
    expect(report.ok).to.equal(true);
    expect(report.seed).to.equal(7);
    expect(report.invariants.every((i) => i.ok)).to.equal(true);
    const f = report.faults;
    expect(f.network.reset + f.network.dropResponse + f.network.duplicate).to.be.greaterThan(0);
    expect(f.network.addedLatencyMsTotal).to.be.greaterThan(0);
    expect(f.network.throttledResponses).to.be.greaterThan(0);
    expect(f.offlineSpells).to.be.greaterThan(0);
    expect(f.processes.map((p) => p.target).sort()).to.deep.equal(['gateway', 'worker']);
    for (const p of f.processes) expect(p.backAfterMs, p.error).to.be.a('number');
    expect(f.tokens.expiredHanded).to.be.greaterThan(0);
    expect(f.tokens.refreshedAfter401).to.be.greaterThan(0);
    expect(f.tenantSwitch?.completed).to.equal(true);
    expect(f.tenantSwitch!.leftQueued).to.be.greaterThan(0);
    expect(f.concurrentEdit?.committed).to.be.a('string');
    expect(f.concurrentEdit?.conflict).to.be.a('string');
    expect(f.concurrentEdit?.merge).to.be.a('string');
    expect(report.figures.throughputPerSec).to.be.greaterThan(0);
    expect(report.figures.syncLatencyMs.p50).to.be.a('number');
    expect(report.counts.mutations).to.be.at.least(8 * 10);
    expect(report.schedule.seed).to.equal(7);
  });

  it('across processes (2 gateways behind the proxy, 2 workers, PostgreSQL, embedded CouchDB, seed 5): one gateway of two and the lease holder killed -9, a standby takes the lease within TTL + one tick + 1 s, every invariant holds', async function () {
    const { code, output, report } = await runCli(
      ['--devices', '6', '--tenants', '2', '--mutations', '6', '--chaos', '--seed', '5', '--gateways', '2', '--workers', '2', '--kills', '2'],
      join(tmpdir(), `harness-report-${process.pid}-multi.json`),
      280_000,
    );
    expect(report.violations, output.slice(-3000)).to.deep.equal([]);
    expect(code).to.equal(0);
    expect(report.invariants.map((i) => i.name)).to.have.length(7);
    expect(report.invariants.every((i) => i.ok)).to.equal(true);
    const procs = report.faults.processes;
    // Each gateway killed once, in turn; each worker kill took the holder of a tenant's lease.
    expect(procs.filter((p) => p.target === 'gateway').map((p) => p.name).sort()).to.deep.equal(['gateway-1', 'gateway-2']);
    const workerKills = procs.filter((p) => p.target === 'worker');
    expect(workerKills).to.have.length(2);
    for (const p of procs) expect(p.backAfterMs, p.error).to.be.a('number');
    for (const p of workerKills) {
      expect(p.lease, p.name).to.be.an('object');
      expect(p.lease!.to, p.name).to.be.a('string').and.not.equal(p.lease!.from);
      expect(p.lease!.withinTtl, `${p.lease!.tenant}: ${p.lease!.takeoverMs} ms`).to.equal(true);
    }
    expect(report.counts.byState.committed).to.be.at.least(6 * 6);
    expect(output).to.match(/lease of h\d-\w+ +harness-/);
  });

  it('proof it can fail: an injected duplicate REGISTRATION.patient.created and a PHI log line are reported by id, exit 1', async function () {
    const { code, output, report } = await runCli(
      ['--devices', '3', '--tenants', '1', '--mutations', '3', '--kills', '0', '--seed', '11', '--inject', 'duplicate-event', '--inject', 'phi-log'],
      join(tmpdir(), `harness-report-${process.pid}-inject.json`),
      200_000,
    );
    expect(code, output.slice(-3000)).to.equal(1);
    expect(report.ok).to.equal(false);
    const victim = report.faults.injected.find((i) => i.startsWith('duplicate-event:'))!.split(':')[1]!;
    const leaked = report.faults.injected.find((i) => i.startsWith('phi-log:'))!.split(':')[1]!;
    const events = report.violations.filter((v) => v.invariant === 'one-event');
    expect(events).to.have.length(1);
    expect(events[0]!.ids).to.deep.equal([`${victim}@1×2`]);
    const phi = report.violations.filter((v) => v.invariant === 'no-phi-in-logs');
    expect(phi).to.have.length(1);
    expect(phi[0]!.ids).to.deep.equal(['harness.log', leaked]);
    // Nothing else broke, and the table names the ids.
    expect(report.violations.map((v) => v.invariant).sort()).to.deep.equal(['no-phi-in-logs', 'one-event']);
    expect(output).to.include(`${victim}@1×2`);
    expect(output).to.match(/FAIL/);
  });
});
