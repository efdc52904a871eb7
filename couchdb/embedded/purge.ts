import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ExpressPouchApp, Middleware, WrappedDb } from 'express-pouchdb';
import { planPurge, type DocMetadata } from './rev-tree.ts';
import { withReadCache, type LeveldownMethods } from './read-cache.ts';

// `POST /{db}/_purge` and a `POST /{db}/_compact` that reaches the disk, for the embedded server
// (docs/SYNC.md "Retention"). PouchDB's leveldb adapter has no `_purge`, and its `compact()` only
// deletes non-leaf bodies: leveldb keeps deleted values in its log and table files until its own
// compaction merges them. Here:
// - **Purge** (CouchDB 3 semantics, answer `{"purge_seq":null,"purged":{id:[revs]}}`, 201): the named
//   leaf revisions go with every ancestor no other leaf needs; a doc left with no leaf is removed
//   from the doc store, its bodies from the by-seq store (so it leaves `_changes` and `_all_docs`),
//   its attachments' references, and the doc count. One leveldb batch per request, inside PouchDB's
//   own write lock. `_local/purges` gets PouchDB's purge log entries, which its map/reduce reads to
//   drop purged docs from view indexes.
// - **Compact**: PouchDB's `compact()` (non-leaf bodies), then leveldb `compactRange` over the whole
//   key space, so deleted values are rewritten out of the files. 202 at once, as CouchDB does;
//   `compact_running` in db info says when it is over.
//
// Reaching the adapter's stores: PouchDB's leveldb adapter takes a leveldown factory (`db`, the
// documented option for another leveldown) and migration hooks (`migrate`) that it calls with the
// open database and its stores on every open. Ferry's data directories are created by PouchDB 9,
// so the hooks have nothing to migrate; they only record the handles.

type Callback = (err?: unknown, value?: unknown) => void;
interface Sublevel {
  get(key: string, cb: (err: unknown, value?: unknown) => void): void;
  batch(ops: BatchOp[], cb: (err?: unknown) => void): void;
  prefix(): string[];
}
interface BatchOp {
  type: 'put' | 'del';
  key: string;
  value?: unknown;
  prefix: Sublevel;
}
interface Stores {
  docStore: Sublevel;
  bySeqStore: Sublevel;
  attachmentStore: Sublevel;
  binaryStore: Sublevel;
  localStore: Sublevel;
  metaStore: Sublevel;
}
/** The adapter's open database: the doc count is cached on it. */
interface LevelRoot {
  _docCount: number;
}
interface LevelDown {
  compactRange(start: string, end: string, cb: (err?: unknown) => void): void;
  batch(ops: Array<{ type: 'put' | 'del'; key: string; value?: string }>, cb: (err?: unknown) => void): void;
}
/** The adapter methods the purge runs under (PouchDB internals, checked at first use). */
interface LevelApi {
  name: string;
  _doCompaction(docId: string, revs: string[], opts: { ctx: unknown }, cb: Callback): void;
  compact(opts?: unknown): Promise<unknown>;
}

const DOC_COUNT_KEY = '_local_doc_count';
const PURGES_ID = '_local/purges';
/** PouchDB keeps this many purge log entries (`purged_infos_limit`'s default). */
const PURGE_LOG_LIMIT = 1000;
/** A purge request names at most this many docs, as CouchDB 3's `[purge] max_document_id_number` default. */
export const MAX_PURGE_DOCS = 100;

export interface LevelHandles {
  root: LevelRoot;
  stores: Stores;
  leveldown: LevelDown;
}

export interface LevelRegistry {
  /** PouchDB options (`PouchDB.defaults`) that record each database's handles when it opens. */
  options: { db: (name: string) => unknown; migrate: { doMigrationOne: unknown; doMigrationTwo: unknown } };
  handles(fullName: string): LevelHandles | undefined;
}

