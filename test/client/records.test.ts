// The records replica on the device (DESIGN §8, issue 11 item 4), against a CouchDB-protocol
// stand-in for `/replica/{tenant}` (express-pouchdb behind the token check; the test writes the
// caller's records into it as the projection would): pull into the encrypted replica store,
// pending changes laid over records, baseVersion from the replica, offline search and list, a
// scope leave, the pull guard, duplicate candidates, and lock, wipe, switch and membership loss.
import { expect } from 'chai';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { openNodeSession, NodePouch, switchTenant, type NodeSessionOptions } from '../../client/node.ts';
import { recordsDbName, rawDb } from '../../client/store.ts';
import { isClientError } from '../../client/errors.ts';
import type { Session, SessionEvents } from '../../client/session.ts';
import type { MutationDoc } from '../../validators/mutation.ts';
import { FakeTokens, FakeWorker, startGateway, waitFor, type GatewayStandIn } from './support.ts';
import { newPatientId, putRecord, recordDoc, syntheticPatient } from './records-fixtures.ts';

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

async function rawHits(dir: string, needles: string[]): Promise<string[]> {
  const hits: string[] = [];
  for (const f of await filesUnder(dir)) {
    const bytes = await readFile(f);
    for (const n of needles) if (bytes.includes(Buffer.from(n))) hits.push(`${n} in ${f}`);
  }
  return hits;
}

