import { expect } from 'chai';
import http from 'node:http';
import { call, mid, mutation, startSyncStack, status, type SyncStack } from './support.ts';

// Quotas (429 + Retry-After) and the longpoll feed (heartbeats, one upstream watcher per tenant,
// upstream work stopped when the client goes away), through the real stack.

describe('sync: quotas and the longpoll feed', function () {
  this.timeout(60_000);
  let s: SyncStack;
  let base: string;

  before(async function () {
    s = await startSyncStack({ quotas: { writesPerSecond: 1, writeBurst: 4, maxPending: 3, maxLocalDocs: 2, maxLocalBytes: 1024 } });
    base = `${s.url}/sync/north`;
  });
  after(async function () {
    await s?.close();
  });

  it('pending mutations per user: past the limit the push is 429 with Retry-After and nothing is written', async function () {
    const token = await s.token('pat');
    const ok = await call(`${base}/_bulk_docs`, { token, body: { docs: [mutation('pat'), mutation('pat')] } });
    expect(ok.status).to.equal(201);
    const extra = [mutation('pat'), mutation('pat')];
    const over = await call(`${base}/_bulk_docs`, { token, body: { docs: extra } });
    expect(over.status).to.equal(429);
    expect(over.headers.get('retry-after')).to.match(/^\d+$/);
    expect(over.json).to.include({ code: 'QUOTA_EXCEEDED' });
    for (const d of extra) expect(await s.admin.db('inbox_north').get(d._id)).to.equal(null);
  });

  it('write requests per user: past the burst, 429 with Retry-After; other users are unaffected', async function () {
    const token = await s.token('quinn');
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await call(`${base}/_bulk_docs`, { token, body: { docs: [] } })).status);
    expect(statuses.slice(0, 4)).to.deep.equal([201, 201, 201, 201]);
    expect(statuses.slice(4)).to.include(429);
    const limited = await call(`${base}/_bulk_docs`, { token, body: { docs: [] } });
    expect(limited.status).to.equal(429);
    expect(Number(limited.headers.get('retry-after'))).to.be.at.least(1);
    const other = await call(`${base}/_bulk_docs`, { token: await s.token('rae'), body: { docs: [] } });
    expect(other.status).to.equal(201);
  });

  it('_local docs per user: count and size limits answer 429', async function () {
    const token = await s.token('sol');
    expect((await call(`${base}/_local/a`, { method: 'PUT', token, body: { x: 1 } })).status).to.equal(201);
    expect((await call(`${base}/_local/b`, { method: 'PUT', token, body: { x: 1 } })).status).to.equal(201);
    const third = await call(`${base}/_local/c`, { method: 'PUT', token, body: { x: 1 } });
    expect(third.status).to.equal(429);
    expect(third.headers.get('retry-after')).to.match(/^\d+$/);
    const big = await call(`${base}/_local/a`, { method: 'PUT', token, body: { _rev: '0-1', x: 'y'.repeat(2000) } });
    expect(big.status).to.equal(429);
  });

  it('longpoll: heartbeats while waiting, one upstream watcher for many waiters, woken by the head', async function () {
    const owners = ['tia', 'uma', 'val', 'wes'];
    const tokens = await Promise.all(owners.map((o) => s.token(o)));
    const heartbeats: number[] = owners.map(() => 0);
    const polls = owners.map(
      (_, i) =>
        new Promise<string>((resolve, reject) => {
          const u = new URL(`${base}/_changes?feed=longpoll&since=now&heartbeat=1000&timeout=30000`);
          const req = http.get(u, { headers: { authorization: `Bearer ${tokens[i]}` } }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => {
              if (c.trim() === '') heartbeats[i]! += 1;
              body += c;
            });
            res.on('end', () => resolve(body));
          });
          req.on('error', reject);
        }),
    );
    await new Promise((r) => setTimeout(r, 2500));
    expect(s.watchers.active()).to.equal(1);
    expect(heartbeats.every((n) => n >= 1)).to.equal(true);
    // Only uma gets a status; the others keep waiting, and are not even woken to look.
    const m = mid();
    const readsBefore = s.feedReads.range;
    await s.writeStatuses('north', [status('uma', m)]);
    const body = await polls[1]!;
    expect(s.feedReads.range - readsBefore).to.equal(1);
    const page = JSON.parse(body.trim()) as { results: Array<{ id: string }>; last_seq: number };
    expect(page.results.map((r) => r.id)).to.deep.equal([`s:uma:${m}`]);
    await s.writeStatuses('north', owners.filter((o) => o !== 'uma').map((o) => status(o, mid())));
    const rest = await Promise.all([polls[0]!, polls[2]!, polls[3]!]);
    rest.forEach((b, i) => expect(b).to.include(`s:${['tia', 'val', 'wes'][i]}:`));
  });

  it('longpoll: when the client goes away the upstream watcher stops', async function () {
    const token = await s.token('xan');
    // Let the previous test's watcher linger out first.
    const idle = Date.now() + 5000;
    while (s.watchers.active() > 0 && Date.now() < idle) await new Promise((r) => setTimeout(r, 50));
    const controller = new AbortController();
    const pending = fetch(`${base}/_changes?feed=longpoll&since=now&heartbeat=500`, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal })
      .then((r) => r.text())
      .catch(() => 'aborted');
    await new Promise((r) => setTimeout(r, 800));
    expect(s.watchers.active()).to.equal(1);
    controller.abort();
    expect(await pending).to.equal('aborted');
    const deadline = Date.now() + 5000;
    while (s.watchers.active() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(s.watchers.active()).to.equal(0);
  });
  it("longpoll: the tenant's live watcher lends its head (never above feed:head), and a longpoll started on it misses nothing", async function () {
    const head = async () => ((await s.admin.db('inbox_north').get<{ counter?: number }>('feed:head'))?.counter ?? 0);
    const idle = Date.now() + 5000;
    while (s.watchers.active() > 0 && Date.now() < idle) await new Promise((r) => setTimeout(r, 50));
    expect(s.watchers.known('north')).to.equal(null);
    // One waiter keeps the watcher open for the whole test.
    const keeper = new AbortController();
    const keeperToken = await s.token('yul');
    const kept = fetch(`${base}/_changes?feed=longpoll&since=now&heartbeat=500&timeout=30000`, { headers: { authorization: `Bearer ${keeperToken}` }, signal: keeper.signal })
      .then((r) => r.text())
      .catch(() => 'aborted');
    const until = async (ok: () => Promise<boolean> | boolean) => {
      const deadline = Date.now() + 10_000;
      while (!(await ok())) {
        if (Date.now() > deadline) throw new Error('timed out');
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await until(() => s.watchers.known('north') !== null);
    expect(s.watchers.known('north')).to.equal(await head());
    const token = await s.token('zed');
    let since = 0;
    for (let round = 0; round < 3; round++) {
      const m = mid();
      const moved = s.writeStatuses('north', [status('zed', m)]);
      // Sampled while the head moves: the lent head never runs ahead of the real one.
      const samples: Array<number | null> = [];
      const sampling = (async () => {
        for (let i = 0; i < 20; i++) {
          samples.push(s.watchers.known('north'));
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
      await moved;
      await sampling;
      const real = await head();
      for (const k of samples) expect(k === null || k <= real).to.equal(true);
      // Straight after the write, perhaps before the watcher has seen it: the longpoll still answers it.
      const res = await fetch(`${base}/_changes?feed=longpoll&since=${since}&timeout=10000`, { headers: { authorization: `Bearer ${token}` } });
      const page = JSON.parse((await res.text()).trim()) as { results: Array<{ id: string }>; last_seq: number };
      expect(page.results.map((r) => r.id)).to.deep.equal([`s:zed:${m}`]);
      since = page.last_seq;
    }
    await until(async () => s.watchers.known('north') === (await head()));
    keeper.abort();
    expect(await kept).to.equal('aborted');
    await until(() => s.watchers.known('north') === null);
  });
});
