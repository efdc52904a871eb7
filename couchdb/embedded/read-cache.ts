// leveldb reads answered from what this process just wrote or read, and the rest in one hop.
//
// PouchDB's leveldb adapter reads a doc's metadata with a lone `get` for every change a `_changes`
// feed returns (one after the other), for every doc of a `_bulk_docs` (to find what exists) and for
// every key of a keyed read. On this machine a lone leveldown `get` costs ~55 µs of CPU, almost all
// of it the thread-pool hop (system calls are dear here), and it was the largest self time in the
// child under the worker bench and the harness. Most of those reads are of docs written a moment
// before: the worker reads the mutations the gateway just wrote, and its own status writes come
// back on its feed. So each leveldown handle gets:
// - a cache of values, filled from the batches it wrote (once leveldb has applied them) and from
//   the gets it answered, absent keys included, bounded in bytes for the whole process;
// - the gets that miss it, gathered within one tick into one `getMany` (one hop for many keys).
//
// What a get answers is exactly what leveldb would answer at that moment: a write drops its keys
// from the cache when it is issued, a value goes in only once the write that made it has been
// applied and no other write to that key was issued meanwhile, and a get's answer is kept only if
// no write to that key was issued while it was in flight. A write this module does not model
// (keys that are not well-formed strings, chained batches, `clear`) drops the whole cache when it
// is issued and when it is done, and nothing is answered from the cache or kept while it runs.

/** A cached answer: the stored value, or absent. */
type Cached = { value: string | Buffer } | { absent: true };

type GetCallback = (err: Error | null | undefined, value?: string | Buffer) => void;
type Callback = (err?: Error | null) => void;
interface GetOptions {
  asBuffer?: boolean;
}
interface BatchOperation {
  type: 'put' | 'del';
  key: unknown;
  value?: unknown;
}

/** The leveldown methods this wraps (leveldown 6's private implementation methods). */
export interface LeveldownMethods {
  _get(key: unknown, options: GetOptions, callback: GetCallback): void;
  _getMany(keys: unknown[], options: GetOptions, callback: (err: Error | null | undefined, values?: Array<string | Buffer | undefined>) => void): void;
  _put(key: unknown, value: unknown, options: unknown, callback: Callback): void;
  _del(key: unknown, options: unknown, callback: Callback): void;
  _batch(operations: BatchOperation[], options: unknown, callback: Callback): void;
  _chainedBatch(): unknown;
  _clear(options: unknown, callback: Callback): void;
  _open(options: unknown, callback: Callback): void;
  _close(callback: Callback): void;
}

/** The byte budget the caches of every open database share. */
export interface ReadCacheLimits {
  readonly maxBytes: number;
  /** Largest value kept; bigger ones are always read from leveldb. */
  readonly maxValueBytes: number;
}

export const READ_CACHE_DEFAULTS: ReadCacheLimits = { maxBytes: 32 * 1024 * 1024, maxValueBytes: 64 * 1024 };

/**
 * How leveldown reports a missing key (levelup turns it into NotFoundError by this message). Made
 * without a stack trace: it is thrown away at once, and capturing one was a tenth of the child's CPU.
 */
function notFound(): Error {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  const err = new Error('NotFound: ');
  Error.stackTraceLimit = limit;
  return err;
}

const sizeOf = (key: string, c: Cached): number => key.length + ('value' in c ? (typeof c.value === 'string' ? c.value.length : c.value.byteLength) : 0) + 48;

/** The answer leveldown would give for `c` in the shape `options` asks for. */
function answerOf(c: Cached, options: GetOptions): { err: Error } | { value: string | Buffer } {
  if (!('value' in c)) return { err: notFound() };
  const v = c.value;
  if (options.asBuffer === false) return { value: typeof v === 'string' ? v : v.toString('utf8') };
  return { value: typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v) };
}

interface Entry {
  readonly owner: Map<string, Entry>;
  readonly key: string;
  /** Let go of once dropped, so a dropped value is not held until the order list reaches it. */
  c: Cached | null;
  readonly size: number;
}

/**
 * The byte budget every handle's entries share, oldest write evicted first: what is read again is
 * mostly what was written a moment before, so insertion order serves as well as recency and a hit
 * is one lookup in the handle's own map (keys are leveldb's own strings, hashed once).
 */
export class ReadCacheBudget {
  /** Entries in the order they were kept; ones since replaced or dropped are skipped when reached. */
  private order: Entry[] = [];
  private head = 0;
  private bytes = 0;
  private live = 0;
  constructor(readonly limits: ReadCacheLimits = READ_CACHE_DEFAULTS) {}

