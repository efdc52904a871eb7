import { expect } from 'chai';
import http from 'node:http';
import { SignJWT, base64url } from 'jose';
import { generateSigningKey } from '../../identity/keys.ts';
import { createTokenIssuer } from '../../identity/tokens.ts';
import { ISSUER, call, mid, mutation, startSyncStack, status, type SyncStack } from './support.ts';

// The /sync security suite (issue 4 "Done means"): one test per attack, as `ada` against `ben` and
// against tenant `south`. Every attempt must fail with the right status and leak nothing: no id,
// rev or content of ben's docs, and no difference between "ben's doc" and "no such doc".

const SECRET = 'Bensecretname'; // a synthetic marker in ben's mutation payload

describe('sync: security suite', function () {
  this.timeout(60_000);
  let s: SyncStack;
  let ada: string;
  let ben: string;
  const benMid = mid();
  const adaMid = mid();
  const ghostMid = mid(); // exists nowhere
  let benRev = '';
  let base = '';

  const noLeak = (text: string) => {
    expect(text).to.not.include(benMid);
    expect(text).to.not.include(SECRET);
    if (benRev) expect(text).to.not.include(benRev.slice(2));
  };
  const inbox = () => s.admin.db('inbox_north');

  before(async function () {
    s = await startSyncStack();
    base = `${s.url}/sync/north`;
    ada = await s.token('ada');
    ben = await s.token('ben');
    const pushed = await call(`${base}/_bulk_docs`, { token: ben, body: { docs: [mutation('ben', benMid, 'north', { payload: { givenName: SECRET } })] } });
    expect(pushed.status).to.equal(201);
    benRev = (pushed.json as Array<{ rev: string }>)[0]!.rev;
    const adaPush = await call(`${base}/_bulk_docs`, { token: ada, body: { docs: [mutation('ada', adaMid)] } });
    expect(adaPush.status).to.equal(201);
    await s.writeStatuses('north', [status('ben', benMid, 'north', { state: 'rejected', code: 'VALIDATION_FAILED' }), status('ada', adaMid)]);
  });
  after(async function () {
    await s?.close();
  });

  describe('reads', function () {
    it('_changes: only the caller’s own status docs, with or without include_docs', async function () {
      for (const q of ['', '?include_docs=true', '?style=all_docs&include_docs=true&conflicts=true', '?limit=1000']) {
        const res = await call(`${base}/_changes${q}`, { token: ada });
        expect(res.status).to.equal(200);
        const ids = (res.json as { results: Array<{ id: string }> }).results.map((r) => r.id);
        expect(ids).to.deep.equal([`s:ada:${adaMid}`]);
        noLeak(res.text);
      }
    });

    it('_changes: filter=_doc_ids naming ben’s docs (GET and POST) is ANDed with the caller’s ids', async function () {
      const ids = [`s:ben:${benMid}`, `m:ben:${benMid}`, `s:ada:${adaMid}`];
      const get = await call(`${base}/_changes?filter=_doc_ids&include_docs=true&doc_ids=${encodeURIComponent(JSON.stringify(ids))}`, { token: ada });
      const post = await call(`${base}/_changes?filter=_doc_ids&include_docs=true`, { token: ada, body: { doc_ids: ids } });
      for (const res of [get, post]) {
        expect(res.status).to.equal(200);
        expect((res.json as { results: Array<{ id: string }> }).results.map((r) => r.id)).to.deep.equal([`s:ada:${adaMid}`]);
        noLeak(res.text);
      }
    });

    it('_changes: filter functions, _selector, _view and selector params are refused with 400 and never reach upstream', async function () {
      const attempts: Array<[string, unknown]> = [
        ['?filter=_selector', { selector: { owner: 'ben' } }],
        ['?filter=_selector', undefined],
        ['?filter=ferry/anything', undefined],
        ['?filter=_view&view=ferry/feed', undefined],
        ['?selector=%7B%7D', undefined],
        ['', { selector: { owner: 'ben' } }],
        ['?filter=_design', undefined],
      ];
      for (const [q, body] of attempts) {
        const res = await call(`${base}/_changes${q}`, { token: ada, ...(body !== undefined ? { body } : {}) });
        expect(res.status, q).to.equal(400);
        noLeak(res.text);
      }
      // The embedded server is still up (trap 17 would have crashed it).
      expect((await call(`${base}/_changes`, { token: ada })).status).to.equal(200);
    });

    it('_changes: since tricks (0, now, negative, huge, non-numeric, descending) show nothing of ben’s', async function () {
      for (const q of ['?since=0', '?since=now', '?since=0&descending=true', '?since=99999999', '?since=0&limit=0', '?since=0&style=all_docs&feed=longpoll']) {
        const res = await call(`${base}/_changes${q}`, { token: ada });
        expect(res.status, q).to.equal(200);
        noLeak(res.text);
      }
      for (const q of ['?since=-1', '?since=1-g1AAAA', '?since=%5B1%5D', '?limit=-5', '?feed=eventsource', '?style=weird']) {
        const res = await call(`${base}/_changes${q}`, { token: ada });
        expect(res.status, q).to.equal(400);
        noLeak(res.text);
      }
    });

    it('_all_docs: plain, keys and ranges only ever show the caller’s docs; foreign keys look like absent ones', async function () {
      const plain = await call(`${base}/_all_docs?include_docs=true`, { token: ada });
      expect(plain.status).to.equal(200);
      const plainIds = (plain.json as { rows: Array<{ id: string }> }).rows.map((r) => r.id).sort();
      expect(plainIds).to.deep.equal([`m:ada:${adaMid}`, `s:ada:${adaMid}`]);
      noLeak(plain.text);

      const keys = await call(`${base}/_all_docs?include_docs=true`, { token: ada, body: { keys: [`m:ben:${benMid}`, `s:ben:${benMid}`, `m:ben:${ghostMid}`, `m:ada:${adaMid}`] } });
      expect(keys.status).to.equal(200);
      const rows = (keys.json as { rows: Array<{ key: string; error?: string; id?: string }> }).rows;
      expect(rows[0]).to.deep.equal({ key: `m:ben:${benMid}`, error: 'not_found' });
      expect(rows[1]).to.deep.equal({ key: `s:ben:${benMid}`, error: 'not_found' });
      expect(rows[2]).to.deep.equal({ key: `m:ben:${ghostMid}`, error: 'not_found' });
      expect(rows[3]!.id).to.equal(`m:ada:${adaMid}`);
      expect(JSON.stringify(rows.slice(0, 2))).to.not.include(SECRET);

      const ranges: Array<Record<string, string>> = [
        { startkey: '"m:ben:"', endkey: '"m:ben:\ufff0"' },
        { startkey: '""', endkey: '"\ufff0"' },
        { startkey: '"m:b"', endkey: '"s:c"' },
        { startkey: '"s:ben:\ufff0"', endkey: '"m:"', descending: 'true' },
        { key: `"m:ben:${benMid}"` },
        { startkey: '"_design/"', endkey: '"_design/\ufff0"' },
      ];
      for (const r of ranges) {
        const q = new URLSearchParams({ include_docs: 'true', ...r }).toString();
        const res = await call(`${base}/_all_docs?${q}`, { token: ada });
        expect(res.status, q).to.equal(200);
        const ids = (res.json as { rows: Array<{ id: string }> }).rows.map((x) => x.id);
        expect(ids.every((id) => id.startsWith('m:ada:') || id.startsWith('s:ada:')), q).to.equal(true);
        noLeak(res.text);
        expect(res.text).to.not.include('_design');
      }
    });

    it('a prefix without its colon: owner `ad` sees nothing of `ada`, and cannot write as `ada`', async function () {
      const ad = await s.token('ad');
      const q = new URLSearchParams({ startkey: '"m:ad"', endkey: '"m:ad\ufff0"', include_docs: 'true' }).toString();
      const res = await call(`${base}/_all_docs?${q}`, { token: ad });
      expect(res.status).to.equal(200);
      expect((res.json as { rows: unknown[] }).rows).to.deep.equal([]);
      expect(res.text).to.not.include(adaMid);
      const changes = await call(`${base}/_changes?include_docs=true`, { token: ad });
      expect(changes.text).to.not.include(adaMid);
      const diff = await call(`${base}/_revs_diff`, { token: ad, body: { [`m:ada:${adaMid}`]: ['1-abc'] } });
      expect(diff.json).to.deep.equal({ [`m:ada:${adaMid}`]: { missing: ['1-abc'] } });
      const push = await call(`${base}/_bulk_docs`, { token: ad, body: { docs: [mutation('ada', mid())] } });
      expect((push.json as Array<{ error: string }>)[0]!.error).to.equal('forbidden');
    });

    it('_bulk_get: ben’s ids are answered exactly like ids that do not exist', async function () {
      const res = await call(`${base}/_bulk_get?revs=true&latest=true`, {
        token: ada,
        body: { docs: [{ id: `m:ben:${benMid}`, rev: benRev }, { id: `s:ben:${benMid}` }, { id: `m:ben:${ghostMid}`, rev: benRev }] },
      });
      expect(res.status).to.equal(200);
      noLeak(res.text.replaceAll(`m:ben:${benMid}`, '').replaceAll(`s:ben:${benMid}`, '').replaceAll(benRev, ''));
      const results = (res.json as { results: Array<{ id: string; docs: Array<{ error?: { error: string; rev: string } }> }> }).results;
      expect(results.map((r) => r.docs[0]!.error?.error)).to.deep.equal(['not_found', 'not_found', 'not_found']);
      const shape = (r: (typeof results)[number]) => JSON.stringify(r).replaceAll(benMid, 'X').replaceAll(ghostMid, 'X');
      expect(shape(results[0]!)).to.equal(shape(results[2]!));
    });

    it('GET of ben’s doc (plain, open_revs, revs, conflicts) is the same 404 as a missing doc', async function () {
      const ghost = await call(`${base}/${encodeURIComponent(`m:ben:${ghostMid}`)}`, { token: ada });
      expect(ghost.status).to.equal(404);
      for (const q of ['', '?revs=true', '?open_revs=all', `?open_revs=${encodeURIComponent(JSON.stringify([benRev]))}&latest=true`, '?conflicts=true', `?rev=${benRev}`]) {
        for (const id of [`m:ben:${benMid}`, `s:ben:${benMid}`]) {
          const res = await call(`${base}/${encodeURIComponent(id)}${q}`, { token: ada });
          expect(res.status, q).to.equal(404);
          expect(res.json).to.deep.include({ error: 'not_found', reason: 'missing' });
          expect(Object.keys(res.json as object).sort()).to.deep.equal(Object.keys(ghost.json as object).sort());
          noLeak(res.text);
        }
      }
      const own = await call(`${base}/${encodeURIComponent(`m:ada:${adaMid}`)}?revs=true&open_revs=all&latest=true`, { token: ada });
      expect(own.status).to.equal(200);
    });

    it('_local: each user has their own; ben cannot read, overwrite or delete ada’s checkpoint', async function () {
      const put = await call(`${base}/_local/checkpoint1`, { method: 'PUT', token: ada, body: { last_seq: 7, history: [] } });
      expect(put.status).to.equal(201);
      const read = await call(`${base}/_local/checkpoint1`, { token: ben });
      expect(read.status).to.equal(404);
      expect(read.text).to.not.include('last_seq');
      const del = await call(`${base}/_local/checkpoint1?rev=0-1`, { method: 'DELETE', token: ben });
      expect(del.status).to.equal(404);
      const over = await call(`${base}/_local/checkpoint1`, { method: 'PUT', token: ben, body: { last_seq: 0 } });
      expect(over.status).to.equal(201); // ben's own doc of that name
      const mine = await call(`${base}/_local/checkpoint1`, { token: ada });
      expect((mine.json as { last_seq: number }).last_seq).to.equal(7);
      // The body's _id cannot point elsewhere (trap 16), and ids cannot escape.
      const other = await call(`${base}/_local/checkpoint1`, { method: 'PUT', token: ada, body: { _id: '_local/other', _rev: '0-1', x: 1 } });
      expect(other.status).to.equal(400);
      // (`..` and `%2E%2E` themselves are normalised away by fetch; the raw-path test sends them.)
      for (const id of ['..%2F..%2F_users', 'a%2Fb', 'x%2F..%2F..']) {
        const res = await call(`${base}/_local/${id}`, { token: ada });
        expect(res.status, id).to.equal(404);
      }
    });

    it('_local updates: each names the revision it replaces; a stale one is 409 and changes nothing; of two racing, one wins', async function () {
      const url = `${base}/_local/cp-${Date.now()}`;
      expect((await call(url, { method: 'PUT', token: ada, body: { last_seq: 1 } })).json).to.include({ rev: '0-1' });
      expect((await call(url, { method: 'PUT', token: ada, body: { _rev: '0-1', last_seq: 2 } })).json).to.include({ rev: '0-2' });
      const stale = await call(url, { method: 'PUT', token: ada, body: { _rev: '0-1', last_seq: 99 } });
      expect(stale.status).to.equal(409);
      const ahead = await call(url, { method: 'PUT', token: ada, body: { _rev: '0-7', last_seq: 99 } });
      expect(ahead.status).to.equal(409);
      // ben names ada's revision on his own (absent) doc of that name: his is created, hers untouched.
      expect((await call(url, { method: 'PUT', token: ben, body: { _rev: '0-2', last_seq: 5 } })).json).to.include({ rev: '0-1' });
      expect((await call(url, { token: ada })).json).to.include({ _rev: '0-2', last_seq: 2 });
      const racing = await Promise.all([1, 2, 3].map((n) => call(url, { method: 'PUT', token: ada, body: { _rev: '0-2', last_seq: 10 + n } })));
      expect(racing.map((r) => r.status).sort()).to.deep.equal([201, 409, 409]);
      const won = racing.find((r) => r.status === 201)!;
      const now = (await call(url, { token: ada })).json as { _rev: string; last_seq: number };
      expect(now._rev).to.equal('0-3');
      expect(now.last_seq).to.equal(10 + racing.indexOf(won) + 1);
    });

    it('_revs_diff: ben’s ids are `missing` exactly like unknown ids, without asking upstream', async function () {
      const res = await call(`${base}/_revs_diff`, { token: ada, body: { [`m:ben:${benMid}`]: [benRev], [`m:ben:${ghostMid}`]: [benRev], [`m:ada:${adaMid}`]: ['1-0123456789abcdef0123456789abcdef'] } });
      expect(res.status).to.equal(200);
      const body = res.json as Record<string, { missing: string[] }>;
      expect(body[`m:ben:${benMid}`]).to.deep.equal({ missing: [benRev] });
      expect(body[`m:ben:${ghostMid}`]).to.deep.equal({ missing: [benRev] });
    });
  });

  describe('existence oracles: ben’s doc and a doc that does not exist get byte-identical answers', function () {
    // Everything that may differ is blanked: the ids themselves, the rev, the correlation id and
    // express's weak etag (a hash of the body, ids included). Status, the rest of the headers
    // and the body must then be the same bytes.
    const blank = (text: string, res: { headers: Headers }) => {
      let out = text.replaceAll(benMid, '<mid>').replaceAll(ghostMid, '<mid>');
      if (benRev) out = out.replaceAll(benRev, '<rev>');
      const correlation = res.headers.get('x-correlation-id');
      return correlation ? out.replaceAll(correlation, '<correlation>') : out;
    };
    const comparable = (res: { status: number; text: string; headers: Headers }) => {
      const headers = [...res.headers].filter(([n, v]) => n !== 'date' && n !== 'x-correlation-id' && !(n === 'etag' && v.startsWith('W/'))).map(([n, v]) => [n, blank(v, res)]);
      return JSON.stringify({ status: res.status, headers, body: blank(res.text, res) });
    };
    type Probe = [string, (m: string) => Promise<{ status: number; text: string; headers: Headers }>];
    const docUrl = (id: string, q = '') => `${base}/${encodeURIComponent(id)}${q}`;
    const probes: Probe[] = [
      ['GET m: doc', (m) => call(docUrl(`m:ben:${m}`), { token: ada })],
      ['GET s: doc', (m) => call(docUrl(`s:ben:${m}`), { token: ada })],
      ['GET with revs, open_revs=all', (m) => call(docUrl(`m:ben:${m}`, '?revs=true&open_revs=all'), { token: ada })],
      ['GET with open_revs=[rev], latest', (m) => call(docUrl(`m:ben:${m}`, `?revs=true&latest=true&open_revs=${encodeURIComponent(JSON.stringify([benRev]))}`), { token: ada })],
      ['GET with rev', (m) => call(docUrl(`m:ben:${m}`, `?rev=${benRev}`), { token: ada })],
      ['_all_docs keys', (m) => call(`${base}/_all_docs?include_docs=true`, { token: ada, body: { keys: [`m:ben:${m}`, `s:ben:${m}`] } })],
      ['_all_docs key=', (m) => call(`${base}/_all_docs?include_docs=true&key=${encodeURIComponent(JSON.stringify(`m:ben:${m}`))}`, { token: ada })],
      ['_bulk_get with and without rev', (m) => call(`${base}/_bulk_get?revs=true&latest=true`, { token: ada, body: { docs: [{ id: `m:ben:${m}`, rev: benRev }, { id: `s:ben:${m}` }] } })],
      ['_revs_diff', (m) => call(`${base}/_revs_diff`, { token: ada, body: { [`m:ben:${m}`]: [benRev], [`s:ben:${m}`]: [benRev] } })],
      ['_changes doc_ids', (m) => call(`${base}/_changes?filter=_doc_ids&include_docs=true`, { token: ada, body: { doc_ids: [`m:ben:${m}`, `s:ben:${m}`] } })],
      ['_bulk_docs of that id, new_edits=false', (m) => call(`${base}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...mutation('ben', m), _rev: benRev }] } })],
      ['_bulk_docs of that id', (m) => call(`${base}/_bulk_docs`, { token: ada, body: { docs: [mutation('ben', m)] } })],
      ['_local doc of that name (ben has one)', (m) => call(`${base}/_local/${m}`, { token: ada })],
      ['_local delete of that name', (m) => call(`${base}/_local/${m}?rev=0-1`, { method: 'DELETE', token: ada })],
    ];
    before(async function () {
      const put = await call(`${base}/_local/${benMid}`, { method: 'PUT', token: ben, body: { last_seq: 3, history: [] } });
      expect(put.status).to.equal(201);
    });
    for (const [what, probe] of probes) {
      it(what, async function () {
        const foreign = await probe(benMid);
        const ghost = await probe(ghostMid);
        expect(comparable(foreign)).to.equal(comparable(ghost));
        noLeak(blank(foreign.text, foreign));
      });
    }
  });

  describe('writes', function () {
    const errorsOf = (json: unknown) => (json as Array<{ id?: string; error?: string; reason?: string }>).map((r) => r.error);

    it('cannot write as ben (id, owner or both), nor with another tenant in the body', async function () {
      const m1 = mid();
      const m2 = mid();
      const m3 = mid();
      const docs = [mutation('ben', m1), { ...mutation('ada', m2), owner: 'ben' }, mutation('ada', m3, 'south')];
      for (const newEdits of [true, false]) {
        const body = newEdits ? { docs } : { new_edits: false, docs: docs.map((d) => ({ ...d, _rev: '1-0123456789abcdef0123456789abcdef' })) };
        const res = await call(`${base}/_bulk_docs`, { token: ada, body });
        expect(res.status).to.equal(201);
        expect(errorsOf(res.json)).to.deep.equal(['forbidden', 'forbidden', 'forbidden']);
      }
      const rows = await inbox().allDocs({ keys: [`m:ben:${m1}`, `m:ada:${m2}`, `m:ada:${m3}`] });
      expect(rows.rows.every((r) => r.error === 'not_found')).to.equal(true);
    });

    it('cannot write for tenant south: the whole request is 403 TENANT_MISMATCH and south’s inbox is untouched', async function () {
      const m = mid();
      const res = await call(`${s.url}/sync/south/_bulk_docs`, { token: ada, body: { docs: [mutation('ada', m, 'south')] } });
      expect(res.status).to.equal(403);
      expect(res.json).to.include({ code: 'TENANT_MISMATCH', error: 'forbidden' });
      expect(await s.admin.db('inbox_south').get(`m:ada:${m}`)).to.equal(null);
    });

    it('cannot write status docs, design docs, _security, feed:head or any other doc', async function () {
      const docs = [
        status('ada', mid()),
        { _id: '_design/evil', views: {} },
        { _id: '_security', members: {} },
        { _id: 'feed:head', type: 'feed-head', counter: 1e9, fence: 99 },
        { _id: '_local/x', a: 1 },
        { _id: 'anything', type: 'mutation' },
      ];
      const res = await call(`${base}/_bulk_docs`, { token: ada, body: { docs } });
      expect(res.status).to.equal(201);
      expect(errorsOf(res.json)).to.deep.equal(docs.map(() => 'forbidden'));
      for (const [method, path] of [
        ['PUT', '/_design/evil'],
        ['PUT', '/_security'],
        ['GET', '/_security'],
        ['GET', '/_design/ferry'],
        ['GET', '/_design/ferry/_view/feed'],
        ['PUT', '/s%3Aada%3Ax'],
        ['POST', ''],
        ['DELETE', ''],
        ['PUT', ''],
        ['POST', '/_find'],
        ['POST', '/_purge'],
        ['POST', '/_compact'],
        ['GET', '/_revs_limit'],
        ['GET', '/_design_docs'],
        ['PUT', '/_revs_limit'],
      ]) {
        const r = await call(`${base}${path}`, { method: method!, token: ada, ...(method === 'GET' || method === 'DELETE' ? {} : { body: {} }) });
        expect(r.status, `${method} ${path}`).to.equal(404);
      }
      expect(await inbox().get('_design/evil')).to.equal(null);
      const head = await inbox().get<{ counter: number }>('feed:head');
      expect(head?.counter).to.be.below(1e9);
    });

    it('ids with `/`, `%2F` and `..` never escape the inbox', async function () {
      const raw = (path: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const u = new URL(s.url);
          const req = http.request({ host: u.hostname, port: u.port, path, method: 'GET', headers: { authorization: `Bearer ${ada}` } }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          });
          req.on('error', reject);
          req.end();
        });
      for (const path of [
        '/sync/north/../_all_dbs',
        '/sync/north/..%2F_all_dbs',
        '/sync/north/%2E%2E%2F_users',
        `/sync/north/m:ada:${adaMid}/../../_users`,
        `/sync/north/m:ada:${adaMid}%2F..%2F..%2F_config`,
        '/sync/north%2F..%2Finbox_south/_all_docs',
        '/sync/../inbox_south/_all_docs',
        '/sync/_all_dbs',
        '/sync/_users/_all_docs',
        '/sync/north/_users',
        '/sync/north/_replicator',
        '/sync/north/_config',
        '/sync/north/_local/..',
        '/sync/north/_local/%2E%2E',
        '/sync/north/_local/../../_users',
      ]) {
        const res = await raw(path);
        expect(res.status, path).to.be.oneOf([403, 404]);
        expect(res.body).to.not.include('inbox_');
        expect(res.body).to.not.include('_users');
      }
      const res = await call(`${base}/_bulk_docs`, {
        token: ada,
        body: { docs: [{ ...mutation('ada'), _id: `m:ada:../../${adaMid}` }, { ...mutation('ada'), _id: `m:ada:${adaMid}/x` }, { ...mutation('ada'), _id: 'm:ada:%2F' }] },
      });
      expect(errorsOf(res.json)).to.deep.equal(['forbidden', 'forbidden', 'forbidden']);
    });

    it('a second root revision, a tombstone, a later revision or an attachment on an existing mutation are refused', async function () {
      const m = mid();
      const doc = mutation('ada', m);
      const rev1 = '1-11111111111111111111111111111111';
      const first = await call(`${base}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc, _rev: rev1, _revisions: { start: 1, ids: [rev1.slice(2)] } }] } });
      expect(first.json).to.deep.equal([]);
      const attempts = [
        { ...doc, _rev: '1-22222222222222222222222222222222' },
        { ...doc, _rev: '1-22222222222222222222222222222222', payload: { other: true } },
        { ...doc, _rev: '2-33333333333333333333333333333333', _revisions: { start: 2, ids: ['33333333333333333333333333333333', rev1.slice(2)] } },
        { _id: doc._id, _rev: '2-44444444444444444444444444444444', _deleted: true },
        { ...doc, _rev: rev1, _attachments: { 'a.txt': { content_type: 'text/plain', data: 'aGk=' } } },
        { ...doc, _rev: rev1, payload: { changed: true } },
      ];
      const res = await call(`${base}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: attempts } });
      expect(errorsOf(res.json)).to.deep.equal(attempts.map(() => 'forbidden'));
      const interactive = await call(`${base}/_bulk_docs`, { token: ada, body: { docs: [{ ...doc, _rev: rev1, payload: { x: 1 } }, { _id: doc._id, _rev: rev1, _deleted: true }] } });
      expect(errorsOf(interactive.json)).to.deep.equal(['forbidden', 'forbidden']);
      const stored = await inbox().get<{ _rev: string; _conflicts?: string[] }>(doc._id, { conflicts: true, open_revs: 'all' });
      const leaves = stored as unknown as Array<{ ok: { _rev: string } }>;
      expect(leaves.map((l) => l.ok._rev)).to.deep.equal([rev1]);
      // The replication sequence (_revs_diff, then _bulk_docs) cannot sneak in a second root either.
      const m2 = mid();
      const doc2 = mutation('ada', m2);
      const roots = ['1-55555555555555555555555555555555', '1-66666666666666666666666666666666'];
      const answers: unknown[] = [];
      for (const r of roots) {
        await call(`${base}/_revs_diff`, { token: ada, body: { [doc2._id]: [r] } });
        answers.push((await call(`${base}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc2, _rev: r }] } })).json);
      }
      expect(answers[0]).to.deep.equal([]);
      expect(errorsOf(answers[1])).to.deep.equal(['forbidden']);
      const leaves2 = (await inbox().get(doc2._id, { open_revs: 'all' })) as unknown as Array<{ ok: { _rev: string } }>;
      expect(leaves2.map((l) => l.ok._rev)).to.deep.equal([roots[0]]);
      // An identical re-push is an ok no-op.
      const again = await call(`${base}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc, _rev: rev1, _revisions: { start: 1, ids: [rev1.slice(2)] } }] } });
      expect(again.json).to.deep.equal([]);
    });

    it('concurrent pushes of one id with different roots leave a single root (no check-then-write race)', async function () {
      for (let round = 0; round < 5; round++) {
        const doc = mutation('ada');
        const roots = Array.from({ length: 8 }, (_, i) => `1-${String((i + round) % 10).repeat(32)}`);
        // With and without the replicator's _revs_diff first (which remembers the id as absent).
        if (round % 2) await call(`${base}/_revs_diff`, { token: ada, body: { [doc._id]: roots } });
        const answers = await Promise.all(
          roots.map((r, i) => call(`${base}/_bulk_docs`, { token: ada, body: { new_edits: false, docs: [{ ...doc, _rev: r, ...(i % 2 ? { payload: { n: i } } : {}) }] } })),
        );
        const leaves = (await inbox().get(doc._id, { open_revs: 'all' })) as unknown as Array<{ ok: { _rev: string } }>;
        expect(leaves.map((l) => l.ok._rev), `round ${round}`).to.have.length(1);
        // Exactly one push is accepted; every other one is refused by the gateway itself, not left to upstream.
        expect(answers.filter((a) => Array.isArray(a.json) && (a.json as unknown[]).length === 0), `round ${round}`).to.have.length(1);
        for (const a of answers.filter((x) => (x.json as unknown[]).length > 0)) expect(a.json).to.deep.equal([{ id: doc._id, error: 'forbidden', reason: 'Mutations are immutable once written.' }]);
      }
    });

    it('the other tenant’s inbox is unreachable with a north token, for reads and writes', async function () {
      for (const [method, path, body] of [
        ['GET', '', undefined],
        ['GET', '/_changes', undefined],
        ['GET', '/_all_docs', undefined],
        ['POST', '/_bulk_get', { docs: [] }],
        ['POST', '/_revs_diff', {}],
        ['GET', '/_local/x', undefined],
        ['GET', `/m:ada:${adaMid}`, undefined],
      ] as const) {
        const res = await call(`${s.url}/sync/south${path}`, { method, token: ada, ...(body ? { body } : {}) });
        expect(res.status, path).to.equal(403);
        expect(res.json).to.include({ code: 'TENANT_MISMATCH' });
      }
      // A tenant without an inbox is a clean 404 everywhere (never a truncated or empty 200).
      const west = await s.token('ada', 'west');
      for (const path of ['', '/_changes', '/_changes?feed=longpoll', '/_all_docs', `/m:ada:${adaMid}`]) {
        const res = await call(`${s.url}/sync/west${path}`, { token: west });
        expect(res.status, path).to.equal(404);
        expect(res.json).to.include({ error: 'not_found' });
      }
      // cy, a south member, sees nothing of north in south.
      const cy = await s.token('cy', 'south');
      const res = await call(`${s.url}/sync/south/_all_docs`, { token: cy });
      expect(res.status).to.equal(200);
      expect((res.json as { rows: unknown[] }).rows).to.deep.equal([]);
    });
  });

  describe('tokens', function () {
    const claims = { tid: 'north', owner: 'ada', roles: ['registrar'], sid: 'sid-1' };
    const expectUnauthenticated = async (token: string | null, what: string) => {
      for (const path of ['', '/_changes', '/_all_docs']) {
        const res = await call(`${base}${path}`, { token });
        expect(res.status, `${what} ${path}`).to.equal(401);
        expect(res.json).to.include({ code: 'UNAUTHENTICATED' });
      }
      const raw = await call(`${base}/_bulk_docs`, { token, body: { docs: [mutation('ada')] } });
      expect(raw.status, what).to.equal(401);
    };

    it('no token, a malformed header, or a garbage token: 401', async function () {
      await expectUnauthenticated(null, 'none');
      await expectUnauthenticated('not.a.jwt', 'garbage');
      const res = await call(base, { headers: { authorization: `Basic ${Buffer.from('ada:ferry-dev').toString('base64')}` } });
      expect(res.status).to.equal(401);
    });

    it('an expired token: 401', async function () {
      const old = createTokenIssuer({ key: s.key, issuer: ISSUER, now: () => Date.now() - 3_600_000 });
      await expectUnauthenticated(await old.mintAccess({ sub: 'ada', ...claims }), 'expired');
    });

    it('a token signed by another key (forged, even with our kid): 401', async function () {
      const other = await generateSigningKey();
      const forged = createTokenIssuer({ key: { ...other, kid: s.key.kid }, issuer: ISSUER });
      await expectUnauthenticated(await forged.mintAccess({ sub: 'ada', ...claims }), 'forged');
    });

    it('alg:none and HS256 keyed with the public key (alg confusion): 401', async function () {
      const now = Math.floor(Date.now() / 1000);
      const payload = { ...claims, sub: 'ada', iss: ISSUER, aud: 'ferry', iat: now, exp: now + 300 };
      const none = `${base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${base64url.encode(JSON.stringify(payload))}.`;
      await expectUnauthenticated(none, 'alg none');
      const secret = new TextEncoder().encode(JSON.stringify(s.key.publicJwk));
      const hs = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid: s.key.kid }).sign(secret);
      await expectUnauthenticated(hs, 'HS256 confusion');
      const xBytes = base64url.decode(String(s.key.publicJwk.x));
      const hs2 = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid: s.key.kid }).sign(xBytes);
      await expectUnauthenticated(hs2, 'HS256 with raw key bytes');
    });

    it('a valid token of another issuer or audience: 401', async function () {
      const wrongIssuer = createTokenIssuer({ key: s.key, issuer: 'someone-else' });
      await expectUnauthenticated(await wrongIssuer.mintAccess({ sub: 'ada', ...claims }), 'issuer');
      const wrongAud = createTokenIssuer({ key: s.key, issuer: ISSUER, audience: 'not-ferry' });
      await expectUnauthenticated(await wrongAud.mintAccess({ sub: 'ada', ...claims }), 'audience');
    });
  });
});
