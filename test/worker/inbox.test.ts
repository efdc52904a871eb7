import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Worker } from '../../gateway/worker/worker.ts';
import { requirePostgres } from '../support/services.ts';
import { mutationDoc, newEntity, newMid, patientPayload, serviceCounts, startEnv, waitUntil, type Env, type StatusSeen } from './fixture.ts';
import { valueOf } from '../../gateway/metrics/registry.ts';

// The worker against the real embedded CouchDB and the real registration service: mutation docs
// are written into the inbox as replication writes them, and the resulting status docs checked.

const terminal = (s: StatusSeen) => ['committed', 'rejected', 'conflict'].includes(s.state);

describe('worker: inbox to status docs', function () {
  this.timeout(120_000);
  let env: Env;
  let worker: Worker;

  before(async function () {
    this.timeout(120_000);
    await requirePostgres(this);
    env = await startEnv({ tenants: ['north', 'south', 'east'] });
    worker = await env.startWorker({ waitingTimeoutMs: 3_000 });
  });
  after(async () => {
    await env?.close();
  });

  const create = (owner: string, entity = newEntity(), payload = patientPayload(), tenant = 'north', extra: Record<string, unknown> = {}) =>
    mutationDoc({ owner, tenant, entity, op: 'patient.create', payload, ...extra });
  const update = (owner: string, entity: string, after: string | null, baseVersion: number, payload: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    mutationDoc({ owner, tenant: 'north', entity, op: 'patient.update', after, baseVersion, payload, ...extra });
  const settled = (doc: { mid: string }, owner = 'ada', tenant = 'north') => env.waitStatus(tenant, owner, doc.mid, terminal);

  it('commits a create, stamps counter and fence, and moves feed:head over it', async () => {
    const c = create('ada');
    await env.push('north', [c]);
    const s = await settled(c);
    expect(s.state).to.equal('committed');
    expect(s.code).to.equal(null);
    expect(s.response?.status).to.equal(201);
    expect(s.response?.body.id).to.equal(c.entity);
    expect(s.attempts).to.equal(1);
    expect(s.counter).to.be.a('number');
    expect(s.fence).to.be.a('number');
    await waitUntil(async () => ((await env.workerCouch.db('inbox_north').get<{ counter: number }>('feed:head'))?.counter ?? 0) >= s.counter!, 5_000);
    // The pull feed's index (platform database) lists the doc at its counter.
    const indexed = await env.platform.db.query<{ counter: string }>('SELECT counter FROM feed_index WHERE tenant = $1 AND doc_id = $2', ['north', `s:ada:${c.mid}`]);
    expect(indexed.rows.map((r) => Number(r.counter))).to.deep.equal([s.counter]);
  });

  it('rejects an invalid payload with VALIDATION_FAILED and field paths, never values', async () => {
    const c = create('ada', newEntity(), patientPayload({ birthDate: '2999-02-30' }));
    await env.push('north', [c]);
    const s = await settled(c);
    expect(s).to.include({ state: 'rejected', code: 'VALIDATION_FAILED' });
    expect(s.errors!.map((e) => e.path)).to.include('birthDate');
    expect(JSON.stringify(s)).not.to.include('2999');
  });

  it('rejects an op that no manifest offers with UNKNOWN_OP', async () => {
    const c = mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.teleport', payload: {} });
    await env.push('north', [c]);
    expect(await settled(c)).to.include({ state: 'rejected', code: 'UNKNOWN_OP' });
  });

  it('rejects TENANT_MISMATCH for a user who is no member, or no longer one at commit time', async () => {
    // A body naming another tenant or owner never reaches the inbox (the VDU refuses it, even from
    // an admin); the screening table in decide.test.ts covers those rows.
    const stranger = create('zed');
    await env.push('north', [stranger]);
    expect(await settled(stranger, 'zed')).to.include({ state: 'rejected', code: 'TENANT_MISMATCH' });
    await env.platform.memberships.set('south', 'eve', ['registrar']).catch(async () => {
      await env.platform.users.upsert({ id: 'eve', username: 'eve', password: 'ferry-dev' });
      await env.platform.memberships.set('south', 'eve', ['registrar']);
    });
    const before = create('eve', newEntity(), patientPayload(), 'south');
    await env.push('south', [before]);
    expect(await settled(before, 'eve', 'south')).to.include({ state: 'committed' });
    await env.platform.memberships.remove('south', 'eve');
    const afterRemoval = create('eve', newEntity(), patientPayload(), 'south');
    await env.push('south', [afterRemoval]);
    expect(await settled(afterRemoval, 'eve', 'south')).to.include({ state: 'rejected', code: 'TENANT_MISMATCH' });
  });

  it('rejects a conflicted mutation doc (two roots) and commits neither branch', async () => {
    const entity = newEntity();
    const mid = newMid();
    const a = create('ada', entity, patientPayload(), 'north', { mid });
    const b = { ...create('ada', entity, patientPayload(), 'north', { mid }), seq: 999 };
    await env.push('north', [
      { ...a, _rev: `1-${randomBytes(16).toString('hex')}` },
      { ...b, _rev: `1-${randomBytes(16).toString('hex')}` },
    ]);
    const s = await settled(a);
    expect(s).to.include({ state: 'rejected', code: 'VALIDATION_FAILED' });
    expect(s.errors![0]!.message).to.match(/conflicting revisions/);
    expect((await serviceCounts(env.serviceDb, entity)).version).to.equal(null);
  });

  it('maps FORBIDDEN (viewer), MODULE_NOT_LICENSED (east) and NOT_FOUND (update of nothing)', async () => {
    const viewer = create('dee');
    const east = create('cy', newEntity(), patientPayload(), 'east');
    const missing = update('ada', newEntity(), null, 1, patientPayload());
    await env.push('north', [viewer, missing]);
    await env.push('east', [east]);
    expect(await settled(viewer, 'dee')).to.include({ state: 'rejected', code: 'FORBIDDEN' });
    expect(await settled(east, 'cy', 'east')).to.include({ state: 'rejected', code: 'MODULE_NOT_LICENSED' });
    expect(await settled(missing)).to.include({ state: 'rejected', code: 'NOT_FOUND' });
  });

  it('maps ID_CONFLICT, and DUPLICATE_DETECTED with candidate ids that a confirmed create resolves', async () => {
    const first = create('ada');
    await env.push('north', [first]);
    await settled(first);
    const sameId = create('ben', first.entity);
    await env.push('north', [sameId]);
    expect(await settled(sameId, 'ben')).to.include({ state: 'rejected', code: 'ID_CONFLICT' });

    // Same name, birth date and sex, another identifier: a likely duplicate, not an identifier clash.
    const lookalike = { ...(first.payload as Record<string, unknown>), identifiers: [{ system: 'national-id', value: `NI-${randomBytes(6).toString('hex')}` }] };
    const dup = create('ben', newEntity(), lookalike);
    await env.push('north', [dup]);
    const d = await settled(dup, 'ben');
    expect(d).to.include({ state: 'conflict', code: 'DUPLICATE_DETECTED' });
    expect(d.candidates).to.deep.equal([first.entity]);
    const confirmed = create('ben', dup.entity as string, { ...lookalike, confirmNotDuplicate: { reason: 'twins, checked at the desk' } }, 'north', {
      resolves: dup.mid,
      after: dup.mid,
    });
    await env.push('north', [confirmed]);
    const ok = await settled(confirmed, 'ben');
    expect(ok, JSON.stringify(ok)).to.include({ state: 'committed' });
  });

  it('any other 4xx is rejected with the service\'s code: PRECONDITION_REQUIRED, IDEMPOTENCY_KEY_REUSED', async () => {
    const c = create('ada');
    await env.push('north', [c]);
    await settled(c);
    const noVersion = mutationDoc({ owner: 'ada', tenant: 'north', entity: c.entity, op: 'patient.update', after: c.mid, baseVersion: null, payload: patientPayload() });
    await env.push('north', [noVersion]);
    expect(await settled(noVersion)).to.include({ state: 'rejected', code: 'PRECONDITION_REQUIRED' });
    // Another user's mutation under the same mid: the key is taken with another body.
    const reused = create('ben', newEntity(), patientPayload(), 'north', { mid: c.mid });
    await env.push('north', [reused]);
    expect(await settled(reused, 'ben')).to.include({ state: 'rejected', code: 'IDEMPOTENCY_KEY_REUSED' });
  });

  it('merge: a VERSION_CONFLICT, then a merged mutation that resolves it commits, and later edits go on committing', async () => {
    const c = create('ada');
    await env.push('north', [c]);
    await settled(c);
    // Ada and Ben both edit version 1 offline; Ada's lands first.
    const adaEdit = update('ada', c.entity as string, c.mid, 1, patientPayload({ facility: 'north-hc-2' }));
    await env.push('north', [adaEdit]);
    expect(await settled(adaEdit)).to.include({ state: 'committed' });
    const benEdit = update('ben', c.entity as string, null, 1, patientPayload({ facility: 'north-hc-3' }));
    await env.push('north', [benEdit]);
    const conflict = await settled(benEdit, 'ben');
    expect(conflict).to.include({ state: 'conflict', code: 'VERSION_CONFLICT' });
    expect((conflict.current as { version: number }).version).to.equal(2);
    // A later edit chained on the conflicted one, not resolving it, fails as a dependency.
    const stale = update('ben', c.entity as string, benEdit.mid, 2, patientPayload());
    // Ben merges: resolves the conflict on top of the current version.
    const merged = update('ben', c.entity as string, benEdit.mid, 2, patientPayload({ facility: 'north-hc-3' }), { resolves: benEdit.mid });
    const next = update('ben', c.entity as string, merged.mid, 3, patientPayload({ facility: 'north-hc-4' }));
    const last = update('ben', c.entity as string, next.mid, 4, patientPayload({ facility: 'north-hc-5' }));
    await env.push('north', [stale, merged, next, last]);
    expect(await settled(stale, 'ben')).to.include({ state: 'rejected', code: 'DEPENDENCY_FAILED' });
    expect(await settled(merged, 'ben')).to.include({ state: 'committed' });
    expect(await settled(next, 'ben')).to.include({ state: 'committed' });
    expect(await settled(last, 'ben')).to.include({ state: 'committed' });
    const counts = await serviceCounts(env.serviceDb, c.entity as string);
    expect(counts.version).to.equal(5);
    expect(counts.data!.facility).to.equal('north-hc-5');
  });

  it('DEPENDENCY_FAILED cascades down a chain after a rejection', async () => {
    const bad = create('ada', newEntity(), patientPayload({ birthDate: 'nope' }));
    const u1 = update('ada', bad.entity as string, bad.mid, 1, patientPayload());
    const u2 = update('ada', bad.entity as string, u1.mid, 2, patientPayload());
    await env.push('north', [u2, u1, bad]);
    expect(await settled(bad)).to.include({ state: 'rejected', code: 'VALIDATION_FAILED' });
    expect(await settled(u1)).to.include({ state: 'rejected', code: 'DEPENDENCY_FAILED' });
    expect(await settled(u2)).to.include({ state: 'rejected', code: 'DEPENDENCY_FAILED' });
  });

  it('DEPENDENCY_FAILED when after names another owner\'s or another entity\'s mutation', async () => {
    const adas = create('ada');
    await env.push('north', [adas]);
    await settled(adas);
    const foreign = update('ben', adas.entity as string, adas.mid, 1, patientPayload());
    const other = create('ada');
    await env.push('north', [other]);
    await settled(other);
    const crossEntity = update('ada', adas.entity as string, other.mid, 1, patientPayload());
    await env.push('north', [foreign, crossEntity]);
    expect(await settled(foreign, 'ben')).to.include({ state: 'rejected', code: 'DEPENDENCY_FAILED' });
    expect(await settled(crossEntity)).to.include({ state: 'rejected', code: 'DEPENDENCY_FAILED' });
  });

  it('waits for a predecessor that arrives later, then commits in order', async () => {
    const c = create('ada');
    const u = update('ada', c.entity as string, c.mid, 1, patientPayload({ facility: 'north-hc-9' }));
    await env.push('north', [u]);
    await env.waitStatus('north', 'ada', u.mid, (s) => s.state === 'waiting');
    expect(await valueOf(worker.metrics.queueDepth, { tenant: 'north' })).to.be.at.least(1);
    await env.push('north', [c]);
    expect(await settled(c)).to.include({ state: 'committed' });
    expect(await settled(u)).to.include({ state: 'committed' });
    expect((await serviceCounts(env.serviceDb, c.entity as string)).version).to.equal(2);
  });

  it('rejects with DEPENDENCY_FAILED once a missing predecessor passes the waiting timeout', async () => {
    const u = update('ada', newEntity(), newMid(), 1, patientPayload());
    await env.push('north', [u]);
    await env.waitStatus('north', 'ada', u.mid, (s) => s.state === 'waiting');
    const s = await env.waitStatus('north', 'ada', u.mid, terminal, 15_000);
    expect(s).to.include({ state: 'rejected', code: 'DEPENDENCY_FAILED' });
  });

  it('ordering: 50 updates pushed in shuffled order apply in after order', async () => {
    const c = create('ada');
    const updates = [];
    let prev = c.mid;
    for (let v = 1; v <= 50; v++) {
      const u = update('ada', c.entity as string, prev, v, patientPayload({ facility: `fac-${v}`, givenName: `Given${String.fromCharCode(65 + (v % 26))}` }));
      updates.push(u);
      prev = u.mid;
    }
    const shuffled = [c, ...updates].map((d) => ({ d, k: randomBytes(4).readUInt32BE() })).sort((a, b) => a.k - b.k).map((x) => x.d);
    // In two pushes, so part of the chain is waiting on the rest.
    await env.push('north', shuffled.slice(0, 25));
    await env.push('north', shuffled.slice(25));
    for (const u of updates) expect(await settled(u)).to.include({ state: 'committed' });
    const counts = await serviceCounts(env.serviceDb, c.entity as string);
    expect(counts.version).to.equal(51);
    expect(counts.data!.facility).to.equal('fac-50');
    expect(counts.data!.givenName).to.equal(updates[49]!.payload.givenName);
  });

  it('resolves conflicting status revisions terminal first and never resubmits a terminal mutation', async () => {
    const c = create('ada');
    const base = { type: 'status', v: 1, tenant: 'north', owner: 'ada', mutation: c.mid, attempts: 1, updatedAt: new Date().toISOString(), fence: 1 };
    await env.workerCouch.db('inbox_north').bulkDocs(
      [
        { ...base, _id: `s:ada:${c.mid}`, _rev: `1-${randomBytes(16).toString('hex')}`, state: 'retrying', code: null },
        { ...base, _id: `s:ada:${c.mid}`, _rev: `1-${randomBytes(16).toString('hex')}`, state: 'committed', code: null },
      ],
      { new_edits: false },
    );
    await env.push('north', [c]);
    await waitUntil(async () => {
      const s = await env.status('north', 'ada', c.mid);
      return s !== null && s.state === 'committed' && !(s as { _conflicts?: string[] })._conflicts;
    });
    expect((await serviceCounts(env.serviceDb, c.entity as string)).version).to.equal(null);
  });

  it('exposes queue depth, outcomes by code, commit latency, retries and lease state', async () => {
    const text = await worker.metrics.registry.metrics();
    expect(text).to.match(/ferry_worker_outcomes_total\{tenant="north",state="rejected",code="VALIDATION_FAILED"\} \d+/);
    expect(text).to.match(/ferry_worker_lease\{tenant="north",state="held"\} 1/);
    expect(text).to.match(/ferry_worker_commit_seconds_count\{tenant="north",module="registration"\} \d+/);
    expect(text).to.include('ferry_worker_queue_depth{tenant="north"}');
    expect(worker.held().sort()).to.deep.equal(['east', 'north', 'south']);
  });
});
