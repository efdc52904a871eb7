import { expect } from 'chai';
import { checkAll, type Facts, type MutationRecord, type InvariantName } from '../../harness/invariants.ts';
import { invariantTable, renderReport, type Report } from '../../harness/report.ts';

// Case tables for the harness's invariants over plain data: a clean run passes, and each kind of
// breakage is reported under the right invariant with the offending ids (never PHI).

const mid = (n: number) => `00000000-0000-7000-8000-${String(n).padStart(12, '0')}`;
const P1 = 'pat_00000000-0000-7000-8000-000000000001';
const P2 = 'pat_00000000-0000-7000-8000-000000000002';

function rec(n: number, over: Partial<MutationRecord>): MutationRecord {
  return {
    mid: mid(n),
    device: 'd0',
    tenant: 'ta',
    owner: 'u0',
    entity: P1,
    op: 'patient.update',
    seq: n,
    after: null,
    resolves: null,
    capturedAt: 1000 * n,
    terminalAt: 1000 * n + 500,
    state: 'committed',
    code: null,
    version: null,
    expect: 'commit',
    ...over,
  };
}

/** d0 creates P1 and updates it twice; d1 (tenant tb) creates P2; d2 contests P1 with d0 and merges. */
function cleanFacts(): Facts {
  const mutations = [
    rec(1, { op: 'patient.create', version: 1 }),
    rec(2, { after: mid(1), version: 2 }),
    rec(3, { after: mid(2), version: 3, expect: 'contested' }),
    rec(4, { device: 'd2', owner: 'u2', seq: 1, version: null, state: 'conflict', code: 'VERSION_CONFLICT', expect: 'contested' }),
    rec(5, { device: 'd2', owner: 'u2', seq: 2, after: mid(4), resolves: mid(4), version: 4 }),
    rec(6, { device: 'd1', owner: 'u1', tenant: 'tb', entity: P2, op: 'patient.create', seq: 1, version: 1 }),
  ];
  const versions = (id: string, n: number) => Array.from({ length: n }, (_, i) => ({ patientId: id, version: i + 1 }));
  return {
    tenants: ['ta', 'tb'],
    mutations,
    patients: [
      { id: P1, tenant: 'ta', version: 4 },
      { id: P2, tenant: 'tb', version: 1 },
    ],
    audit: [...versions(P1, 4), ...versions(P2, 1)],
    outbox: [...versions(P1, 4), ...versions(P2, 1)],
    events: [
      ...versions(P1, 4).map((e, i) => ({ ...e, seq: i + 10, tenant: 'ta', subject: e.version === 1 ? 'REGISTRATION.patient.created' : 'REGISTRATION.patient.updated' })),
      { patientId: P2, version: 1, seq: 20, tenant: 'tb', subject: 'REGISTRATION.patient.created' },
    ],
    inbox: [
      ...mutations.filter((m) => m.tenant === 'ta').flatMap((m) => [`m:${m.owner}:${m.mid}`, `s:${m.owner}:${m.mid}`].map((id) => ({ inbox: 'ta', id, tenant: 'ta' }))),
      { inbox: 'tb', id: `m:u1:${mid(6)}`, tenant: 'tb' },
      { inbox: 'tb', id: `s:u1:${mid(6)}`, tenant: 'tb' },
    ],
    devices: [
      { device: 'd0', tenant: 'ta', owner: 'u0', ids: [1, 2, 3].map((n) => `m:u0:${mid(n)}`).concat('_local/x', 'd:draft'), guardDropped: 0 },
      { device: 'd1', tenant: 'tb', owner: 'u1', ids: [`m:u1:${mid(6)}`, `s:u1:${mid(6)}`], guardDropped: 0 },
    ],
    logs: [{ name: 'gateway.log', text: '{"msg":"ok","tenant":"ta"}' }],
    phi: [
      { value: 'Bakedosa', patient: P1 },
      { value: '1987-03-14', patient: P1 },
    ],
  };
}

function only(f: Facts): Array<{ invariant: InvariantName; ids: string[] }> {
  return checkAll(f).map((v) => ({ invariant: v.invariant, ids: v.ids }));
}

