import { expect } from 'chai';
import net from 'node:net';
import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import { DEFAULT_SERVER_TIMEOUTS, createGatewayServer } from '../../gateway/edge/server-timeouts.ts';
import { DEFAULT_LIMITS, bodyClassOf, idCountOf } from '../../gateway/sync/bounds.ts';
import { createPendingEstimate } from '../../gateway/sync/quotas.ts';
import { resolveSyncRoute } from '../../gateway/sync/routes.ts';
import { createLogger, type Logger } from '../../http/log.ts';
import { childOutputRelay, type ChildOutputEvent } from '../../couchdb/embedded/supervisor.ts';
import { DOC_SHAPE_LIMITS, checkDocShape } from '../../validators/doc-shape.ts';
import { call, mid, mutation, startSyncStack, type SyncStack } from './support.ts';

// The /sync security suite, part two (issue 10, "bounded requests"): what one user can make the
// gateway parse, hold and relay. Each attack is refused with a 4xx and a catalogue code, never a
// 500; nothing it carries reaches the log. Speed is measured in bench/, not asserted here.

PouchDB.plugin(MemoryAdapter);

const MARKER = 'Zyxwvsyntheticphi'; // a synthetic PHI marker: must never reach a log line

/** JSON text of a value nested `levels` objects deep, built as text: JSON.stringify itself overflows. */
function deepJson(levels: number): string {
  return `${'{"a":'.repeat(levels)}"${MARKER}"${'}'.repeat(levels)}`;
}

/**
 * `_bulk_docs` body text whose first doc carries `payload.nested` `levels` deep, and the marker at
 * a shallow field too: PouchDB prints a doc whose map crashed with util.inspect, which shows the
 * top levels and elides the deep ones.
 */
function bulkWithDeepDoc(docs: Array<Record<string, unknown>>, levels: number, newEdits = true): string {
  const [first, ...rest] = docs;
  const text = JSON.stringify({ ...first, payload: { givenName: MARKER, nested: '__DEEP__' } }).replace('"__DEEP__"', deepJson(levels));
  return `{${newEdits ? '' : '"new_edits":false,'}"docs":[${[text, ...rest.map((d) => JSON.stringify(d))].join(',')}]}`;
}

const rev1 = () => `1-${mid().replace(/-/g, '').slice(0, 32)}`;

function captureLog(): { logger: Logger; text: () => string } {
  const chunks: string[] = [];
  const logger = createLogger('bounds-test', { level: 'debug', destination: { write: (s: string) => void chunks.push(s) } });
  return { logger, text: () => chunks.join('') };
}

