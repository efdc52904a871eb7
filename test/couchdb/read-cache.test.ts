import { expect } from 'chai';
import { createRequire } from 'node:module';
import PouchDB from 'pouchdb';
import { ReadCacheBudget, withReadCache, type LeveldownMethods } from '../../couchdb/embedded/read-cache.ts';
import { seededRandom } from '../../harness/random.ts';
import { tempDir, type TempDir } from '../support/services.ts';

// The embedded server's leveldb read cache (couchdb/embedded/read-cache.ts): every get answers what
// leveldb itself would answer at that moment, whatever writes are in flight; misses within one tick
// are one `getMany`; and PouchDB on top of it behaves exactly as PouchDB without it.

const require = createRequire(import.meta.url);

interface Handle extends LeveldownMethods {
  open(cb: (err?: Error) => void): void;
  close(cb: (err?: Error) => void): void;
  get(key: string, options: { asBuffer?: boolean }, cb: (err: Error | null | undefined, value?: string | Buffer) => void): void;
  batch(ops: Array<{ type: 'put' | 'del'; key: string; value?: string }>, cb: (err?: Error) => void): void;
  put(key: string, value: string, cb: (err?: Error) => void): void;
  del(key: string, cb: (err?: Error) => void): void;
}
const leveldown = require('leveldown') as (location: string) => Handle;

/** What reached leveldb itself, counted below the cache. */
interface Counted {
  handle: Handle;
  gets: number;
  getManys: number[];
  /** leveldb's own answer, bypassing the cache. */
  direct(key: string): Promise<string | undefined>;
}

async function openCounted(location: string, budget = new ReadCacheBudget()): Promise<Counted> {
  const handle = leveldown(location);
  const own = { get: handle._get.bind(handle), getMany: handle._getMany.bind(handle) };
  const counted: Counted = {
    handle,
    gets: 0,
    getManys: [],
    direct: (key) =>
      new Promise((resolve, reject) =>
        own.get(key, { asBuffer: false }, (err, value) => (err ? (/notfound/i.test(err.message) ? resolve(undefined) : reject(err)) : resolve(value as string))),
      ),
  };
  handle._get = (key, options, cb) => {
    counted.gets++;
    own.get(key, options, cb);
  };
  handle._getMany = (keys, options, cb) => {
    counted.getManys.push(keys.length);
    own.getMany(keys, options, cb);
  };
  withReadCache(handle, budget);
  await new Promise<void>((resolve, reject) => handle.open((err) => (err ? reject(err) : resolve())));
  return counted;
}

const close = (h: Handle) => new Promise<void>((resolve) => h.close(() => resolve()));
const get = (h: Handle, key: string, asBuffer = false) =>
  new Promise<string | Buffer | undefined>((resolve, reject) =>
    h.get(key, { asBuffer }, (err, value) => (err ? (/notfound/i.test(err.message) ? resolve(undefined) : reject(err)) : resolve(value))),
  );
const batch = (h: Handle, ops: Array<{ type: 'put' | 'del'; key: string; value?: string }>) =>
  new Promise<void>((resolve, reject) => h.batch(ops, (err) => (err ? reject(err) : resolve())));

