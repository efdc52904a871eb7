import { expect } from 'chai';
import net from 'node:net';
import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import { mid, mutation, startSyncStack, status, type SyncStack } from './support.ts';

// Stock PouchDB 9 (the `pouchdb` package and its memory adapter, no Ferry code) replicating through
// /sync/north with nothing but a Bearer header in its fetch (DESIGN §5, issue 4 "Done means").

PouchDB.plugin(MemoryAdapter);

type AnyDoc = PouchDB.Core.ExistingDocument<Record<string, unknown>>;

function remote(stack: SyncStack, token: string, tenant = 'north'): PouchDB.Database {
  return new PouchDB(`${stack.url}/sync/${tenant}`, {
    skip_setup: true,
    fetch: (url: string | Request, opts?: RequestInit) => {
      const headers = new Headers(opts?.headers);
      headers.set('Authorization', `Bearer ${token}`);
      return PouchDB.fetch(url, { ...opts, headers });
    },
  } as PouchDB.Configuration.RemoteDatabaseConfiguration);
}

function local(name: string): PouchDB.Database {
  return new PouchDB(`${name}-${mid()}`, { adapter: 'memory' });
}

describe('sync: stock PouchDB through /sync/{tenant}', function () {
  this.timeout(60_000);
  let stack: SyncStack;

  before(async function () {
    stack = await startSyncStack();
  });
  after(async function () {
    await stack?.close();
  });

  it('pushes mutation docs one-shot; they land in the inbox and a re-push is a no-op', async function () {
    const token = await stack.token('ada');
    const db = local('ada-push');
    const docs = Array.from({ length: 25 }, () => mutation('ada'));
    await db.bulkDocs(docs);
    const result = await db.replicate.to(remote(stack, token), { batch_size: 10 });
    expect(result.ok).to.equal(true);
    expect(result.docs_written).to.equal(25);
    expect(result.doc_write_failures).to.equal(0);
    const inbox = stack.admin.db('inbox_north');
    const rows = await inbox.allDocs({ keys: docs.map((d) => d._id) });
    expect(rows.rows.every((r) => r.value && !r.error)).to.equal(true);
    const again = await db.replicate.to(remote(stack, token));
    expect(again.doc_write_failures).to.equal(0);
    await db.destroy();
  });

  it('reports a denied event for docs the gateway refuses, and still resolves', async function () {
    const token = await stack.token('ada');
    const db = local('ada-denied');
    await db.bulkDocs([mutation('ada'), mutation('ben'), { _id: 'not-a-mutation', type: 'x' }]);
    const denied: unknown[] = [];
    const rep = db.replicate.to(remote(stack, token));
    rep.on('denied', (e) => denied.push(e));
    const result = await rep;
    expect(result.docs_written).to.equal(1);
    expect(denied).to.have.length(2);
    await db.destroy();
  });

  it('pulls only the caller’s own status docs one-shot, paging through all of them', async function () {
    const ids = Array.from({ length: 230 }, () => mid());
    await stack.writeStatuses('north', [...ids.map((i) => status('ada', i)), ...ids.slice(0, 50).map((i) => status('ben', i))]);
    const token = await stack.token('ada');
    const db = local('ada-pull');
    const result = await db.replicate.from(remote(stack, token), { batch_size: 100 });
    expect(result.ok).to.equal(true);
    const all = await db.allDocs();
    const own = all.rows.filter((r) => r.id.startsWith('s:ada:'));
    expect(own.length).to.be.at.least(230);
    expect(all.rows.every((r) => r.id.startsWith('s:ada:') || r.id.startsWith('m:ada:'))).to.equal(true);
    await db.destroy();
  });

  it('pulls through the single-doc GET fallback (open_revs) when _bulk_get is unavailable (trap 13)', async function () {
    const ids = Array.from({ length: 12 }, () => mid());
    await stack.writeStatuses('north', ids.map((i) => status('ada', i)));
    const token = await stack.token('ada');
    const seen: string[] = [];
    // A fetch that refuses _bulk_get (as an old server would), through a TCP relay on a port of its
    // own, so that PouchDB's process-wide "no _bulk_get on this host" memo touches no other test.
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((client) => {
      const upstream = net.connect(Number(new URL(stack.url).port), '127.0.0.1');
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    const relayUrl = `http://127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
    const fallback = new PouchDB(`${relayUrl}/sync/north`, {
      skip_setup: true,
      fetch: (url: string | Request, opts?: RequestInit) => {
        const u = String(url);
        if (u.includes('/_bulk_get')) return Promise.resolve(new Response('{"error":"not_found"}', { status: 404 }));
        if (u.includes('open_revs=')) seen.push(u);
        const headers = new Headers(opts?.headers);
        headers.set('Authorization', `Bearer ${token}`);
        return PouchDB.fetch(url, { ...opts, headers });
      },
    } as PouchDB.Configuration.RemoteDatabaseConfiguration);
    const db = local('ada-fallback');
    try {
      const result = await db.replicate.from(fallback);
      expect(result.ok).to.equal(true);
      expect(seen.length).to.be.at.least(12);
      for (const i of ids) expect((await db.get<Record<string, unknown>>(`s:ada:${i}`)).state).to.equal('committed');
    } finally {
      await db.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });

  it('live: pushes and pulls, and a status written after replication started arrives', async function () {
    const token = await stack.token('ada');
    const db = local('ada-live');
    const remoteDb = remote(stack, token);
    const sync = db.sync(remoteDb, { live: true, retry: false, batch_size: 50 });
    try {
      const m = mutation('ada');
      await db.put(m);
      // The mutation goes up…
      const inbox = stack.admin.db('inbox_north');
      const deadline = Date.now() + 15_000;
      while (!(await inbox.get(m._id))) {
        if (Date.now() > deadline) throw new Error('mutation never reached the inbox');
        await new Promise((r) => setTimeout(r, 100));
      }
      // …and the worker's status written afterwards comes down.
      const mutationId = m._id.split(':')[2]!;
      await new Promise((r) => setTimeout(r, 300));
      await stack.writeStatuses('north', [status('ada', mutationId, 'north', { state: 'committed' })]);
      const until = Date.now() + 15_000;
      let got: AnyDoc | null = null;
      while (!got) {
        got = (await db.get<Record<string, unknown>>(`s:ada:${mutationId}`).catch(() => null)) as AnyDoc | null;
        if (Date.now() > until) throw new Error('status never arrived');
        if (!got) await new Promise((r) => setTimeout(r, 100));
      }
      expect(got.state).to.equal('committed');
    } finally {
      sync.cancel();
      await db.destroy();
    }
  });
});
