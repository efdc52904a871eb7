import { expect } from 'chai';
import { startTestStack, type TestStack } from '../support/stack.ts';
import { requireNats } from '../support/services.ts';
import { newPatientId, projectedAt, pull, register, replica, update } from './support.ts';

// /replica/{tenant} on the full stack (embedded CouchDB, PGlite, the shared NATS): default-deny,
// read-only, tenant isolation and the facility scope (DESIGN §8), through plain HTTP.

describe('replica: /replica/{tenant} routes and scope', function () {
  this.timeout(120_000);
  let stack: TestStack;
  let ada: string;
  let cy: string;
  let admin: string;
  let adaPatient: { id: string; version: number; body: Record<string, unknown> };
  let cyPatient: { id: string; version: number; body: Record<string, unknown> };

  before(async function () {
    await requireNats(this);
    stack = await startTestStack({ webApp: false });
    [ada, cy, admin] = await Promise.all([stack.login('ada', 'north'), stack.login('cy', 'north'), stack.login('admin', 'north')]);
    adaPatient = await register(stack, ada, 'north-hc-1');
    cyPatient = await register(stack, cy, 'north-hc-2');
    await projectedAt(stack, 'north', adaPatient.id, 1, 60_000);
    await projectedAt(stack, 'north', cyPatient.id, 1, 60_000);
  });
  after(async () => stack?.stop());

  describe('default-deny', () => {
    it('refuses a request without a token (401) and a north token on /replica/south (403 TENANT_MISMATCH)', async () => {
      expect((await replica(stack, null, '/north')).status).to.equal(401);
      for (const path of ['/south', '/south/_changes', `/south/r:patient:${adaPatient.id}`, '/south/_local/x']) {
        const res = await replica(stack, ada, path);
        expect(res.status, path).to.equal(403);
        expect(res.body.code).to.equal('TENANT_MISMATCH');
      }
    });

    it('answers writes to records 403 READ_ONLY', async () => {
      const writes: Array<[string, string, unknown]> = [
        ['POST', '/north/_bulk_docs', { docs: [{ _id: `r:patient:${adaPatient.id}`, version: 99 }], new_edits: false }],
        ['PUT', `/north/r:patient:${adaPatient.id}`, { version: 99 }],
        ['DELETE', `/north/r:patient:${adaPatient.id}?rev=1-abc`, undefined],
        ['POST', '/north', { _id: 'r:patient:x' }],
        ['PUT', '/north/anything', {}],
      ];
      for (const [method, path, body] of writes) {
        const res = await replica(stack, ada, path, { method, ...(body !== undefined ? { body } : {}) });
        expect(res.status, `${method} ${path}`).to.equal(403);
        expect(res.body.code).to.equal('READ_ONLY');
        expect(res.body.error).to.equal('forbidden');
      }
      expect((await stack.couch.server.db('records_north').get<{ version: number }>(`r:patient:${adaPatient.id}`))!.version).to.equal(1);
    });

    it('answers everything off the allow-list 404', async () => {
      const paths: Array<[string, string]> = [
        ['PUT', '/north'],
        ['DELETE', '/north'],
        ['GET', '/north/_design/ferry-records'],
        ['GET', '/north/_security'],
        ['GET', '/north/_all_dbs'],
        ['GET', '/north/_view'],
        ['POST', '/north/_purge'],
        ['GET', '/north/a/b'],
        ['GET', '/North'],
        ['POST', '/north/_find'],
      ];
      for (const [method, path] of paths) {
        const res = await replica(stack, ada, path, { method, ...(method === 'POST' ? { body: {} } : {}) });
        expect(res.status, `${method} ${path}`).to.equal(404);
      }
    });

    it('refuses client filters on _changes (400)', async () => {
      for (const q of ['filter=_doc_ids&doc_ids=%5B%5D', 'filter=ferry/x', 'filter=_selector', 'descending=true', 'since=abc', 'since=1-zz']) {
        expect((await replica(stack, ada, `/north/_changes?${q}`)).status, q).to.equal(400);
      }
    });

    it('keeps the caller\'s own _local docs, apart from other users', async () => {
      const put = await replica(stack, ada, '/north/_local/ckpt', { method: 'PUT', body: { last_seq: '1-x' } });
      expect(put.status).to.equal(201);
      expect((await replica(stack, ada, '/north/_local/ckpt')).body.last_seq).to.equal('1-x');
      expect((await replica(stack, cy, '/north/_local/ckpt')).status).to.equal(404);
      // /sync's _local docs are another namespace.
      const sync = await fetch(`${stack.url}/sync/north/_local/ckpt`, { headers: { authorization: `Bearer ${ada}` } });
      expect(sync.status).to.equal(404);
      await sync.body?.cancel();
    });
  });

  describe('scope', () => {
    it('serves ada the records of north-hc-1 only, and cy those of north-hc-2 only; admin sees both', async () => {
      const adaIds = (await pull(stack, ada, 'north')).rows.map((r) => r.id);
      const cyIds = (await pull(stack, cy, 'north')).rows.map((r) => r.id);
      const adminIds = (await pull(stack, admin, 'north')).rows.map((r) => r.id);
      expect(adaIds).to.include(`r:patient:${adaPatient.id}`).and.not.include(`r:patient:${cyPatient.id}`);
      expect(cyIds).to.include(`r:patient:${cyPatient.id}`).and.not.include(`r:patient:${adaPatient.id}`);
      expect(adminIds).to.include.members([`r:patient:${adaPatient.id}`, `r:patient:${cyPatient.id}`]);
    });

    it('reveals nothing of a record out of scope: GET, _bulk_get, _all_docs and _revs_diff say what they say of an absent id', async () => {
      const foreign = `r:patient:${cyPatient.id}`;
      const absent = `r:patient:${newPatientId()}`;
      const own = await replica(stack, ada, `/north/r:patient:${adaPatient.id}`);
      expect(own.status).to.equal(200);
      expect(own.body).to.include({ type: 'record', version: 1, facility: 'north-hc-1' });
      const rev = (await stack.couch.server.db('records_north').get<{ _rev: string }>(foreign))!._rev;
      for (const id of [foreign, absent]) {
        const one = await replica(stack, ada, `/north/${id}`);
        expect(one.status).to.equal(404);
        expect(one.body.reason).to.equal('missing');
        const bulk = await replica(stack, ada, '/north/_bulk_get?revs=true', { method: 'POST', body: { docs: [{ id }] } });
        expect((bulk.body.results as Array<{ docs: Array<{ error?: { error: string } }> }>)[0]!.docs[0]!.error!.error).to.equal('not_found');
        const keys = await replica(stack, ada, '/north/_all_docs', { method: 'POST', body: { keys: [id] } });
        expect((keys.body.rows as Array<{ error?: string }>)[0]!.error).to.equal('not_found');
        const diff = await replica(stack, ada, '/north/_revs_diff', { method: 'POST', body: { [id]: [rev] } });
        expect(diff.body).to.deep.equal({ [id]: { missing: [rev] } });
      }
      const all = await replica(stack, ada, '/north/_all_docs');
      expect((all.body.rows as Array<{ id: string }>).map((r) => r.id)).to.include(`r:patient:${adaPatient.id}`).and.not.include(foreign);
    });

    it('a transfer to north-hc-2: cy\'s feed gains the record, ada\'s answers it deleted, and a stock tombstone is served', async () => {
      const adaBefore = await pull(stack, ada, 'north');
      const cyBefore = await pull(stack, cy, 'north');
      const moved = await update(stack, ada, adaPatient.body, { facility: 'north-hc-2' });
      await projectedAt(stack, 'north', adaPatient.id, moved.version, 30_000);
      const adaAfter = await pull(stack, ada, 'north', adaBefore.lastSeq);
      const cyAfter = await pull(stack, cy, 'north', cyBefore.lastSeq);
      const id = `r:patient:${adaPatient.id}`;
      const gone = adaAfter.rows.find((r) => r.id === id);
      expect(gone, 'deleted row in ada\'s feed').to.include({ deleted: true });
      expect(cyAfter.rows.find((r) => r.id === id && !r.deleted), 'present row in cy\'s feed').to.not.equal(undefined);
      // The tombstone is a child of the version ada may hold, so it replaces it on her device.
      const tomb = await replica(stack, ada, '/north/_bulk_get?revs=true&latest=true', { method: 'POST', body: { docs: [{ id, rev: gone!.changes[0]!.rev }] } });
      const doc = (tomb.body.results as Array<{ docs: Array<{ ok: Record<string, unknown> }> }>)[0]!.docs[0]!.ok;
      expect(doc).to.include({ _id: id, _deleted: true, _rev: gone!.changes[0]!.rev });
      expect(Object.keys(doc).sort()).to.deep.equal(['_deleted', '_id', '_rev', '_revisions']);
      const original = (await stack.couch.server.db('records_north').get<{ _revisions: { ids: string[] } }>(id, { revs: true }))!;
      expect((doc._revisions as { ids: string[] }).ids.slice(1)).to.deep.equal(original._revisions.ids);
      // Cy now reads it.
      expect((await replica(stack, cy, `/north/${id}`)).body).to.include({ facility: 'north-hc-2', version: moved.version });
      adaPatient.body = moved;
    });

    it('losing a facility: the caller\'s next pull answers its records deleted; regaining it sends them again', async () => {
      const ben = await stack.login('ben', 'north');
      const mine = await register(stack, ben, 'north-hc-1');
      await projectedAt(stack, 'north', mine.id, 1, 30_000);
      const id = `r:patient:${mine.id}`;
      const first = await pull(stack, ben, 'north');
      expect(first.rows.map((r) => r.id)).to.include(id);
      expect(await stack.platform.memberships.setFacilities('north', 'ben', ['north-hc-3'])).to.equal(true);
      const lost = await pull(stack, ben, 'north', first.lastSeq, 1);
      expect(lost.rows.filter((r) => r.id === id)).to.have.length(1);
      expect(lost.rows.find((r) => r.id === id)).to.include({ deleted: true });
      expect(lost.rows.every((r) => r.deleted === true)).to.equal(true);
      // Nothing more once caught up.
      expect((await pull(stack, ben, 'north', lost.lastSeq)).rows).to.deep.equal([]);
      await stack.platform.memberships.setFacilities('north', 'ben', ['north-hc-1']);
      const back = await pull(stack, ben, 'north', lost.lastSeq);
      expect(back.rows.find((r) => r.id === id)).to.not.include({ deleted: true });
    });

    it('a normal feed without limit (the CouchDB replicator\'s) streams every row; a longpoll with nothing new ends empty at its timeout; since=now starts at the caller\'s head', async () => {
      const paged = await pull(stack, admin, 'north', 0, 1);
      const all = await replica(stack, admin, '/north/_changes?feed=normal&style=all_docs&since=0');
      expect((all.body.results as Array<{ id: string }>).map((r) => r.id)).to.deep.equal(paged.rows.map((r) => r.id));
      expect(all.body.last_seq).to.equal(paged.lastSeq);
      const started = Date.now();
      const idle = await replica(stack, ada, `/north/_changes?feed=longpoll&timeout=500&since=${encodeURIComponent(String((await pull(stack, ada, 'north')).lastSeq))}`);
      expect(idle.status).to.equal(200);
      expect(idle.body.results).to.deep.equal([]);
      expect(Date.now() - started).to.be.below(10_000);
      const now = await replica(stack, ada, '/north/_changes?since=now');
      expect(now.body.results).to.deep.equal([]);
      expect(now.body.last_seq).to.equal((await replica(stack, ada, '/north')).body.update_seq);
    });

    it('the single-doc fallback PouchDB uses (`open_revs`) serves a record in scope, and out of scope a named revision gets the tombstone', async () => {
      const id = `r:patient:${cyPatient.id}`;
      const rev = (await stack.couch.server.db('records_north').get<{ _rev: string }>(id))!._rev;
      const own = await replica(stack, cy, `/north/${id}?revs=true&latest=true&open_revs=${encodeURIComponent(JSON.stringify([rev]))}`);
      expect(own.status).to.equal(200);
      expect((own.body as unknown as Array<{ ok: { _rev: string; _revisions: unknown } }>)[0]!.ok).to.include({ _rev: rev });
      // Out of her scope: naming one of its (keyed) revisions, as only a device that held it can,
      // gets the scope-leave tombstone and nothing of the record.
      const foreign = await replica(stack, ada, `/north/${id}?revs=true&open_revs=${encodeURIComponent(JSON.stringify([rev]))}`);
      const entries = foreign.body as unknown as Array<{ ok: Record<string, unknown> }>;
      expect(entries).to.have.length(1);
      expect(entries[0]!.ok).to.include({ _id: id, _deleted: true });
      expect(Object.keys(entries[0]!.ok).sort()).to.deep.equal(['_deleted', '_id', '_rev', '_revisions']);
      // Without a revision it is missing, as any absent id.
      const all = await replica(stack, ada, `/north/${id}?open_revs=all`);
      expect(all.status).to.equal(404);
      expect(all.body.reason).to.equal('missing');
    });

    it('a member with no facility sees no records', async () => {
      await stack.platform.memberships.setFacilities('north', 'dee', []);
      const dee = await stack.login('dee', 'north');
      expect((await pull(stack, dee, 'north')).rows).to.deep.equal([]);
      expect((await replica(stack, dee, `/north/r:patient:${adaPatient.id}`)).status).to.equal(404);
      await stack.platform.memberships.setFacilities('north', 'dee', ['north-hc-1']);
    });
  });
});
