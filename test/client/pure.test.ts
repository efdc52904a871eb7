// Pure parts of the device library, driven by case tables: the after/baseVersion chain, the
// mutation state machine, the entity overlay and the conflict resolution builders.
import { expect } from 'chai';
import { chain, buildMutationDoc } from '../../client/outbox.ts';
import { LocalIndex, entityView, mutationState, type MutationInfo, type MutationState, type LocalNoteDoc } from '../../client/reconcile.ts';
import { planResolution, siblingOp, toConflict } from '../../client/conflicts.ts';
import type { StatusDoc } from '../../validators/mutation.ts';
import { patient } from './support.ts';

const ENTITY = 'pat_0190f000-0000-7000-8000-0000000000aa';
const mid = (n: number) => `0190f000-0000-7000-8000-${String(n).padStart(12, '0')}`;

const committed = (version: number): MutationState => ({ kind: 'committed', response: { status: 200, body: { id: ENTITY, version, givenName: `V${version}` } } });
const conflict = (version: number): MutationState => ({ kind: 'conflict', code: 'VERSION_CONFLICT', current: { id: ENTITY, version, givenName: 'Server' }, candidates: [] });
const rejected: MutationState = { kind: 'rejected', code: 'VALIDATION_FAILED', errors: [], source: 'server' };
const queued: MutationState = { kind: 'queued' };

function info(n: number, op: 'create' | 'update', state: MutationState, baseVersion: number | null = op === 'create' ? null : 1, extra: Partial<MutationInfo> = {}): MutationInfo {
  return {
    mid: mid(n),
    entity: ENTITY,
    op: `patient.${op}`,
    seq: n,
    createdAt: '2026-01-01T00:00:00.000Z',
    after: null,
    resolves: null,
    baseVersion,
    payload: patient({ givenName: `Local${n}` }),
    state,
    resolvedBy: null,
    ...extra,
  };
}