export function createLevelRegistry(): LevelRegistry {
  // leveldown is PouchDB's own dependency; loaded the way PouchDB loads it.
  const require = createRequire(import.meta.url);
  const leveldown = require('leveldown') as (name: string) => LevelDown & LeveldownMethods;
  const downs = new Map<string, LevelDown>();
  const roots = new Map<string, LevelRoot>();
  const stores = new WeakMap<LevelRoot, Stores>();
  return {
    options: {
      db: function ferryLeveldown(name: string) {
        const down = withReadCache(leveldown(name));
        downs.set(name, down);
        return down;
      },
      migrate: {
        doMigrationOne(name: string, root: LevelRoot, cb: () => void) {
          roots.set(name, root);
          cb();
        },
        doMigrationTwo(root: LevelRoot, s: Stores, cb: () => void) {
          stores.set(root, s);
          cb();
        },
      },
    },
    handles(fullName) {
      const root = roots.get(fullName);
      const s = root ? stores.get(root) : undefined;
      const down = downs.get(fullName);
      return root && s && down ? { root, stores: s, leveldown: down } : undefined;
    },
  };
}

const get = (store: Sublevel, key: string): Promise<unknown> =>
  new Promise((resolve, reject) =>
    store.get(key, (err, value) => {
      if (!err) return resolve(value);
      if ((err as { name?: string }).name === 'NotFoundError') return resolve(undefined);
      reject(err);
    }),
  );
const batch = (store: Sublevel, ops: BatchOp[]): Promise<void> => new Promise((resolve, reject) => store.batch(ops, (err) => (err ? reject(err) : resolve())));

/** PouchDB's by-seq key: the seq zero-padded to 16 digits. */
const seqKey = (seq: number) => String(seq).padStart(16, '0');

/** The sentinel that ends the borrowed compaction call once the purge is done (the lock is then released). */
const DONE = Object.freeze({ name: 'FerryPurgeDone' });

/** Runs `work` inside the adapter's write lock: it holds the lock while the borrowed call waits for its first read. */
function underWriteLock<T>(api: LevelApi, work: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let result: { ok: true; value: T } | { ok: false; err: unknown } | null = null;
    const ctx = {
      get(_store: unknown, _key: string, cb: Callback) {
        work().then(
          (value) => (result = { ok: true, value }),
          (err: unknown) => (result = { ok: false, err }),
        ).finally(() => cb(DONE));
      },
      batch() {},
    };
    api._doCompaction('ferry-purge', ['0-ferry'], { ctx }, (err) => {
      if (err !== DONE) return reject(err ?? new Error('purge did not run'));
      if (result?.ok) resolve(result.value);
      else reject(result ? result.err : new Error('purge did not run'));
    });
  });
}

