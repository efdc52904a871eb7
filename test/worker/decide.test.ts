import { expect } from 'chai';
import { outcomeOf, type ServiceAnswer } from '../../gateway/worker/outcome.ts';
import { decideOrder, type OrderInput, type Predecessor } from '../../gateway/worker/order.ts';
import { screen } from '../../gateway/worker/screen.ts';
import { pickStatusWinner, shouldWrite, statusDocFor } from '../../gateway/worker/status.ts';
import { backoffDelay as nextDelay } from '../../retry/backoff.ts';
import { orderByAfter } from '../../gateway/worker/tenant-runner.ts';
import { statusDocSchema, type StatusState } from '../../validators/mutation.ts';
import { mutationDoc, newMid, newEntity, patientPayload } from './fixture.ts';

// Case tables for the worker's pure decisions (DESIGN §4 outcome table, ordering, status writes).

describe('worker: outcome of a service answer (closed table)', () => {
  const res = (status: number, body: unknown = {}): ServiceAnswer => ({ kind: 'response', status, body });
  const cases: Array<[string, ServiceAnswer, StatusState, string | null]> = [
    ['201 created', res(201, { id: 'pat_x', version: 1 }), 'committed', null],
    ['200 updated', res(200, { id: 'pat_x', version: 2 }), 'committed', null],
    ['400 malformed', res(400, { code: 'MALFORMED_REQUEST' }), 'rejected', 'VALIDATION_FAILED'],
    ['422 validation', res(422, { code: 'VALIDATION_FAILED', errors: [{ path: 'birthDate', message: 'must be a real date (YYYY-MM-DD)' }] }), 'rejected', 'VALIDATION_FAILED'],
    ['422 without a body', res(422, null), 'rejected', 'VALIDATION_FAILED'],
    ['409 version conflict', res(409, { code: 'VERSION_CONFLICT', current: { id: 'pat_x', version: 3 } }), 'conflict', 'VERSION_CONFLICT'],
    ['409 duplicate', res(409, { code: 'DUPLICATE_DETECTED', candidates: ['pat_a', { id: 'pat_b', givenName: 'X' }] }), 'conflict', 'DUPLICATE_DETECTED'],
    ['409 id conflict', res(409, { code: 'ID_CONFLICT' }), 'rejected', 'ID_CONFLICT'],
    ['409 idempotency in progress', res(409, { code: 'IDEMPOTENCY_IN_PROGRESS' }), 'retrying', null],
    ['409 other code', res(409, { code: 'IDENTIFIER_CONFLICT' }), 'rejected', 'IDENTIFIER_CONFLICT'],
    ['429', res(429, { code: 'RATE_LIMITED' }), 'retrying', null],
    ['500', res(500, { code: 'INTERNAL' }), 'retrying', null],
    ['503', res(503), 'retrying', null],
    ['network error', { kind: 'network-error' }, 'retrying', null],
    ['403 forbidden', res(403, { code: 'FORBIDDEN' }), 'rejected', 'FORBIDDEN'],
    ['403 not licensed', res(403, { code: 'MODULE_NOT_LICENSED' }), 'rejected', 'MODULE_NOT_LICENSED'],
    ['403 unknown code', res(403, { code: 'WHATEVER' }), 'rejected', 'FORBIDDEN'],
    ['404 on update', res(404, { code: 'NOT_FOUND' }), 'rejected', 'NOT_FOUND'],
    ['422 key reused (other 4xx)', res(422, { code: 'IDEMPOTENCY_KEY_REUSED' }), 'rejected', 'IDEMPOTENCY_KEY_REUSED'],
    ['428 precondition (other 4xx)', res(428, { code: 'PRECONDITION_REQUIRED' }), 'rejected', 'PRECONDITION_REQUIRED'],
    ['401 (other 4xx)', res(401, { code: 'UNAUTHENTICATED' }), 'rejected', 'UNAUTHENTICATED'],
    ['413 without code', res(413, 'too big'), 'rejected', 'PAYLOAD_TOO_LARGE'],
  ];
  for (const [name, answer, state, code] of cases) {
    it(`${name} → ${state}${code ? ` ${code}` : ''}`, () => {
      const o = outcomeOf(answer);
      expect(o.state).to.equal(state);
      expect(o.code).to.equal(code);
    });
  }
  it('keeps the first answer on commit, `current` on a version conflict and ids only as candidates', () => {
    expect(outcomeOf(res(201, { id: 'pat_x', version: 1 })).response).to.deep.equal({ status: 201, body: { id: 'pat_x', version: 1 } });
    expect(outcomeOf(res(409, { code: 'VERSION_CONFLICT', current: { version: 3 } })).current).to.deep.equal({ version: 3 });
    expect(outcomeOf(res(409, { code: 'DUPLICATE_DETECTED', candidates: ['pat_a', { id: 'pat_b', givenName: 'X' }] })).candidates).to.deep.equal(['pat_a', 'pat_b']);
    expect(outcomeOf(res(422, { code: 'VALIDATION_FAILED', errors: [{ path: 'birthDate', message: 'm', value: 'leak' }] })).errors).to.deep.equal([{ path: 'birthDate', message: 'm' }]);
  });
});

