import { expect } from 'chai';
import { isDesignDocQuery, mayWriteDesignDoc } from '../../couchdb/embedded/design-cache.ts';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw } from './http.ts';

// The embedded server keeps each database's design docs for pouchdb-validation between writes
// (couchdb/embedded/design-cache.ts). A validation function must bite from the first write after
// the design doc that holds it changes, however that design doc was written.

const vduRejecting = (field: string) => `function (newDoc) { if (newDoc.${field}) { throw({ forbidden: 'no ${field}' }); } }`;

describe('couchdb/embedded: design docs kept for validation', () => {
  describe('which calls read or may change the design docs', () => {
    it('recognises exactly the validation plugin\'s lookup', () => {
      expect(isDesignDocQuery([{ startkey: '_design/', endkey: '_design0', include_docs: true }])).to.equal(true);
      expect(isDesignDocQuery([{ startkey: '_design/', endkey: '_design0', include_docs: true, limit: 1 }])).to.equal(false);
      expect(isDesignDocQuery([{ startkey: '_design/', endkey: '_design0' }])).to.equal(false);
      expect(isDesignDocQuery([{ startkey: '_design/', endkey: '_design0', include_docs: true }, () => undefined])).to.equal(false);
      expect(isDesignDocQuery([{ keys: ['_design/ferry'], include_docs: true }])).to.equal(false);
    });

    const cases: Array<[string, unknown[], boolean]> = [
      ['bulkDocs', [[{ _id: 's:ada:1' }, { _id: 'm:ada:2' }]], false],
      ['bulkDocs', [{ docs: [{ _id: 's:ada:1' }], new_edits: false }], false],
      ['bulkDocs', [[{ _id: 's:ada:1' }, { _id: '_design/ferry' }]], true],
      ['bulkDocs', [{ docs: [{ _id: '_design/ferry', _rev: '2-x' }], new_edits: false }], true],
      ['bulkDocs', [[{ noId: true }]], true],
      ['bulkDocs', ['not docs'], true],
      ['post', [{ a: 1 }], false],
      ['post', [{ _id: '_design/x' }], true],
      ['put', [{ _id: 'feed:head' }], false],
      ['put', [{ _id: '_design/ferry' }], true],
      ['remove', ['_design/ferry', '1-x'], true],
      ['remove', [{ _id: 'm:ada:1', _rev: '1-x' }], false],
      ['putAttachment', ['_design/ferry', 'a', '1-x', 'data', 'text/plain'], true],
      ['putAttachment', ['m:ada:1', 'a', '1-x', 'data', 'text/plain'], false],
      ['destroy', [], true],
    ];
    for (const [method, args, expected] of cases) {
      it(`${method}(${JSON.stringify(args).slice(0, 60)}) ${expected ? 'drops' : 'keeps'} them`, () => {
        expect(mayWriteDesignDoc(method, args)).to.equal(expected);
      });
    }
  });

  describe('on a running server', function () {
    this.timeout(60_000);
    let dir: TempDir;
    let couch: EmbeddedCouch;
    const db = '/vdu_cache';
    const admin = () => ({ auth: couch.admin });
    let n = 0;
    const write = async (field: string) => {
      const res = await raw(couch.url, 'POST', `${db}/_bulk_docs`, { ...admin(), body: { docs: [{ _id: `d${++n}`, [field]: true }] } });
      const [row] = res.body as Array<{ ok?: boolean; error?: string }>;
      return row?.ok ? 'accepted' : row?.error;
    };
    const designRev = async () => ((await raw(couch.url, 'GET', `${db}/_design/rules`, admin())).body as { _rev?: string })._rev;

    before(async () => {
      dir = tempDir('ferry-design-cache-');
      couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
      expect((await raw(couch.url, 'PUT', db, admin())).status).to.equal(201);
      const put = await raw(couch.url, 'PUT', `${db}/_design/rules`, { ...admin(), body: { validate_doc_update: vduRejecting('first') } });
      expect(put.status).to.equal(201);
    });

    after(async () => {
      await couch?.stop();
      dir?.remove();
    });

    it('applies a changed validation function from the next write', async () => {
      expect(await write('first')).to.equal('forbidden');
      expect(await write('second')).to.equal('accepted');
      const put = await raw(couch.url, 'PUT', `${db}/_design/rules`, { ...admin(), body: { _rev: await designRev(), validate_doc_update: vduRejecting('second') } });
      expect(put.status).to.equal(201);
      expect(await write('second')).to.equal('forbidden');
      expect(await write('first')).to.equal('accepted');
    });

    it('applies a design doc that arrives by replication (_bulk_docs, new_edits false)', async () => {
      expect(await write('third')).to.equal('accepted');
      const rev = await designRev();
      const next = `${Number(rev!.split('-')[0]) + 1}-${'a'.repeat(32)}`;
      const res = await raw(couch.url, 'POST', `${db}/_bulk_docs`, {
        ...admin(),
        body: { new_edits: false, docs: [{ _id: '_design/rules', _rev: next, _revisions: { start: Number(next.split('-')[0]), ids: ['a'.repeat(32), rev!.split('-')[1]] }, validate_doc_update: vduRejecting('third') }] },
      });
      expect(res.status).to.equal(201);
      expect(await write('third')).to.equal('forbidden');
    });

    it('has no server-side replication: every design doc reaches a database through its own HTTP routes', async () => {
      // The cache is cleared by writes through the database object the server keeps per name;
      // `_replicate` and `_replicator` would write through another one (they are left out).
      expect((await raw(couch.url, 'PUT', '/vdu_source', admin())).status).to.equal(201);
      expect((await raw(couch.url, 'PUT', '/vdu_source/_design/other', { ...admin(), body: { validate_doc_update: vduRejecting('anything') } })).status).to.equal(201);
      const replicate = await raw(couch.url, 'POST', '/_replicate', { ...admin(), body: { source: 'vdu_source', target: db.slice(1) } });
      expect(replicate.status).to.be.oneOf([400, 404]);
      // The source's design doc never arrived in the inbox.
      expect((await raw(couch.url, 'GET', `${db}/_design/other`, admin())).status).to.equal(404);
    });

    it('stops validating once the design doc is deleted, and starts again when one is added', async () => {
      const del = await raw(couch.url, 'DELETE', `${db}/_design/rules?rev=${await designRev()}`, admin());
      expect(del.status).to.equal(200);
      expect(await write('third')).to.equal('accepted');
      const put = await raw(couch.url, 'PUT', `${db}/_design/other`, { ...admin(), body: { validate_doc_update: vduRejecting('fourth') } });
      expect(put.status).to.equal(201);
      expect(await write('fourth')).to.equal('forbidden');
    });
  });
});