/** Purges `request` (id → leaf revs) from one leveldb database; answers what CouchDB's `purged` holds. */
export async function purgeDocs(api: LevelApi, h: LevelHandles, request: Record<string, string[]>): Promise<Record<string, string[]>> {
  return underWriteLock(api, async () => {
    const { stores } = h;
    const ops: BatchOp[] = [];
    const purgedOut: Record<string, string[]> = {};
    const log: Array<{ docId: string; rev: string }> = [];
    let liveDelta = 0;
    const attachmentRefs = new Map<string, Set<string>>();
    for (const [id, revs] of Object.entries(request)) {
      purgedOut[id] = [];
      const metadata = (await get(stores.docStore, id)) as DocMetadata | undefined;
      if (!metadata) continue;
      const plan = planPurge(metadata, revs);
      if (plan.kind === 'none') continue;
      purgedOut[id] = plan.purged;
      for (const rev of plan.purged) log.push({ docId: id, rev });
      for (const seq of plan.seqs) {
        const body = (await get(stores.bySeqStore, seqKey(seq))) as { _rev?: string; _attachments?: Record<string, { digest?: string }> } | undefined;
        for (const att of Object.values(body?._attachments ?? {})) {
          if (!att.digest) continue;
          const refs = attachmentRefs.get(att.digest) ?? new Set<string>();
          refs.add(`${id}@${body?._rev ?? ''}`);
          attachmentRefs.set(att.digest, refs);
        }
        ops.push({ type: 'del', key: seqKey(seq), prefix: stores.bySeqStore });
      }
      if (plan.kind === 'remove') {
        ops.push({ type: 'del', key: id, prefix: stores.docStore });
        if (plan.wasLive) liveDelta--;
      } else {
        ops.push({ type: 'put', key: id, value: plan.metadata, prefix: stores.docStore });
        liveDelta += plan.liveDelta;
      }
    }
    for (const [digest, gone] of attachmentRefs) {
      const att = (await get(stores.attachmentStore, digest)) as { refs?: Record<string, boolean> } | undefined;
      if (!att) continue;
      const refs = Object.fromEntries(Object.keys(att.refs ?? {}).filter((r) => !gone.has(r)).map((r) => [r, true]));
      if (Object.keys(refs).length > 0) ops.push({ type: 'put', key: digest, value: { ...att, refs }, prefix: stores.attachmentStore });
      else ops.push({ type: 'del', key: digest, prefix: stores.attachmentStore }, { type: 'del', key: digest, prefix: stores.binaryStore });
    }
    if (log.length === 0) return purgedOut;
    // PouchDB's purge log, which its map/reduce reads to take purged docs out of view indexes.
    const current = (await get(stores.localStore, PURGES_ID)) as { _rev?: string; purges: Array<{ docId: string; rev: string; purgeSeq: number }>; purgeSeq: number } | undefined;
    let purgeSeq = current ? current.purgeSeq : -1;
    const purges = [...(current?.purges ?? [])];
    for (const entry of log) purges.push({ ...entry, purgeSeq: ++purgeSeq });
    const n = Number((current?._rev ?? '0-0').split('-')[1] ?? 0) + 1;
    ops.push({ type: 'put', key: PURGES_ID, value: { _id: PURGES_ID, _rev: `0-${n}`, purges: purges.slice(-PURGE_LOG_LIMIT), purgeSeq }, prefix: stores.localStore });
    const docCount = Math.max(0, h.root._docCount + liveDelta);
    ops.push({ type: 'put', key: DOC_COUNT_KEY, value: docCount, prefix: stores.metaStore });
    await batch(stores.docStore, ops);
    h.root._docCount = docCount;
    return purgedOut;
  });
}

/**
 * leveldb's own compaction, rewriting every table without deleted or overwritten values.
 * `compactRange` flushes the memtable first, but may place that table straight at level 2 with
 * every version it held, and never compacts the deepest level it found (a single-file database
 * keeps its deleted values). So: a first pass flushes; then a put and delete of two sentinels at
 * both ends of the key space (outside PouchDB's `\xff{store}\xff` prefixes) make a table that
 * overlaps everything, and the second pass merges it down through every level, deepest included.
 */
export async function compactFiles(h: LevelHandles): Promise<void> {
  const down = h.leveldown;
  const call = (fn: (cb: (err?: unknown) => void) => void) => new Promise<void>((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
  const range = (cb: (err?: unknown) => void) => down.compactRange(LOW, HIGH, cb);
  await call(range);
  await call((cb) => down.batch([{ type: 'put', key: LOW, value: '' }, { type: 'put', key: HIGH, value: '' }], cb));
  await call((cb) => down.batch([{ type: 'del', key: LOW }, { type: 'del', key: HIGH }], cb));
  await call(range);
}
const LOW = '\x00ferry-compact';
const HIGH = '\xff\xff\xff\xffferry-compact';

/** What a `_purge` body must be: `{id: [rev, …]}` with string revs, within the doc limit. */
export function parsePurgeRequest(body: unknown): Record<string, string[]> | null {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return null;
  const entries = Object.entries(body as Record<string, unknown>);
  if (entries.length > MAX_PURGE_DOCS) return null;
  const out: Record<string, string[]> = {};
  for (const [id, revs] of entries) {
    if (!Array.isArray(revs) || !revs.every((r): r is string => typeof r === 'string' && /^\d+-[0-9a-z]+$/.test(r))) return null;
    out[id] = revs;
  }
  return out;
}

type DbRequest = IncomingMessage & { db?: WrappedDb & LevelApi; params?: Record<string, string> };

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'must-revalidate' });
  res.end(JSON.stringify(body));
}