describe('worker: screening a mutation doc', () => {
  const owner = 'ada';
  const base = () => {
    const mid = newMid();
    return { mid, doc: mutationDoc({ owner, tenant: 'north', mid, entity: newEntity(), op: 'patient.create', payload: patientPayload() }) };
  };
  const run = (doc: unknown, mid: string, extra: Partial<{ conflicted: boolean; deleted: boolean; inboxTenant: string }> = {}) =>
    screen({ inboxTenant: extra.inboxTenant ?? 'north', owner, mid, doc, conflicted: extra.conflicted ?? false, deleted: extra.deleted ?? false });

  it('accepts a valid create', () => {
    const { mid, doc } = base();
    expect(run(doc, mid).kind).to.equal('ok');
  });
  const rejectCases: Array<[string, (d: Record<string, unknown>) => Record<string, unknown>, Partial<{ conflicted: boolean; deleted: boolean; inboxTenant: string }>, string]> = [
    ['conflicting revisions', (d) => d, { conflicted: true }, 'VALIDATION_FAILED'],
    ['a deleted doc', (d) => d, { deleted: true }, 'VALIDATION_FAILED'],
    ['another tenant in the body', (d) => ({ ...d, tenant: 'south' }), {}, 'TENANT_MISMATCH'],
    ['another inbox', (d) => d, { inboxTenant: 'south' }, 'TENANT_MISMATCH'],
    ['another owner in the body', (d) => ({ ...d, owner: 'ben' }), {}, 'TENANT_MISMATCH'],
    ['a broken envelope', (d) => ({ ...d, seq: 'x' }), {}, 'VALIDATION_FAILED'],
    ['an op in no manifest', (d) => ({ ...d, op: 'patient.teleport' }), {}, 'UNKNOWN_OP'],
    ['an entity of another kind', (d) => ({ ...d, entity: `enc_${newMid()}` }), {}, 'VALIDATION_FAILED'],
    ['an invalid payload', (d) => ({ ...d, payload: { ...(d.payload as object), birthDate: '2999-01-01' } }), {}, 'VALIDATION_FAILED'],
  ];
  for (const [name, change, extra, code] of rejectCases) {
    it(`rejects ${name} with ${code}`, () => {
      const { mid, doc } = base();
      const s = run(change(doc), mid, extra);
      expect(s.kind).to.equal('reject');
      if (s.kind === 'reject') expect(s.outcome.code).to.equal(code);
    });
  }
  it('says the revisions conflict, and payload errors name fields but never values', () => {
    const { mid, doc } = base();
    const c = run(doc, mid, { conflicted: true });
    expect(c.kind === 'reject' && c.outcome.errors?.[0]?.message).to.match(/conflicting revisions/);
    const p = run({ ...doc, payload: { ...(doc.payload as object), birthDate: '2999-01-01' } }, mid);
    expect(p.kind === 'reject' && p.outcome.errors).to.deep.include({ path: 'birthDate', message: 'must not be in the future' });
    expect(JSON.stringify(p)).not.to.include('2999');
  });
});

