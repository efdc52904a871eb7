import { expect } from 'chai';
import type { Predecessor } from '../../gateway/worker/order.ts';
import type { PendingRow } from '../../gateway/worker/pending.ts';
import { planRound, settleCommits, type CommitAnswer, type JobDecision, type RoundJob } from '../../gateway/worker/plan.ts';
import type { StatusState } from '../../validators/mutation.ts';
import { mutationDoc, newEntity, newMid, patientPayload } from './fixture.ts';

// Case tables for the worker's round decisions (gateway/worker/plan.ts): what happens to each
// mutation of a round, given what stands for it and for its predecessor, and what the service's
// answers to a batch mean. No server: the executor's I/O is not involved.

const NOW = 1_800_000_000_000;
const WAIT = 7 * 24 * 3600_000;
const OWNER = 'ada';
const ROLES = new Map<string, readonly string[] | null>([[OWNER, ['registrar']], ['ben', ['registrar']], ['gone', null]]);

type Doc = ReturnType<typeof mutationDoc>;

function create(entity = newEntity(), owner = OWNER): Doc {
  return mutationDoc({ owner, tenant: 'north', entity, op: 'patient.create', payload: patientPayload() });
}
function update(prev: Doc, opts: { resolves?: boolean; owner?: string; entity?: string } = {}): Doc {
  return mutationDoc({
    owner: opts.owner ?? OWNER,
    tenant: 'north',
    entity: opts.entity ?? prev.entity,
    op: 'patient.update',
    after: prev.mid,
    resolves: opts.resolves ? prev.mid : null,
    baseVersion: 1,
    payload: patientPayload(),
  });
}

function job(doc: Doc | null, opts: { mid?: string; owner?: string; status?: StatusState; decided?: StatusState; pending?: PendingRow; source?: 'feed' | 'pending' } = {}): RoundJob {
  const owner = opts.owner ?? (doc ? String(doc.owner) : OWNER);
  const mid = opts.mid ?? doc!.mid;
  return {
    key: `${owner}:${mid}`,
    owner,
    mid,
    doc: doc as RoundJob['doc'],
    deleted: doc === null,
    status: opts.status ? { rev: '1-a', state: opts.status, attempts: 1 } : null,
    decided: opts.decided ?? null,
    pending: opts.pending ?? null,
    source: opts.source ?? 'feed',
  };
}

function plan(jobs: RoundJob[], predecessors: Array<[Doc | string, Predecessor]> = []) {
  return planRound({
    tenant: 'north',
    jobs,
    predecessors: new Map(predecessors.map(([d, p]) => [`${OWNER}:${typeof d === 'string' ? d : d.mid}`, p])),
    roles: ROLES,
    now: NOW,
    waitingTimeoutMs: WAIT,
  });
}

const found = (state: StatusState | null, entity: string, owner = OWNER): Predecessor => ({ kind: 'found', owner, entity, state });

/** The decision's kind, with the state or code it settles on. */
function summary(d: JobDecision | undefined): string {
  if (!d) return 'none';
  switch (d.kind) {
    case 'settle':
      return `settle ${d.outcome.state}${d.outcome.code ? ` ${d.outcome.code}` : ''}`;
    case 'finish':
      return `finish ${d.state}`;
    case 'commit':
      return `commit #${d.index}`;
    default:
      return d.kind;
  }
}

