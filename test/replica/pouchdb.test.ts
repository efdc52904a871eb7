import { expect } from 'chai';
import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import { v7 as uuidv7 } from 'uuid';
import { startTestStack, type TestStack } from '../support/stack.ts';
import { requireNats } from '../support/services.ts';
import { projectedAt, register, until, update } from './support.ts';

// Stock PouchDB 9 (the `pouchdb` package and its memory adapter, no Ferry code) pulling
// /replica/{tenant} with nothing but a Bearer header and `skip_setup` (DESIGN §8).

PouchDB.plugin(MemoryAdapter);

type Counted = { requests: number };

function remote(stack: TestStack, token: string, tenant = 'north', counted?: Counted): PouchDB.Database {
  return new PouchDB(`${stack.url}/replica/${tenant}`, {
    skip_setup: true,
    fetch: (url: string | Request, opts?: RequestInit) => {
      if (counted) counted.requests++;
      const headers = new Headers(opts?.headers);
      headers.set('Authorization', `Bearer ${token}`);
      return PouchDB.fetch(url, { ...opts, headers });
    },
  } as PouchDB.Configuration.RemoteDatabaseConfiguration);
}

const local = () => new PouchDB(`replica-${uuidv7()}`, { adapter: 'memory' });

describe('replica: stock PouchDB pulls /replica/{tenant}', function () {
  this.timeout(120_000);
  let stack: TestStack;
  let ada: string;
  let cy: string;

  before(async function () {
    await requireNats(this);
    stack = await startTestStack({ webApp: false });
    [ada, cy] = await Promise.all([stack.login('ada', 'north'), stack.login('cy', 'north')]);
  });
  after(async () => stack?.stop());

  it('a one-shot pull brings the caller\'s facility\'s records, exactly as the records database holds them, and nothing else', async () => {
    const mine = await Promise.all([register(stack, ada, 'north-hc-1'), register(stack, ada, 'north-hc-1')]);
    const theirs = await register(stack, cy, 'north-hc-2');
    for (const p of [...mine, theirs]) await projectedAt(stack, 'north', p.id, 1, 60_000);
    const db = local();
    const result = await db.replicate.from(remote(stack, ada), { batch_size: 100 });
    expect(result.ok).to.equal(true);
    const all = await db.allDocs({ include_docs: true });
    const ids = all.rows.map((r) => r.id);
    for (const p of mine) expect(ids).to.include(`r:patient:${p.id}`);
    expect(ids).to.not.include(`r:patient:${theirs.id}`);
    expect(all.rows.every((r) => (r.doc as unknown as { facility: string }).facility === 'north-hc-1')).to.equal(true);
    const server = await stack.couch.server.db('records_north').get<Record<string, unknown>>(`r:patient:${mine[0]!.id}`);
    const pulled = await db.get(`r:patient:${mine[0]!.id}`);
    expect(pulled).to.deep.equal(server);
    // A second pull from its checkpoint has nothing to do.
    const again = await db.replicate.from(remote(stack, ada));
    expect(again.docs_written).to.equal(0);
    await db.destroy();
  });

  it('a live pull wakes on a new commit, takes a transfer out of the old facility\'s device, and stays inside the read budget', async () => {
    const seed = await register(stack, ada, 'north-hc-1');
    await projectedAt(stack, 'north', seed.id, 1, 60_000);
    const adaDb = local();
    const cyDb = local();
    const counted: Counted = { requests: 0 };
    const adaLive = adaDb.replicate.from(remote(stack, ada, 'north', counted), { live: true, retry: true, batch_size: 100 });
    const cyLive = cyDb.replicate.from(remote(stack, cy), { live: true, retry: true });
    try {
      await until('seed on ada\'s device', () => adaDb.get(`r:patient:${seed.id}`).then(() => true, () => false));
      const fresh = await register(stack, ada, 'north-hc-1');
      const start = Date.now();
      const doc = await until('new record on ada\'s device', () => adaDb.get<{ version: number }>(`r:patient:${fresh.id}`).catch(() => null), 30_000);
      expect(doc.version).to.equal(1);
      expect(Date.now() - start).to.be.below(30_000);
      // The transfer: it leaves ada's device and reaches cy's.
      const moved = await update(stack, ada, fresh.body, { facility: 'north-hc-2' });
      await until('record on cy\'s device', () => cyDb.get<{ version: number }>(`r:patient:${fresh.id}`).then((d) => d.version === moved.version, () => false), 30_000);
      await until('record gone from ada\'s device', () => adaDb.get(`r:patient:${fresh.id}`).then(() => false, (e: { status?: number }) => e.status === 404), 30_000);
      // Idle, a live device holds one longpoll at a time: a handful of requests, not a stream.
      const before = counted.requests;
      await new Promise((r) => setTimeout(r, 3000));
      expect(counted.requests - before).to.be.at.most(6);
    } finally {
      adaLive.cancel();
      cyLive.cancel();
      await Promise.allSettled([adaLive, cyLive]);
      await adaDb.destroy();
      await cyDb.destroy();
    }
  });
});
