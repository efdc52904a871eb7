import type { ExpressPouchApp, WrappedDb } from 'express-pouchdb';

// pouchdb-validation looks up a database's design docs for every doc it validates: an `_all_docs`
// range read over `_design/` with `include_docs`, which on leveldb opens and closes an iterator.
// In a `_bulk_docs` of 200 status docs that is 200 iterators, about a fifth of the embedded
// server's CPU under the worker's load (profile in docs/SYNC.md). The answer changes only when a
// design doc is written, so it is kept per database object until one is. Every write reaches a
// database through that object: the server's own replication (`_replicate`, `_replicator`), which
// would write through another, is left out of the embedded server (app.ts, EXCLUDED_PARTS).

type Callback = (err: unknown, value?: unknown) => void;
type Method = (...args: unknown[]) => unknown;
/** The methods of a wrapped database this cache reads or watches. */
type Watched = WrappedDb & Record<'allDocs' | 'bulkDocs' | 'put' | 'post' | 'remove' | 'putAttachment' | 'removeAttachment' | 'destroy', Method>;

/** True for exactly the query pouchdb-validation makes (`getValidationFunctions`). */
export function isDesignDocQuery(args: readonly unknown[]): boolean {
  if (args.length !== 1) return false;
  const opts = args[0];
  if (typeof opts !== 'object' || opts === null) return false;
  const keys = Object.keys(opts).sort();
  const o = opts as Record<string, unknown>;
  return keys.join(',') === 'endkey,include_docs,startkey' && o.startkey === '_design/' && o.endkey === '_design0' && o.include_docs === true;
}

function idOf(doc: unknown): string | null {
  return typeof doc === 'object' && doc !== null && typeof (doc as { _id?: unknown })._id === 'string' ? (doc as { _id: string })._id : null;
}

/**
 * Whether a write (by method and its arguments) may touch a design doc. Unknown shapes count as
 * touching one, so the cache is only ever dropped too often, never kept too long.
 */
export function mayWriteDesignDoc(method: string, args: readonly unknown[]): boolean {
  const isDesign = (id: string | null) => id === null || id.startsWith('_design/');
  switch (method) {
    case 'bulkDocs': {
      const first = args[0];
      const docs = Array.isArray(first) ? first : (first as { docs?: unknown } | undefined)?.docs;
      return !Array.isArray(docs) || docs.some((d) => isDesign(idOf(d)));
    }
    case 'post':
      // A doc without an id gets a uuid, never a design id.
      return idOf(args[0]) !== null && isDesign(idOf(args[0]));
    case 'put':
    case 'remove':
      return typeof args[0] === 'string' ? isDesign(args[0]) : isDesign(idOf(args[0]));
    case 'putAttachment':
    case 'removeAttachment':
      return typeof args[0] !== 'string' || isDesign(args[0]);
    default:
      return true;
  }
}

/** Freezes `value` and everything reachable from it. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

const WRITES = ['bulkDocs', 'put', 'post', 'remove', 'putAttachment', 'removeAttachment', 'destroy'] as const;

export function installDesignDocCache(app: ExpressPouchApp): void {
  app.dbWrapper.registerWrapper((_name: string, wrapped: WrappedDb, next: () => unknown) => {
    const db = wrapped as Watched;
    // Dropped when a design-doc write begins and again when it ends, so a lookup made while one
    // was under way is never kept past it.
    let cached: Promise<unknown> | null = null;
    const drop = () => {
      cached = null;
    };

    const allDocs = db.allDocs.bind(db);
    db.allDocs = (...args: unknown[]) => {
      if (!isDesignDocQuery(args)) return allDocs(...args);
      if (cached === null) {
        // Frozen once and shared, rather than copied for each validated doc: the validation
        // functions run with a design doc as `this` and must not change what the next one sees.
        const value = (allDocs(...args) as Promise<unknown>).then(deepFreeze);
        value.catch(() => {
          if (cached === value) cached = null;
        });
        cached = value;
      }
      return cached;
    };

    for (const method of WRITES) {
      const original = db[method].bind(db);
      db[method] = (...args: unknown[]) => {
        if (!mayWriteDesignDoc(method, args)) return original(...args);
        drop();
        const last = args[args.length - 1];
        if (typeof last === 'function') {
          const callback = last as Callback;
          return original(...args.slice(0, -1), (err: unknown, value?: unknown) => {
            drop();
            callback(err, value);
          });
        }
        const result = original(...args);
        if (result instanceof Promise) return result.finally(drop);
        return result;
      };
    }
    return next();
  });
}