describe('sync: bounded requests (issue 10)', function () {
  this.timeout(120_000);

  describe('pure limits', function () {
    const nest = (levels: number): unknown => JSON.parse(deepJson(levels));
    const cases: Array<[string, unknown, string]> = [
      ['a scalar', 'x', 'ok'],
      ['32 levels', nest(32), 'ok'],
      ['33 levels', nest(33), 'too-deep'],
      ['arrays count as levels', JSON.parse(`${'['.repeat(33)}1${']'.repeat(33)}`), 'too-deep'],
      ['100,000 levels: no stack overflow', nest(100_000), 'too-deep'],
      ['4,096 members', Object.fromEntries(Array.from({ length: 4096 }, (_, i) => [`k${i}`, 0])), 'ok'],
      ['4,097 members', Object.fromEntries(Array.from({ length: 4097 }, (_, i) => [`k${i}`, 0])), 'too-many-members'],
      ['array items count as members', { a: new Array(4097).fill(0) }, 'too-many-members'],
      ['members are counted across the doc', { a: new Array(2048).fill({}), b: new Array(2048).fill(0) }, 'too-many-members'],
    ];
    for (const [name, value, kind] of cases) {
      it(`doc shape: ${name} → ${kind}`, function () {
        expect(checkDocShape(value).kind).to.equal(kind);
      });
    }
    it('the documented numbers', function () {
      expect(DOC_SHAPE_LIMITS).to.deep.equal({ maxDepth: 32, maxMembers: 4096 });
      expect(DEFAULT_LIMITS.maxIds).to.equal(1000);
      expect(DEFAULT_LIMITS.bodyBytes).to.deep.equal({ write: 16 * 1024 * 1024, local: 128 * 1024, ids: 1024 * 1024, other: 16 * 1024 });
    });

    it('body class per route: writes large, id lists small, everything else tiny', function () {
      const table: Array<[string, string, string]> = [
        ['/north/_bulk_docs', 'POST', 'write'],
        ['/north/_local/x', 'PUT', 'local'],
        ['/north/_local/x', 'DELETE', 'other'],
        ['/north/_revs_diff', 'POST', 'ids'],
        ['/north/_bulk_get', 'POST', 'ids'],
        ['/north/_all_docs', 'POST', 'ids'],
        ['/north/_changes', 'POST', 'ids'],
        ['/north/_ensure_full_commit', 'POST', 'other'],
        ['/north', 'GET', 'other'],
        ['/', 'GET', 'other'],
      ];
      for (const [path, method, cls] of table) expect(bodyClassOf(resolveSyncRoute(path, method)!, method), `${method} ${path}`).to.equal(cls);
    });

    it('ids per request, from the body, `_all_docs?keys=` or `_changes?doc_ids=`', function () {
      expect(idCountOf('revs_diff', { a: [], b: [] })).to.equal(2);
      expect(idCountOf('bulk_get', { docs: [{}, {}, {}] })).to.equal(3);
      expect(idCountOf('all_docs', { keys: ['a'] })).to.equal(1);
      expect(idCountOf('all_docs', undefined, { keys: '["a","b"]' })).to.equal(2);
      expect(idCountOf('all_docs', undefined, { keys: 'not json' })).to.equal(null);
      expect(idCountOf('changes', { doc_ids: ['a'] })).to.equal(1);
      expect(idCountOf('changes', undefined, { filter: '_doc_ids', doc_ids: '["a","b","c"]' })).to.equal(3);
      expect(idCountOf('bulk_docs', { docs: [{}, {}] })).to.equal(2);
      expect(idCountOf('local', { docs: [{}, {}] })).to.equal(null);
    });

    it('pending estimate: a failed write gives its room back, a partial one keeps only what went in', async function () {
      let asked = 0;
      const est = createPendingEstimate({ max: 10 });
      const exact = async () => {
        asked++;
        return 0;
      };
      const first = await est.reserve('k', 10, exact);
      expect(first).to.not.equal(null);
      first!.release(); // the inbox write threw
      expect(est.peek('k')).to.equal(0);
      const second = await est.reserve('k', 10, exact);
      expect(asked, 'no phantom left to force a re-count').to.equal(1);
      second!.commit(3); // the inbox refused 7 of 10
      expect(est.peek('k')).to.equal(3);
      second!.release(); // settling twice changes nothing
      expect(est.peek('k')).to.equal(3);
    });

    it('pending estimate: a settle after a re-count never takes the estimate below what is real (nor below zero)', async function () {
      let t = 0;
      let exactCount = 0;
      const est = createPendingEstimate({ max: 10, maxAgeMs: 1000, now: () => t });
      const exact = async () => exactCount;
      const stale = await est.reserve('k', 8, exact);
      t = 5000; // the estimate goes stale; the next reserve counts exactly
      exactCount = 1;
      const fresh = await est.reserve('k', 1, exact);
      expect(est.peek('k')).to.equal(2);
      stale!.release(); // its 8 were never part of the fresh count
      expect(est.peek('k')).to.equal(2);
      fresh!.release();
      expect(est.peek('k')).to.equal(1);
    });

    it('child output relay: one event per burst, counts only, kind from fixed markers', function () {
      const events: ChildOutputEvent[] = [];
      const relay = childOutputRelay({ stream: 'stderr', pid: 7, emit: (e) => events.push(e), idleMs: 60_000 });
      relay.line("The user's map/reduce function threw an uncaught error.");
      relay.line(`{ _id: 'm:ada:x', payload: { givenName: '${MARKER}' } }`);
      relay.line("The user's map/reduce function threw an uncaught error.");
      relay.line(`${MARKER}`);
      relay.flush();
      relay.line('embedded CouchDB failed to start: listen EADDRINUSE: address already in use 127.0.0.1:5984');
      relay.flush();
      expect(JSON.stringify(events)).to.not.include(MARKER);
      expect(events.map((e) => [e.event, e.kind, e.lines])).to.deep.equal([
        ['child_stderr', 'view_map_error', 2],
        ['child_stderr', 'view_map_error', 2],
        ['child_stderr', 'start_failure', 1],
      ]);
      expect(events[2]!.errno).to.equal('EADDRINUSE');
      expect(events[0]!.bytes).to.be.greaterThan(50);
    });

    it('gateway server timeouts: headers 20 s, request 120 s, keep-alive 65 s', function () {
      const server = createGatewayServer(() => undefined);
      expect(server.headersTimeout).to.equal(DEFAULT_SERVER_TIMEOUTS.headersTimeoutMs).and.equal(20_000);
      expect(server.requestTimeout).to.equal(120_000);
      expect(server.keepAliveTimeout).to.equal(65_000);
    });
  });

  describe('on the stack', function () {
    let s: SyncStack;
    let log: ReturnType<typeof captureLog>;
    let ada: string;
    let ben: string;
    let base = '';

    before(async function () {
      log = captureLog();
      // Served as the gateway is (gateway/edge/server-timeouts.ts defaults).
      s = await startSyncStack({ logger: log.logger, serverTimeouts: {} });
      base = `${s.url}/sync/north`;
      ada = await s.token('ada');
      ben = await s.token('ben');
    });
    after(async function () {
      await s?.close();
    });

    const inboxHas = async (id: string) => (await s.admin.db('inbox_north').get(id)) !== null;
    const settleLog = () => new Promise((r) => setTimeout(r, 400)); // the relay flushes a burst after 100 ms idle

    describe('doc shape', function () {
      it('_bulk_docs: a doc nested 3,000 levels (under 64 KB) is refused per doc with DOC_TOO_COMPLEX; its batch-mates are written', async function () {
        const deep = mutation('ada');
        const fine = mutation('ada');
        const res = await call(`${base}/_bulk_docs`, { token: ada, body: bulkWithDeepDoc([deep, fine], 3000) });
        expect(res.status).to.equal(201);
        const items = res.json as Array<Record<string, unknown>>;
        expect(items[0]).to.include({ id: deep._id, error: 'forbidden', code: 'DOC_TOO_COMPLEX' });
        expect(items[1]).to.include({ id: fine._id, ok: true });
        expect(await inboxHas(deep._id)).to.equal(false);
        expect(await inboxHas(fine._id)).to.equal(true);
        expect(res.text).to.not.include(MARKER);
      });

      it('_bulk_docs new_edits=false: 4,500 and 20,000 levels are per-doc DOC_TOO_COMPLEX, never a 500 for the batch', async function () {
        for (const levels of [4500, 20_000]) {
          const deep = { ...mutation('ada'), _rev: rev1() };
          const fine = { ...mutation('ada'), _rev: rev1() };
          const res = await call(`${base}/_bulk_docs`, { token: ada, body: bulkWithDeepDoc([deep, fine], levels, false) });
          expect(res.status, `${levels} levels`).to.equal(201);
          expect(res.json).to.deep.equal([{ id: deep._id, error: 'forbidden', reason: 'The document is nested too deeply or has too many keys.', code: 'DOC_TOO_COMPLEX' }]);
          expect(await inboxHas(deep._id)).to.equal(false);
          expect(await inboxHas(fine._id)).to.equal(true);
        }
      });

      it('stock PouchDB: a too-deep doc is a `denied` event, the rest of the push lands, and the replication resolves', async function () {
        const db = new PouchDB(`ada-deep-${mid()}`, { adapter: 'memory' });
        const deep = mutation('ada', mid(), 'north', { payload: { givenName: 'Synthetic', nested: JSON.parse(deepJson(40)) as unknown } });
        const fine = mutation('ada');
        await db.bulkDocs([deep, fine]);
        const denied: Array<Record<string, unknown>> = [];
        const remote = new PouchDB(base, {
          skip_setup: true,
          fetch: (url: string | Request, opts?: RequestInit) => {
            const headers = new Headers(opts?.headers);
            headers.set('Authorization', `Bearer ${ada}`);
            return PouchDB.fetch(url, { ...opts, headers });
          },
        } as PouchDB.Configuration.RemoteDatabaseConfiguration);
        const rep = db.replicate.to(remote);
        rep.on('denied', (err) => denied.push(err as Record<string, unknown>));
        const result = await rep;
        expect(result.ok).to.equal(true);
        expect(result.doc_write_failures).to.equal(1);
        expect(denied.map((d) => [d.id, d.code])).to.deep.equal([[deep._id, 'DOC_TOO_COMPLEX']]);
        expect(await inboxHas(fine._id)).to.equal(true);
        expect(await inboxHas(deep._id)).to.equal(false);
        await db.destroy();
        await remote.close();
      });

      it('_bulk_docs: a doc with 5,000 keys is refused per doc with DOC_TOO_COMPLEX', async function () {
        const wide = mutation('ada', mid(), 'north', { payload: { givenName: 'Synthetic', extra: Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, 1])) } });
        const res = await call(`${base}/_bulk_docs`, { token: ada, body: { docs: [wide] } });
        expect(res.status).to.equal(201);
        expect((res.json as Array<Record<string, unknown>>)[0]).to.include({ id: wide._id, error: 'forbidden', code: 'DOC_TOO_COMPLEX' });
      });

      it('_local PUT: a body nested 4,500 levels is 400 DOC_TOO_COMPLEX, not a 500', async function () {
        const res = await call(`${base}/_local/deep`, { method: 'PUT', token: ada, body: `{"x":${deepJson(4500)}}` });
        expect(res.status).to.equal(400);
        expect(res.json).to.include({ error: 'bad_request', code: 'DOC_TOO_COMPLEX' });
      });

      it('no PHI in the gateway log: after deep docs were pushed and the inbox view was built, the marker is nowhere', async function () {
        await call(`${base}/_bulk_docs`, { token: ada, body: bulkWithDeepDoc([mutation('ada')], 3000) });
        // An operator querying the inbox view maps every doc the inbox took.
        const view = await s.admin.db('inbox_north').request('GET', '/_design/ferry/_view/by_entity', undefined, { limit: '1' });
        await view.body?.cancel();
        await settleLog();
        expect(log.text()).to.not.include(MARKER);
      });

      it('no PHI in the gateway log: a view map that throws on a doc becomes a child_stderr event without the doc', async function () {
        const db = s.admin.db('scratch_viewcrash');
        await s.admin.createDb('scratch_viewcrash');
        await db.put({ _id: '_design/crash', views: { boom: { map: 'function (doc) { if (doc.boom) { throw new Error("boom"); } emit(doc._id, null); }' } } });
        await db.put({ _id: 'synthetic-1', boom: true, givenName: MARKER });
        const res = await db.request('GET', '/_design/crash/_view/boom');
        await res.body?.cancel();
        await settleLog();
        const text = log.text();
        expect(text).to.not.include(MARKER);
        const events = text
          .split('\n')
          .filter((l) => l.includes('"child_stderr"'))
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(events.some((e) => e.kind === 'view_map_error' && (e.bytes as number) > 0)).to.equal(true);
      });
    });

    describe('id caps and body limits', function () {
      const ids = (n: number) => Array.from({ length: n }, () => `m:ada:${mid()}`);

      it('_revs_diff, _bulk_get, _all_docs and _changes accept 1,000 ids and refuse 1,001 with 400 TOO_MANY_IDS; so does _bulk_docs past 1,000 docs', async function () {
        const shapes: Array<[string, (list: string[]) => unknown, string?]> = [
          ['_revs_diff', (l) => Object.fromEntries(l.map((id) => [id, [rev1()]]))],
          ['_bulk_get', (l) => ({ docs: l.map((id) => ({ id })) })],
          ['_all_docs', (l) => ({ keys: l })],
          ['_changes', (l) => ({ doc_ids: l.map((id) => id.replace('m:', 's:')) }), '?filter=_doc_ids'],
        ];
        for (const [path, body, q] of shapes) {
          const ok = await call(`${base}/${path}${q ?? ''}`, { token: ada, body: body(ids(1000)) });
          expect(ok.status, `${path} 1,000`).to.equal(200);
          const over = await call(`${base}/${path}${q ?? ''}`, { token: ada, body: body(ids(1001)) });
          expect(over.status, `${path} 1,001`).to.equal(400);
          expect(over.json).to.include({ error: 'bad_request', code: 'TOO_MANY_IDS' });
        }
        // A push of 1,001 docs (each own id would be looked up upstream before deciding).
        const push = await call(`${base}/_bulk_docs`, { token: ada, body: { docs: Array.from({ length: 1001 }, () => ({ _id: `m:ada:${mid()}` })) } });
        expect(push.status).to.equal(400);
        expect(push.json).to.include({ code: 'TOO_MANY_IDS' });
        const keys = Array.from({ length: 1001 }, (_, i) => `k${i}`);
        const get = await call(`${base}/_all_docs?keys=${encodeURIComponent(JSON.stringify(keys))}`, { token: ada });
        expect(get.status).to.equal(400);
        expect(get.json).to.include({ code: 'TOO_MANY_IDS' });
      });

      it('six parallel 14.6 MB _revs_diff calls are all 413 PAYLOAD_TOO_LARGE, and another user’s _all_docs is still answered', async function () {
        // ~14.6 MB: 172,000 ids with one rev each, the attack as the pass made it (under the old 16 MB limit).
        const body = JSON.stringify(Object.fromEntries(Array.from({ length: 172_000 }, (_, i) => [`m:ada:${String(i).padStart(36, '0')}`, ['1-00000000000000000000000000000000']])));
        expect(body.length).to.be.within(14_000_000, 15_000_000);
        const attacks = Array.from({ length: 6 }, () => call(`${base}/_revs_diff`, { token: ada, body }));
        const victim = call(`${base}/_all_docs?limit=10`, { token: ben });
        const answers = await Promise.all(attacks);
        for (const a of answers) {
          expect(a.status).to.equal(413);
          expect(a.json).to.include({ error: 'too_large', code: 'PAYLOAD_TOO_LARGE' });
        }
        expect((await victim).status).to.equal(200);
      });

      it('body limits per route class: 2 MB id lists, a 200 KB _local doc and a 64 KB _ensure_full_commit are 413; a 2 MB _bulk_docs is not', async function () {
        const pad = (bytes: number) => 'x'.repeat(bytes);
        const over: Array<[string, string, string]> = [
          ['POST', '_bulk_get', JSON.stringify({ docs: [], pad: pad(2 * 1024 * 1024) })],
          ['POST', '_all_docs', JSON.stringify({ keys: [], pad: pad(2 * 1024 * 1024) })],
          ['PUT', '_local/big', JSON.stringify({ pad: pad(200 * 1024) })],
          ['POST', '_ensure_full_commit', JSON.stringify({ pad: pad(64 * 1024) })],
          ['POST', '_changes', JSON.stringify({ pad: pad(2 * 1024 * 1024) })],
        ];
        for (const [method, path, body] of over) {
          const res = await call(`${base}/${path}`, { method, token: ada, body });
          expect(res.status, `${method} ${path}`).to.equal(413);
          expect(res.json).to.include({ code: 'PAYLOAD_TOO_LARGE' });
        }
        // 400 plain mutations of ~5 KB: a big but honest push.
        const docs = Array.from({ length: 400 }, () => mutation('ada', mid(), 'north', { payload: { givenName: 'Synthetic', note: pad(5000) } }));
        const push = await call(`${base}/_bulk_docs`, { token: ada, body: { docs } });
        expect(push.status).to.equal(201);
      });
    });

    describe('live feeds', function () {
      it('a fifth live _changes feed of one user is 429 QUOTA_EXCEEDED; another user is unaffected; a closed feed frees its slot', async function () {
              const controllers = [0, 1, 2, 3].map(() => new AbortController());
        const open = controllers.map((c) =>
          fetch(`${base}/_changes?feed=longpoll&since=now&heartbeat=1000`, { headers: { authorization: `Bearer ${ada}` }, signal: c.signal }).then(
            (r) => r,
            () => null,
          ),
        );
        // Both feeds are held once their headers (sent before the wait) arrive.
        const held = await Promise.all(open);
        expect(held.map((r) => r?.status)).to.deep.equal([200, 200, 200, 200]);
        const fifth = await call(`${base}/_changes?feed=longpoll&since=now`, { token: ada });
        expect(fifth.status).to.equal(429);
        expect(fifth.json).to.include({ error: 'too_many_requests', code: 'QUOTA_EXCEEDED' });
        expect(Number(fifth.headers.get('retry-after'))).to.be.greaterThan(0);
        const normal = await call(`${base}/_changes`, { token: ada });
        expect(normal.status, 'a normal feed is not a live one').to.equal(200);
        const other = new AbortController();
        const benFeed = await fetch(`${base}/_changes?feed=longpoll&since=now&heartbeat=1000`, { headers: { authorization: `Bearer ${ben}` }, signal: other.signal });
        expect(benFeed.status).to.equal(200);
        other.abort();
        controllers[0]!.abort();
        // The server sees the close a moment later; then ada has a slot again.
        let again = 429;
        for (let i = 0; i < 50 && again === 429; i++) {
          await new Promise((r) => setTimeout(r, 100));
          const c = new AbortController();
          const r = await fetch(`${base}/_changes?feed=longpoll&since=now&heartbeat=1000`, { headers: { authorization: `Bearer ${ada}` }, signal: c.signal });
          again = r.status;
          c.abort();
          await r.body?.cancel().catch(() => undefined);
        }
        expect(again).to.equal(200);
        for (const c of controllers) c.abort();
      });
    });
  });

  describe('per-user read budget; server timeouts', function () {
    let s: SyncStack;
    let base = '';
    before(async function () {
      // Short server timeouts too, so a longpoll can be shown to outlive requestTimeout.
      s = await startSyncStack({
        quotas: { readsPerSecond: 0.001, readBurst: 5 },
        serverTimeouts: { headersTimeoutMs: 1000, requestTimeoutMs: 2000, checkIntervalMs: 250 },
      });
      base = `${s.url}/sync/north`;
    });
    after(async function () {
      await s?.close();
    });

    it('reads past the burst are 429 RATE_LIMITED with Retry-After; the same user’s writes and other users’ reads go on', async function () {
      const cy = await s.token('cy');
      const dee = await s.token('dee');
      for (let i = 0; i < 5; i++) expect((await call(`${base}/_all_docs?limit=1`, { token: cy })).status).to.equal(200);
      const limited = await call(`${base}/_all_docs?limit=1`, { token: cy });
      expect(limited.status).to.equal(429);
      expect(limited.json).to.include({ error: 'too_many_requests', code: 'RATE_LIMITED' });
      expect(Number(limited.headers.get('retry-after'))).to.be.greaterThan(0);
      expect((await call(`${base}/_bulk_docs`, { token: cy, body: { docs: [mutation('cy')] } })).status).to.equal(201);
      expect((await call(`${base}/_all_docs?limit=1`, { token: dee })).status).to.equal(200);
    });


    describe('server timeouts', function () {
      it('a longpoll held past requestTimeout (2 s here) still answers 200', async function () {
        const res = await call(`${base}/_changes?feed=longpoll&since=now&timeout=3500&heartbeat=1000`, { token: await s.token('fay') });
        expect(res.status).to.equal(200);
        expect(res.json).to.include({ pending: 0 });
      });

      it('a client that never finishes its headers is cut off (headersTimeout, 1 s here)', async function () {
        this.timeout(15_000); // Node's own default would hold it 60 s or more
        const { port } = new URL(s.url);
        const socket = net.connect({ host: '127.0.0.1', port: Number(port) });
        let received = '';
        socket.on('data', (d) => (received += d.toString()));
        await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        socket.write('GET /sync/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n');
        await new Promise<void>((resolve) => socket.once('close', () => resolve()));
        expect(received).to.match(/^HTTP\/1\.1 408/);
      });
    });
  });
});
