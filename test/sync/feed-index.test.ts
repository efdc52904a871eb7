import { expect } from 'chai';
import type { CouchDb } from '../../couchdb/client.ts';
import { createPendingLedger } from '../../gateway/sync/quotas.ts';
import { acceptedMids } from '../../gateway/sync/write.ts';
import { call, mid, mutation, startSyncStack, status, type SyncStack } from './support.ts';

// The pull feed from the platform database's feed index, and the pending quota's ledger, through
// the real stack: gateway, embedded CouchDB, and the worker's own status writer and position store.

type Change = { seq: number; id: string; changes: Array<{ rev: string }>; doc?: { _rev: string; counter: number; state: string } };
type ChangesPage = { results: Change[]; last_seq: number };

describe('sync: the feed index', function () {
  this.timeout(60_000);
  let s: SyncStack;
  let base: string;

  before(async function () {
    s = await startSyncStack();
    base = `${s.url}/sync/north`;
  });
  after(async function () {
    await s?.close();
  });

  const changes = async (token: string, query: string): Promise<ChangesPage> => {
    const res = await call(`${base}/_changes?${query}`, { token });
    expect(res.status).to.equal(200);
    return res.json as ChangesPage;
  };

  /** Pages as PouchDB does: ask `limit` rows from the last seq, stop on a short page (trap 14). */
  const pageAll = async (token: string, since: number, limit: number, extra = ''): Promise<{ rows: Change[]; pages: number; last: number }> => {
    const rows: Change[] = [];
    let pages = 0;
    let last = since;
    for (;;) {
      const page = await changes(token, `style=all_docs&since=${last}&limit=${limit}${extra}`);
      pages++;
      rows.push(...page.results);
      last = page.last_seq;
      if (page.results.length < limit) return { rows, pages, last };
    }
  };

  it('serves only the caller’s ids, each doc once at its latest counter, and pages with limit', async function () {
    const owner = 'fia';
    const other = 'fib';
    const mine = Array.from({ length: 23 }, () => mid());
    const theirs = Array.from({ length: 23 }, () => mid());
    // Interleaved with another owner's, as the worker writes a busy tenant.
    await s.writeStatuses('north', mine.flatMap((m, i) => [status(owner, m, 'north', { state: 'waiting' }), status(other, theirs[i]!, 'north', { state: 'waiting' })]));
    // Five of them change later: each must show up once, at its new counter.
    const inbox = s.admin.db('inbox_north');
    const later = mine.slice(3, 8);
    const current = await Promise.all(later.map((m) => inbox.get<{ _rev: string }>(`s:${owner}:${m}`)));
    await s.writeStatuses('north', later.map((m, i) => ({ ...status(owner, m, 'north', { state: 'committed' }), _rev: current[i]!._rev })));

    const token = await s.token(owner);
    const { rows, pages } = await pageAll(token, 0, 5, '&include_docs=true');
    expect(pages).to.equal(5); // 23 rows in pages of 5: 5, 5, 5, 5, 3
    expect(rows.map((r) => r.id).every((id) => id.startsWith(`s:${owner}:`))).to.equal(true);
    expect(new Set(rows.map((r) => r.id)).size).to.equal(rows.length);
    expect(rows.map((r) => r.id).sort()).to.deep.equal(mine.map((m) => `s:${owner}:${m}`).sort());
    const seqs = rows.map((r) => r.seq);
    expect(seqs).to.deep.equal([...seqs].sort((a, b) => a - b));
    for (const r of rows) {
      // Each row is at the doc's own latest counter, with its current rev.
      expect(r.doc!.counter).to.equal(r.seq);
      expect(r.changes).to.deep.equal([{ rev: r.doc!._rev }]);
    }
    // The changed ones come last, in the order they were rewritten.
    expect(rows.slice(-5).map((r) => r.id)).to.deep.equal(later.map((m) => `s:${owner}:${m}`));
    expect(rows.slice(-5).every((r) => r.doc!.state === 'committed')).to.equal(true);

    // Without include_docs the same rows; descending the same in reverse; the other owner never shows.
    const plain = await pageAll(token, 0, 7);
    expect(plain.rows.map((r) => [r.seq, r.id, r.changes])).to.deep.equal(rows.map((r) => [r.seq, r.id, r.changes]));
    // Without include_docs the revs come from the index when recorded for the row's own counter;
    // a rev recorded for an earlier counter does not count, and the inbox is asked instead.
    const recorded = await s.platform.db.query('SELECT 1 FROM feed_index WHERE tenant = $1 AND owner = $2 AND rev_counter = counter', ['north', owner]);
    expect(recorded.rows).to.have.length(mine.length);
    const victim = rows[0]!;
    await s.platform.db.query(`UPDATE feed_index SET rev = '1-00000000000000000000000000000000', rev_counter = counter - 1 WHERE tenant = 'north' AND doc_id = $1`, [victim.id]);
    const again = await changes(token, `since=${victim.seq - 1}&limit=1`);
    expect(again.results.map((r) => r.changes)).to.deep.equal([victim.changes]);
    const desc = await changes(token, 'descending=true&since=0&limit=100');
    expect(desc.results.map((r) => r.id)).to.deep.equal(rows.map((r) => r.id).reverse());
    const all = await call(`${base}/_changes?since=0`, { token });
    expect(all.text).not.to.include(`s:${other}:`);
    for (const m of theirs) expect(all.text).not.to.include(m);
    // update_seq is the caller's newest counter.
    const info = (await call(base, { token })).json as { update_seq: number };
    expect(info.update_seq).to.equal(rows[rows.length - 1]!.seq);
  });

  it('a page is never cut short by a row whose doc did not land: it is refilled from the index', async function () {
    const owner = 'fic';
    const inbox = s.worker.db('inbox_north');
    // A batch whose _bulk_docs fails after its counters were allocated leaves index rows without docs.
    const failing: CouchDb = {
      ...inbox,
      name: inbox.name,
      bulkDocs: () => Promise.reject(new Error('inbox unreachable')),
    };
    const ids = Array.from({ length: 5 }, () => mid());
    await s.writeStatuses('north', ids.slice(0, 1).map((m) => status(owner, m)));
    const broken = await s.statusWriter('north', failing);
    const ghost = mid();
    const lost = await broken.write(status(owner, ghost) as never).then(
      () => null,
      (err: unknown) => err,
    );
    expect(lost).to.be.instanceOf(Error);
    await broken.settled();
    await s.writeStatuses('north', ids.slice(1).map((m) => status(owner, m)));
    const indexed = await s.platform.db.query('SELECT doc_id FROM feed_index WHERE tenant = $1 AND owner = $2', ['north', owner]);
    expect(indexed.rows).to.have.length(6);

    const token = await s.token(owner);
    const first = await changes(token, 'since=0&limit=3');
    // The ghost is the second row of the index: the page is still full.
    expect(first.results.map((r) => r.id)).to.deep.equal(ids.slice(0, 3).map((m) => `s:${owner}:${m}`));
    const { rows: rest } = await pageAll(token, first.last_seq, 3);
    expect(rest.map((r) => r.id)).to.deep.equal(ids.slice(3).map((m) => `s:${owner}:${m}`));
  });

  it('never passes a counter whose _bulk_docs has not returned', async function () {
    const owner = 'fid';
    const token = await s.token(owner);
    const before = await changes(token, 'since=0');
    expect(before.results).to.deep.equal([]);
    const inbox = s.worker.db('inbox_north');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const stalled = new Promise<void>((r) => (entered = r));
    let calls = 0;
    // The real inbox, with the first batch's _bulk_docs held back.
    const slow: CouchDb = {
      ...inbox,
      name: inbox.name,
      async bulkDocs(docs, opts) {
        if (calls++ === 0) {
          entered();
          await gate;
        }
        return inbox.bulkDocs(docs, opts);
      },
    };
    const writer = await s.statusWriter('north', slow);
    const [a, b] = [mid(), mid()];
    const first = writer.write(status(owner, a) as never);
    await stalled;
    await writer.write(status(owner, b) as never);
    // b is in the inbox and both are in the index, but a's batch has not landed: the head stays below both.
    expect(await inbox.get(`s:${owner}:${b}`)).not.to.equal(null);
    const indexed = await s.platform.db.query('SELECT doc_id FROM feed_index WHERE tenant = $1 AND owner = $2', ['north', owner]);
    expect(indexed.rows).to.have.length(2);
    await writer.settled();
    expect((await changes(token, 'since=0')).results).to.deep.equal([]);
    const info = (await call(base, { token })).json as { update_seq: number };
    expect(info.update_seq).to.equal(0);
    release();
    await first;
    await writer.settled();
    const after = await changes(token, 'since=0');
    expect(after.results.map((r) => r.id)).to.deep.equal([`s:${owner}:${a}`, `s:${owner}:${b}`]);
  });

  it('an inbox whose statuses predate the index reads as empty until the next lease holder has indexed it', async function () {
    const owner = 'fig';
    const tenant = 'south';
    const token = await s.token(owner, tenant);
    // What an older worker left behind: counters stamped in the docs, feed:head, the counter row,
    // mutations the gateway wrote without a ledger; and the worker migration's backfill marker.
    const mids = Array.from({ length: 4 }, () => mid());
    const gatewayInbox = s.gatewayUser.db(`inbox_${tenant}`);
    await gatewayInbox.bulkDocs([...mids, mid()].map((m) => mutation(owner, m, tenant)));
    const workerInbox = s.worker.db(`inbox_${tenant}`);
    await workerInbox.bulkDocs([
      { ...status(owner, mids[0]!, tenant, { state: 'committed' }), counter: 3, fence: 1 },
      { ...status('fih', mid(), tenant), counter: 4, fence: 1 },
      { ...status(owner, mids[1]!, tenant, { state: 'waiting' }), counter: 5, fence: 1 },
      { ...status(owner, mids[2]!, tenant, { state: 'rejected', code: 'VALIDATION_FAILED' }), counter: 7, fence: 1 },
    ]);
    await workerInbox.put({ _id: 'feed:head', type: 'feed-head', counter: 7, fence: 1 });
    await s.platform.db.query('INSERT INTO worker_feed_counters (tenant, next) VALUES ($1, 8)', [tenant]);
    await s.platform.db.query('INSERT INTO worker_feed_backfill (tenant) VALUES ($1)', [tenant]);

    const base = `${s.url}/sync/${tenant}`;
    const early = (await call(`${base}/_changes?since=0`, { token })).json as ChangesPage;
    expect(early).to.deep.include({ results: [], last_seq: 0 });
    expect(((await call(base, { token })).json as { update_seq: number }).update_seq).to.equal(0);

    const writer = await s.statusWriter(tenant);
    await writer.healHead();
    const after = (await call(`${base}/_changes?since=0`, { token })).json as ChangesPage;
    expect(after.results.map((r) => [r.seq, r.id])).to.deep.equal([
      [3, `s:${owner}:${mids[0]}`],
      [5, `s:${owner}:${mids[1]}`],
      [7, `s:${owner}:${mids[2]}`],
    ]);
    // Pending: five mutations, two of them terminal.
    expect(await createPendingLedger(s.platform.db).count(tenant, owner)).to.equal(3);
    // Done once: the marker is gone, and new statuses carry on above the old counters.
    expect(await s.positions.feedBackfillPending(tenant)).to.equal(false);
    await writer.write(status(owner, mids[3]!, tenant) as never);
    await writer.settled();
    const more = (await call(`${base}/_changes?since=7`, { token })).json as ChangesPage;
    expect(more.results.map((r) => [r.seq, r.id])).to.deep.equal([[8, `s:${owner}:${mids[3]}`]]);
  });

  it('longpoll from now wakes with the new status, read from the index', async function () {
    const owner = 'fie';
    const token = await s.token(owner);
    const poll = call(`${base}/_changes?feed=longpoll&since=now&timeout=20000`, { token });
    await new Promise((r) => setTimeout(r, 500));
    const m = mid();
    await s.writeStatuses('north', [status('fif', mid()), status(owner, m)]);
    const page = (await poll).json as ChangesPage;
    expect(page.results.map((r) => r.id)).to.deep.equal([`s:${owner}:${m}`]);
  });
});

