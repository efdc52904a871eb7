import { expect } from 'chai';
import { call, mid, mutation, startSyncStack, status, type SyncStack } from './support.ts';

// Apache CouchDB's own replicator through /sync (a clinic's on-site CouchDB syncing up), replayed
// request by request as couch_replicator_api_wrap.erl sends them (apache/couchdb main; findings in
// docs/SYNC.md), with the Bearer header set in the replication doc's `headers`.

const REP_ID = '2d6c8f6a9e0b4c1d8e7f6a5b4c3d2e1f'; // a replication id: md5 hex (+ extensions)

describe('sync: Apache CouchDB replicator request sequence', function () {
  this.timeout(60_000);
  let s: SyncStack;
  let token: string;
  let base: string;
  const headers = { 'user-agent': 'CouchDB-Replicator/3.5.0', accept: 'application/json' };

  before(async function () {
    s = await startSyncStack();
    token = await s.token('ada');
    base = `${s.url}/sync/north`;
  });
  after(async function () {
    await s?.close();
  });

  async function dbOpen(): Promise<Record<string, unknown>> {
    // db_open/3 and get_db_info/1: both need update_seq and instance_start_time.
    const info = await call(base, { token, headers });
    expect(info.status).to.equal(200);
    const body = info.json as Record<string, unknown>;
    expect(body).to.have.property('update_seq');
    expect(body.instance_start_time).to.equal('0');
    return body;
  }

  async function checkpoint(id: string, body: Record<string, unknown>): Promise<string> {
    // update_checkpoint/2 → update_doc(Db, Doc, [delay_commit]): PUT _local/{id}, JSON without attachments.
    const res = await call(`${base}/_local/${id}`, { method: 'PUT', token, body, headers: { ...headers, 'x-couch-full-commit': 'false' } });
    expect(res.status).to.equal(201);
    return (res.json as { rev: string }).rev;
  }

  it('as a push target: db info, _local, _revs_diff, _bulk_docs (new_edits:false), _ensure_full_commit, checkpoint', async function () {
    await dbOpen();
    const log = await call(`${base}/_local/${REP_ID}`, { token, headers });
    expect(log.status).to.equal(404);
    expect((log.json as { error: string }).error).to.equal('not_found');

    const docs = Array.from({ length: 5 }, () => ({ ...mutation('ada'), _rev: '1-0123456789abcdef0123456789abcdef' }));
    const diff = await call(`${base}/_revs_diff`, { token, headers, body: Object.fromEntries(docs.map((d) => [d._id, [d._rev]])) });
    expect(diff.status).to.equal(200);
    expect(Object.keys(diff.json as object)).to.have.length(5);

    const withRevisions = docs.map((d) => ({ ...d, _revisions: { start: 1, ids: [d._rev.slice(2)] } }));
    const bulk = await call(`${base}/_bulk_docs`, { token, headers: { ...headers, 'x-couch-full-commit': 'false' }, body: { new_edits: false, docs: withRevisions } });
    expect(bulk.status).to.equal(201);
    expect(bulk.json).to.deep.equal([]);

    const commit = await call(`${base}/_ensure_full_commit`, { method: 'POST', token, headers, body: '' });
    expect(commit.status).to.equal(201);
    expect(commit.json).to.include({ instance_start_time: '0' });

    const history = { session_id: 'abc', source_last_seq: 5, replication_id_version: 4, history: [{ session_id: 'abc', recorded_seq: 5 }] };
    const rev1 = await checkpoint(REP_ID, { _id: `_local/${REP_ID}`, ...history });
    expect(rev1).to.equal('0-1');
    const rev2 = await checkpoint(REP_ID, { _id: `_local/${REP_ID}`, _rev: rev1, ...history, source_last_seq: 6 });
    expect(rev2).to.equal('0-2');
    // A retried PUT with the old rev is a conflict, which the replicator resolves by reading back.
    const stale = await call(`${base}/_local/${REP_ID}`, { method: 'PUT', token, headers, body: { _id: `_local/${REP_ID}`, _rev: rev1, ...history } });
    expect(stale.status).to.equal(409);
    const back = await call(`${base}/_local/${REP_ID}`, { token, headers });
    expect(back.json).to.include({ _rev: '0-2', source_last_seq: 6 });
    for (const d of docs) expect(await s.admin.db('inbox_north').get(d._id)).to.not.equal(null);
  });

  it('as a pull source: _changes (feed=normal), _bulk_get, open_revs as multipart/mixed, pending count', async function () {
    const mids = Array.from({ length: 3 }, () => mid());
    await s.writeStatuses('north', [...mids.map((m) => status('ada', m)), status('ben', mid())]);
    await dbOpen();
    const changes = await call(`${base}/_changes?feed=normal&style=all_docs&since=0&timeout=10000`, { token, headers });
    expect(changes.status).to.equal(200);
    const page = changes.json as { results: Array<{ id: string; seq: number; changes: Array<{ rev: string }> }>; last_seq: number };
    expect(page.results.map((r) => r.id)).to.deep.equal(mids.map((m) => `s:ada:${m}`));
    expect(page.last_seq).to.equal(page.results[2]!.seq);

    // bulk_get/3: qs latest, revs, attachments=false; the same options in the body; Accept: application/json.
    const bulk = await call(`${base}/_bulk_get?latest=true&revs=true&attachments=false`, {
      token,
      headers,
      body: { docs: page.results.map((r) => ({ id: r.id, rev: r.changes[0]!.rev, atts_since: [] })), latest: true, revs: true, attachments: false },
    });
    expect(bulk.status).to.equal(200);
    const results = (bulk.json as { results: Array<{ id: string; docs: Array<{ ok?: { _id: string; _revisions?: unknown } }> }> }).results;
    expect(results.map((r) => r.docs[0]!.ok?._id)).to.deep.equal(page.results.map((r) => r.id));
    expect(results[0]!.docs[0]!.ok).to.have.property('_revisions');

    // open_doc_revs/6 (the fallback): GET {id}?revs=true&open_revs=[…]&latest=true, Accept: multipart/mixed.
    const first = page.results[0]!;
    const res = await fetch(`${base}/${encodeURIComponent(first.id)}?revs=true&open_revs=${encodeURIComponent(JSON.stringify([first.changes[0]!.rev]))}&latest=true`, {
      headers: { ...headers, accept: 'multipart/mixed', authorization: `Bearer ${token}` },
    });
    expect(res.status).to.equal(200);
    const type = res.headers.get('content-type') ?? '';
    const boundary = /boundary="([^"]+)"/.exec(type)?.[1];
    expect(type).to.match(/^multipart\/mixed/);
    expect(boundary).to.be.a('string');
    const text = await res.text();
    const parts = text.split(`--${boundary}`).slice(1, -1);
    expect(parts).to.have.length(1);
    const doc = JSON.parse(parts[0]!.split('\r\n\r\n')[1]!.trim()) as { _id: string; _rev: string; _revisions: unknown };
    expect(doc._id).to.equal(first.id);
    expect(doc._rev).to.equal(first.changes[0]!.rev);
    expect(text).to.not.include('s:ben:');

    // get_pending_count/2: update_seq is a number, so the replicator subtracts.
    const info = await dbOpen();
    expect(info.update_seq).to.equal(page.last_seq);
    const commit = await call(`${base}/_ensure_full_commit`, { method: 'POST', token, headers, body: '' });
    expect(commit.status).to.equal(201);
    await checkpoint(`${REP_ID}+continuous`, { session_id: 'x', source_last_seq: page.last_seq, history: [] });
  });

  it('continuous: rows as lines then {"last_seq"}, waking on a new status; after `timeout` an empty round', async function () {
    const info = await dbOpen();
    const since = Number(info.update_seq);
    const idle = await call(`${base}/_changes?feed=continuous&style=all_docs&since=${since}&timeout=1000`, { token, headers });
    expect(idle.status).to.equal(200);
    expect(idle.text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))).to.deep.equal([{ last_seq: since }]);

    const pending = call(`${base}/_changes?feed=continuous&style=all_docs&since=${since}&timeout=20000&heartbeat=500`, { token, headers });
    await new Promise((r) => setTimeout(r, 700));
    const m = mid();
    await s.writeStatuses('north', [status('ben', mid()), status('ada', m)]);
    const live = await pending;
    const lines = live.text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as { id?: string; seq?: number; last_seq?: number });
    expect(lines[0]!.id).to.equal(`s:ada:${m}`);
    expect(lines[lines.length - 1]!.last_seq).to.equal(lines[0]!.seq);
    expect(live.text).to.not.include('s:ben:');
  });

  it('HEAD of the database and unknown routes the replicator does not need stay closed', async function () {
    const head = await fetch(base, { method: 'HEAD', headers: { authorization: `Bearer ${token}` } });
    expect(head.status).to.equal(200);
    for (const [method, path] of [
      ['PUT', ''],
      ['POST', '/_bulk_docs/x'],
      ['GET', '/_changes/x'],
    ] as const) {
      const res = await call(`${base}${path}`, { method, token, ...(method === 'GET' ? {} : { body: {} }) });
      expect(res.status, `${method} ${path}`).to.equal(404);
    }
  });
});
