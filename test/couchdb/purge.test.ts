import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { planPurge, winnerOf, type DocMetadata, type RevNode } from '../../couchdb/embedded/rev-tree.ts';
import { parsePurgeRequest } from '../../couchdb/embedded/purge.ts';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw, waitFor } from './http.ts';

// `_purge` and a `_compact` that reaches the files, on the embedded server (couchdb/embedded/purge.ts).

const h = (c: string) => c.repeat(32);
const node = (hash: string, children: RevNode[] = [], deleted = false): RevNode => [hash, deleted ? { status: 'available', deleted: true } : { status: 'available' }, children];

/** 1-a → 2-b → 3-c (winner), and 1-a → 2-d (deleted branch). */
function branched(): DocMetadata {
  return {
    id: 'doc',
    rev_tree: [{ pos: 1, ids: node(h('a'), [node(h('b'), [node(h('c'))]), node(h('d'), [], true)]) }],
    rev_map: { [`1-${h('a')}`]: 1, [`2-${h('b')}`]: 2, [`3-${h('c')}`]: 3, [`2-${h('d')}`]: 4 },
    winningRev: `3-${h('c')}`,
    deleted: false,
    seq: 3,
  };
}

describe('couchdb/embedded: _purge', () => {
  describe('planPurge (rev tree surgery)', () => {
    const cases: Array<[string, string[], string, unknown]> = [
      ['a non-leaf rev only', [`2-${h('b')}`], 'none', {}],
      ['an unknown rev', [`9-${h('f')}`], 'none', {}],
      ['every leaf', [`3-${h('c')}`, `2-${h('d')}`], 'remove', { seqs: [1, 2, 3, 4], wasLive: true }],
      ['the winner: the deleted branch stays', [`3-${h('c')}`], 'rewrite', { seqs: [2, 3], liveDelta: -1, winningRev: `2-${h('d')}`, deleted: true }],
      ['the deleted branch: the winner stays', [`2-${h('d')}`], 'rewrite', { seqs: [4], liveDelta: 0, winningRev: `3-${h('c')}`, deleted: false }],
    ];
    for (const [name, revs, kind, want] of cases) {
      it(`${name} → ${kind}`, () => {
        const plan = planPurge(branched(), revs);
        expect(plan.kind).to.equal(kind);
        const w = want as Record<string, unknown>;
        if (plan.kind === 'remove') expect({ seqs: [...plan.seqs].sort(), wasLive: plan.wasLive }).to.deep.equal(w);
        if (plan.kind === 'rewrite') {
          expect([...plan.seqs].sort()).to.deep.equal(w.seqs);
          expect(plan.liveDelta).to.equal(w.liveDelta);
          expect(plan.metadata.winningRev).to.equal(w.winningRev);
          expect(plan.metadata.deleted).to.equal(w.deleted);
          expect(Object.keys(plan.metadata.rev_map)).to.not.include.members(revs);
        }
      });
    }
    it('winner: live before deleted, then pos, then hash', () => {
      expect(winnerOf([{ rev: `3-${h('a')}`, deleted: true }, { rev: `2-${h('b')}`, deleted: false }]).rev).to.equal(`2-${h('b')}`);
      expect(winnerOf([{ rev: `2-${h('a')}`, deleted: false }, { rev: `2-${h('b')}`, deleted: false }]).rev).to.equal(`2-${h('b')}`);
      expect(winnerOf([{ rev: `3-${h('a')}`, deleted: false }, { rev: `2-${h('b')}`, deleted: false }]).rev).to.equal(`3-${h('a')}`);
    });
    const bodies: Array<[string, unknown, boolean]> = [
      ['id → revs', { a: [`1-${h('a')}`] }, true],
      ['an array', [], false],
      ['revs not an array', { a: `1-${h('a')}` }, false],
      ['a malformed rev', { a: ['x'] }, false],
      ['null', null, false],
      ['101 ids (CouchDB 3 takes 100)', Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`d${i}`, [`1-${h('a')}`]])), false],
      ['100 ids', Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`d${i}`, [`1-${h('a')}`]])), true],
    ];
    for (const [name, body, ok] of bodies) it(`request body: ${name} → ${ok ? 'accepted' : '400'}`, () => expect(parsePurgeRequest(body) !== null).to.equal(ok));
  });

  describe('on a running server', function () {
    this.timeout(120_000);
    let dir: TempDir;
    let couch: EmbeddedCouch;
    const admin = () => ({ auth: couch.admin });
    const member = { username: 'purge-member', password: 'member-secret-1' };
    const MARKER = 'PHI-MARKER-Zyxwvu-4711';

    /** Every file of the database's leveldb directory, as bytes, searched for `marker`. */
    const onDisk = (db: string, marker: string) => {
      const d = join(dir.path, 'couch', 'db', db);
      return readdirSync(d).some((f) => readFileSync(join(d, f)).includes(Buffer.from(marker)));
    };

    before(async () => {
      dir = tempDir('ferry-purge-');
      couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
      expect((await raw(couch.url, 'PUT', '/inbox_p', admin())).status).to.equal(201);
      const user = await raw(couch.url, 'PUT', `/_users/org.couchdb.user:${member.username}`, { ...admin(), body: { name: member.username, password: member.password, roles: ['p-members'], type: 'user' } });
      expect(user.status).to.equal(201);
      await raw(couch.url, 'PUT', '/inbox_p/_security', { ...admin(), body: { admins: { names: [], roles: [] }, members: { names: [], roles: ['p-members'] } } });
    });
    after(async () => {
      await couch?.stop();
      dir?.remove();
    });

    it('removes a doc, its bodies and its PHI from the files after compaction (control: found before)', async () => {
      const docs = Array.from({ length: 50 }, (_, i) => ({ _id: `m:ada:${String(i).padStart(4, '0')}`, payload: { givenName: `${MARKER}-${i}`, pad: 'x'.repeat(200) } }));
      docs.push({ _id: 'keep', payload: { givenName: 'Kept', pad: '' } });
      expect((await raw(couch.url, 'POST', '/inbox_p/_bulk_docs', { ...admin(), body: { docs } })).status).to.equal(201);
      // A second revision of one doc: its old body must go too.
      const first = (await raw(couch.url, 'GET', '/inbox_p/m:ada:0000', admin())).body as { _rev: string };
      const second = await raw(couch.url, 'PUT', '/inbox_p/m:ada:0000', { ...admin(), body: { _rev: first._rev, payload: { givenName: `${MARKER}-again` } } });
      expect(second.status).to.equal(201);
      // A closed conflict branch of another: a deleted leaf that keeps a body (as the worker closes losers).
      const branch = { _id: 'm:ada:0001', _rev: `1-${h('f')}`, payload: { givenName: `${MARKER}-branch` } };
      expect((await raw(couch.url, 'POST', '/inbox_p/_bulk_docs', { ...admin(), body: { docs: [branch], new_edits: false } })).status).to.equal(201);
      expect((await raw(couch.url, 'POST', '/inbox_p/_bulk_docs', { ...admin(), body: { docs: [{ ...branch, _deleted: true }] } })).status).to.equal(201);
      const open = (await raw(couch.url, 'GET', '/inbox_p/m:ada:0001?open_revs=all', admin())).body as Array<{ ok: { _rev: string } }>;
      expect(open).to.have.length(2);
      expect(onDisk('inbox_p', MARKER), 'control: the marker is in the files before the purge').to.equal(true);
      const before = (await raw(couch.url, 'GET', '/inbox_p', admin())).body as { doc_count: number };
      expect(before.doc_count).to.equal(51);

      const all = (await raw(couch.url, 'GET', '/inbox_p/_all_docs?startkey="m:"&endkey="m:\uffff"', admin())).body as { rows: Array<{ id: string; value: { rev: string } }> };
      const request = Object.fromEntries(all.rows.map((r) => [r.id, [r.value.rev]]));
      request['m:ada:0001'] = open.map((r) => r.ok._rev);
      request['absent'] = [`1-${h('e')}`];
      const res = await raw(couch.url, 'POST', '/inbox_p/_purge', { ...admin(), body: request });
      expect(res.status).to.equal(201);
      const body = res.body as { purge_seq: null; purged: Record<string, string[]> };
      expect(body.purge_seq).to.equal(null);
      expect(body.purged['absent']).to.deep.equal([]);
      expect(body.purged['m:ada:0000']).to.deep.equal(request['m:ada:0000']);

      expect((await raw(couch.url, 'GET', '/inbox_p/m:ada:0001', admin())).status).to.equal(404);
      expect((await raw(couch.url, 'GET', '/inbox_p/m:ada:0001?open_revs=all', admin())).status).to.equal(404);
      const info = (await raw(couch.url, 'GET', '/inbox_p', admin())).body as { doc_count: number };
      expect(info.doc_count).to.equal(1);
      const changes = (await raw(couch.url, 'GET', '/inbox_p/_changes', admin())).body as { results: Array<{ id: string }> };
      expect(changes.results.map((r) => r.id)).to.deep.equal(['keep']);
      const rest = (await raw(couch.url, 'GET', '/inbox_p/_all_docs', admin())).body as { rows: Array<{ id: string }> };
      expect(rest.rows.map((r) => r.id)).to.deep.equal(['keep']);

      expect((await raw(couch.url, 'POST', '/inbox_p/_compact', admin())).status).to.equal(202);
      await waitFor(async () => ((await raw(couch.url, 'GET', '/inbox_p', admin())).body as { compact_running: boolean }).compact_running === false);
      expect(onDisk('inbox_p', MARKER), 'the marker is gone from every file after compaction').to.equal(false);
      // The database still works: a write, a read, a feed.
      expect((await raw(couch.url, 'PUT', '/inbox_p/after', { ...admin(), body: { n: 1 } })).status).to.equal(201);
      expect((await raw(couch.url, 'GET', '/inbox_p/keep', admin())).status).to.equal(200);
    });

    it('keeps the count right across a restart (the count is written with the purge)', async () => {
      await couch.stop();
      couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
      const info = (await raw(couch.url, 'GET', '/inbox_p', admin())).body as { doc_count: number };
      expect(info.doc_count).to.equal(2);
    });

    it('is for admins only: a member gets 403 and nothing is purged', async () => {
      const keep = (await raw(couch.url, 'GET', '/inbox_p/keep', admin())).body as { _rev: string };
      const res = await raw(couch.url, 'POST', '/inbox_p/_purge', { auth: member, body: { keep: [keep._rev] } });
      expect(res.status).to.equal(403);
      expect((await raw(couch.url, 'POST', '/inbox_p/_compact', { auth: member })).status).to.equal(403);
      expect((await raw(couch.url, 'GET', '/inbox_p/keep', admin())).status).to.equal(200);
    });

    it('answers 400 for a malformed body', async () => {
      const res = await raw(couch.url, 'POST', '/inbox_p/_purge', { ...admin(), body: ['keep'] });
      expect(res.status).to.equal(400);
    });
  });
});