describe('sync: the pending quota ledger', function () {
  this.timeout(60_000);
  let s: SyncStack;
  let base: string;

  before(async function () {
    s = await startSyncStack();
    base = `${s.url}/sync/north`;
  });
  after(async function () {
    await s?.close();
  });

  it('counts accepted mutations once: a re-push and refused docs do not count; terminal statuses bring it to zero', async function () {
    const owner = 'pia';
    const ledger = createPendingLedger(s.platform.db);
    const token = await s.token(owner);
    const docs = [mutation(owner), mutation(owner), mutation(owner)];
    const pushed = await call(`${base}/_bulk_docs`, { token, body: { docs } });
    expect(pushed.status).to.equal(201);
    expect(await ledger.count('north', owner)).to.equal(3);

    // The identical re-push (replication after a lost answer) is a no-op.
    // By id: the inbox may answer a batch in another order than it was sent.
    const revOf = new Map((pushed.json as Array<{ id: string; rev: string }>).map((r) => [r.id, r.rev]));
    const revs = docs.map((d) => revOf.get(d._id));
    const again = await call(`${base}/_bulk_docs`, { token, body: { docs: docs.map((d, i) => ({ ...d, _rev: revs[i] })), new_edits: false } });
    expect(again.status).to.equal(201);
    expect(again.json).to.deep.equal([]);
    // Refused: another owner's id, and a changed body on an existing id.
    const refused = await call(`${base}/_bulk_docs`, {
      token,
      body: { docs: [mutation('pib'), { ...docs[0]!, _rev: revs[0], payload: { givenName: 'Changed' } }], new_edits: false },
    });
    expect(refused.status).to.equal(201);
    expect((refused.json as Array<{ error: string }>).map((r) => r.error)).to.deep.equal(['forbidden', 'forbidden']);
    expect(await ledger.count('north', owner)).to.equal(3);
    expect(await ledger.count('north', 'pib')).to.equal(0);

    // Statuses: waiting leaves it pending, terminal ones do not.
    const mids = docs.map((d) => d._id.split(':')[2]!);
    await s.writeStatuses('north', [status(owner, mids[0]!, 'north', { state: 'committed' }), status(owner, mids[1]!, 'north', { state: 'waiting' })]);
    expect(await ledger.count('north', owner)).to.equal(2);
    const waiting = await s.admin.db('inbox_north').get<{ _rev: string }>(`s:${owner}:${mids[1]}`);
    await s.writeStatuses('north', [
      { ...status(owner, mids[1]!, 'north', { state: 'rejected', code: 'VALIDATION_FAILED' }), _rev: waiting!._rev },
      status(owner, mids[2]!, 'north', { state: 'conflict', code: 'VERSION_CONFLICT' }),
    ]);
    expect(await ledger.count('north', owner)).to.equal(0);

    // A status that beats the gateway's own record (worker faster than the ledger insert) still wins.
    const early = mutation(owner);
    await s.writeStatuses('north', [status(owner, early._id.split(':')[2]!, 'north', { state: 'committed' })]);
    expect((await call(`${base}/_bulk_docs`, { token, body: { docs: [early] } })).status).to.equal(201);
    expect(await ledger.count('north', owner)).to.equal(0);
  });

  it('only ids the inbox did not refuse are recorded (new_edits:false answers only failures)', () => {
    const a = mutation('pic');
    const b = mutation('pic');
    const c = mutation('pic');
    const mids = [a, b, c].map((d) => d._id.split(':')[2]);
    expect(acceptedMids([a, b, c], [], 'pic')).to.deep.equal(mids);
    expect(acceptedMids([a, b, c], [{ id: b._id, error: 'forbidden', reason: 'x' }], 'pic')).to.deep.equal([mids[0], mids[2]]);
    expect(acceptedMids([a, b], [{ id: a._id, rev: '1-x', ok: true }, { id: b._id, error: 'conflict' }], 'pic')).to.deep.equal([mids[0]]);
    expect(acceptedMids([a], [], 'pid')).to.deep.equal([]);
  });
});