function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      text += c;
      if (text.length > limit) {
        reject(new Error('too large'));
        req.destroy();
      }
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(text) as unknown);
      } catch {
        resolve(undefined);
      }
    });
    req.on('error', reject);
  });
}

/** `/{db}/_purge` or `/{db}/_compact` (not `_compact/{ddoc}`), else null. */
function routeOf(req: IncomingMessage): { db: string; what: '_purge' | '_compact' } | null {
  if (req.method !== 'POST') return null;
  const path = (req.url ?? '/').split('?')[0]!;
  const m = /^\/([^/]+)\/(_purge|_compact)\/?$/.exec(path);
  return m ? { db: decodeURIComponent(m[1]!), what: m[2] as '_purge' | '_compact' } : null;
}

/**
 * Installs both routes right before express-pouchdb's `/:db/_bulk_docs` route (after the
 * middleware that opens `req.db`; the access guard has already kept them to server admins).
 * `dbDir` is the prefix the PouchDB instances were opened with.
 */
export function installPurgeAndCompact(app: ExpressPouchApp, registry: LevelRegistry, dbDir: string): void {
  const running = new Set<string>();
  const handler: Middleware = function ferryPurgeAndCompact(req, res, next) {
    const route = routeOf(req);
    const db = (req as DbRequest).db;
    if (!route || !db) return next();
    const h = registry.handles(`${dbDir}/${route.db}`);
    if (!h) return sendJson(res, 501, { error: 'not_implemented', reason: 'This database has no leveldb handles.' });
    if (route.what === '_compact') {
      if (!running.has(route.db)) {
        running.add(route.db);
        void db
          .compact()
          .then(() => compactFiles(h))
          .catch(() => undefined)
          .finally(() => running.delete(route.db));
      }
      return sendJson(res, 202, { ok: true });
    }
    readJson(req, 4 * 1024 * 1024)
      .then((body) => {
        const request = parsePurgeRequest(body);
        if (!request) return sendJson(res, 400, { error: 'bad_request', reason: 'Expected {"id": ["rev", …]}.' });
        return purgeDocs(db, h, request).then((purged) => sendJson(res, 201, { purge_seq: null, purged }));
      })
      .catch((err: unknown) => next(err));
  };
  const stack = app._router.stack;
  const at = stack.findIndex((layer) => (layer as { route?: { path?: unknown } }).route?.path === '/:db/_bulk_docs');
  if (at === -1) throw new Error('express-pouchdb: the _bulk_docs route was not found');
  app.use(handler);
  const layer = stack.pop();
  if (!layer || layer.handle !== handler) throw new Error('express-pouchdb: could not install _purge');
  stack.splice(at, 0, layer);
  // `compact_running` in db info, so a caller can wait for a compaction to end.
  app.dbWrapper.registerWrapper((name: string, wrapped: WrappedDb, nextWrapper: () => unknown) => {
    const info = wrapped.info.bind(wrapped);
    wrapped.info = (...args: unknown[]) => {
      const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as (err: unknown, info?: unknown) => void) : null;
      const promise = info(...args).then((value) => ({ ...value, compact_running: running.has(name) }));
      if (callback) promise.then((v) => callback(null, v), (err: unknown) => callback(err));
      return promise;
    };
    return nextWrapper();
  });
}
