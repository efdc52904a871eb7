import { isRecord } from './context.ts';
import type { SyncRoute } from './routes.ts';

// How big one /sync request may be, by what the route does (issue 10, "bounded requests"): the
// body limit is checked before the body is parsed, the id count right after, so an oversized
// `_revs_diff` costs the gateway a drained socket, not a 15 MB parse and an upstream lookup.

/** Which body limit a request gets. */
export type BodyClass = 'write' | 'local' | 'ids' | 'other';

export interface SyncLimits {
  /** Largest JSON body per class, in bytes; past it 413 `PAYLOAD_TOO_LARGE`. */
  bodyBytes: Record<BodyClass, number>;
  /** Most ids one `_revs_diff`, `_bulk_get`, `_bulk_docs` (docs), `_all_docs` (keys) or `_changes` (doc_ids) may name; past it 400 `TOO_MANY_IDS`. */
  maxIds: number;
}

/** Overrides of `DEFAULT_LIMITS`, body classes one by one. */
export interface SyncLimitsInput {
  bodyBytes?: Partial<Record<BodyClass, number>>;
  maxIds?: number;
}

/**
 * PouchDB's replicator sends 100 ids per `_revs_diff`/`_bulk_get` by default (Ferry's device 500),
 * so 1,000 is ten times what a client needs. A `_bulk_docs` of 500 mutations of a few KB each is
 * well under 16 MB; `_local` docs are at most 64 KB (quotas.ts). An id list of 1,000 ids with a
 * few revs each is ~100 KB.
 */
export const DEFAULT_LIMITS: SyncLimits = {
  bodyBytes: { write: 16 * 1024 * 1024, local: 128 * 1024, ids: 1024 * 1024, other: 16 * 1024 },
  maxIds: 1000,
};

export function bodyClassOf(route: SyncRoute, method: string): BodyClass {
  switch (route.kind) {
    case 'bulk_docs':
      return 'write';
    case 'local':
      return method === 'PUT' ? 'local' : 'other';
    case 'revs_diff':
    case 'bulk_get':
    case 'all_docs':
    case 'changes':
      return 'ids';
    default:
      return 'other';
  }
}

/**
 * How many ids a request names, for the routes that take id lists (in the parsed body, or in
 * `_all_docs?keys=`); null where none applies or the list is malformed (the handler refuses that).
 */
export function idCountOf(kind: SyncRoute['kind'], body: unknown, query: Record<string, unknown> = {}): number | null {
  // An id list in the query string (`_all_docs?keys=`, `_changes?doc_ids=`) counts like one in the body.
  const inQuery = kind === 'all_docs' ? 'keys' : kind === 'changes' ? 'doc_ids' : null;
  if (inQuery && typeof query[inQuery] === 'string' && !(isRecord(body) && body[inQuery] !== undefined)) {
    try {
      const ids: unknown = JSON.parse(query[inQuery]);
      return Array.isArray(ids) ? ids.length : null;
    } catch {
      return null;
    }
  }
  if (!isRecord(body)) return null;
  switch (kind) {
    case 'revs_diff':
      return Object.keys(body).length;
    case 'bulk_get':
    case 'bulk_docs':
      // A push names its docs' ids too, and each own one is looked up upstream before deciding.
      return Array.isArray(body.docs) ? body.docs.length : null;
    case 'all_docs':
      return Array.isArray(body.keys) ? body.keys.length : null;
    case 'changes':
      return Array.isArray(body.doc_ids) ? body.doc_ids.length : null;
    default:
      return null;
  }
}

/** Live feeds hold a connection (and a feed watcher wake-up) open for up to a minute each. */
export function isLiveFeed(route: SyncRoute, query: Record<string, unknown>): boolean {
  return route.kind === 'changes' && (query.feed === 'longpoll' || query.feed === 'continuous');
}

/**
 * Open live `_changes` feeds per user, within this gateway process. `acquire` is false when the
 * user already holds `max`; each true must be followed by exactly one `release`.
 */
export interface LiveFeeds {
  acquire(key: string): boolean;
  release(key: string): void;
  open(key: string): number;
}

export function createLiveFeeds(max: number): LiveFeeds {
  const open = new Map<string, number>();
  return {
    acquire(key) {
      const n = open.get(key) ?? 0;
      if (n >= max) return false;
      open.set(key, n + 1);
      return true;
    },
    release(key) {
      const n = (open.get(key) ?? 0) - 1;
      if (n > 0) open.set(key, n);
      else open.delete(key);
    },
    open: (key) => open.get(key) ?? 0,
  };
}
