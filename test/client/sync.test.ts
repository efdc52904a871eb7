// Sync against a real CouchDB-protocol server (express-pouchdb) standing in for the gateway's
// `/sync/{tenant}`, with a fake worker writing status docs. Deterministic: every wait is bounded.
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openNodeSession, type NodeSessionOptions } from '../../client/node.ts';
import { switchTenant, type Session, type SessionEvents } from '../../client/session.ts';
import { localDbName, rawDb } from '../../client/store.ts';
import { NodePouch } from '../../client/node.ts';
import type { FetchLike } from '../../client/auth-fetch.ts';
import type { SyncState } from '../../client/sync.ts';
import type { MutationDoc, StatusDoc } from '../../validators/mutation.ts';
import { FakeTokens, FakeWorker, fakeJwt, patient, startGateway, waitFor, type GatewayStandIn } from './support.ts';

interface Sent {
  url: string;
  method: string;
  auth: string | null;
  body: string | null;
}

function recorder(): { fetch: FetchLike; sent: Sent[] } {
  const sent: Sent[] = [];
  const fetch: FetchLike = (input, init) => {
    sent.push({ url: String(input), method: init?.method ?? 'GET', auth: new Headers(init?.headers).get('authorization'), body: typeof init?.body === 'string' ? init.body : null });
    return globalThis.fetch(input, init);
  };
  return { fetch, sent };
}

const bulkIds = (s: Sent): string[] => (JSON.parse(s.body ?? '{"docs":[]}') as { docs: { _id: string }[] }).docs.map((d) => d._id);