describe('client/outbox: chain (after, baseVersion)', () => {
  const cases: { name: string; kind: 'create' | 'update'; earlier: MutationInfo[]; baseVersion?: number; expected: ReturnType<typeof chain> }[] = [
    { name: 'first create', kind: 'create', earlier: [], expected: { ok: true, after: null, baseVersion: null } },
    { name: 'update with nothing known', kind: 'update', earlier: [], expected: { ok: false, code: 'BASE_VERSION_UNKNOWN' } },
    { name: 'update with an explicit base and nothing known', kind: 'update', earlier: [], baseVersion: 7, expected: { ok: true, after: null, baseVersion: 7 } },
    { name: 'update after a pending create', kind: 'update', earlier: [info(1, 'create', queued)], expected: { ok: true, after: mid(1), baseVersion: 1 } },
    { name: 'update after a committed create', kind: 'update', earlier: [info(1, 'create', committed(1))], expected: { ok: true, after: mid(1), baseVersion: 1 } },
    { name: 'chained offline updates: create, update(1), update(2) → next is 3', kind: 'update', earlier: [info(1, 'create', queued), info(2, 'update', queued, 1), info(3, 'update', queued, 2)], expected: { ok: true, after: mid(3), baseVersion: 3 } },
    { name: 'update after a committed update at v4', kind: 'update', earlier: [info(1, 'create', committed(1)), info(2, 'update', committed(4), 3)], expected: { ok: true, after: mid(2), baseVersion: 4 } },
    { name: 'skips a rejected predecessor', kind: 'update', earlier: [info(1, 'create', committed(1)), info(2, 'update', rejected, 1)], expected: { ok: true, after: mid(1), baseVersion: 1 } },
    {
      name: 'skips a conflicted predecessor; base from its current (v5) when the live predecessor has no newer version',
      kind: 'update',
      earlier: [info(2, 'update', conflict(5), 1)],
      expected: { ok: true, after: null, baseVersion: 5 },
    },
    { name: 'explicit base wins over the chain (merge on current.version)', kind: 'update', earlier: [info(1, 'create', committed(1)), info(2, 'update', conflict(3), 1)], baseVersion: 3, expected: { ok: true, after: mid(1), baseVersion: 3 } },
    { name: 'skips a discarded predecessor', kind: 'update', earlier: [info(1, 'create', committed(1)), info(2, 'update', { kind: 'discarded', was: 'conflict' }, 1)], expected: { ok: true, after: mid(1), baseVersion: 1 } },
    { name: 'a create after a failed create chains on nothing', kind: 'create', earlier: [info(1, 'create', { kind: 'conflict', code: 'DUPLICATE_DETECTED', current: null, candidates: ['pat_x'] })], expected: { ok: true, after: null, baseVersion: null } },
    { name: 'order is by seq, not by array order', kind: 'update', earlier: [info(3, 'update', queued, 2), info(1, 'create', queued), info(2, 'update', queued, 1)], expected: { ok: true, after: mid(3), baseVersion: 3 } },
    { name: 'waiting/retrying count as pending', kind: 'update', earlier: [info(1, 'create', { kind: 'retrying', attempts: 3 }), info(2, 'update', { kind: 'waiting', attempts: 0 }, 1)], expected: { ok: true, after: mid(2), baseVersion: 2 } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(chain({ kind: c.kind, earlier: c.earlier, baseVersion: c.baseVersion })).to.deep.equal(c.expected);
    });
  }

  it('buildMutationDoc writes exactly the DESIGN §4 shape and checks it against the shared schema', () => {
    const doc = buildMutationDoc({ tenant: 'north', owner: 'ada', device: 'dev-1', seq: 3, mid: mid(3), op: 'patient.update', entity: ENTITY, after: mid(2), resolves: null, baseVersion: 2, payload: patient(), createdAt: '2026-11-25T10:00:00.000Z' });
    expect(Object.keys(doc)).to.deep.equal(['_id', 'type', 'v', 'tenant', 'owner', 'device', 'seq', 'op', 'entity', 'after', 'resolves', 'baseVersion', 'payload', 'createdAt']);
    expect(doc._id).to.equal(`m:ada:${mid(3)}`);
    expect(() => buildMutationDoc({ tenant: 'North!', owner: 'ada', device: 'dev-1', seq: 3, mid: mid(3), op: 'patient.update', entity: ENTITY, after: null, resolves: null, baseVersion: 2, payload: {}, createdAt: '2026-11-25T10:00:00.000Z' })).to.throw();
  });
});

function status(state: StatusDoc['state'], extra: Partial<StatusDoc> = {}): StatusDoc {
  return { _id: `s:ada:${mid(1)}`, type: 'status', v: 1, tenant: 'north', owner: 'ada', mutation: mid(1), state, code: null, attempts: 1, updatedAt: '2026-01-01T00:00:00.000Z', ...extra };
}
function note(kind: LocalNoteDoc['kind'], code: LocalNoteDoc['code'] = null): LocalNoteDoc {
  return { _id: `l:ada:${mid(1)}`, type: 'local-status', mutation: mid(1), kind, code, at: '2026-01-01T00:00:00.000Z' };
}