describe('worker: planning a round (pure)', () => {
  describe('one mutation, by what stands for it and its predecessor', () => {
    const cases: Array<[string, () => { jobs: RoundJob[]; preds?: Array<[Doc | string, Predecessor]> }, string]> = [
      ['a create with no predecessor', () => ({ jobs: [job(create())] }), 'commit #0'],
      ['already committed (status doc)', () => ({ jobs: [job(create(), { status: 'committed' })] }), 'finish committed'],
      ['already rejected (decided by this worker)', () => ({ jobs: [job(create(), { decided: 'rejected' })] }), 'finish rejected'],
      ['a waiting status is looked at again', () => ({ jobs: [job(create(), { status: 'waiting' })] }), 'commit #0'],
      ['doc missing', () => ({ jobs: [job(null, { mid: newMid() })] }), 'settle rejected VALIDATION_FAILED'],
      ['unknown op', () => ({ jobs: [job(mutationDoc({ owner: OWNER, tenant: 'north', entity: newEntity(), op: 'patient.delete', payload: {} }))] }), 'settle rejected UNKNOWN_OP'],
      ['another tenant in the body', () => ({ jobs: [job(mutationDoc({ owner: OWNER, tenant: 'south', entity: newEntity(), op: 'patient.create', payload: patientPayload() }))] }), 'settle rejected TENANT_MISMATCH'],
      ['owner no longer a member', () => ({ jobs: [job(create(newEntity(), 'gone'))] }), 'settle rejected TENANT_MISMATCH'],
      ['predecessor committed', () => { const c = create(); return { jobs: [job(update(c))], preds: [[c, found('committed', c.entity)]] }; }, 'commit #0'],
      ['predecessor still retrying', () => { const c = create(); return { jobs: [job(update(c))], preds: [[c, found('retrying', c.entity)]] }; }, 'settle waiting'],
      ['predecessor has no status yet', () => { const c = create(); return { jobs: [job(update(c))], preds: [[c, found(null, c.entity)]] }; }, 'settle waiting'],
      ['predecessor never arrived (yet)', () => { const c = create(); return { jobs: [job(update(c))], preds: [[c, { kind: 'missing' }]] }; }, 'settle waiting'],
      ['predecessor rejected', () => { const c = create(); return { jobs: [job(update(c))], preds: [[c, found('rejected', c.entity)]] }; }, 'settle rejected DEPENDENCY_FAILED'],
      ['predecessor in conflict, resolved by this one', () => { const c = create(); return { jobs: [job(update(c, { resolves: true }))], preds: [[c, found('conflict', c.entity)]] }; }, 'commit #0'],
      ['predecessor on another entity', () => { const c = create(); return { jobs: [job(update(c, { entity: newEntity() }))], preds: [[c, found('committed', c.entity)]] }; }, 'settle rejected DEPENDENCY_FAILED'],
      // Another user's mutation is answered as a missing one (an existence oracle otherwise).
      ['predecessor of another owner', () => { const c = create(); return { jobs: [job(update(c))], preds: [[c, found('committed', c.entity, 'ben')]] }; }, 'settle waiting'],
      ['predecessor of another owner, on another entity', () => { const c = create(); return { jobs: [job(update(c, { entity: newEntity() }))], preds: [[c, found('rejected', c.entity, 'ben')]] }; }, 'settle waiting'],
      [
        'predecessor of another owner past the waiting timeout',
        () => {
          const c = create();
          const u = update(c);
          return { jobs: [job(u, { status: 'waiting', source: 'pending', pending: { mid: u.mid, owner: OWNER, entity: u.entity, state: 'waiting', after: c.mid, attempts: 0, nextAttemptAt: NOW, firstSeenAt: NOW - WAIT } })], preds: [[c, found('committed', c.entity, 'ben')]] };
        },
        'settle rejected DEPENDENCY_FAILED',
      ],
      [
        'a retry from the feed before its time',
        () => {
          const c = create();
          return { jobs: [job(c, { status: 'retrying', pending: { mid: c.mid, owner: OWNER, entity: c.entity, state: 'retrying', after: null, attempts: 1, nextAttemptAt: NOW + 5_000, firstSeenAt: NOW - 1_000 } })] };
        },
        'hold',
      ],
      [
        'a retry from the pending table when its time has come',
        () => {
          const c = create();
          return { jobs: [job(c, { status: 'retrying', source: 'pending', pending: { mid: c.mid, owner: OWNER, entity: c.entity, state: 'retrying', after: null, attempts: 2, nextAttemptAt: NOW - 1, firstSeenAt: NOW - 9_000 } })] };
        },
        'commit #0',
      ],
    ];
    for (const [name, build, expected] of cases) {
      it(`${name} → ${expected}`, () => {
        const { jobs, preds } = build();
        const p = plan(jobs, preds);
        expect(summary(p.decisions.get(jobs[0]!.key))).to.equal(expected);
      });
    }
  });

  it('another owner’s predecessor and a missing one plan the same: status, message and pending row', () => {
    for (const firstSeenAt of [NOW, NOW - WAIT + 1, NOW - WAIT, NOW - 2 * WAIT]) {
      for (const state of ['committed', 'rejected', null] as const) {
        const c = create();
        const u = update(c);
        const pending: PendingRow = { mid: u.mid, owner: OWNER, entity: u.entity, state: 'waiting', after: c.mid, attempts: 0, nextAttemptAt: NOW, firstSeenAt };
        const j = job(u, { status: 'waiting', source: 'pending', pending });
        const foreign = plan([j], [[c, found(state, c.entity, 'ben')]]);
        const missing = plan([j], [[c, { kind: 'missing' }]]);
        expect(foreign.decisions.get(j.key), `${firstSeenAt} ${state}`).to.deep.equal(missing.decisions.get(j.key));
        expect(foreign.commits).to.deep.equal([]);
      }
    }
  });

  it('puts a whole chain into one batch, each link requiring the one before', () => {
    const c = create();
    const u1 = update(c);
    const u2 = update(u1);
    const p = plan([job(c), job(u1), job(u2)]);
    expect(p.commits.map((x) => [x.mid, x.requires])).to.deep.equal([
      [c.mid, null],
      [u1.mid, 0],
      [u2.mid, 1],
    ]);
  });

  it('a link that resolves its predecessor in the same round waits for that outcome (defer)', () => {
    const c = create();
    const u = update(c, { resolves: true });
    const p = plan([job(c), job(u)]);
    expect(summary(p.decisions.get(`${OWNER}:${u.mid}`))).to.equal('defer');
    expect(p.commits).to.have.length(1);
  });

  it('a link after a predecessor rejected in the same round fails with DEPENDENCY_FAILED without a call', () => {
    const bad = mutationDoc({ owner: OWNER, tenant: 'north', entity: newEntity(), op: 'patient.create', payload: { givenName: 'X' } });
    const u = update(bad);
    const p = plan([job(bad), job(u)]);
    expect(summary(p.decisions.get(`${OWNER}:${bad.mid}`))).to.equal('settle rejected VALIDATION_FAILED');
    expect(summary(p.decisions.get(`${OWNER}:${u.mid}`))).to.equal('settle rejected DEPENDENCY_FAILED');
    expect(p.commits).to.have.length(0);
  });

  it('a link whose predecessor is planned later in the round (another entity queue) is deferred, never guessed', () => {
    const c = create();
    const u = update(c, { entity: newEntity() });
    const p = plan([job(u), job(c)]);
    expect(summary(p.decisions.get(`${OWNER}:${u.mid}`))).to.equal('defer');
  });

  it('counts attempts from the pending row and keeps the first-seen time', () => {
    const c = create();
    const row: PendingRow = { mid: c.mid, owner: OWNER, entity: c.entity, state: 'retrying', after: null, attempts: 3, nextAttemptAt: NOW - 1, firstSeenAt: NOW - 60_000 };
    const p = plan([job(c, { source: 'pending', pending: row })]);
    expect(p.commits[0]!.attempts).to.equal(4);
    expect(p.commits[0]!.firstSeenAt).to.equal(NOW - 60_000);
  });

  it('a missing predecessor is looked at again at its timeout; a present one when woken', () => {
    const c = create();
    const u = update(c);
    const missing = plan([job(u)], [[c, { kind: 'missing' }]]).decisions.get(`${OWNER}:${u.mid}`);
    const present = plan([job(u)], [[c, found('retrying', c.entity)]]).decisions.get(`${OWNER}:${u.mid}`);
    expect(missing?.kind === 'settle' && missing.pending?.nextAttemptAt).to.equal(NOW + WAIT);
    expect(present?.kind === 'settle' && present.pending?.state).to.equal('waiting');
    const late = plan([job(u, { pending: { mid: u.mid, owner: OWNER, entity: u.entity, state: 'waiting', after: c.mid, attempts: 0, nextAttemptAt: NOW, firstSeenAt: NOW - WAIT } })], [[c, { kind: 'missing' }]]);
    expect(summary(late.decisions.get(`${OWNER}:${u.mid}`))).to.equal('settle rejected DEPENDENCY_FAILED');
  });

  it('the same mutation twice in a round is decided once', () => {
    const c = create();
    const p = plan([job(c), job(c)]);
    expect(p.commits).to.have.length(1);
  });
});