describe('client/records: the replica on the device', function () {
  this.timeout(20_000);
  let gw: GatewayStandIn;
  let tokens: FakeTokens;
  let dir: string;
  const sessions: Session[] = [];

  const open = async (o: Partial<NodeSessionOptions> = {}): Promise<Session> => {
    const s = await openNodeSession({
      gatewayUrl: gw.url,
      tenant: 'north',
      owner: 'ada',
      passphrase: 'pw',
      tokens,
      adapter: 'memory',
      prefix: `r-${randomUUID()}-`,
      kdfIterations: 1_000,
      autoSync: false,
      idleTimeoutMs: null,
      backoff: { base: 20, cap: 80 },
      ...o,
    });
    sessions.push(s);
    return s;
  };
  const server = (owner = 'ada', tenant = 'north') => gw.records(tenant, owner);

  beforeEach(async () => {
    gw = await startGateway();
    tokens = new FakeTokens(gw, 'north', 'ada');
    dir = await mkdtemp(join(tmpdir(), 'ferry-records-'));
  });
  afterEach(async () => {
    for (const s of sessions.splice(0)) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
    await gw.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('pulls the caller’s records into the replica; entity() shows the record, current and baseVersion; a records event names them', async () => {
    const a = newPatientId();
    const b = newPatientId();
    await putRecord(server(), { id: a, version: 3, patient: { givenName: 'Amina', familyName: 'Okafor' } });
    await putRecord(server(), { id: b, patient: { givenName: 'Bola', familyName: 'Adeyemi' } });
    const s = await open();
    const events: SessionEvents['records'][] = [];
    s.on('records', (e) => events.push(e));
    expect(s.records.state).to.deep.equal({ count: 0, lastPulledAt: null, live: false });
    const pulled = await s.records.pull();
    expect(pulled).to.deep.equal({ kind: 'ok', pulled: 2 });
    expect(s.records.state.count).to.equal(2);
    expect(s.records.state.lastPulledAt).to.be.a('string');
    expect(events.flatMap((e) => e.changed).sort()).to.deep.equal([a, b].sort());
    const view = s.entity(a);
    expect(view.record).to.include({ id: a, version: 3, facility: 'north-hc-1' });
    expect(view.current).to.include({ id: a, givenName: 'Amina', familyName: 'Okafor', version: 3 });
    expect(view.baseVersion).to.equal(3);
    expect(view.pending).to.deep.equal([]);
    expect(s.entity(newPatientId())).to.include({ record: null, current: null, baseVersion: null });
    // Only read requests reached the replica, each with the bearer token.
    const replicaRequests = gw.requests.filter((r) => r.path.startsWith('/replica'));
    expect(replicaRequests.length).to.be.greaterThan(0);
    expect(replicaRequests.every((r) => r.token === tokens.current)).to.equal(true);
    // Every one answered, the first checkpoint read (404) aside.
    expect(replicaRequests.every((r) => r.status < 400 || (r.status === 404 && r.path.includes('/_local/')))).to.equal(true);
  });

  it('an update of a record registered elsewhere bases on the replica’s version; pending changes lay over the record; the chain goes on from there', async () => {
    const id = newPatientId();
    await putRecord(server(), { id, version: 4, patient: { givenName: 'Chidi', familyName: 'Eze', phone: '+2348000000001' } });
    const s = await open();
    await s.records.pull();
    const u1 = await s.mutate('patient.update', syntheticPatient({ givenName: 'Chidera', familyName: 'Eze' }), id);
    if (!u1.ok) throw new Error(u1.code);
    expect(s.mutation(u1.mid)?.baseVersion).to.equal(4);
    const view = s.entity(id);
    expect(view.record?.data.givenName).to.equal('Chidi'); // the server's record, as pulled
    expect(view.current).to.include({ id, version: 4, givenName: 'Chidera' });
    expect(view.current).to.not.have.property('phone'); // the update is the full representation
    expect(view.pending.map((m) => m.mid)).to.deep.equal([u1.mid]);
    expect(view.baseVersion).to.equal(5);
    const u2 = await s.mutate('patient.update', syntheticPatient({ givenName: 'Chidera', familyName: 'Eze-Obi' }), id);
    if (!u2.ok) throw new Error(u2.code);
    expect(s.mutation(u2.mid)).to.include({ baseVersion: 5, after: u1.mid });
    // What the worker receives carries those versions.
    await s.sync.once();
    const docs = await Promise.all([u1, u2].map(async (u) => (await gw.inbox('north').get(`m:ada:${u.mid}`)) as unknown as MutationDoc));
    expect(docs.map((d) => d.baseVersion)).to.deep.equal([4, 5]);
    // Once both committed and the replica moved on (another device then made v7), the next update bases on v7.
    await new FakeWorker(gw.inbox('north'), (m) => ({ state: 'committed', code: null, response: { status: 200, body: { id, version: (m.baseVersion ?? 0) + 1, ...m.payload } } })).run();
    await s.sync.once();
    await waitFor(() => s.mutation(u2.mid)?.state.kind === 'committed');
    await putRecord(server(), { id, version: 7, patient: { givenName: 'Chidera', familyName: 'Eze-Obi', phone: '+2348000000002' } });
    await s.records.pull();
    expect(s.entity(id).baseVersion).to.equal(7);
    expect(s.entity(id).current).to.include({ version: 7, phone: '+2348000000002' });
  });

  it('a pending create with no record shows its payload; list holds replica and pending creates, by family then given name', async () => {
    for (const [givenName, familyName] of [['Zainab', 'Bello'], ['Ade', 'Bello'], ['Ngozi', 'Abiola'], ['Émile', 'Çelik']]) await putRecord(server(), { id: newPatientId(), patient: { givenName, familyName } });
    const s = await open();
    await s.records.pull();
    const c = await s.mutate('patient.create', syntheticPatient({ givenName: 'Kemi', familyName: 'Balogun' }));
    if (!c.ok) throw new Error(c.code);
    expect(s.entity(c.entity)).to.deep.include({ record: null, baseVersion: 1 });
    expect(s.entity(c.entity).current).to.include({ id: c.entity, givenName: 'Kemi', familyName: 'Balogun' });
    const list = s.records.list();
    expect(list.map((h) => `${h.patient.familyName}, ${h.patient.givenName}`)).to.deep.equal(['Abiola, Ngozi', 'Balogun, Kemi', 'Bello, Ade', 'Bello, Zainab', 'Çelik, Émile']);
    const kemi = list.find((h) => h.id === c.entity)!;
    expect(kemi).to.deep.include({ version: null, facility: 'north-hc-1', pending: true });
    expect(list.filter((h) => h.pending)).to.have.length(1);
    expect(list.find((h) => h.patient.givenName === 'Ngozi')).to.deep.include({ version: 1, pending: false });
    expect(s.records.list({ limit: 2, offset: 1 }).map((h) => h.patient.givenName)).to.deep.equal(['Kemi', 'Ade']);
  });

  it('searches offline: name parts without case or accents, Arabic and Hebrew names, identifiers exact or prefix, birth date exact or year, all criteria together', async () => {
    const ids = { jose: newPatientId(), muhammad: newPatientId(), shira: newPatientId(), nkem: newPatientId(), nkechi: newPatientId() };
    await putRecord(server(), { id: ids.jose, patient: { givenName: 'José María', familyName: 'Núñez-García', birthDate: '1984-02-29', identifiers: [{ system: 'nin', value: 'NG-4471-0093' }] } });
    await putRecord(server(), { id: ids.muhammad, patient: { givenName: 'مُحَمَّد', familyName: 'الخطيب', birthDate: '1975-11-02' } });
    await putRecord(server(), { id: ids.shira, patient: { givenName: 'שִׁירָה', familyName: 'כהן', birthDate: '1975-06-30' } });
    await putRecord(server(), { id: ids.nkem, patient: { givenName: 'Nkem', familyName: 'Obi', birthDate: '2001-01-01', identifiers: [{ system: 'nin', value: 'NG-4471-0120' }] } });
    await putRecord(server(), { id: ids.nkechi, patient: { givenName: 'Nkechi', familyName: 'Obiora', birthDate: '2001-03-04' } });
    const s = await open();
    await s.records.pull();
    gw.setDown(true); // offline from here on
    const found = (q: Parameters<Session['records']['search']>[0]) => s.records.search(q).map((h) => h.id).sort();
    expect(found({ text: 'jose' })).to.deep.equal([ids.jose]);
    expect(found({ text: 'NUNEZ garcia' })).to.deep.equal([ids.jose]);
    expect(found({ text: 'maría núñez' })).to.deep.equal([ids.jose]);
    expect(found({ text: 'محمد' })).to.deep.equal([ids.muhammad]); // without the harakat
    expect(found({ text: 'مُحَمَّد الخطيب' })).to.deep.equal([ids.muhammad]);
    expect(found({ text: 'שירה' })).to.deep.equal([ids.shira]); // without the niqqud
    expect(found({ text: 'כהן' })).to.deep.equal([ids.shira]);
    expect(found({ text: 'nke' })).to.deep.equal([ids.nkechi, ids.nkem].sort()); // a word begins a name part
    expect(found({ text: 'nkem' })).to.deep.equal([ids.nkem]);
    expect(found({ text: 'kem' })).to.deep.equal([]);
    expect(found({ text: 'nkem obiora' })).to.deep.equal([]); // every word must match
    expect(found({ identifier: 'NG-4471-0093' })).to.deep.equal([ids.jose]);
    expect(found({ identifier: 'ng 4471' })).to.deep.equal([ids.jose, ids.nkem].sort());
    expect(found({ identifier: '4471' })).to.deep.equal([]);
    expect(found({ birthDate: '1975-06-30' })).to.deep.equal([ids.shira]);
    expect(found({ birthDate: '1975' })).to.deep.equal([ids.muhammad, ids.shira].sort());
    expect(found({ text: 'obi', birthDate: '2001' })).to.deep.equal([ids.nkechi, ids.nkem].sort());
    expect(found({ text: 'obi', birthDate: '2001-03-04' })).to.deep.equal([ids.nkechi]);
    expect(found({})).to.deep.equal([]);
    expect(s.records.search({ text: 'n' }, { limit: 2 })).to.have.length(2);
    expect(() => s.records.search({ birthDate: '75' })).to.throw().that.satisfies((e: unknown) => isClientError(e, 'INVALID_ARGUMENT'));
    const hit = s.records.search({ text: 'jose' })[0]!;
    expect(hit).to.deep.include({ id: ids.jose, version: 1, facility: 'north-hc-1', pending: false });
    expect(hit.patient).to.include({ givenName: 'José María', familyName: 'Núñez-García' });
  });

  it('search covers pending changes: a renamed record is found by its new name only, a pending create by its own', async () => {
    const id = newPatientId();
    await putRecord(server(), { id, patient: { givenName: 'Tunde', familyName: 'Bakare' } });
    const s = await open();
    await s.records.pull();
    const u = await s.mutate('patient.update', syntheticPatient({ givenName: 'Babatunde', familyName: 'Bakare' }), id);
    const c = await s.mutate('patient.create', syntheticPatient({ givenName: 'Folake', familyName: 'Adisa', birthDate: '1999-09-09' }));
    if (!u.ok || !c.ok) throw new Error();
    expect(s.records.search({ text: 'babatunde' }).map((h) => [h.id, h.pending])).to.deep.equal([[id, true]]);
    expect(s.records.search({ text: 'tunde' })).to.deep.equal([]);
    expect(s.records.search({ text: 'folake', birthDate: '1999' }).map((h) => [h.id, h.version, h.pending])).to.deep.equal([[c.entity, null, true]]);
  });

  it('a scope leave (the feed answers the record deleted) removes the record from the device', async () => {
    const stays = newPatientId();
    const leaves = newPatientId();
    await putRecord(server(), { id: stays, patient: { givenName: 'Ifeoma', familyName: 'Nwosu' } });
    await putRecord(server(), { id: leaves, patient: { givenName: 'Obinna', familyName: 'Nwosu' } });
    const s = await open({ adapter: 'leveldb', prefix: `${dir}/` });
    await s.records.pull();
    expect(s.records.search({ text: 'nwosu' })).to.have.length(2);
    const events: string[][] = [];
    s.on('records', (e) => events.push(e.changed));
    const doc = await server().get(`r:patient:${leaves}`);
    await server().remove(doc);
    await s.records.pull();
    expect(events).to.deep.equal([[leaves]]);
    expect(s.records.search({ text: 'nwosu' }).map((h) => h.id)).to.deep.equal([stays]);
    expect(s.records.state.count).to.equal(1);
    expect(s.entity(leaves)).to.include({ record: null, current: null });
    // Also after a reopen (rebuilt from the store), and the tombstone holds no demographics.
    await s.close();
    const again = await open({ adapter: 'leveldb', prefix: `${dir}/` });
    expect(again.records.state.count).to.equal(1);
    expect(again.records.search({ text: 'obinna' })).to.deep.equal([]);
    await again.close();
    const raw = rawDb({ PouchDB: NodePouch, adapter: 'leveldb', prefix: `${dir}/`, tenant: 'north', owner: 'ada' }, await recordsDbName('north', 'ada'));
    const tomb = await raw.get(`r:patient:${leaves}`, { revs: true, open_revs: 'all' });
    await raw.close();
    expect(JSON.stringify(tomb)).to.not.include('payload');
  });

  it('the pull guard stores only this tenant’s record docs: another tenant’s record, a mismatched id and junk are dropped and counted', async () => {
    const good = newPatientId();
    await putRecord(server(), { id: good });
    const foreign = recordDoc({ tenant: 'south', patient: { givenName: 'Foreign' } });
    const mismatched = { ...recordDoc(), _id: `r:patient:${newPatientId()}` };
    await server().bulkDocs([foreign, mismatched, { _id: 'junk', hello: 'world' }, { _id: `s:ada:0190f000-0000-7000-8000-00000000beef`, type: 'status' }] as PouchDB.Core.PutDocument<object>[]);
    const s = await open();
    const warnings: SessionEvents['warning'][] = [];
    s.on('warning', (w) => warnings.push(w));
    await s.records.pull();
    expect(s.records.state.count).to.equal(1);
    expect(s.records.search({ text: 'foreign' })).to.deep.equal([]);
    expect(warnings.filter((w) => w.code === 'REPLICA_GUARD_DROPPED').reduce((n, w) => n + w.count, 0)).to.equal(4);
  });

  it('duplicate candidates resolve to names and birth dates from the replica where in scope', async () => {
    const inScope = newPatientId();
    const outOfScope = newPatientId();
    await putRecord(server(), { id: inScope, version: 2, patient: { givenName: 'Halima', familyName: 'Yusuf', birthDate: '1988-08-08' } });
    const s = await open();
    await s.records.pull();
    const conflicts: SessionEvents['conflict'][] = [];
    s.on('conflict', (c) => conflicts.push(c));
    const c = await s.mutate('patient.create', syntheticPatient({ givenName: 'Halimah', familyName: 'Yusuf', birthDate: '1988-08-08' }));
    if (!c.ok) throw new Error(c.code);
    await s.sync.once();
    await new FakeWorker(gw.inbox('north'), () => ({ state: 'conflict', code: 'DUPLICATE_DETECTED', candidates: [inScope, outOfScope] })).run();
    await s.sync.once();
    await waitFor(() => conflicts.length === 1);
    const expected = [
      { id: inScope, inScope: true, givenName: 'Halima', familyName: 'Yusuf', birthDate: '1988-08-08', facility: 'north-hc-1', version: 2 },
      { id: outOfScope, inScope: false, givenName: null, familyName: null, birthDate: null, facility: null, version: null },
    ];
    expect(conflicts[0]!.candidateDetails).to.deep.equal(expected);
    expect(s.conflicts()[0]!.candidateDetails).to.deep.equal(expected);
  });

  it('live: records arrive while online with a records event; lock drops the index and stops the pull; unlock rebuilds it offline from the encrypted store', async () => {
    const s = await open({ autoSync: true });
    await waitFor(() => s.records.state.live);
    const id = newPatientId();
    const changed: string[] = [];
    s.on('records', (e) => changed.push(...e.changed));
    await putRecord(server(), { id, patient: { givenName: 'Yetunde', familyName: 'Ajayi' } });
    await waitFor(() => changed.includes(id));
    expect(s.records.search({ text: 'yetunde' }).map((h) => h.id)).to.deep.equal([id]);
    await s.lock();
    expect(s.records.state).to.include({ count: 0, live: false });
    expect(() => s.records.search({ text: 'yetunde' })).to.throw().that.satisfies((e: unknown) => isClientError(e, 'LOCKED'));
    expect(() => s.records.list()).to.throw().that.satisfies((e: unknown) => isClientError(e, 'LOCKED'));
    expect(() => s.entity(id)).to.throw().that.satisfies((e: unknown) => isClientError(e, 'LOCKED'));
    const before = gw.requests.length;
    await new Promise((r) => setTimeout(r, 150));
    expect(gw.requests.length).to.equal(before); // nothing pulls while locked
    gw.setDown(true);
    await s.unlock('pw');
    expect(s.records.state.count).to.equal(1);
    expect(s.records.search({ text: 'ajayi' }).map((h) => h.id)).to.deep.equal([id]);
    gw.setDown(false);
    s.sync.kick();
    await waitFor(() => s.records.state.live, { timeout: 5_000 });
    await s.sync.stop();
    expect(s.records.state.live).to.equal(false);
  });

  it('a reopen rebuilds the index from the encrypted store, page by page (1,001 records)', async () => {
    const docs = Array.from({ length: 1_001 }, (_, i) => recordDoc({ patient: { givenName: `Paged${i}`, familyName: 'Pageworth' } }));
    await server().bulkDocs(docs as PouchDB.Core.PutDocument<object>[]);
    const prefix = `${dir}/`;
    const s = await open({ adapter: 'leveldb', prefix });
    await s.records.pull();
    expect(s.records.state.count).to.equal(1_001);
    await s.close();
    const again = await open({ adapter: 'leveldb', prefix });
    expect(again.records.state.count).to.equal(1_001);
    expect(again.records.search({ text: 'paged1000' }).map((h) => h.id)).to.deep.equal([docs[1_000]!.id]);
    expect(again.records.search({ text: 'paged0 pageworth' }).map((h) => h.id)).to.deep.equal([docs[0]!.id]);
  });

  it('a 401 on the replica refreshes the token once and sends the same request again', async () => {
    await putRecord(server(), { id: newPatientId() });
    const s = await open();
    tokens.expire();
    expect(await s.records.pull()).to.deep.equal({ kind: 'ok', pulled: 1 });
    expect(tokens.refreshes).to.equal(1);
    const statuses = gw.requests.filter((r) => r.path.startsWith('/replica/north')).map((r) => r.status);
    expect(statuses.filter((x) => x === 401)).to.have.length(1);
  });

  it('a 403 TENANT_MISMATCH halts the replica pull, as it does /sync', async () => {
    const opaque = `opaque-${randomUUID()}`;
    gw.valid.set(opaque, 'south');
    tokens.current = opaque;
    const s = await open();
    expect(await s.records.pull()).to.deep.equal({ kind: 'halted', source: 'server' });
    s.sync.start();
    await waitFor(() => s.sync.state.kind === 'tenant-mismatch');
    await new Promise((r) => setTimeout(r, 150));
    const count = gw.requests.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(gw.requests.length).to.equal(count); // neither retries
    expect(s.records.state.live).to.equal(false);
  });

  it('wipe destroys the replica with the rest of the store, also while locked', async () => {
    await putRecord(server(), { id: newPatientId(), patient: { givenName: 'Ronke' } });
    const prefix = `${dir}/`;
    const s = await open({ adapter: 'leveldb', prefix });
    await s.records.pull();
    const name = await recordsDbName('north', 'ada');
    expect(await readdir(dir)).to.include(name);
    await s.lock();
    expect((await s.wipe()).ok).to.equal(true);
    expect(await readdir(dir)).to.not.include(name);
    const again = await open({ adapter: 'leveldb', prefix });
    expect(again.records.state.count).to.equal(0);
    expect(again.records.search({ text: 'ronke' })).to.deep.equal([]);
  });

  it('switching tenant: nothing of tenant A’s replica is visible in tenant B’s session, and A’s stays A’s', async () => {
    await putRecord(server('ada', 'north'), { id: newPatientId(), patient: { givenName: 'Northerner' } });
    await putRecord(server('ada', 'south'), { id: newPatientId(), tenant: 'south', patient: { givenName: 'Southerner' } });
    const prefix = `${dir}/`;
    const north = await open({ adapter: 'leveldb', prefix });
    await north.records.pull();
    expect(north.records.search({ text: 'northerner' })).to.have.length(1);
    const southTokens = new FakeTokens(gw, 'south', 'ada');
    const { session: south } = await switchTenant(north, { gatewayUrl: gw.url, tenant: 'south', owner: 'ada', passphrase: 'pw', tokens: southTokens, PouchDB: NodePouch, adapter: 'leveldb', prefix, kdfIterations: 1_000, autoSync: false, idleTimeoutMs: null });
    sessions.push(south);
    expect(north.closed).to.equal(true);
    expect(south.records.state.count).to.equal(0);
    expect(south.records.search({ text: 'northerner' })).to.deep.equal([]);
    expect(south.records.list()).to.deep.equal([]);
    await south.records.pull();
    expect(south.records.list().map((h) => h.patient.givenName)).to.deep.equal(['Southerner']);
    expect(await recordsDbName('south', 'ada')).to.not.equal(await recordsDbName('north', 'ada'));
    await south.close();
    const back = await open({ adapter: 'leveldb', prefix });
    expect(back.records.list().map((h) => h.patient.givenName)).to.deep.equal(['Northerner']);
  });

  it('membership gone: the replica is destroyed, nothing is shown or pulled, and the queue is rejected as before', async () => {
    await putRecord(server(), { id: newPatientId(), patient: { givenName: 'Sade' } });
    const prefix = `${dir}/`;
    const s = await open({ adapter: 'leveldb', prefix });
    await s.records.pull();
    const q = await s.mutate('patient.create', syntheticPatient());
    if (!q.ok) throw new Error();
    const changed: string[] = [];
    s.on('records', (e) => changed.push(...e.changed));
    expect(await s.membershipRevoked()).to.deep.equal({ rejected: 1 });
    expect(changed).to.have.length(1);
    expect(s.records.state).to.deep.equal({ count: 0, lastPulledAt: null, live: false });
    expect(s.records.search({ text: 'sade' })).to.deep.equal([]);
    expect(await s.records.pull()).to.deep.equal({ kind: 'halted', source: 'membership' });
    expect(await readdir(dir)).to.not.include(await recordsDbName('north', 'ada'));
    await s.close({ confirm: true });
  });

  it('on leveldb, raw files of the replica hold no PHI in clear (names, birth date, identifier, phone), with a plain-db control', async () => {
    const ids = [newPatientId(), newPatientId()];
    const needles = ['Qorvathine', 'Zyxbelloma', '1961-12-25', 'NG-9931-7788', '+2348077700001', 'مُحَمَّد'];
    await putRecord(server(), { id: ids[0]!, patient: { givenName: 'Qorvathine', familyName: 'Zyxbelloma', birthDate: '1961-12-25', identifiers: [{ system: 'nin', value: 'NG-9931-7788' }], phone: '+2348077700001' } });
    await putRecord(server(), { id: ids[1]!, patient: { givenName: 'مُحَمَّد', familyName: 'Zyxbelloma' } });
    const prefix = `${dir}/`;
    const s = await open({ adapter: 'leveldb', prefix });
    await s.records.pull();
    expect(s.records.search({ text: 'qorvathine' })).to.have.length(1);
    await s.close();
    const name = await recordsDbName('north', 'ada');
    const files = await filesUnder(join(dir, name));
    expect(files.length).to.be.greaterThan(0);
    // The dump covers the record docs: their ids are stored in clear.
    expect(await rawHits(join(dir, name), [ids[0]!])).to.have.length.greaterThan(0);
    expect(await rawHits(dir, needles)).to.deep.equal([]);
    // Control: the same grep finds them in a plain leveldb database holding the same doc.
    const plain = new NodePouch(`${dir}/control`, { adapter: 'leveldb' } as PouchDB.Configuration.DatabaseConfiguration);
    await plain.put(recordDoc({ patient: { givenName: 'Qorvathine', familyName: 'Zyxbelloma', birthDate: '1961-12-25', identifiers: [{ system: 'nin', value: 'NG-9931-7788' }], phone: '+2348077700001' } }) as PouchDB.Core.PutDocument<object>);
    await plain.close();
    expect((await rawHits(join(dir, 'control'), needles.slice(0, 5))).length).to.equal(5);
  });
});
