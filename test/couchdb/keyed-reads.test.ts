import { expect } from 'chai';
import PouchDB from 'pouchdb';
import { keyedAllDocs, keyedQueryOf } from '../../couchdb/embedded/keyed-reads.ts';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw } from './http.ts';

// The embedded server answers `_all_docs` with `keys` by a `get` per key
// (couchdb/embedded/keyed-reads.ts). Its answer must be PouchDB's own, row for row.

const REV_A = `2-${'a'.repeat(32)}`;
const REV_B = `2-${'b'.repeat(32)}`;
const ROOT = `1-${'0'.repeat(32)}`;

async function seeded(dir: string): Promise<PouchDB.Database> {
  const db = new PouchDB(`${dir}/keyed`);
  await db.bulkDocs([{ _id: 'plain', n: 1 }, { _id: 'gone', n: 2 }, { _id: '_design/rules', views: {} }]);
  const gone = await db.get('gone');
  await db.remove(gone);
  // Two branches of one doc: a conflict.
  await db.bulkDocs(
    [
      { _id: 'split', _rev: REV_A, side: 'a', _revisions: { start: 2, ids: ['a'.repeat(32), ROOT.slice(2)] } },
      { _id: 'split', _rev: REV_B, side: 'b', _revisions: { start: 2, ids: ['b'.repeat(32), ROOT.slice(2)] } },
    ],
    { new_edits: false },
  );
  return db;
}

describe('couchdb/embedded: keyed _all_docs by point reads', () => {
  describe('which queries it answers', () => {
    const cases: Array<[string, unknown[], boolean]> = [
      ['keys only', [{ keys: ['a'] }], true],
      ['keys, include_docs, conflicts', [{ keys: ['a'], include_docs: true, conflicts: true }], true],
      ['express-pouchdb security options', [{ keys: ['a'], userCtx: { name: 'x', roles: [] }, secObj: {} }], true],
      ['false flags', [{ keys: ['a'], include_docs: false, conflicts: false }], true],
      ['no keys', [{ include_docs: true }], false],
      ['a range', [{ startkey: 'a', endkey: 'b' }], false],
      ['limit', [{ keys: ['a'], limit: 1 }], false],
      ['skip', [{ keys: ['a'], skip: 1 }], false],
      ['descending', [{ keys: ['a'], descending: true }], false],
      ['attachments', [{ keys: ['a'], attachments: true }], false],
      ['update_seq', [{ keys: ['a'], update_seq: true }], false],
      ['a string flag', [{ keys: ['a'], include_docs: 'true' }], false],
      ['a _local key', [{ keys: ['_local/x'] }], false],
      ['a non-string key', [{ keys: [1] }], false],
      ['keys not an array', [{ keys: 'a' }], false],
      ['no options', [], false],
    ];
    for (const [name, args, answered] of cases) {
      it(`${name}: ${answered ? 'point reads' : "PouchDB's own path"}`, () => {
        expect(keyedQueryOf(args) !== null).to.equal(answered);
      });
    }
  });

  describe('against PouchDB on the same leveldb database', () => {
    let dir: TempDir;
    let db: PouchDB.Database;
    before(async () => {
      dir = tempDir('ferry-keyed-');
      db = await seeded(dir.path);
    });
    after(async () => {
      await db?.close();
      dir?.remove();
    });

    const keys = ['plain', 'missing', 'gone', 'split', '_design/rules', 'plain', 'missing'];
    for (const include_docs of [false, true]) {
      for (const conflicts of [false, true]) {
        it(`answers what PouchDB answers (include_docs ${include_docs}, conflicts ${conflicts})`, async () => {
          const opts = { keys, include_docs, conflicts };
          const q = keyedQueryOf([opts]);
          expect(q).to.not.equal(null);
          const original = (o: unknown) => db.allDocs(o as PouchDB.Core.AllDocsWithKeysOptions) as Promise<unknown>;
          const fast = await keyedAllDocs({ get: (id: unknown, o: unknown) => db.get(id as string, o as PouchDB.Core.GetOptions) as Promise<unknown> }, original, q!);
          expect(fast).to.deep.equal(await db.allDocs(opts));
        });
      }
    }
  });

  describe('on a running server', function () {
    this.timeout(60_000);
    let dir: TempDir;
    let couch: EmbeddedCouch;
    const admin = () => ({ auth: couch.admin });
    const reader = { username: 'keyed-reader', password: 'reader-secret-1' };
    const outsider = { username: 'keyed-outsider', password: 'outsider-secret-1' };

    before(async () => {
      dir = tempDir('ferry-keyed-server-');
      couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
      expect((await raw(couch.url, 'PUT', '/keyed', admin())).status).to.equal(201);
      for (const [u, role] of [[reader, 'keyed-readers'], [outsider, 'others']] as const) {
        const res = await raw(couch.url, 'PUT', `/_users/org.couchdb.user:${u.username}`, { ...admin(), body: { name: u.username, password: u.password, roles: [role], type: 'user' } });
        expect(res.status).to.equal(201);
      }
      const sec = await raw(couch.url, 'PUT', '/keyed/_security', { ...admin(), body: { admins: { names: [], roles: [] }, members: { names: [], roles: ['keyed-readers'] } } });
      expect(sec.status).to.equal(200);
      await raw(couch.url, 'POST', '/keyed/_bulk_docs', { ...admin(), body: { docs: [{ _id: 'a', n: 1 }, { _id: 'b', n: 2 }] } });
      const b = (await raw(couch.url, 'GET', '/keyed/b', admin())).body as { _rev: string };
      await raw(couch.url, 'DELETE', `/keyed/b?rev=${b._rev}`, admin());
    });
    after(async () => {
      await couch?.stop();
      dir?.remove();
    });

    it('answers a member with CouchDB rows: present, deleted and missing keys in order', async () => {
      const res = await raw(couch.url, 'POST', '/keyed/_all_docs?include_docs=true&conflicts=true', { auth: reader, body: { keys: ['a', 'b', 'c'] } });
      expect(res.status).to.equal(200);
      const body = res.body as { total_rows: number; rows: Array<Record<string, unknown>> };
      expect(body.total_rows).to.equal(1);
      expect(body.rows.map((r) => r.key)).to.deep.equal(['a', 'b', 'c']);
      expect(body.rows[0]).to.include({ id: 'a' });
      expect((body.rows[0]!.doc as { n: number }).n).to.equal(1);
      expect(body.rows[1]).to.deep.include({ id: 'b', doc: null });
      expect((body.rows[1]!.value as { deleted: boolean }).deleted).to.equal(true);
      expect(body.rows[2]).to.deep.equal({ key: 'c', error: 'not_found' });
    });

    it('refuses a non-member exactly as the unkeyed query does', async () => {
      const keyed = await raw(couch.url, 'POST', '/keyed/_all_docs', { auth: outsider, body: { keys: ['a'] } });
      const unkeyed = await raw(couch.url, 'GET', '/keyed/_all_docs', { auth: outsider });
      expect(unkeyed.status).to.be.oneOf([401, 403]);
      expect(keyed.status).to.equal(unkeyed.status);
      expect(keyed.body).to.deep.equal(unkeyed.body);
    });
  });
});
