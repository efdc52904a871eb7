import { expect } from 'chai';
import pg from 'pg';
import { pushLockName } from '../../gateway/sync/push-guard.ts';
import { TEST_DATABASE_URL, requirePostgres } from '../support/services.ts';
import { call, mid, mutation, startSyncStack, status, type SyncStack } from './support.ts';

// Two real gateway apps, each with its own platform connection pool (as two gateway processes),
// on one PostgreSQL and one embedded CouchDB. Every piece of per-process state that correctness
// depends on (docs/ARCHITECTURE.md "Per-process state") is exercised across the two.

type Leaf = { ok: { _rev: string } };

describe('sync: two gateways on one PostgreSQL', function () {
  this.timeout(120_000);
  let s: SyncStack;
  let a = '';
  let b = '';
  const inbox = () => s.admin.db('inbox_north');
  const leavesOf = async (id: string) => ((await inbox().get(id, { open_revs: 'all' })) as unknown as Leaf[]).map((l) => l.ok._rev);
  const accepted = (answers: Array<{ json: unknown }>) => answers.filter((x) => Array.isArray(x.json) && (x.json as unknown[]).length === 0);

  before(async function () {
    await requirePostgres(this);
    s = await startSyncStack();
    a = `${s.url}/sync/north`;
    b = `${(await s.anotherGateway()).url}/sync/north`;
  });
  after(async function () {
    await s?.close();
  });

  it('concurrent pushes of one id with different roots through both gateways leave a single root', async function () {
    const ada = await s.token('ada');
    for (let round = 0; round < 4; round++) {
      const doc = mutation('ada');
      const roots = Array.from({ length: 8 }, (_, i) => `1-${String((i + round) % 10).repeat(32)}`);
      // With and without the replicator's _revs_diff first, on both gateways.
      if (round % 2) for (const g of [a, b]) await call(`${g}/_revs_diff`, { token: ada, body: { [doc._id]: roots } });
      const answers = await Promise.all(
        roots.map((r, i) => call(`${i % 2 ? b : a}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc, _rev: r, ...(i % 3 ? { payload: { n: i } } : {}) }] } })),
      );
      expect(await leavesOf(doc._id), `round ${round}`).to.have.length(1);
      expect(accepted(answers), `round ${round}`).to.have.length(1);
      for (const x of answers.filter((y) => (y.json as unknown[]).length > 0)) expect(x.json).to.deep.equal([{ id: doc._id, error: 'forbidden', reason: 'Mutations are immutable once written.' }]);
    }
  });

  it('"absent" from _revs_diff on one gateway is not trusted after the other gateway wrote the id', async function () {
    const ada = await s.token('ada');
    const doc = mutation('ada');
    const [r1, r2] = ['1-11111111111111111111111111111111', '1-22222222222222222222222222222222'];
    // A finds the id absent; B writes it; A's _bulk_docs must look again and refuse the second root.
    const diff = await call(`${a}/_revs_diff`, { token: ada, body: { [doc._id]: [r2] } });
    expect(diff.json).to.deep.equal({ [doc._id]: { missing: [r2] } });
    expect((await call(`${b}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc, _rev: r1 }] } })).json).to.deep.equal([]);
    // The gateway's own refusal (its reason), not left to the inbox's VDU: a real CouchDB's VDU sees
    // no oldDoc for a new root and would take it.
    const late = await call(`${a}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc, _rev: r2, payload: { n: 2 } }] } });
    expect(late.json).to.deep.equal([{ id: doc._id, error: 'forbidden', reason: 'Mutations are immutable once written.' }]);
    expect(await leavesOf(doc._id)).to.deep.equal([r1]);
  });

  it('the write rate limit is per gateway: a user gets at most N × the burst across N gateways', async function () {
    const quotas = { writeBurst: 3, writesPerSecond: 0.001 };
    const [c, d] = [`${(await s.anotherGateway({ quotas })).url}/sync/north`, `${(await s.anotherGateway({ quotas })).url}/sync/north`];
    const cy = await s.token('cy-rate');
    const push = (g: string) => call(`${g}/_bulk_docs`, { token: cy, body: { docs: [mutation('cy-rate')] } });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) for (const g of [c, d]) statuses.push((await push(g)).status);
    expect(statuses.filter((x) => x === 201)).to.have.length(2 * quotas.writeBurst);
    expect(statuses.filter((x) => x === 429)).to.have.length(10 - 2 * quotas.writeBurst);
  });

  it('the pending quota: a fresh count sees every gateway’s writes; a stale estimate overshoots by at most N × max', async function () {
    const quotas = { maxPending: 4 };
    const [c, d] = [`${(await s.anotherGateway({ quotas })).url}/sync/north`, `${(await s.anotherGateway({ quotas })).url}/sync/north`];
    const dee = await s.token('dee');
    const push = (g: string, n: number) => call(`${g}/_bulk_docs`, { token: dee, body: { docs: Array.from({ length: n }, () => mutation('dee')) } });
    const pending = async () =>
      Number((await s.platform.db.query<{ n: string }>(`SELECT count(*) AS n FROM pending_mutations WHERE tenant = 'north' AND owner = 'dee' AND NOT terminal`)).rows[0]!.n);
    // C counts (0) and keeps an estimate of 1; D counts exactly (1) and fills the quota.
    expect((await push(c, 1)).status).to.equal(201);
    expect((await push(d, 3)).status).to.equal(201);
    expect(await pending()).to.equal(4);
    // D's estimate is exact: refused. C's estimate (1, not re-counted within its 30 s) lets 3 more in.
    expect((await push(d, 1)).status).to.equal(429);
    expect((await push(c, 3)).status).to.equal(201);
    expect(await pending()).to.equal(7);
    expect(await pending()).to.be.at.most(2 * quotas.maxPending);
    // Past its own estimate C counts again and refuses: the overshoot is bounded, never cumulative.
    expect((await push(c, 1)).status).to.equal(429);
    expect((await push(d, 1)).status).to.equal(429);
  });

  it('the live-feed cap is per gateway: a user over it on one gateway may still open a feed on another', async function () {
    const quotas = { maxLiveFeeds: 1 };
    const [c, d] = [`${(await s.anotherGateway({ quotas })).url}/sync/north`, `${(await s.anotherGateway({ quotas })).url}/sync/north`];
    const hal = await s.token('hal');
    const controller = new AbortController();
    const open = (g: string) => fetch(`${g}/_changes?feed=longpoll&since=now&timeout=30000`, { headers: { authorization: `Bearer ${hal}` }, signal: controller.signal }).catch(() => null);
    const first = open(c);
    await new Promise((r) => setTimeout(r, 300));
    const refused = await call(`${c}/_changes?feed=longpoll&since=now&timeout=30000`, { token: hal });
    expect(refused.status).to.equal(429);
    expect(refused.json).to.include({ code: 'QUOTA_EXCEEDED' });
    // D takes it: the feed is open (200, streaming heartbeats until a change or the timeout).
    const second = await open(d);
    expect(second?.status).to.equal(200);
    expect((await first)?.status).to.equal(200);
    controller.abort();
  });

  it('a status written once wakes longpolls on both gateways (each watches the shared feed head)', async function () {
    const eve = await s.token('eve');
    const m = mid();
    expect((await call(`${a}/_bulk_docs`, { token: eve, body: { docs: [mutation('eve', m)] } })).status).to.equal(201);
    const polls = [a, b].map((g) => call(`${g}/_changes?feed=longpoll&since=now&timeout=30000`, { token: eve }));
    await new Promise((r) => setTimeout(r, 300));
    await s.writeStatuses('north', [status('eve', m)]);
    for (const res of await Promise.all(polls)) {
      expect(res.status).to.equal(200);
      expect((res.json as { results: Array<{ id: string }> }).results.map((r) => r.id)).to.deep.equal([`s:eve:${m}`]);
    }
  });

  it('a push waits a bounded time for a user lock another process holds (503, retry), then goes through', async function () {
    const g = `${(await s.anotherGateway({ pushGuard: { waitMs: 300 } })).url}/sync/north`;
    const fay = await s.token('fay');
    const other = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${s.schema}` });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query(`SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || $1, 0))`, [pushLockName('north', 'fay')]);
      const busy = await call(`${g}/_bulk_docs`, { token: fay, body: { docs: [mutation('fay')] } });
      expect(busy.status).to.equal(503);
      expect(busy.headers.get('retry-after')).to.equal('1');
      // Other users are not held up by fay's lock.
      expect((await call(`${g}/_bulk_docs`, { token: await s.token('gus'), body: { docs: [mutation('gus')] } })).status).to.equal(201);
      await other.query('ROLLBACK');
      expect((await call(`${g}/_bulk_docs`, { token: fay, body: { docs: [mutation('fay')] } })).status).to.equal(201);
    } finally {
      await other.end();
    }
  });

  it('a holder whose connection dies (a gateway killed with -9) frees the user lock: the next push goes through', async function () {
    const ivy = await s.token('ivy');
    const other = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${s.schema}` });
    await other.connect();
    other.on('error', () => undefined);
    await other.query('BEGIN');
    await other.query(`SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || $1, 0))`, [pushLockName('north', 'ivy')]);
    const pushed = call(`${b}/_bulk_docs`, { token: ivy, body: { docs: [mutation('ivy')] } });
    await new Promise((r) => setTimeout(r, 300));
    // No COMMIT, no ROLLBACK: the socket just goes, as with kill -9. (pg keeps its socket at a boundary.)
    (other as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    expect((await pushed).status).to.equal(201);
  });
});
