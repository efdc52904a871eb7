import { expect } from 'chai';
import { parseArgs, UsageError, DEFAULTS } from '../../harness/options.ts';
import { buildSchedule, CHAOS_PLAN, type ScheduleInput } from '../../harness/schedule.ts';
import { CALM } from '../../harness/fault-proxy.ts';
import { percentile, summarise, throughput } from '../../harness/stats.ts';
import { seededRandom } from '../../harness/random.ts';
import { editedPatient, phiNeedles, syntheticPatient } from '../../harness/synthetic.ts';
import { patientCreateSchema } from '../../validators/patient.ts';
import { renderProgress } from '../../harness/progress.ts';

describe('harness: options', function () {
  const fixed = () => 99;
  it('defaults, with a random seed only when --seed is absent', function () {
    const o = parseArgs([], fixed);
    expect(o).to.deep.equal({ ...DEFAULTS, thinkMs: DEFAULTS.thinkMs, inject: [], seed: 99 });
  });
  it('parses every option, both --flag value and --flag=value', function () {
    const o = parseArgs(
      ['--devices', '50', '--tenants=3', '--mutations', '40', '--chaos', '--seed', '7', '--kills', '2', '--think-ms', '10,20', '--drain-timeout', '60', '--report', 'x.json', '--keep', '--inject', 'duplicate-event', '--inject=phi-log', '--database-url', 'postgres://x', '--nats-url', 'nats://y', '--progress', 'none', '--starve', '30'],
      fixed,
    );
    expect(o).to.deep.include({ devices: 50, tenants: 3, mutations: 40, chaos: true, seed: 7, kills: 2, thinkMs: [10, 20], drainTimeoutMs: 60_000, report: 'x.json', keep: true, inject: ['duplicate-event', 'phi-log'], databaseUrl: 'postgres://x', natsUrl: 'nats://y', progress: 'none', starveMs: 30_000 });
  });
  const bad: Array<[string[], RegExp]> = [
    [['--devices', '1'], /--devices/],
    [['--tenants', '0'], /--tenants/],
    [['--seed', '-1'], /--seed/],
    [['--think-ms', '20,10'], /MIN <= MAX/],
    [['--inject', 'everything'], /--inject/],
    [['--devices'], /needs a value/],
    [['--frobnicate'], /unknown option/],
    [['--starve', 'long'], /--starve/],
  ];
  for (const [argv, msg] of bad) {
    it(`refuses ${argv.join(' ')}`, function () {
      expect(() => parseArgs(argv, fixed)).to.throw(UsageError, msg);
    });
  }
  it('--help', function () {
    expect(parseArgs(['--chaos', '--help'], fixed)).to.equal('help');
  });
});

describe('harness: fault schedule', function () {
  const input: ScheduleInput = { seed: 7, devices: 8, tenants: 2, mutations: 10, chaos: true, kills: 1, thinkMs: [150, 600] };

  it('is a function of the seed alone: same seed, same schedule; another seed, another one', function () {
    expect(buildSchedule(input)).to.deep.equal(buildSchedule({ ...input }));
    expect(buildSchedule({ ...input, seed: 8 })).to.not.deep.equal(buildSchedule(input));
  });
  it('adding a device does not shift the others', function () {
    const a = buildSchedule(input);
    const b = buildSchedule({ ...input, devices: 9 });
    expect(b.devices.slice(0, 8).map((d) => [d.steps, d.offline, d.expireTokenAtMs])).to.deep.equal(a.devices.map((d) => [d.steps, d.offline, d.expireTokenAtMs]));
  });
  it('plans every fault: chaos plan, kills of both processes inside the window, a contested pair in one tenant, a tenant switch', function () {
    const s = buildSchedule(input);
    expect(s.plan).to.deep.equal(CHAOS_PLAN);
    expect(buildSchedule({ ...input, chaos: false }).plan).to.deep.equal(CALM);
    expect(s.kills.map((k) => k.target).sort()).to.deep.equal(['gateway', 'worker']);
    for (const k of s.kills) expect(k.atMs).to.be.within(0.15 * s.windowMs, 0.85 * s.windowMs);
    expect(s.contested).to.not.equal(null);
    expect(s.devices[s.contested!.a]!.tenant).to.equal(s.devices[s.contested!.b]!.tenant);
    expect(s.contested!.a).to.not.equal(s.contested!.b);
    expect(s.tenantSwitch).to.deep.equal({ device: 7, from: 1, to: 0 });
    expect(s.devices.some((d) => d.expireTokenAtMs.length > 0)).to.equal(true);
    for (const d of s.devices) {
      expect(d.steps).to.have.length(10);
      expect(d.steps[0]!.kind).to.equal('create');
      for (const st of d.steps) expect(st.thinkMs).to.be.within(150, 600);
    }
  });
  it('drops what the shape cannot carry: one tenant has no switch; devices ≤ tenants have no contested pair; --kills 0 kills nothing', function () {
    expect(buildSchedule({ ...input, tenants: 1 }).tenantSwitch).to.equal(null);
    expect(buildSchedule({ ...input, devices: 2, tenants: 2 }).contested).to.equal(null);
    expect(buildSchedule({ ...input, kills: 0 }).kills).to.deep.equal([]);
    // The switching device is never one of the contested pair.
    const small = buildSchedule({ ...input, devices: 3, tenants: 2 });
    expect(small.tenantSwitch).to.equal(null);
  });
});

describe('harness: synthetic patients', function () {
  it('are valid, seeded, and give their PHI values as needles', function () {
    const p = syntheticPatient(seededRandom(1), 'fac-1');
    expect(patientCreateSchema.safeParse(p).success).to.equal(true);
    expect(syntheticPatient(seededRandom(1), 'fac-1')).to.deep.equal(p);
    const e = editedPatient(seededRandom(2), p);
    expect(e.givenName).to.equal(p.givenName);
    expect(e.phone).to.not.equal(p.phone);
    expect(phiNeedles(p)).to.include.members([p.givenName, p.familyName, p.birthDate, p.identifiers[0]!.value, p.phone]);
  });
});

describe('harness: figures', function () {
  it('nearest-rank percentiles', function () {
    const xs = [15, 20, 35, 40, 50];
    expect(percentile(xs, 30)).to.equal(20);
    expect(percentile(xs, 40)).to.equal(20);
    expect(percentile(xs, 50)).to.equal(35);
    expect(percentile(xs, 100)).to.equal(50);
    expect(percentile([], 50)).to.equal(null);
    expect(percentile([7], 99)).to.equal(7);
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(summarise(hundred)).to.deep.equal({ count: 100, p50: 50, p90: 90, p99: 99, max: 100 });
    expect(() => percentile(xs, 0)).to.throw(RangeError);
  });
  it('throughput: terminal mutations per second from first capture to last terminal status', function () {
    expect(throughput([{ capturedAt: 0, terminalAt: 1000 }, { capturedAt: 500, terminalAt: 2000 }, { capturedAt: 600, terminalAt: null }])).to.equal(1);
    expect(throughput([{ capturedAt: 0, terminalAt: null }])).to.equal(null);
  });
  it('progress line', function () {
    const line = renderProgress({ phase: 'capture', elapsedMs: 12_000, captured: 3, planned: 10, terminal: 2, committed: 1, conflict: 1, rejected: 0, faults: { reset: 1, dropResponse: 2, duplicate: 3, offlineRefused: 4 }, kills: 1, offlineDevices: 2 });
    expect(line).to.match(/12s\] capture .*captured 3\/10 .*terminal 2 .*r1 d2 x3 o4 .*kills 1/);
  });
});