describe('harness: invariants', function () {
  it('a clean run has no violations', function () {
    expect(checkAll(cleanFacts())).to.deep.equal([]);
  });

  const cases: Array<[string, (f: Facts) => void, InvariantName, string[]]> = [
    ['a mutation still queued on its device', (f) => void (f.mutations[1]!.state = 'retrying'), 'terminal-status', [mid(2)]],
    ['a valid mutation rejected', (f) => Object.assign(f.mutations[5]!, { state: 'rejected', code: 'DEPENDENCY_FAILED' }), 'expected-outcome', [mid(6)]],
    ['both contested edits committed (a lost update)', (f) => Object.assign(f.mutations[3]!, { state: 'committed', code: null, version: 5 }), 'expected-outcome', [P1, mid(3), mid(4)]],
    ['a second patient row from a replayed create', (f) => void f.patients.push({ id: 'pat_00000000-0000-7000-8000-000000000009', tenant: 'ta', version: 1 }), 'one-server-effect', ['pat_00000000-0000-7000-8000-000000000009']],
    ['a version that counts an update twice', (f) => void (f.patients[0]!.version = 5), 'one-server-effect', [P1]],
    ['two audit rows for one version', (f) => void f.audit.push({ patientId: P2, version: 1 }), 'one-server-effect', [`${P2}@1`]],
    ['a duplicate JetStream event', (f) => void f.events.push({ patientId: P2, version: 1, seq: 99, tenant: 'tb', subject: 'REGISTRATION.patient.created' }), 'one-event', [`${P2}@1×2`]],
    ['a missing JetStream event', (f) => void f.events.splice(1, 1), 'one-event', [`${P1}@2:${mid(2)}`]],
    ['an update committed below its predecessor', (f) => Object.assign(f.mutations[1]!, { seq: 4 }), 'entity-order', [mid(2)]],
    ['a tenant-a doc in the tenant-b inbox', (f) => void f.inbox.push({ inbox: 'tb', id: `m:u0:${mid(1)}`, tenant: 'ta' }), 'tenant-isolation', [`tb:${mid(1)}`]],
    ['a tenant-b doc on a tenant-a device', (f) => void f.devices[0]!.ids.push(`s:u1:${mid(6)}`), 'tenant-isolation', [`d0:${mid(6)}`]],
    ['a foreign doc dropped by the pull guard', (f) => void (f.devices[1]!.guardDropped = 2), 'tenant-isolation', ['d1']],
    ['a name in a log', (f) => void (f.logs[0]!.text += ' Bakedosa'), 'no-phi-in-logs', ['gateway.log', P1]],
  ];
  for (const [name, breakIt, invariant, ids] of cases) {
    it(`reports ${name} under ${invariant}, naming ids`, function () {
      const f = cleanFacts();
      breakIt(f);
      const found = only(f).filter((v) => v.invariant === invariant);
      expect(found, JSON.stringify(only(f))).to.have.length.greaterThan(0);
      expect(found.flatMap((v) => v.ids)).to.include.members(ids);
    });
  }

  it('never puts a PHI value in a violation', function () {
    const f = cleanFacts();
    f.logs[0]!.text += ' Bakedosa 1987-03-14';
    const text = JSON.stringify(checkAll(f));
    expect(text).to.not.include('Bakedosa');
    expect(text).to.not.include('1987-03-14');
  });

  it('the report table says PASS or FAIL and lists violations with ids', function () {
    const f = cleanFacts();
    f.events.push({ patientId: P2, version: 1, seq: 99, tenant: 'tb', subject: 'REGISTRATION.patient.created' });
    const violations = checkAll(f);
    const report = {
      ok: false,
      reproduce: 'npm run harness -- --seed 7',
      seed: 7,
      runTag: 'abc',
      startedAt: new Date(0).toISOString(),
      durationMs: 1000,
      tenants: ['ta', 'tb'],
      counts: { devices: 2, mutations: 6, byState: {}, byOutcome: { committed: 5 }, patients: 2, events: 6 },
      faults: {
        network: { enabled: true, requests: 10, byKind: { 'server-root': 1, 'db-info': 1, 'local-get': 2, 'local-put': 2, 'changes-longpoll': 1, changes: 0, 'revs-diff': 1, 'bulk-docs': 1, 'bulk-get': 1, 'doc-get': 0, auth: 0, other: 0 }, latencyMs: [5, 80], addedLatencyMsTotal: 100, bandwidthBytesPerSec: 1000, throttledResponses: 3, reset: 1, dropResponse: 1, duplicate: 1, offlineRefused: 0 },
        offlineSpells: 1,
        starvedCpuMs: 0,
        processes: [{ target: 'worker', plannedAtMs: 1000, atMs: 1001, killedPid: 5, backAfterMs: 2000 }],
        tokens: { expiredHanded: 1, refreshedAfter401: 1, refreshes: 1, reLogins: 0 },
        tenantSwitch: null,
        concurrentEdit: null,
        injected: ['duplicate-event'],
        unhandledRejections: { network: 2, other: 0 },
      },
      figures: {
        throughputPerSec: 2,
        syncLatencyMs: { count: 1, p50: 1, p90: 1, p99: 1, max: 1 },
        toServerMs: { count: 1, p50: 1, p90: 1, p99: 1, max: 1 },
        backToDeviceMs: { count: 1, p50: 0, p90: 0, p99: 0, max: 0 },
      },
      invariants: invariantTable(violations),
      violations,
      dataDir: '/tmp/x',
      kept: false,
    } as unknown as Report;
    const text = renderReport(report);
    expect(text).to.match(/FAIL/);
    expect(text).to.match(/one-event\s+VIOLATED \(1\)/);
    expect(text).to.include(`${P2}@1×2`);
    expect(text).to.include('--seed 7');
    expect(text).to.match(/of which to the server\s+p50 1 ms/);
  });
});