describe('worker: order by the after chain', () => {
  const input = (predecessor: Predecessor | null, o: Partial<OrderInput> = {}): OrderInput => ({
    owner: 'ada',
    entity: 'pat_1',
    after: predecessor ? 'm-prev' : null,
    resolves: null,
    predecessor,
    firstSeenAt: 1_000,
    now: 2_000,
    waitingTimeoutMs: 10_000,
    ...o,
  });
  const found = (state: StatusState | null, o: Partial<{ owner: string; entity: string | null }> = {}): Predecessor => ({ kind: 'found', owner: 'ada', entity: 'pat_1', state, ...o });
  const cases: Array<[string, OrderInput, string, string?]> = [
    ['no predecessor', input(null), 'proceed'],
    ['predecessor committed', input(found('committed')), 'proceed'],
    ['predecessor not processed yet', input(found(null)), 'wait'],
    ['predecessor waiting', input(found('waiting')), 'wait'],
    ['predecessor retrying', input(found('retrying')), 'wait'],
    ['predecessor rejected', input(found('rejected')), 'reject', 'DEPENDENCY_FAILED'],
    ['predecessor conflict', input(found('conflict')), 'reject', 'DEPENDENCY_FAILED'],
    ['predecessor conflict that this resolves', input(found('conflict'), { resolves: 'm-prev' }), 'proceed'],
    ['predecessor rejected that this resolves', input(found('rejected'), { resolves: 'm-prev' }), 'proceed'],
    ['predecessor conflict, resolving another one', input(found('conflict'), { resolves: 'm-other' }), 'reject', 'DEPENDENCY_FAILED'],
    // Another user's mutation is answered as a missing one: anything else would confirm it exists.
    ['predecessor of another owner, within the timeout', input(found('committed', { owner: 'ben' })), 'wait'],
    ['predecessor of another owner, rejected, within the timeout', input(found('rejected', { owner: 'ben' })), 'wait'],
    ['predecessor of another owner past the timeout', input(found('committed', { owner: 'ben' }), { now: 11_000 }), 'reject', 'DEPENDENCY_FAILED'],
    ['predecessor on another entity', input(found('committed', { entity: 'pat_2' })), 'reject', 'DEPENDENCY_FAILED'],
    ['predecessor missing, within the timeout', input({ kind: 'missing' }), 'wait'],
    ['predecessor missing past the timeout', input({ kind: 'missing' }, { now: 11_000 }), 'reject', 'DEPENDENCY_FAILED'],
  ];
  for (const [name, i, kind, code] of cases) {
    it(`${name} → ${kind}${code ? ` ${code}` : ''}`, () => {
      const d = decideOrder(i);
      expect(d.kind).to.equal(kind);
      if (d.kind === 'reject') expect(d.outcome.code).to.equal(code);
    });
  }
  it('another owner’s mutation and a missing one get the same decision, message included, at every time', () => {
    for (const now of [2_000, 10_999, 11_000, 50_000]) {
      for (const state of ['committed', 'rejected', 'conflict', 'waiting', null] as const) {
        for (const resolves of [null, 'm-prev']) {
          expect(decideOrder(input(found(state, { owner: 'ben' }), { now, resolves })), `${now} ${state} ${resolves}`).to.deep.equal(decideOrder(input({ kind: 'missing' }, { now, resolves })));
        }
      }
    }
  });
  it('puts batch members after the mutation their after names', () => {
    const items = [
      { mid: 'c', after: 'b' },
      { mid: 'a', after: null },
      { mid: 'b', after: 'a' },
      { mid: 'x', after: 'gone' },
    ];
    expect(orderByAfter(items).map((i) => i.mid)).to.deep.equal(['a', 'b', 'c', 'x']);
  });
});

describe('worker: status writes', () => {
  const cases: Array<[StatusState | null, StatusState, boolean]> = [
    [null, 'committed', true],
    [null, 'waiting', true],
    ['waiting', 'waiting', false],
    ['waiting', 'retrying', true],
    ['retrying', 'retrying', false],
    ['retrying', 'committed', true],
    ['committed', 'committed', false],
    ['committed', 'retrying', false],
    ['conflict', 'committed', false],
    ['rejected', 'waiting', false],
  ];
  for (const [existing, next, write] of cases) {
    it(`${existing ?? 'none'} → ${next}: ${write ? 'write' : 'keep'}`, () => expect(shouldWrite(existing, next)).to.equal(write));
  }
  it('resolves conflicting revisions terminal first', () => {
    expect(pickStatusWinner([{ rev: '2-a', state: 'retrying', fence: 5 }, { rev: '2-b', state: 'committed', fence: 1 }])).to.equal(1);
    expect(pickStatusWinner([{ rev: '2-a', state: 'waiting', fence: 1 }, { rev: '2-b', state: 'retrying', fence: 2 }])).to.equal(1);
    expect(
      pickStatusWinner([
        { rev: '3-a', state: 'conflict', updatedAt: '2026-01-02T00:00:00.000Z' },
        { rev: '3-b', state: 'committed', updatedAt: '2026-01-01T00:00:00.000Z' },
      ]),
    ).to.equal(1);
  });
  it('builds docs the schema accepts', () => {
    const doc = statusDocFor({ tenant: 'north', owner: 'ada', mid: newMid() }, { state: 'rejected', code: 'UNKNOWN_OP' }, 0, Date.now());
    expect(statusDocSchema.safeParse(doc).success).to.equal(true);
  });
});

describe('worker: backoff', () => {
  it('grows exponentially, is capped, and jitters within bounds', () => {
    const p = { baseMs: 100, maxMs: 1_000, jitter: 0.5 };
    expect(nextDelay(1, p, () => 1)).to.equal(100);
    expect(nextDelay(3, p, () => 1)).to.equal(400);
    expect(nextDelay(30, p, () => 1)).to.equal(1_000);
    expect(nextDelay(3, p, () => 0)).to.equal(200);
  });
});