describe('worker: reading a batch answer (pure)', () => {
  const ctx = { now: NOW, waitingTimeoutMs: WAIT, retry: { baseMs: 1_000, maxMs: 60_000 }, random: () => 0.5 };
  const res = (status: number, body: unknown = {}): CommitAnswer => ({ kind: 'response', status, body });
  const chain = () => {
    const c = create();
    const u = update(c);
    return plan([job(c), job(u)]).commits;
  };

  const cases: Array<[string, CommitAnswer, CommitAnswer, string, string]> = [
    ['both commit', res(201, { id: 'p', version: 1 }), res(200, { id: 'p', version: 2 }), 'committed', 'committed'],
    ['create is a duplicate: the update never ran', res(409, { code: 'DUPLICATE_DETECTED', candidates: ['pat_x'] }), { kind: 'skipped' }, 'conflict', 'rejected DEPENDENCY_FAILED'],
    ['create rejected: the update never ran', res(422, { code: 'VALIDATION_FAILED' }), { kind: 'skipped' }, 'rejected', 'rejected DEPENDENCY_FAILED'],
    ['create in flight elsewhere: the update waits', res(409, { code: 'IDEMPOTENCY_IN_PROGRESS' }), { kind: 'skipped' }, 'retrying', 'waiting'],
    ['the whole batch failed', { kind: 'network-error' }, { kind: 'network-error' }, 'retrying', 'waiting'],
    ['a service that ran the update anyway is not believed', res(503), res(200, { id: 'p', version: 2 }), 'retrying', 'waiting'],
  ];
  for (const [name, first, second, s1, s2] of cases) {
    it(`${name} → ${s1} / ${s2}`, () => {
      const out = settleCommits(chain(), [first, second], ctx);
      const show = (o: (typeof out)[number]) => `${o.outcome.state}${o.outcome.state === 'rejected' ? ` ${o.outcome.code}` : ''}`;
      expect(show(out[0]!)).to.equal(s1.startsWith('rejected') ? `rejected ${outcomeCode(first)}` : s1);
      expect(show(out[1]!)).to.equal(s2);
    });
  }

  it('a skip the batch contract does not allow (its required item committed) is retried, never left waiting', () => {
    const [first, second] = settleCommits(chain(), [res(201, { id: 'p', version: 1 }), { kind: 'skipped' }], ctx);
    expect(first!.outcome.state).to.equal('committed');
    expect(second!.outcome.state).to.equal('retrying');
    expect(second!.pending).to.include({ state: 'retrying', attempts: 1 });
  });

  it('a retry is pending with a backoff; a skipped link keeps its attempt count and is not counted as called', () => {
    const [first, second] = settleCommits(chain(), [res(500), { kind: 'skipped' }], ctx);
    expect(first!.pending).to.include({ state: 'retrying', attempts: 1 });
    expect(first!.pending!.nextAttemptAt).to.be.greaterThan(NOW);
    expect(second!.pending).to.include({ state: 'waiting', attempts: 0 });
    expect([first!.called, second!.called]).to.deep.equal([true, false]);
  });

  it('a terminal answer leaves the pending table', () => {
    const [first] = settleCommits(chain(), [res(201, { id: 'p', version: 1 }), res(200, {})], ctx);
    expect(first!.pending).to.equal(null);
    expect(first!.outcome.response).to.deep.equal({ status: 201, body: { id: 'p', version: 1 } });
  });
});

function outcomeCode(a: CommitAnswer): string {
  return a.kind === 'response' && a.body !== null && typeof a.body === 'object' ? String((a.body as { code?: unknown }).code) : '';
}