  /** Bytes kept now, across every handle. */
  get size(): number {
    return this.bytes;
  }

  set(owner: Map<string, Entry>, key: string, c: Cached): void {
    this.delete(owner, key);
    const size = sizeOf(key, c);
    if (size > this.limits.maxValueBytes) return;
    const e: Entry = { owner, key, c, size };
    owner.set(key, e);
    this.order.push(e);
    this.bytes += size;
    this.live++;
    while (this.bytes > this.limits.maxBytes && this.head < this.order.length) {
      const old = this.order[this.head++]!;
      if (old.owner.get(old.key) === old) this.drop(old);
    }
    // Skipped entries pile up at the front; copy the live tail once they outnumber it.
    if (this.head > 1024 && this.head > this.order.length / 2) {
      this.order = this.order.slice(this.head);
      this.head = 0;
    }
    if (this.order.length - this.head > 4 * this.live + 1024) {
      this.order = this.order.slice(this.head).filter((x) => x.owner.get(x.key) === x);
      this.head = 0;
    }
  }

  delete(owner: Map<string, Entry>, key: string): void {
    const e = owner.get(key);
    if (e) this.drop(e);
  }

  deleteAll(owner: Map<string, Entry>): void {
    for (const e of [...owner.values()]) this.drop(e);
  }

  private drop(e: Entry): void {
    e.owner.delete(e.key);
    e.c = null;
    this.bytes -= e.size;
    this.live--;
  }
}

/** The process's budget, shared by every database the embedded server opens. */
let processBudget: ReadCacheBudget | null = null;

/**
 * Strings leveldb keeps as they are: it stores UTF-8, so a lone surrogate comes back as U+FFFD
 * (and two spellings of a key would name one leveldb key). Such keys and values are not cached.
 */
const wellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed();
/** A key this cache can stand for. */
const modelledKey = (k: unknown): k is string => typeof k === 'string' && wellFormed(k);
/** Storable values: what leveldown would give back byte for byte. */
const cacheable = (v: unknown): v is string | Buffer => (typeof v === 'string' && wellFormed(v)) || Buffer.isBuffer(v);

/**
 * Wraps one leveldown handle's reads and writes in place (before the database opens) and returns it.
 */
