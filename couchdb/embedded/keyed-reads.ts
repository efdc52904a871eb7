import type { ExpressPouchApp, WrappedDb } from 'express-pouchdb';

// `_all_docs` with `keys` (the worker's status reads, the gateway's push checks) is, in PouchDB's
// leveldb adapter, one range query per key: a leveldb iterator and a doc count each, about 60 µs of
// CPU per missing key and 170 µs per present one on this machine, against 20 and 30 µs for a point
// `get`. The embedded server answers such a query with one `get` per key instead, row for row what
// PouchDB would answer; anything it does not cover goes to PouchDB's own path.

/** A row of a keyed `_all_docs`, as PouchDB (and CouchDB) shape it. */
export type KeyedRow =
  | { id: string; key: string; value: { rev: string; deleted?: true }; doc?: Record<string, unknown> | null }
  | { key: string; error: 'not_found' };

export interface KeyedQuery {
  keys: string[];
  includeDocs: boolean;
  conflicts: boolean;
  /** Passed on to each `get`, so the security plugin checks them as it would the `_all_docs`. */
  passThrough: Record<string, unknown>;
}

/** The options express-pouchdb adds to every call for its security and validation plugins. */
const PASSED_THROUGH = new Set(['userCtx', 'secObj']);
// express-pouchdb has parsed query values as JSON by now; anything but a boolean takes PouchDB's path.
const TRUE = (v: unknown) => v === true;
const FALSE = (v: unknown) => v === undefined || v === false;

/**
 * The query a `get` per key can answer exactly, or null for PouchDB's own path: any paging,
 * ordering, attachment or sequence option, a `_local/` key (not in the doc store) or a non-string key.
 */
export function keyedQueryOf(args: readonly unknown[]): KeyedQuery | null {
  const opts = args[0];
  if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) return null;
  const o = opts as Record<string, unknown>;
  if (!Array.isArray(o.keys)) return null;
  const keys = o.keys as unknown[];
  if (!keys.every((k): k is string => typeof k === 'string' && !k.startsWith('_local/'))) return null;
  const passThrough: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(o)) {
    if (name === 'keys') continue;
    if (PASSED_THROUGH.has(name)) passThrough[name] = value;
    else if ((name === 'include_docs' || name === 'conflicts') && (TRUE(value) || FALSE(value))) continue;
    else return null;
  }
  return { keys, includeDocs: TRUE(o.include_docs), conflicts: TRUE(o.conflicts), passThrough };
}

type Callback = (err: unknown, value?: unknown) => void;
type Method = (...args: unknown[]) => Promise<unknown>;
type Watched = WrappedDb & { allDocs: Method; get: Method };
interface PouchError {
  status?: number;
  reason?: string;
}

/** Answers a keyed query with a `get` per key; a deleted doc's row (rare) comes from `original`. */
export async function keyedAllDocs(db: Pick<Watched, 'get'>, original: Method, q: KeyedQuery): Promise<{ total_rows: unknown; offset: 0; rows: KeyedRow[] }> {
  const getOpts = { ...q.passThrough, ...(q.conflicts ? { conflicts: true } : {}) };
  const rows = await Promise.all(
    q.keys.map(async (key): Promise<KeyedRow> => {
      try {
        const doc = (await db.get(key, getOpts)) as Record<string, unknown> & { _id: string; _rev: string };
        return { id: doc._id, key, value: { rev: doc._rev }, ...(q.includeDocs ? { doc } : {}) };
      } catch (err) {
        const e = err as PouchError;
        if (e.status !== 404) throw err;
        if (e.reason !== 'deleted') return { key, error: 'not_found' };
        const one = (await original({ ...q.passThrough, keys: [key], include_docs: q.includeDocs, conflicts: q.conflicts })) as { rows: KeyedRow[] };
        return one.rows[0] ?? { key, error: 'not_found' };
      }
    }),
  );
  // PouchDB answers a keyed query with the database's doc count and offset 0; so does this.
  const count = (await original({ ...q.passThrough, limit: 0 })) as { total_rows?: unknown };
  return { total_rows: count.total_rows, offset: 0, rows };
}

export function installKeyedReads(app: ExpressPouchApp): void {
  app.dbWrapper.registerWrapper((_name: string, wrapped: WrappedDb, next: () => unknown) => {
    const db = wrapped as Watched;
    const original = db.allDocs.bind(db) as Method;
    const get = db.get.bind(db) as Method;
    db.allDocs = (...args: unknown[]) => {
      const callback = typeof args[args.length - 1] === 'function' ? (args[args.length - 1] as Callback) : null;
      const q = keyedQueryOf(callback ? args.slice(0, -1) : args);
      if (!q) return original(...args);
      const answer = keyedAllDocs({ get }, original, q);
      if (!callback) return answer;
      answer.then((v) => callback(null, v), (err: unknown) => callback(err));
      return undefined as unknown as Promise<unknown>;
    };
    return next();
  });
}