describe('couchdb/embedded: leveldb read cache', () => {
  let dir: TempDir;
  let db: Counted;
  beforeEach(async () => {
    dir = tempDir('ferry-read-cache-');
    db = await openCounted(`${dir.path}/db`);
  });
  afterEach(async () => {
    await close(db.handle);
    dir.remove();
  });

  it('answers a key the handle just wrote without asking leveldb, as a string or a buffer', async () => {
    await batch(db.handle, [{ type: 'put', key: 'a', value: '{"x":"é"}' }]);
    expect(await get(db.handle, 'a')).to.equal('{"x":"é"}');
    const asBuffer = await get(db.handle, 'a', true);
    expect(Buffer.isBuffer(asBuffer)).to.equal(true);
    expect((asBuffer as Buffer).toString('utf8')).to.equal('{"x":"é"}');
    expect(db.gets + db.getManys.length).to.equal(0);
  });

  it('answers a deleted or missing key NotFound, as leveldown does, and keeps the absence', async () => {
    await batch(db.handle, [{ type: 'put', key: 'a', value: '1' }, { type: 'del', key: 'a' }]);
    const err = await new Promise<Error | null | undefined>((resolve) => db.handle.get('a', { asBuffer: false }, (e) => resolve(e)));
    expect(err?.message).to.match(/^NotFound/);
    expect(await get(db.handle, 'never')).to.equal(undefined);
    expect(await get(db.handle, 'never')).to.equal(undefined);
    expect(db.gets).to.equal(1);
  });

  it('gathers the misses of one tick into one getMany, each answered with its own value', async () => {
    await batch(db.handle, Array.from({ length: 20 }, (_, i) => ({ type: 'put' as const, key: `k${i}`, value: `v${i}` })));
    // A fresh handle on the same files: nothing cached.
    await close(db.handle);
    db = await openCounted(`${dir.path}/db`);
    const answers = await Promise.all([...Array.from({ length: 20 }, (_, i) => get(db.handle, `k${i}`)), get(db.handle, 'missing')]);
    expect(answers).to.deep.equal([...Array.from({ length: 20 }, (_, i) => `v${i}`), undefined]);
    expect(db.getManys).to.deep.equal([21]);
    expect(db.gets).to.equal(0);
    // Now they are kept.
    await Promise.all(Array.from({ length: 20 }, (_, i) => get(db.handle, `k${i}`)));
    expect(db.getManys).to.deep.equal([21]);
  });

  it('does not keep an answer read while a write to that key was issued', async () => {
    await close(db.handle);
    await new Promise<void>((r) => {
      const plain = leveldown(`${dir.path}/db`);
      plain.open(() => plain.put('a', 'old', () => plain.close(() => r())));
    });
    db = await openCounted(`${dir.path}/db`);
    const reading = get(db.handle, 'a');
    const writing = batch(db.handle, [{ type: 'put', key: 'a', value: 'new' }]);
    const [seen] = await Promise.all([reading, writing]);
    expect(['old', 'new']).to.include(seen);
    expect(await get(db.handle, 'a')).to.equal('new');
  });

  it('keeps nothing for a key two writes raced on, until one write is alone again', async () => {
    const first = batch(db.handle, [{ type: 'put', key: 'a', value: '1' }]);
    const second = batch(db.handle, [{ type: 'put', key: 'a', value: '2' }]);
    await Promise.all([first, second]);
    const before = db.gets + db.getManys.length;
    expect(await get(db.handle, 'a')).to.equal(await db.direct('a'));
    expect(db.gets + db.getManys.length).to.equal(before + 1);
    await batch(db.handle, [{ type: 'put', key: 'a', value: '3' }]);
    expect(await get(db.handle, 'a')).to.equal('3');
    expect(db.gets + db.getManys.length).to.equal(before + 1);
  });

  it('drops what it kept when a chained batch or a clear writes what it does not model', async () => {
    await batch(db.handle, [{ type: 'put', key: 'a', value: '1' }]);
    const chained = db.handle._chainedBatch() as { put(k: string, v: string): void; write(cb: (err?: Error) => void): void };
    chained.put('a', '2');
    await new Promise<void>((resolve, reject) => chained.write((err) => (err ? reject(err) : resolve())));
    expect(await get(db.handle, 'a')).to.equal('2');
    await new Promise<void>((resolve, reject) => db.handle._clear({}, (err) => (err ? reject(err) : resolve())));
    expect(await get(db.handle, 'a')).to.equal(undefined);
  });

  it('starts again empty when the handle is opened again (another handle may have written the files meanwhile)', async () => {
    await batch(db.handle, [{ type: 'put', key: 'a', value: 'mine' }]);
    expect(await get(db.handle, 'a')).to.equal('mine');
    await close(db.handle);
    const other = leveldown(`${dir.path}/db`);
    await new Promise<void>((r) => other.open(() => other.put('a', 'theirs', () => other.close(() => r()))));
    await new Promise<void>((resolve, reject) => db.handle.open((err) => (err ? reject(err) : resolve())));
    expect(await get(db.handle, 'a')).to.equal('theirs');
  });

  it('gets still gathered for the next tick when the handle closes go to leveldb before the close (sent after it, they crashed the process)', async () => {
    await batch(db.handle, [{ type: 'put', key: 'a', value: '1' }, { type: 'put', key: 'b', value: '2' }]);
    await close(db.handle);
    db = await openCounted(`${dir.path}/db`);
    const answers = [get(db.handle, 'a'), get(db.handle, 'b')];
    const closed = close(db.handle);
    expect(await Promise.all(answers)).to.deep.equal(['1', '2']);
    await closed;
    db = await openCounted(`${dir.path}/db`);
  });

  it('keys and values with a lone surrogate are left to leveldb, which keeps them as UTF-8', async () => {
    await batch(db.handle, [{ type: 'put', key: 'k\uD800', value: 'first' }]);
    await batch(db.handle, [{ type: 'put', key: 'k\uFFFD', value: 'second' }]);
    // One leveldb key under two spellings: both read what was written last.
    expect(await get(db.handle, 'k\uD800')).to.equal(await db.direct('k\uD800'));
    expect(await get(db.handle, 'k\uD800')).to.equal('second');
    await batch(db.handle, [{ type: 'put', key: 'v', value: 'x\uDC00' }]);
    expect(await get(db.handle, 'v')).to.equal(await db.direct('v'));
  });

  it('under random concurrent writes and reads, answers what leveldb answers', async () => {
    const random = seededRandom(42);
    const keys = Array.from({ length: 12 }, (_, i) => `key-${i}`);
    const pick = () => keys[Math.floor(random() * keys.length)]!;
    for (let round = 0; round < 150; round++) {
      // Model: the last value each key was given by a write that has settled before the round.
      const model = new Map<string, string | undefined>();
      for (const k of keys) model.set(k, await db.direct(k));
      const touched = new Set<string>();
      const ops: Array<Promise<unknown>> = [];
      const reads: Array<{ key: string; answer: Promise<string | Buffer | undefined> }> = [];
      const n = 1 + Math.floor(random() * 8);
      for (let i = 0; i < n; i++) {
        const r = random();
        if (r < 0.35) {
          const key = pick();
          reads.push({ key, answer: get(db.handle, key) });
        } else if (r < 0.8) {
          const batchOps = Array.from({ length: 1 + Math.floor(random() * 3) }, () => {
            const key = pick();
            touched.add(key);
            return random() < 0.2 ? { type: 'del' as const, key } : { type: 'put' as const, key, value: `r${round}-${i}-${Math.floor(random() * 1e6)}` };
          });
          ops.push(batch(db.handle, batchOps));
        } else {
          const key = pick();
          touched.add(key);
          ops.push(new Promise<void>((resolve) => db.handle.del(key, () => resolve())));
        }
        // Some operations start in later ticks, after others have been answered.
        if (random() < 0.3) await new Promise((r) => setImmediate(r));
      }
      await Promise.all(ops);
      for (const read of reads) {
        // A read of a key no write touched this round must give the round's starting value.
        if (!touched.has(read.key)) expect(await read.answer, `round ${round}, ${read.key}`).to.equal(model.get(read.key));
        else await read.answer;
      }
      // Once everything has settled, every answer is leveldb's.
      for (const k of keys) expect(await get(db.handle, k), `round ${round}, settled ${k}`).to.equal(await db.direct(k));
    }
  });

  it('stays within its byte budget, dropping the oldest entries first', async () => {
    const budget = new ReadCacheBudget({ maxBytes: 4_000, maxValueBytes: 500 });
    await close(db.handle);
    db = await openCounted(`${dir.path}/small`, budget);
    for (let i = 0; i < 100; i++) await batch(db.handle, [{ type: 'put', key: `k${i}`, value: 'x'.repeat(100) }]);
    expect(budget.size).to.be.at.most(4_000);
    const before = db.gets + db.getManys.length;
    expect(await get(db.handle, 'k99')).to.equal('x'.repeat(100));
    expect(db.gets + db.getManys.length).to.equal(before);
    expect(await get(db.handle, 'k0')).to.equal('x'.repeat(100));
    expect(db.gets + db.getManys.length).to.equal(before + 1);
    // A value over the per-value limit is never kept.
    await batch(db.handle, [{ type: 'put', key: 'big', value: 'y'.repeat(600) }]);
    expect(await get(db.handle, 'big')).to.equal('y'.repeat(600));
    expect(db.gets + db.getManys.length).to.equal(before + 2);
  });
});

