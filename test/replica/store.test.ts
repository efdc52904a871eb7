import { expect } from 'chai';
import { openDatabase, type Database } from '../../sql/database.ts';
import { migratePlatform } from '../../gateway/platform/schema.ts';
import { createReplicaStore, streamPosition, type ReplicaStore } from '../../gateway/replica/store.ts';
import { dropSchema, requirePostgres, TEST_DATABASE_URL, uniqueSchema } from '../support/services.ts';
import type { ReplicaScope } from '../../gateway/tenant/scope.ts';

// The replica index on both databases Ferry runs on (PGlite and PostgreSQL): the same SQL must give
// the same feeds. A record moves A → B → C; callers at A, B, {A,B} and all read it.

const at = (...facilities: string[]): ReplicaScope => ({ kind: 'facilities', facilities });
const ALL: ReplicaScope = { kind: 'all' };
const R1 = 'pat_0190f000-0000-7000-8000-0000000000a1';
const R2 = 'pat_0190f000-0000-7000-8000-0000000000a2';

const engines: Array<{ name: string; open: (ctx: Mocha.Context) => Promise<{ db: Database; done: () => Promise<void> }> }> = [
  { name: 'PGlite', open: async () => ({ db: await openDatabase({}), done: async () => undefined }) },
  {
    name: 'PostgreSQL',
    open: async (ctx) => {
      await requirePostgres(ctx);
      const schema = uniqueSchema('replica_store');
      return { db: await openDatabase({ url: TEST_DATABASE_URL, schema }), done: () => dropSchema(schema) };
    },
  },
];

for (const engine of engines) {
  describe(`replica: the index on ${engine.name}`, function () {
    this.timeout(60_000);
    let db: Database;
    let done: () => Promise<void>;
    let store: ReplicaStore;
    const feed = async (scope: ReplicaScope, after: number) => (await store.feed('t', scope, { kind: 'normal', after }, null, 100)).map((r) => [r.id, r.counter, r.present]);

    before(async function () {
      ({ db, done } = await engine.open(this));
      await migratePlatform(db);
      store = createReplicaStore(db);
    });
    after(async () => {
      await db?.close();
      await done?.();
    });

    it('allocates counters in order, never moves a record back, and lists departures', async () => {
      expect(await store.apply('t', [{ id: R1, facility: 'A', version: 1 }, { id: R2, facility: 'B', version: 1 }])).to.equal(2);
      expect(await store.apply('t', [{ id: R1, facility: 'A', version: 1 }])).to.equal(2);
      expect(await store.apply('t', [{ id: R1, facility: 'B', version: 2 }])).to.equal(3);
      expect(await store.apply('t', [{ id: R1, facility: 'A', version: 1 }])).to.equal(3);
      expect(await store.head('t')).to.equal(3);
      const listed = [...(await store.indexed('t', [R1, R2])).values()].map((r) => [r.id, r.facility, r.version]);
      expect(listed.sort()).to.deep.equal([
        [R1, 'B', 2],
        [R2, 'B', 1],
      ]);
    });

    it('feeds: present rows of the caller\'s facilities, departures as deletions once the device can hold them', async () => {
      expect(await feed(at('A'), 0)).to.deep.equal([]);
      expect(await feed(at('A'), 1)).to.deep.equal([[R1, 3, false]]);
      expect(await feed(at('B'), 0)).to.deep.equal([[R2, 2, true], [R1, 3, true]]);
      expect(await feed(at('A', 'B'), 1)).to.deep.equal([[R2, 2, true], [R1, 3, true]]);
      expect(await feed(ALL, 2)).to.deep.equal([[R1, 3, true]]);
      expect(await store.latest('t', at('A'))).to.equal(0);
      expect(await store.latest('t', at('B'))).to.equal(3);
    });

    it('catch-up from a lost facility: its records as deletions; from a gained one: all of them', async () => {
      // The device held B up to 3; now it holds A only.
      const lost = await store.feed('t', at('A'), { kind: 'catch-up', fromTag: 'x', base: 3, cursor: 0 }, at('B'), 100);
      expect(lost.map((r) => [r.id, r.present])).to.deep.equal([[R2, false], [R1, false]]);
      // The device held A up to 3; now it holds B too.
      const gained = await store.feed('t', at('A', 'B'), { kind: 'catch-up', fromTag: 'x', base: 3, cursor: 0 }, at('A'), 100);
      expect(gained.map((r) => [r.id, r.present])).to.deep.equal([[R2, true], [R1, true]]);
    });

    it('id ranges in scope, scopes per user, and the stream position only moves up', async () => {
      expect((await store.range('t', at('B'), { lo: '', hi: '\uffff', hiInclusive: true, descending: false, limit: 10 })).map((r) => r.id)).to.deep.equal([R1, R2]);
      expect((await store.range('t', at('B'), { lo: '', hi: '\uffff', hiInclusive: true, descending: true, limit: 1 })).map((r) => r.id)).to.deep.equal([R2]);
      await store.rememberScope('t', 'u', 'tag1', at('B', 'A'));
      await store.rememberScope('t', 'u', 'tag1', at('C'));
      expect(await store.scopeOf('t', 'u', 'tag1')).to.deep.equal(at('B', 'A'));
      expect(await store.scopeOf('t', 'other', 'tag1')).to.equal(null);
      const pos = streamPosition(db);
      await pos.advance(10);
      await pos.advance(7);
      expect(await pos.read()).to.equal(10);
      await pos.reset();
      expect(await pos.read()).to.equal(0);
    });
  });
}
