// Every row of the spec's §6 edge-case table, end to end on the full real stack (gateway, embedded
// CouchDB server, worker, registration service on PGlite, NATS), with devices on the real client
// library. Test names are the table's scenario, then its expected behaviour.

import {
  bulkDocIds,
  devTokens,
  dispose,
  openDevice,
  recordingFetch,
  startAcceptanceStack,
  demographics,
  syntheticPatient,
  v1,
  waitFor,
  waitForState,
  type Device,
} from './support.ts';
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { loadOrCreateSigningKey } from '../../identity/keys.ts';
import { createTokenIssuer } from '../../identity/tokens.ts';
import { requireNats } from '../support/services.ts';
import type { TestStack } from '../support/stack.ts';


describe('acceptance: spec §6 edge cases (full stack)', function () {
  this.timeout(90_000);
  let stack: TestStack;
  const devices: Device[] = [];

  before(async function () {
    this.timeout(120_000);
    await requireNats(this);
    stack = await startAcceptanceStack();
  });
  after(async function () {
    this.timeout(60_000);
    for (const d of devices) await dispose(d);
    await stack?.stop();
  });

  async function device(username: string, tenant: string, opts: Parameters<typeof openDevice>[2] = {}): Promise<Device> {
    const d = await openDevice(stack, await devTokens(stack.url, username, tenant), opts);
    devices.push(d);
    return d;
  }

  async function committedCreate(d: Device, patient = syntheticPatient()): Promise<{ entity: string; record: Record<string, unknown> }> {
    const r = await d.session.mutate('patient.create', patient);
    if (!r.ok) throw new Error(`refused: ${r.code}`);
    const done = await waitForState(d.session, r.mid, 'committed');
    return { entity: r.entity, record: done.state.response?.body as Record<string, unknown> };
  }

  it('Duplicate POST with same idempotency key: same 201 body as the first success', async function () {
    const token = await stack.login('ada', 'north');
    const key = randomUUID();
    const body = syntheticPatient();
    const first = await v1(stack.url, token, 'POST', '/patients', body, { 'idempotency-key': key });
    expect(first.status, JSON.stringify(first.body)).to.equal(201);
    const second = await v1(stack.url, token, 'POST', '/patients', body, { 'idempotency-key': key });
    expect(second.status).to.equal(201);
    expect(second.body).to.deep.equal(first.body);
    expect(second.headers.get('idempotent-replayed')).to.equal('true');
    const search = await v1(stack.url, token, 'GET', `/patients?name=${encodeURIComponent(`${String(body.givenName)} ${String(body.familyName)}`)}`);
    expect((search.body.results as unknown[]).length, 'one patient').to.equal(1);
    // The same key with another body is not a replay.
    const reused = await v1(stack.url, token, 'POST', '/patients', { ...body, phone: '+2348000000002' }, { 'idempotency-key': key });
    expect(reused.status).to.equal(422);
    expect(reused.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
  });

  it('Stale version on PUT: 409 optimistic lock; the client surfaces the conflict', async function () {
    const ada = await device('ada', 'north');
    const { entity, record } = await committedCreate(ada);
    const token = await ada.tokens.getToken();
    const ahead = await v1(stack.url, token, 'PUT', `/patients/${entity}`, { ...demographics(record), phone: '+2348000000003' }, { 'if-match': '"1"', 'idempotency-key': randomUUID() });
    expect(ahead.body.version).to.equal(2);
    // Online: the service answers 409 VERSION_CONFLICT with the current record.
    const stale = await v1(stack.url, token, 'PUT', `/patients/${entity}`, { ...demographics(record), phone: '+2348000000004' }, { 'if-match': '"1"', 'idempotency-key': randomUUID() });
    expect(stale.status).to.equal(409);
    expect(stale.body.code).to.equal('VERSION_CONFLICT');
    // Through the device: the stale update becomes a conflict the app is told about.
    const seen: string[] = [];
    ada.session.on('conflict', (c) => seen.push(`${c.mid}:${c.code ?? ''}`));
    const update = await ada.session.mutate('patient.update', { ...demographics(record), phone: '+2348000000005' }, entity);
    if (!update.ok) throw new Error(`refused: ${update.code}`);
    expect(ada.session.mutation(update.mid)?.baseVersion).to.equal(1);
    const conflicted = await waitForState(ada.session, update.mid, 'conflict');
    expect(conflicted.state.code).to.equal('VERSION_CONFLICT');
    expect(seen).to.include(`${update.mid}:VERSION_CONFLICT`);
    const conflict = ada.session.conflicts().find((c) => c.mid === update.mid);
    expect(conflict?.current).to.include({ version: 2, phone: '+2348000000003' });
    expect(ada.session.entity(entity).problems.map((m) => m.mid)).to.deep.equal([update.mid]);
  });

  it('Duplicate patient detected on sync registration: DUPLICATE_DETECTED with candidates; the user creates anyway with a reason, or discards', async function () {
    const ben = await device('ben', 'north');
    // A likely duplicate by normalised name + birth date + sex. (With a matching identifier the
    // service also refuses the override: identifiers are unique, IDENTIFIER_CONFLICT.)
    const person = syntheticPatient();
    const existing = await committedCreate(ben, person);

    const ada = await device('ada', 'north');
    const keep = await ada.session.mutate('patient.create', { ...person, phone: '+2348000000006' });
    const drop = await ada.session.mutate('patient.create', { ...person, phone: '+2348000000007' });
    if (!keep.ok || !drop.ok) throw new Error('refused');
    for (const mid of [keep.mid, drop.mid]) {
      const c = await waitForState(ada.session, mid, 'conflict');
      expect(c.state.code).to.equal('DUPLICATE_DETECTED');
      expect(c.state.candidates).to.include(existing.entity);
      // Ids only: no demographics travel with the candidates.
      expect(JSON.stringify(c.state.candidates)).to.not.include(String(person.familyName));
    }
    // Create anyway, with a reason: the same entity id, committed.
    const anyway = await ada.session.resolve(keep.mid, { kind: 'create-anyway', reason: 'Different person: checked the national id card' });
    if (!anyway.ok || !('mid' in anyway)) throw new Error(`refused: ${JSON.stringify(anyway)}`);
    expect(anyway.entity).to.equal(keep.entity);
    const created = await waitForState(ada.session, anyway.mid, 'committed');
    expect((created.state.response?.body as Record<string, unknown>).id).to.equal(keep.entity);
    // Discard: nothing is created and the problem is closed on the device.
    const discarded = await ada.session.resolve(drop.mid, { kind: 'discard' });
    expect(discarded).to.deep.equal({ ok: true, discarded: drop.mid });
    expect(ada.session.mutation(drop.mid)?.state).to.deep.equal({ kind: 'discarded', was: 'conflict' });
    expect(ada.session.conflicts()).to.deep.equal([]);
    const token = await ada.tokens.getToken();
    expect((await v1(stack.url, token, 'GET', `/patients/${keep.entity}`)).status).to.equal(200);
    expect((await v1(stack.url, token, 'GET', `/patients/${drop.entity}`)).status).to.equal(404);
  });

  it('Token expired mid-sync: the client refreshes and retries with the same mutation id', async function () {
    // An access token for ada that has already expired, signed by the platform's own key.
    const key = await loadOrCreateSigningKey(stack.config.dataDir);
    const past = createTokenIssuer({ key, issuer: stack.issuer.issuer, accessTtlSeconds: 60, now: () => Date.now() - 10 * 60_000 });
    const expired = await past.mintAccess({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['registrar'], sid: 'expired-session' });

    let expireAfterFirstPush = true;
    const transport = recordingFetch((req) => {
      // The token runs out between the first batch's upload and the second's.
      if (expireAfterFirstPush && req.path.endsWith('/_revs_diff') && transport.log.filter((r) => r.path.endsWith('/_bulk_docs')).length === 1) {
        expireAfterFirstPush = false;
        ada.tokens.current = expired;
      }
    });
    const ada = await device('ada', 'north', { autoSync: false, batchSize: 3, fetch: transport.fetch });
    const mids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const r = await ada.session.mutate('patient.create', syntheticPatient());
      if (!r.ok) throw new Error(`refused: ${r.code}`);
      mids.push(r.mid);
    }
    const result = await ada.session.sync.once();
    expect(result.kind, JSON.stringify(result)).to.equal('ok');
    expect(ada.tokens.refreshes).to.equal(1);

    // The request that met the expired token got 401, and the identical request went out again.
    const refused = transport.log.filter((r) => r.status === 401);
    expect(refused.map((r) => r.path.split('/').pop()), 'an upload met the expired token').to.include('_bulk_docs');
    for (const r of refused) {
      if (r.path.endsWith('/_bulk_docs')) expect(bulkDocIds(r.body).length).to.be.greaterThan(0);
      const retry = transport.log[transport.log.indexOf(r) + 1]!;
      expect(retry).to.include({ method: r.method, path: r.path, body: r.body });
      expect(retry.status).to.be.oneOf([200, 201]);
      expect(retry.auth).to.not.equal(r.auth);
    }
    // Every mutation went up under its own id, once per successful upload, and each commits once.
    const uploaded = transport.log.filter((r) => r.path.endsWith('/_bulk_docs') && r.status === 201).flatMap((r) => bulkDocIds(r.body));
    expect([...uploaded].sort()).to.deep.equal(mids.map((m) => `m:ada:${m}`).sort());
    ada.session.sync.start();
    for (const mid of mids) await waitForState(ada.session, mid, 'committed');
    const ids = new Set(mids.map((mid) => (ada.session.mutation(mid)?.state as { response: { body: { id: string } } }).response.body.id));
    expect(ids.size).to.equal(mids.length);
  });

  it('Two devices edit the same record: one commits, the other conflicts and is resolved by merge', async function () {
    const ada = await device('ada', 'north');
    const { entity, record } = await committedCreate(ada);
    // ben reads the record online, then edits it offline on his own device.
    const ben = await device('ben', 'north', { autoSync: false });
    const read = await v1(stack.url, await ben.tokens.getToken(), 'GET', `/patients/${entity}`);
    expect(read.body.version).to.equal(1);
    const benEdit = await ben.session.mutate('patient.update', { ...demographics(read.body), address: { city: 'Testville', country: 'NG' } }, { entity, baseVersion: 1 });
    // ada edits on hers, online: it commits first.
    const adaEdit = await ada.session.mutate('patient.update', { ...demographics(record), phone: '+2348000000008' }, entity);
    if (!benEdit.ok || !adaEdit.ok) throw new Error('refused');
    const adaDone = await waitForState(ada.session, adaEdit.mid, 'committed');
    expect((adaDone.state.response?.body as Record<string, unknown>).version).to.equal(2);

    // ben comes online: his edit on version 1 conflicts with version 2.
    ben.session.sync.start();
    const conflicted = await waitForState(ben.session, benEdit.mid, 'conflict');
    expect(conflicted.state.code).to.equal('VERSION_CONFLICT');
    const current = conflicted.state.current as Record<string, unknown>;
    expect(current).to.include({ version: 2, phone: '+2348000000008' });
    // Merge: ada's phone and ben's address, on version 2.
    const merged = await ben.session.resolve(benEdit.mid, { kind: 'merge', payload: { ...demographics(current), address: { city: 'Testville', country: 'NG' } } });
    if (!merged.ok || !('mid' in merged)) throw new Error(`refused: ${JSON.stringify(merged)}`);
    const done = await waitForState(ben.session, merged.mid, 'committed');
    expect((done.state.response?.body as Record<string, unknown>).version).to.equal(3);
    const server = await v1(stack.url, await ada.tokens.getToken(), 'GET', `/patients/${entity}`);
    expect(server.body).to.include({ version: 3, phone: '+2348000000008' });
    expect(server.body.address).to.deep.equal({ city: 'Testville', country: 'NG' });
    expect(ben.session.entity(entity).confirmed?.version).to.equal(3);
    expect(ben.session.conflicts()).to.deep.equal([]);
    // ada's device only ever saw its own statuses, all committed.
    await waitFor('ada idle', () => ada.session.mutations().every((m) => m.state.kind === 'committed'));
  });
});