describe('client/reconcile: mutationState', () => {
  const cases: { name: string; status?: StatusDoc; note?: LocalNoteDoc; kind: MutationState['kind']; extra?: Record<string, unknown> }[] = [
    { name: 'nothing yet → queued', kind: 'queued' },
    { name: 'waiting', status: status('waiting', { attempts: 0 }), kind: 'waiting' },
    { name: 'retrying', status: status('retrying', { attempts: 4 }), kind: 'retrying', extra: { attempts: 4 } },
    { name: 'committed carries the response', status: status('committed', { response: { status: 201, body: { id: ENTITY, version: 1 } } }), kind: 'committed', extra: { response: { status: 201, body: { id: ENTITY, version: 1 } } } },
    { name: 'rejected from the server', status: status('rejected', { code: 'FORBIDDEN' }), kind: 'rejected', extra: { code: 'FORBIDDEN', source: 'server' } },
    { name: 'conflict carries current and candidates', status: status('conflict', { code: 'DUPLICATE_DETECTED', candidates: ['pat_1'] }), kind: 'conflict', extra: { candidates: ['pat_1'] } },
    { name: 'device rejection (gateway denied / membership gone) with no status', note: note('rejected', 'TENANT_MISMATCH'), kind: 'rejected', extra: { code: 'TENANT_MISMATCH', source: 'device' } },
    { name: 'device rejection beats a non-terminal status', status: status('retrying'), note: note('rejected', 'TENANT_MISMATCH'), kind: 'rejected', extra: { source: 'device' } },
    { name: 'a terminal server status beats a device rejection', status: status('committed'), note: note('rejected', 'TENANT_MISMATCH'), kind: 'committed' },
    { name: 'discard lays over a conflict', status: status('conflict', { code: 'VERSION_CONFLICT' }), note: note('discarded'), kind: 'discarded', extra: { was: 'conflict' } },
    { name: 'discard lays over a device rejection', note: note('discarded'), kind: 'discarded', extra: { was: 'rejected' } },
    { name: 'discard does not hide a commit', status: status('committed'), note: note('discarded'), kind: 'committed' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const s = mutationState(c.status, c.note);
      expect(s.kind).to.equal(c.kind);
      if (c.extra) expect(s).to.deep.include(c.extra);
    });
  }
});

describe('client/reconcile: LocalIndex.setStatus (whether to tell the app)', () => {
  const cases: { name: string; held?: StatusDoc; next: StatusDoc; changed: boolean }[] = [
    { name: 'a first status', next: status('waiting', { _rev: '1-a' }), changed: true },
    { name: 'a newer revision', held: status('waiting', { _rev: '1-a' }), next: status('committed', { _rev: '2-b' }), changed: true },
    { name: 'the same revision again', held: status('committed', { _rev: '2-b' }), next: status('committed', { _rev: '2-b' }), changed: false },
    { name: 'a terminal status downgraded', held: status('committed', { _rev: '2-b' }), next: status('retrying', { _rev: '3-c' }), changed: false },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const index = new LocalIndex();
      if (c.held) index.setStatus(c.held);
      expect(index.setStatus(c.next)).to.equal(c.changed);
    });
  }
});

describe('client/reconcile: entityView (server record + pending overlay)', () => {
  it('is empty for an unknown entity', () => {
    expect(entityView(ENTITY, [])).to.deep.include({ confirmed: null, current: null, pending: [], problems: [] });
  });

  it('lays pending mutations over the confirmed record in seq order, keeping server fields', () => {
    const v = entityView(ENTITY, [info(3, 'update', queued, 2), info(1, 'create', committed(1)), info(2, 'update', committed(2), 1)]);
    expect(v.confirmed).to.deep.equal({ version: 2, record: { id: ENTITY, version: 2, givenName: 'V2' } });
    expect(v.current).to.include({ id: ENTITY, version: 2, givenName: 'Local3' });
    expect(v.pending.map((m) => m.seq)).to.deep.equal([3]);
  });

  it('shows a pending create before anything is confirmed, without device-only fields', () => {
    const create = info(1, 'create', queued);
    create.payload = { ...create.payload, confirmNotDuplicate: { reason: 'checked by hand' } };
    const v = entityView(ENTITY, [create]);
    expect(v.confirmed).to.equal(null);
    expect(v.current).to.include({ id: ENTITY, givenName: 'Local1' });
    expect(v.current).to.not.have.property('confirmNotDuplicate');
  });

  it('uses a conflict’s current as the newest server record and lists the conflict as a problem until resolved', () => {
    const c = info(2, 'update', conflict(3), 1);
    const v = entityView(ENTITY, [info(1, 'create', committed(1)), c]);
    expect(v.confirmed?.version).to.equal(3);
    expect(v.current).to.include({ givenName: 'Server' });
    expect(v.problems.map((m) => m.mid)).to.deep.equal([mid(2)]);
    const resolved = entityView(ENTITY, [info(1, 'create', committed(1)), { ...c, resolvedBy: mid(3) }, info(3, 'update', queued, 3, { resolves: mid(2) })]);
    expect(resolved.problems).to.deep.equal([]);
    expect(resolved.current).to.include({ givenName: 'Local3', version: 3 });
  });

  it('does not lay failed mutations over the record', () => {
    const v = entityView(ENTITY, [info(1, 'create', committed(1)), info(2, 'update', rejected, 1)]);
    expect(v.current).to.include({ givenName: 'V1' });
  });
});