describe('client/sync against a CouchDB-protocol stand-in for /sync/{tenant}', function () {
  this.timeout(20_000);
  let gw: GatewayStandIn;
  let tokens: FakeTokens;
  let rec: ReturnType<typeof recorder>;
  const sessions: Session[] = [];

  /** The leveldb/memory prefix each session was opened with. */
  const prefixOf = new WeakMap<Session, string>();
  const open = async (o: Partial<NodeSessionOptions> = {}): Promise<Session> => {
    const prefix = o.prefix ?? `c-${randomUUID()}-`;
    const s = await openNodeSession({
      gatewayUrl: gw.url,
      tenant: 'north',
      owner: 'ada',
      passphrase: 'pw',
      tokens,
      adapter: 'memory',
      kdfIterations: 1_000,
      autoSync: false,
      idleTimeoutMs: null,
      fetch: rec.fetch,
      backoff: { base: 20, cap: 80 },
      ...o,
      prefix,
    });
    prefixOf.set(s, prefix);
    sessions.push(s);
    return s;
  };

  beforeEach(async () => {
    gw = await startGateway();
    tokens = new FakeTokens(gw, 'north', 'ada');
    rec = recorder();
  });
  afterEach(async () => {
    for (const s of sessions.splice(0)) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
    await gw.close();
  });

  async function serverDocs(tenant = 'north'): Promise<string[]> {
    return (await gw.inbox(tenant).allDocs()).rows.map((r) => r.id).filter((id) => !id.startsWith('_design/'));
  }

  it('push sends only this owner’s m: docs — never drafts, local notes or _local state', async () => {
    const s = await open();
    const a = await s.mutate('patient.create', patient());
    await s.drafts.save({ op: 'patient.create', payload: { givenName: 'Draft' } });
    if (!a.ok) throw new Error();
    const result = await s.sync.once();
    expect(result).to.deep.include({ kind: 'ok', pushed: 1 });
    expect(await serverDocs()).to.deep.equal([`m:ada:${a.mid}`]);
    const pushed = rec.sent.filter((x) => x.url.includes('_bulk_docs')).flatMap(bulkIds);
    expect(pushed).to.deep.equal([`m:ada:${a.mid}`]);
    // What reached the server is the DESIGN §4 doc in clear (crypto-pouch decrypts on the way out).
    const doc = (await gw.inbox('north').get(`m:ada:${a.mid}`)) as unknown as MutationDoc;
    expect(doc).to.include({ type: 'mutation', v: 1, tenant: 'north', owner: 'ada', seq: 1, op: 'patient.create', entity: a.entity, after: null, resolves: null, baseVersion: null });
    expect(doc.payload).to.include({ givenName: 'Zyxwvuta' });
    expect(doc.device).to.equal(s.device);
  });

  it('pull brings back status docs; statuses reconcile into mutation and entity state, with events', async () => {
    const s = await open();
    const seen: SessionEvents['status'][] = [];
    s.on('status', (m) => seen.push(m));
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error();
    await s.sync.once();
    await new FakeWorker(gw.inbox('north')).run();
    const r = await s.sync.once();
    expect(r).to.deep.include({ kind: 'ok', pulled: 1 });
    await waitFor(() => s.mutation(a.mid)?.state.kind === 'committed');
    const view = s.entity(a.entity);
    expect(view.confirmed?.version).to.equal(1);
    expect(view.pending).to.deep.equal([]);
    expect(seen.map((m) => m.state.kind)).to.deep.equal(['queued', 'committed']);
    expect(await s.unsynced()).to.equal(0);
    expect(await s.close()).to.deep.equal({ ok: true, unsynced: 0 });
  });

  it('pull lets in only this owner’s, this tenant’s status docs (defence in depth)', async () => {
    const s = await open();
    const warnings: number[] = [];
    s.on('warning', (w) => warnings.push(w.count));
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error();
    await s.sync.once();
    const inbox = gw.inbox('north');
    const foreignMid = '0190f000-0000-7000-8000-00000000f00d';
    const base = { type: 'status', v: 1, state: 'committed', code: null, attempts: 1, updatedAt: new Date().toISOString() };
    await inbox.bulkDocs([
      { _id: `s:ben:${foreignMid}`, ...base, tenant: 'north', owner: 'ben', mutation: foreignMid, response: { status: 201, body: { givenName: 'Foreign' } } },
      { _id: `s:ada:${foreignMid}`, ...base, tenant: 'south', owner: 'ada', mutation: foreignMid },
      { _id: `s:ada:0190f000-0000-7000-8000-00000000beef`, ...base, tenant: 'north', owner: 'ada', mutation: foreignMid },
      { _id: `m:ben:${foreignMid}`, type: 'mutation', payload: { givenName: 'Foreign' } },
      { _id: 'other', hello: 'world' },
    ] as unknown as PouchDB.Core.PutDocument<object>[]);
    await new FakeWorker(inbox, () => ({ state: 'committed', code: null, response: { status: 201, body: { id: a.entity, version: 1 } } })).run().catch(() => undefined);
    await s.sync.once();
    await waitFor(() => s.mutation(a.mid)?.state.kind === 'committed');
    await s.lock();
    const name = await localDbName('north', 'ada');
    const raw = rawDb({ PouchDB: NodePouch, adapter: 'memory', prefix: prefixOf.get(s)!, tenant: 'north', owner: 'ada' }, name);
    const ids = (await raw.allDocs()).rows.map((r) => r.id).sort();
    await raw.close();
    expect(ids).to.deep.equal([`m:ada:${a.mid}`, `s:ada:${a.mid}`]);
    expect(warnings.reduce((x, y) => x + y, 0)).to.be.at.least(4);
  });

  it('several offline edits of one entity replay in order (seq, after, baseVersion chain)', async () => {
    const s = await open();
    const c = await s.mutate('patient.create', patient());
    if (!c.ok) throw new Error();
    const mids = [c.mid];
    for (const name of ['Two', 'Three', 'Four']) {
      const u = await s.mutate('patient.update', patient({ givenName: name }), c.entity);
      if (!u.ok) throw new Error(u.code);
      mids.push(u.mid);
    }
    expect(s.entity(c.entity).current).to.include({ givenName: 'Four' });
    await s.sync.once();
    const docs = await Promise.all(mids.map(async (m) => (await gw.inbox('north').get(`m:ada:${m}`)) as unknown as MutationDoc));
    expect(docs.map((d) => [d.seq, d.after, d.baseVersion])).to.deep.equal([
      [1, null, null],
      [2, mids[0], 1],
      [3, mids[1], 2],
      [4, mids[2], 3],
    ]);
    const worker = new FakeWorker(gw.inbox('north'));
    await worker.run();
    expect(worker.processed).to.deep.equal(mids);
    await s.sync.once();
    await waitFor(() => mids.every((m) => s.mutation(m)?.state.kind === 'committed'));
    expect(s.entity(c.entity).confirmed).to.deep.include({ version: 4 });
    expect(s.entity(c.entity).current).to.include({ givenName: 'Four', version: 4 });
  });

  it('a version conflict surfaces with the server version; merge commits on current.version and resolves it', async () => {
    const s = await open();
    const conflicts: SessionEvents['conflict'][] = [];
    s.on('conflict', (c) => conflicts.push(c));
    const c = await s.mutate('patient.create', patient());
    if (!c.ok) throw new Error();
    await s.sync.once();
    const worker = new FakeWorker(gw.inbox('north'));
    await worker.run();
    await s.sync.once();
    await waitFor(() => s.mutation(c.mid)?.state.kind === 'committed');
    // Another device edits the record on the server: v2.
    worker.records.set(c.entity, { ...worker.records.get(c.entity)!, version: 2, phone: '+2348000000001' });
    const mine = await s.mutate('patient.update', patient({ givenName: 'Mine' }), c.entity);
    if (!mine.ok) throw new Error();
    expect(s.mutation(mine.mid)?.baseVersion).to.equal(1);
    await s.sync.once();
    await worker.run();
    await s.sync.once();
    await waitFor(() => conflicts.length === 1);
    expect(conflicts[0]).to.deep.include({ mid: mine.mid, code: 'VERSION_CONFLICT' });
    expect(conflicts[0]!.current).to.include({ version: 2, phone: '+2348000000001' });
    expect(s.conflicts().map((x) => x.mid)).to.deep.equal([mine.mid]);
    expect(s.entity(c.entity).problems.map((m) => m.mid)).to.deep.equal([mine.mid]);

    const merged = await s.resolve(mine.mid, { kind: 'merge', payload: patient({ givenName: 'Mine', phone: '+2348000000001' }) });
    if (!merged.ok || !('mid' in merged)) throw new Error('merge failed');
    expect(s.mutation(merged.mid)).to.include({ resolves: mine.mid, baseVersion: 2, after: c.mid, op: 'patient.update' });
    expect(s.conflicts()).to.deep.equal([]);
    expect(await s.resolve(mine.mid, { kind: 'discard' })).to.deep.include({ ok: false, code: 'CANNOT_RESOLVE' });
    await s.sync.once();
    await worker.run();
    await s.sync.once();
    await waitFor(() => s.mutation(merged.mid)?.state.kind === 'committed');
    expect(s.entity(c.entity).current).to.include({ version: 3, givenName: 'Mine', phone: '+2348000000001' });
    expect(s.entity(c.entity).problems).to.deep.equal([]);
  });

  it('a duplicate surfaces with candidates; create anyway sends confirmNotDuplicate; discard is recorded locally', async () => {
    const s = await open();
    let dup = true;
    const worker = new FakeWorker(gw.inbox('north'), (m) => {
      if ((m.payload as { confirmNotDuplicate?: unknown }).confirmNotDuplicate || !dup) return { state: 'committed', code: null, response: { status: 201, body: { id: m.entity, version: 1, ...m.payload } } };
      return { state: 'conflict', code: 'DUPLICATE_DETECTED', candidates: ['pat_0190f000-0000-7000-8000-0000000000cc'] };
    });
    const a = await s.mutate('patient.create', patient());
    const b = await s.mutate('patient.create', patient({ givenName: 'Second' }));
    if (!a.ok || !b.ok) throw new Error();
    await s.sync.once();
    await worker.run();
    await s.sync.once();
    await waitFor(() => s.conflicts().length === 2);
    expect(s.conflicts()[0]!.candidates).to.deep.equal(['pat_0190f000-0000-7000-8000-0000000000cc']);
    const again = await s.resolve(a.mid, { kind: 'create-anyway', reason: 'Different person; checked the ID card' });
    if (!again.ok || !('mid' in again)) throw new Error();
    expect(await s.resolve(b.mid, { kind: 'discard' })).to.deep.equal({ ok: true, discarded: b.mid });
    expect(s.mutation(b.mid)?.state).to.deep.equal({ kind: 'discarded', was: 'conflict' });
    expect(s.conflicts()).to.deep.equal([]);
    dup = false;
    await s.sync.once();
    await worker.run();
    await s.sync.once();
    await waitFor(() => s.mutation(again.mid)?.state.kind === 'committed');
    const sentDoc = (await gw.inbox('north').get(`m:ada:${again.mid}`)) as unknown as MutationDoc;
    expect(sentDoc).to.include({ resolves: a.mid, entity: a.entity, after: null });
    expect(sentDoc.payload).to.deep.include({ confirmNotDuplicate: { reason: 'Different person; checked the ID card' } });
    expect(await serverDocs()).to.not.include(`l:ada:${b.mid}`);
  });

  it('token expiring mid-sync: 401 → one refresh → the same _bulk_docs (same mutation ids) again', async () => {
    const sent: Sent[] = [];
    let expired = false;
    const fetch: FetchLike = (input, init) => {
      const url = String(input);
      if (url.includes('_bulk_docs') && !expired) {
        expired = true;
        tokens.expire();
      }
      sent.push({ url, method: init?.method ?? 'GET', auth: new Headers(init?.headers).get('authorization'), body: typeof init?.body === 'string' ? init.body : null });
      return globalThis.fetch(input, init);
    };
    const s = await open({ fetch });
    const mids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await s.mutate('patient.create', patient({ givenName: `P${i}` }));
      if (r.ok) mids.push(r.mid);
    }
    const oldToken = tokens.current;
    expect(await s.sync.once()).to.deep.include({ kind: 'ok', pushed: 3 });
    expect(tokens.refreshes).to.equal(1);
    const bulks = sent.filter((x) => x.url.includes('_bulk_docs'));
    expect(bulks).to.have.length(2);
    expect(bulks[0]!.auth).to.equal(`Bearer ${oldToken}`);
    expect(bulks[1]!.auth).to.equal(`Bearer ${tokens.current}`);
    expect(bulks[1]!.body).to.equal(bulks[0]!.body);
    expect(bulkIds(bulks[0]!).sort()).to.deep.equal(mids.map((m) => `m:ada:${m}`).sort());
    expect(gw.requests.filter((r) => r.path.includes('_bulk_docs')).map((r) => r.status)).to.deep.equal([401, 201]);
    expect((await serverDocs()).sort()).to.deep.equal(mids.map((m) => `m:ada:${m}`).sort());
  });

  it('docs the gateway denies become local rejected statuses; the rest go through', async () => {
    await gw.inbox('north').put({ _id: '_design/gate', validate_doc_update: "function (doc) { if (doc.payload && doc.payload.familyName === 'Refused') throw({ forbidden: 'FORBIDDEN' }); }" } as unknown as PouchDB.Core.PutDocument<object>);
    const s = await open();
    const ok = await s.mutate('patient.create', patient());
    const bad = await s.mutate('patient.create', patient({ familyName: 'Refused' }));
    if (!ok.ok || !bad.ok) throw new Error();
    const r = await s.sync.once();
    expect(r).to.deep.include({ kind: 'ok', denied: 1 });
    await waitFor(() => s.mutation(bad.mid)?.state.kind === 'rejected');
    expect(s.mutation(bad.mid)?.state).to.deep.include({ kind: 'rejected', code: 'FORBIDDEN', source: 'device' });
    expect(s.mutation(ok.mid)?.state.kind).to.equal('queued');
    expect(await serverDocs()).to.deep.equal([`m:ada:${ok.mid}`]);
    expect(await s.unsynced()).to.equal(1);
  });

  it('live sync: pushes as soon as a mutation is queued and pulls statuses as they are written', async () => {
    const s = await open({ autoSync: true });
    await waitFor(() => s.sync.state.kind === 'idle');
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error();
    await waitFor(async () => (await serverDocs()).includes(`m:ada:${a.mid}`));
    await new FakeWorker(gw.inbox('north')).run();
    await waitFor(() => s.mutation(a.mid)?.state.kind === 'committed');
    await s.sync.stop();
    expect(s.sync.state.kind).to.equal('stopped');
  });

  it('live sync: calls written together each get their queued and then their pulled status event, once', async () => {
    const s = await open({ autoSync: true });
    await waitFor(() => s.sync.state.kind === 'idle');
    const seen = new Map<string, string[]>();
    s.on('status', (m) => seen.set(m.mid, [...(seen.get(m.mid) ?? []), m.state.kind]));
    const created = await Promise.all([0, 1, 2, 3, 4].map(() => s.mutate('patient.create', patient())));
    const mids = created.map((r) => (r.ok ? r.mid : ''));
    expect(mids.every((m) => m !== '')).to.equal(true);
    expect(await s.unsynced()).to.equal(5);
    const worker = new FakeWorker(gw.inbox('north'));
    await waitFor(async () => (await serverDocs()).filter((id) => id.startsWith('m:')).length === 5);
    await worker.run();
    await waitFor(() => mids.every((m) => s.mutation(m)?.state.kind === 'committed'));
    expect(await s.unsynced()).to.equal(0);
    // Let any duplicate (a second read of the same pulled batch) show up before counting.
    await new Promise((r) => setTimeout(r, 100));
    expect(mids.map((m) => seen.get(m))).to.deep.equal(mids.map(() => ['queued', 'committed']));
    await s.sync.stop();
  });

  it('network down: bounded exponential backoff; back up: syncs and the backoff resets', async () => {
    const s = await open({ backoff: { base: 20, cap: 80, random: () => 1 } });
    const states: SyncState[] = [];
    s.on('sync', (st) => states.push(st));
    gw.setDown(true);
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error();
    s.sync.start();
    await waitFor(() => states.filter((x) => x.kind === 'backoff').length >= 4);
    const first = states.filter((x): x is Extract<SyncState, { kind: 'backoff' }> => x.kind === 'backoff').slice(0, 4);
    expect(first.map((x) => [x.attempt, x.delayMs, x.reachable])).to.deep.equal([
      [1, 20, false],
      [2, 40, false],
      [3, 80, false],
      [4, 80, false],
    ]);
    gw.setDown(false);
    await waitFor(async () => (await serverDocs()).includes(`m:ada:${a.mid}`));
    await waitFor(() => s.sync.state.kind === 'idle');
    states.length = 0;
    gw.setDown(true);
    await waitFor(() => states.some((x) => x.kind === 'backoff'));
    expect(states.find((x) => x.kind === 'backoff')).to.deep.include({ attempt: 1, delayMs: 20 });
    gw.setDown(false);
    await s.sync.stop();
  });

  it('a token for another tenant is never sent: replication stops, the queue waits for a token of the right tenant', async () => {
    const s = await open();
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error();
    const northToken = tokens.current;
    tokens.current = tokens.mint('south'); // the user switched tenant on the server
    s.sync.start();
    await waitFor(() => s.sync.state.kind === 'tenant-mismatch');
    expect(s.sync.state).to.deep.equal({ kind: 'tenant-mismatch', source: 'token-tenant' });
    expect(rec.sent).to.have.length(0);
    await new Promise((r) => setTimeout(r, 150));
    expect(rec.sent).to.have.length(0); // no retry loop
    expect(await s.unsynced()).to.equal(1);
    tokens.current = northToken;
    s.sync.start();
    await waitFor(async () => (await serverDocs()).includes(`m:ada:${a.mid}`));
    expect(rec.sent.every((x) => x.auth === `Bearer ${northToken}`)).to.equal(true);
    await s.sync.stop();
  });

  it('a gateway 403 TENANT_MISMATCH stops that database’s replication for good (until restarted)', async () => {
    const opaque = `opaque-${randomUUID()}`;
    gw.valid.set(opaque, 'south');
    tokens.current = opaque;
    const s = await open();
    await s.mutate('patient.create', patient());
    s.sync.start();
    await waitFor(() => s.sync.state.kind === 'tenant-mismatch');
    expect(s.sync.state).to.deep.equal({ kind: 'tenant-mismatch', source: 'server' });
    await new Promise((r) => setTimeout(r, 100)); // requests already in flight when it halted
    const count = gw.requests.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(gw.requests.length).to.equal(count); // and no retries after
    expect(gw.requests.every((r) => r.status === 403 || r.path === '/sync/' || r.path === '/replica/' || r.status === 0)).to.equal(true);
    expect(await serverDocs('north')).to.deep.equal([]);
    expect(await serverDocs('south')).to.deep.equal([]);
  });

  it('membership gone: queued mutations become local rejected TENANT_MISMATCH and sync stops', async () => {
    const s = await open({ autoSync: true });
    await waitFor(() => s.sync.state.kind === 'idle');
    await s.sync.stop();
    const a = await s.mutate('patient.create', patient());
    const b = await s.mutate('patient.create', patient({ givenName: 'B' }));
    if (!a.ok || !b.ok) throw new Error();
    expect(await s.membershipRevoked()).to.deep.equal({ rejected: 2 });
    for (const m of [a.mid, b.mid]) expect(s.mutation(m)?.state).to.deep.include({ kind: 'rejected', code: 'TENANT_MISMATCH', source: 'device' });
    expect(s.sync.state).to.deep.equal({ kind: 'tenant-mismatch', source: 'membership' });
    expect(await s.unsynced()).to.equal(0);
    expect(await serverDocs()).to.deep.equal([]);
  });

  it('lock stops replication first, then drops the key; unlock resumes live sync', async () => {
    const s = await open({ autoSync: true });
    await waitFor(() => s.sync.state.kind === 'idle');
    const order: string[] = [];
    s.on('sync', (st) => order.push(`sync:${st.kind}`));
    s.on('lock', (l) => order.push(`lock:${l.locked}`));
    await s.lock();
    expect(order.indexOf('sync:stopped')).to.be.greaterThan(-1);
    expect(order.indexOf('sync:stopped')).to.be.lessThan(order.indexOf('lock:true'));
    const count = gw.requests.length;
    await new Promise((r) => setTimeout(r, 150));
    // Nothing is exchanged after lock: at most a longpoll PouchDB had already queued, aborted unanswered.
    const after = gw.requests.slice(count);
    expect(after.filter((r) => !(r.status === 0 && r.abandoned && r.path.includes('_changes')))).to.deep.equal([]);
    await s.unlock('pw');
    await waitFor(() => s.sync.state.kind === 'idle');
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error();
    await waitFor(async () => (await serverDocs()).includes(`m:ada:${a.mid}`));
  });

  it('switching tenant tears down the old replication first; each tenant keeps its own store and queue', async () => {
    const north = await open({ autoSync: true });
    await waitFor(() => north.sync.state.kind === 'idle');
    await north.sync.stop();
    const queued = await north.mutate('patient.create', patient());
    if (!queued.ok) throw new Error();
    const southTokens = new FakeTokens(gw, 'south', 'ada');
    const { session: south, leftQueued } = await switchTenant(north, {
      gatewayUrl: gw.url,
      tenant: 'south',
      owner: 'ada',
      passphrase: 'pw',
      tokens: southTokens,
      PouchDB: NodePouch,
      adapter: 'memory',
      prefix: prefixOf.get(north)!,
      kdfIterations: 1_000,
      idleTimeoutMs: null,
      fetch: rec.fetch,
    });
    sessions.push(south);
    expect(leftQueued).to.equal(1);
    expect(north.closed).to.equal(true);
    await waitFor(() => south.sync.state.kind === 'idle');
    expect(south.mutations()).to.deep.equal([]);
    expect(await serverDocs('north')).to.deep.equal([]);
    expect(rec.sent.filter((x) => x.url.includes('/sync/south')).every((x) => x.auth === `Bearer ${southTokens.current}`)).to.equal(true);
    await south.sync.stop();
    // North's queue is still there for when the user comes back.
    const back = await open({ prefix: prefixOf.get(north)! });
    expect(back.mutation(queued.mid)?.state.kind).to.equal('queued');
  });

  it('on leveldb, pulled status docs (which carry the server record) are encrypted at rest too', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ferry-client-sync-'));
    try {
      const s = await open({ adapter: 'leveldb', prefix: `${dir}/` });
      const a = await s.mutate('patient.create', patient({ givenName: 'Qwertzuiop' }));
      if (!a.ok) throw new Error();
      await s.sync.once();
      await new FakeWorker(gw.inbox('north')).run();
      await s.sync.once();
      await waitFor(() => s.mutation(a.mid)?.state.kind === 'committed');
      const status = (await gw.inbox('north').get(`s:ada:${a.mid}`)) as unknown as StatusDoc;
      expect(JSON.stringify(status.response)).to.include('Qwertzuiop');
      expect((await s.close()).ok).to.equal(true);
      const name = await localDbName('north', 'ada');
      const files = await readdir(join(dir, name));
      let hits = 0;
      for (const f of files) if ((await readFile(join(dir, name, f))).includes(Buffer.from('Qwertzuiop'))) hits++;
      expect(files.length).to.be.greaterThan(0);
      expect(hits).to.equal(0);
      const again = await open({ adapter: 'leveldb', prefix: `${dir}/` });
      expect(again.entity(a.entity).confirmed?.record).to.include({ givenName: 'Qwertzuiop' });
      await again.wipe({ confirm: true });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('fakeJwt helper produces tokens the client can peek', () => {
    expect(fakeJwt({ tid: 'north', owner: 'ada' }).split('.')).to.have.length(3);
  });
});