export function withReadCache<T extends LeveldownMethods>(down: T, budget: ReadCacheBudget = (processBudget ??= new ReadCacheBudget())): T {
  const kept = new Map<string, Entry>();
  const cache = {
    get: (key: string) => kept.get(key)?.c ?? undefined,
    set: (key: string, c: Cached) => budget.set(kept, key, c),
    delete: (key: string) => budget.delete(kept, key),
    clear: () => budget.deleteAll(kept),
  };
  const original = {
    get: down._get.bind(down),
    getMany: down._getMany.bind(down),
    put: down._put.bind(down),
    del: down._del.bind(down),
    batch: down._batch.bind(down),
    chainedBatch: down._chainedBatch.bind(down),
    clear: down._clear.bind(down),
    open: down._open.bind(down),
    close: down._close.bind(down),
  };

  /** Writes issued and not yet applied, per key; a key written twice at once is not cached until both are done. */
  const writing = new Map<string, { count: number; contested: boolean }>();
  /** Keys with a get in flight, and whether a write to the key was issued since. */
  const reading = new Map<string, { count: number; stale: boolean }>();
  /** Writes in flight whose keys are not known (chained batches, `clear`, non-string keys): nothing is answered or kept meanwhile. */
  let blind = 0;

  const writeIssued = (key: string) => {
    cache.delete(key);
    const w = writing.get(key);
    if (w) {
      w.count++;
      w.contested = true;
    } else writing.set(key, { count: 1, contested: false });
    const r = reading.get(key);
    if (r) r.stale = true;
  };
  const writeDone = (key: string, result: Cached | null) => {
    const w = writing.get(key);
    if (!w) return;
    w.count--;
    if (w.count > 0) return;
    writing.delete(key);
    if (result && !w.contested) cache.set(key, result);
  };
  // Writes and reads in flight are marked, so nothing that started before this is kept.
  const dropAll = () => {
    cache.clear();
    for (const r of reading.values()) r.stale = true;
    for (const w of writing.values()) w.contested = true;
  };

  /** A write whose keys are not known: everything is dropped when it is issued and again once it is done. */
  const blindWrite = (run: (cb: Callback) => void, callback: Callback) => {
    dropAll();
    blind++;
    run((err) => {
      blind--;
      dropAll();
      callback(err);
    });
  };

  /** Runs a write of `entries` (null: not modelled) and keeps what it made once applied. */
  const write = (entries: Array<[string, Cached | null]> | null, run: (cb: Callback) => void, callback: Callback) => {
    if (!entries) return blindWrite(run, callback);
    for (const [key] of entries) writeIssued(key);
    run((err) => {
      for (const [key, result] of entries) writeDone(key, err ? null : result);
      callback(err);
    });
  };

  // A read that starts while a write to its key is in flight may see either side of it: not kept.
  const readStarted = (key: string) => {
    const r = reading.get(key);
    const overlaps = writing.has(key) || blind > 0;
    if (r) {
      r.count++;
      if (overlaps) r.stale = true;
    } else reading.set(key, { count: 1, stale: overlaps });
  };
  const readDone = (key: string, result: Cached | null) => {
    const r = reading.get(key);
    if (!r) return;
    r.count--;
    if (r.count === 0) reading.delete(key);
    if (result && !r.stale && !writing.has(key) && blind === 0) cache.set(key, result);
  };

  // Misses gathered within one tick, by the shape of answer asked for.
  let queued: Array<{ key: string; options: GetOptions; callback: GetCallback }> = [];
  const flush = () => {
    const batch = queued;
    queued = [];
    for (const asBuffer of [true, false]) {
      const group = batch.filter((q) => (q.options.asBuffer !== false) === asBuffer);
      if (group.length === 0) continue;
      for (const q of group) readStarted(q.key);
      const options: GetOptions = { ...group[0]!.options };
      const settle = (q: (typeof group)[number], err: Error | null | undefined, value: string | Buffer | undefined) => {
        if (err) {
          readDone(q.key, null);
          return q.callback(err);
        }
        const result: Cached = value === undefined ? { absent: true } : { value };
        readDone(q.key, result);
        if (value === undefined) q.callback(notFound());
        else q.callback(null, value);
      };
      if (group.length === 1) {
        const q = group[0]!;
        original.get(q.key, options, (err, value) => {
          const missing = err && /notfound/i.test(err.message);
          settle(q, missing ? null : err, missing ? undefined : value);
        });
      } else {
        original.getMany(
          group.map((q) => q.key),
          options,
          (err, values) => group.forEach((q, i) => settle(q, err, err ? undefined : values?.[i])),
        );
      }
    }
  };

  down._get = (key, options, callback) => {
    if (!modelledKey(key)) return original.get(key, options, callback);
    const hit = blind === 0 ? cache.get(key) : undefined;
    if (hit && !writing.has(key)) {
      const answer = answerOf(hit, options);
      return process.nextTick(() => ('err' in answer ? callback(answer.err) : callback(null, answer.value)));
    }
    if (queued.length === 0) process.nextTick(flush);
    queued.push({ key, options, callback });
  };
  down._put = (key, value, options, callback) =>
    write(modelledKey(key) ? [[key, cacheable(value) ? { value } : null]] : null, (cb) => original.put(key, value, options, cb), callback);
  down._del = (key, options, callback) => write(modelledKey(key) ? [[key, { absent: true }]] : null, (cb) => original.del(key, options, cb), callback);
  down._batch = (operations, options, callback) => {
    const entries: Array<[string, Cached | null]> | null = operations.every((op) => modelledKey(op.key))
      ? operations.map((op): [string, Cached | null] => [op.key as string, op.type === 'del' ? { absent: true } : cacheable(op.value) ? { value: op.value } : null])
      : null;
    // The last operation on a key is what the batch leaves there.
    const last = entries && [...new Map(entries).entries()];
    write(last, (cb) => original.batch(operations, options, cb), callback);
  };
  down._chainedBatch = () => {
    // Not used by PouchDB 9; its operations are not modelled, so its write is a blind one.
    const batch = original.chainedBatch() as { _write?: (options: unknown, cb: Callback) => void };
    const writeBatch = batch._write?.bind(batch);
    if (writeBatch) batch._write = (options, cb) => blindWrite((done) => writeBatch(options, done), cb);
    return batch;
  };
  down._clear = (options, callback) => blindWrite((cb) => original.clear(options, cb), callback);
  // Another handle may write the files while this one is closed: it starts again empty.
  down._open = (options, callback) => {
    dropAll();
    original.open(options, callback);
  };
  down._close = (callback) => {
    dropAll();
    // Gets still gathered for the next tick go to leveldb now, so its close waits for them: sent
    // after it, they would run on a closed handle (and crash the process).
    if (queued.length > 0) flush();
    original.close(callback);
  };
  return down;
}