describe('client/conflicts: planResolution', () => {
  const versionConflict = info(2, 'update', conflict(3), 1);
  const duplicate = info(1, 'create', { kind: 'conflict', code: 'DUPLICATE_DETECTED', current: null, candidates: ['pat_0190f000-0000-7000-8000-0000000000bb'] });
  const merged = patient({ givenName: 'Merged' });
  const cases: { name: string; m: MutationInfo; r: Parameters<typeof planResolution>[1]; expected: ReturnType<typeof planResolution> }[] = [
    { name: 'merge a version conflict → update on current.version that resolves it', m: versionConflict, r: { kind: 'merge', payload: merged }, expected: { kind: 'mutate', op: 'patient.update', entity: ENTITY, payload: merged, baseVersion: 3, resolves: mid(2) } },
    {
      name: 'create anyway → same entity, confirmNotDuplicate with the reason, resolves it',
      m: duplicate,
      r: { kind: 'create-anyway', reason: 'Different mother, checked ID card' },
      expected: { kind: 'mutate', op: 'patient.create', entity: ENTITY, payload: { ...duplicate.payload, confirmNotDuplicate: { reason: 'Different mother, checked ID card' } }, baseVersion: null, resolves: mid(1) },
    },
    { name: 'discard a conflict', m: versionConflict, r: { kind: 'discard' }, expected: { kind: 'discard', mid: mid(2) } },
    { name: 'discard a rejection', m: info(4, 'update', rejected), r: { kind: 'discard' }, expected: { kind: 'discard', mid: mid(4) } },
    { name: 'merge needs a version conflict', m: duplicate, r: { kind: 'merge', payload: merged }, expected: { kind: 'invalid', reason: 'NOT_A_VERSION_CONFLICT' } },
    { name: 'create anyway needs a duplicate', m: versionConflict, r: { kind: 'create-anyway', reason: 'xyz' }, expected: { kind: 'invalid', reason: 'NOT_A_DUPLICATE' } },
    { name: 'merge needs current.version', m: info(2, 'update', { kind: 'conflict', code: 'VERSION_CONFLICT', current: null, candidates: [] }), r: { kind: 'merge', payload: merged }, expected: { kind: 'invalid', reason: 'NO_CURRENT_VERSION' } },
    { name: 'nothing to resolve on a committed mutation', m: info(1, 'create', committed(1)), r: { kind: 'discard' }, expected: { kind: 'invalid', reason: 'NOT_OPEN' } },
    { name: 'nor on a pending one', m: info(1, 'create', queued), r: { kind: 'discard' }, expected: { kind: 'invalid', reason: 'NOT_OPEN' } },
    { name: 'nor twice', m: { ...versionConflict, resolvedBy: mid(9) }, r: { kind: 'merge', payload: merged }, expected: { kind: 'invalid', reason: 'NOT_OPEN' } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(planResolution(c.m, c.r)).to.deep.equal(c.expected);
    });
  }

  it('toConflict exposes the server version next to mine', () => {
    expect(toConflict(versionConflict)).to.deep.include({ mid: mid(2), code: 'VERSION_CONFLICT', current: { id: ENTITY, version: 3, givenName: 'Server' }, mine: versionConflict.payload });
    expect(toConflict(info(1, 'create', queued))).to.equal(null);
    expect(siblingOp('patient.create', 'update')).to.equal('patient.update');
    expect(siblingOp('nosuch.op', 'update')).to.equal(null);
  });
});
