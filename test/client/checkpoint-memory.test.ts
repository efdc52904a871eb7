// The requests a connection no longer makes: checkpoint reads answered from what it wrote, the
// server's uuid and db info remembered (`client/checkpoint-memory.ts`, `rememberRemote` in
// `client/sync-wiring.ts`). Counted at a real CouchDB-protocol server (express-pouchdb standing
// in for /sync/{tenant}), against stock PouchDB replicating the same docs as the control.
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { checkpointRequest, withCheckpointMemory, type CheckpointRequest } from '../../client/checkpoint-memory.ts';
import { NodePouch, openNodeSession } from '../../client/node.ts';
import type { FetchLike } from '../../client/auth-fetch.ts';
import type { Session } from '../../client/session.ts';
import { FakeTokens, FakeWorker, patient, startGateway, type GatewayStandIn, type RecordedRequest } from './support.ts';

const DB = 'https://gw.example/sync/north';

describe('client/checkpoint-memory: which requests it answers', () => {
  const cases: Array<[string, string, string, CheckpointRequest]> = [
    ['a checkpoint read', 'GET', `${DB}/_local/abc.def_%3D%3D`, { kind: 'read', key: '_local/abc.def_%3D%3D' }],
    ['a checkpoint write', 'PUT', `${DB}/_local/abc`, { kind: 'write', key: '_local/abc' }],
    ['a checkpoint delete forgets it', 'DELETE', `${DB}/_local/abc?rev=0-2`, { kind: 'other-write', key: '_local/abc' }],
    ['a read with parameters goes to the gateway', 'GET', `${DB}/_local/abc?revs=true`, { kind: 'not-checkpoint' }],
    ['the device’s own acknowledgement', 'GET', `${DB}/_local/ferry-ack-dev-1`, { kind: 'not-checkpoint' }],
    ['the device’s own acknowledgement, written', 'PUT', `${DB}/_local/ferry-ack-dev-1`, { kind: 'not-checkpoint' }],
    ['an ordinary doc', 'GET', `${DB}/m:ada:0190`, { kind: 'not-checkpoint' }],
    ['another database’s checkpoint', 'GET', 'https://gw.example/sync/south/_local/abc', { kind: 'not-checkpoint' }],
    ['a path below a _local id', 'GET', `${DB}/_local/abc/x`, { kind: 'not-checkpoint' }],
    ['the bare _local prefix', 'GET', `${DB}/_local/`, { kind: 'not-checkpoint' }],
    ['db info', 'GET', `${DB}/`, { kind: 'not-checkpoint' }],
  ];
  for (const [name, method, url, want] of cases) it(`${name} → ${want.kind}`, () => expect(checkpointRequest(method, url, DB)).to.deep.equal(want));
  it('a trailing slash on the database URL makes no difference', () => expect(checkpointRequest('GET', `${DB}/_local/abc`, `${DB}/`)).to.deep.equal({ kind: 'read', key: '_local/abc' }));
});

type Kind = 'server-root' | 'db-info' | 'local-get' | 'local-put' | 'other';
function kindOf(r: RecordedRequest, tenant: string): Kind {
  const path = r.path.split('?')[0]!;
  if (path === '/sync/' || path === '/sync') return 'server-root';
  if (path === `/sync/${tenant}` || path === `/sync/${tenant}/`) return 'db-info';
  if (path.startsWith(`/sync/${tenant}/_local/`)) return r.method === 'GET' ? 'local-get' : 'local-put';
  return 'other';
}
function count(requests: RecordedRequest[], tenant = 'north'): Record<Kind, number> {
  const out: Record<Kind, number> = { 'server-root': 0, 'db-info': 0, 'local-get': 0, 'local-put': 0, other: 0 };
  for (const r of requests) out[kindOf(r, tenant)]++;
  return out;
}
/** Checkpoint reads and writes per `_local` doc, in the order the docs were first asked for. */
function perDoc(requests: RecordedRequest[]): Array<{ get: number; put: number }> {
  const docs = new Map<string, { get: number; put: number }>();
  for (const r of requests) {
    const path = r.path.split('?')[0]!;
    if (!path.includes('/_local/')) continue;
    const d = docs.get(path) ?? { get: 0, put: 0 };
    docs.set(path, d);
    if (r.method === 'GET') d.get++;
    else d.put++;
  }
  return [...docs.values()];
}