describe('couchdb/embedded: PouchDB on the read cache', () => {
  let dir: TempDir;
  beforeEach(() => {
    dir = tempDir('ferry-read-cache-pouch-');
  });
  afterEach(() => dir.remove());

  /** The same script of writes, conflicts, deletions and reads, answered as PouchDB answers it. */
  async function script(db: PouchDB.Database): Promise<unknown[]> {
    const out: unknown[] = [];
    const strip = (v: unknown) => JSON.parse(JSON.stringify(v, (k, x) => (k === 'seq' || k === 'last_seq' || k === 'update_seq' ? undefined : x))) as unknown;
    out.push(await db.bulkDocs(Array.from({ length: 30 }, (_, i) => ({ _id: `d${i}`, n: i }))));
    const d3 = await db.get('d3');
    out.push(await db.put({ ...d3, n: 'three' }));
    out.push(await db.bulkDocs([{ _id: 'd4', n: 'stale' }]).catch((e: Error) => e.name));
    await db.bulkDocs([{ _id: 'd5', _rev: `2-${'a'.repeat(32)}`, side: 'a', _revisions: { start: 2, ids: ['a'.repeat(32), 'f'.repeat(32)] } }, { _id: 'd5', _rev: `2-${'b'.repeat(32)}`, side: 'b', _revisions: { start: 2, ids: ['b'.repeat(32), 'f'.repeat(32)] } }], { new_edits: false });
    out.push(await db.remove(await db.get('d6')));
    out.push(await db.get('d5', { conflicts: true }));
    out.push(await db.get('d6').catch((e: { status: number; reason: string }) => [e.status, e.reason]));
    out.push(await db.get('nope').catch((e: { status: number; reason: string }) => [e.status, e.reason]));
    out.push(await db.allDocs({ keys: ['d1', 'd5', 'd6', 'nope'], include_docs: true, conflicts: true }));
    out.push(strip(await db.changes({ include_docs: true, conflicts: true, style: 'all_docs' })));
    out.push(await db.put({ _id: '_local/cp', v: 1 }));
    out.push(await db.get('_local/cp'));
    // One after another: concurrent puts may take their sequence numbers in either order, in PouchDB alone too.
    for (let i = 0; i < 10; i++) await db.put({ ...(await db.get(`d${10 + i}`)), n: `again-${i}` });
    out.push(strip(await db.changes({ since: 0, include_docs: true })));
    out.push(await db.allDocs({ include_docs: true }));
    await db.compact();
    out.push(await db.get('d3', { revs_info: true }));
    return out;
  }

  it('answers a script of reads and writes exactly as PouchDB without it', async () => {
    const plain = new PouchDB(`${dir.path}/plain`);
    const Cached = PouchDB.defaults({ db: (name: string) => withReadCache(leveldown(name), new ReadCacheBudget()) } as PouchDB.Configuration.DatabaseConfiguration);
    const cached = new Cached(`${dir.path}/cached`);
    try {
      const expected = await script(plain);
      const actual = await script(cached);
      expect(actual).to.deep.equal(expected);
    } finally {
      await plain.close();
      await cached.close();
    }
  });
});