describe('client/checkpoint-memory: requests saved, counted at the server', function () {
  this.timeout(30_000);
  let gw: GatewayStandIn;
  let tokens: FakeTokens;
  const sessions: Session[] = [];
  const cleanup: Array<() => Promise<unknown>> = [];

  const authed =
    (under: FetchLike = (i, o) => globalThis.fetch(i, o), token?: string): FetchLike =>
    (input, init) => {
      const headers = new Headers(init?.headers);
      headers.set('Authorization', `Bearer ${token ?? tokens.current}`);
      return under(input, { ...init, headers });
    };

  const openSession = async (fetch?: FetchLike): Promise<Session> => {
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
      batchSize: 2,
      prefix: `cm-${randomUUID()}-`,
      ...(fetch ? { fetch } : {}),
    });
    sessions.push(s);
    return s;
  };

  beforeEach(async () => {
    gw = await startGateway();
    tokens = new FakeTokens(gw, 'north', 'ada');
  });
  afterEach(async () => {
    for (const s of sessions.splice(0)) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
    for (const c of cleanup.splice(0)) await c().catch(() => undefined);
    await gw.close();
  });

  it('a push of 5 batches reads its checkpoint twice instead of 6 times; the uuid is asked once per session', async () => {
    // Stock PouchDB, the control: the same 10 docs in batches of 2, one-shot push (to another
    // tenant's stand-in inbox, so the session's pull does not see them).
    const stockLocal = new NodePouch(`stock-${randomUUID()}`, { adapter: 'memory' });
    cleanup.push(() => stockLocal.destroy());
    const stockRemote = new NodePouch(`${gw.url}/sync/south`, { skip_setup: true, fetch: authed(undefined, tokens.mint('south')) } as PouchDB.Configuration.RemoteDatabaseConfiguration);
    await stockLocal.bulkDocs(Array.from({ length: 10 }, (_, i) => ({ _id: `m:ada:stock-${i}`, n: i })));
    const before = gw.requests.length;
    await stockLocal.replicate.to(stockRemote, { batch_size: 2 });
    const stock = count(gw.requests.slice(before), 'south');

    // The Ferry session: 10 mutations, batches of 2, one-shot sync (push, then an empty pull), twice.
    const s = await openSession();
    for (let i = 0; i < 10; i++) expect((await s.mutate('patient.create', patient())).ok).to.equal(true);
    const start = gw.requests.length;
    expect(await s.sync.once()).to.deep.include({ kind: 'ok', pushed: 10 });
    const first = count(gw.requests.slice(start));
    const [push, pull] = perDoc(gw.requests.slice(start));
    const second0 = gw.requests.length;
    expect(await s.sync.once()).to.deep.include({ kind: 'ok', pushed: 0 });
    const second = count(gw.requests.slice(second0));
    if (process.env.SHOW) console.log(gw.requests.slice(start, second0).map((r) => `${r.method} ${r.path.slice(0, 90)} ${r.status}`).join("\n"));
    console.log(`      stock push: ${JSON.stringify(stock)}; Ferry sync 1: ${JSON.stringify(first)}; sync 2: ${JSON.stringify(second)}`);

    expect(stock['local-put'], 'control: a checkpoint write per batch').to.equal(5);
    expect(stock['local-get'], 'control: the start read, then a read before each write').to.equal(6);
    // Ferry's push: the same 5 writes (the checkpoint stays on the server), 2 reads (the start read,
    // and the read before the first write, as the doc did not exist yet). The pull (10 ids in pages of
    // 2, a checkpoint each) reads once: PouchDB skips the remote read at the start when the local
    // checkpoint is missing; stock PouchDB would read before each of the 5 writes.
    expect(push).to.deep.equal({ get: 2, put: 5 });
    expect(pull).to.deep.equal({ get: 1, put: 5 });
    expect(first['server-root'], 'the uuid, once for both sides').to.equal(1);
    // A new connection reads each checkpoint from the server again (a restored server is caught up).
    expect(second['local-get']).to.equal(2);
    expect(second['server-root'], 'remembered for the session').to.equal(0);
    expect(second['db-info']).to.be.at.most(1);
  });

  it('a first _bulk_get that fails does not turn every later pull into one GET per doc (PouchDB’s fallback)', async () => {
    let failNext = true;
    const faulty: FetchLike = async (input, init) => {
      if (failNext && String(input).includes('/_bulk_get')) {
        failNext = false;
        return new Response('', { status: 502 });
      }
      return globalThis.fetch(input, init);
    };
    const s = await openSession(faulty);
    for (let i = 0; i < 3; i++) expect((await s.mutate('patient.create', patient())).ok).to.equal(true);
    expect(await s.sync.once()).to.deep.include({ kind: 'ok', pushed: 3 });
    await new FakeWorker(gw.inbox('north')).run();
    expect(await s.sync.once(), 'the pull of the statuses failed on the 502').to.deep.include({ kind: 'failed' });
    const mark = gw.requests.length;
    expect(await s.sync.once()).to.deep.include({ kind: 'ok' });
    const after = gw.requests.slice(mark);
    expect(after.filter((r) => r.path.includes('/_bulk_get')).length, 'the pull used _bulk_get').to.be.greaterThan(0);
    expect(after.filter((r) => r.path.includes('open_revs')), 'and no per-doc GETs').to.have.length(0);
    expect(failNext, 'the 502 was answered').to.equal(false);
  });

  it('the server losing the checkpoint mid-replication: the next write conflicts, is read for real, and rewritten', async () => {
    let puts = 0;
    const lose: FetchLike = async (input, init) => {
      const url = String(input);
      if ((init?.method ?? 'GET') === 'PUT' && url.includes('/_local/') && ++puts === 3) {
        // Before the third checkpoint write reaches it, the server loses the doc (a restore).
        const id = decodeURIComponent(new URL(url).pathname.replace(/^\/sync\/north\//, ''));
        const doc = await gw.inbox('north').get(id);
        await gw.inbox('north').remove(doc);
      }
      return globalThis.fetch(input, init);
    };
    const memory = withCheckpointMemory(authed(lose), `${gw.url}/sync/north`);
    const local = new NodePouch(`lose-${randomUUID()}`, { adapter: 'memory' });
    cleanup.push(() => local.destroy());
    const remote = new NodePouch(`${gw.url}/sync/north`, { skip_setup: true, fetch: memory.fetch } as PouchDB.Configuration.RemoteDatabaseConfiguration);
    await local.bulkDocs(Array.from({ length: 10 }, (_, i) => ({ _id: `m:ada:lose-${i}`, n: i })));
    const start = gw.requests.length;
    const result = await local.replicate.to(remote, { batch_size: 2 });
    expect(result.ok).to.equal(true);
    const seen = gw.requests.slice(start).filter((r) => r.path.includes('/_local/'));
    expect(seen.some((r) => r.method === 'PUT' && r.status === 409), 'the stale write was refused').to.equal(true);
    // After the 409 the read went to the server (404: lost), then a fresh write.
    const after409 = seen.slice(seen.findIndex((r) => r.status === 409) + 1);
    expect(after409[0]).to.deep.include({ method: 'GET', status: 404 });
    // The checkpoint on the server is the local one again.
    const ids = seen.filter((r) => r.method === 'PUT').map((r) => decodeURIComponent(r.path.replace(/^\/sync\/north\//, '').split('?')[0]!));
    const id = ids[ids.length - 1]!;
    const [theirs, ours] = await Promise.all([gw.inbox('north').get(id), local.get(id)]);
    expect((theirs as unknown as { last_seq: unknown }).last_seq).to.equal((ours as unknown as { last_seq: unknown }).last_seq);
    expect(memory.served, 'the other reads came from memory').to.be.greaterThan(0);
  });
});
