import type { Queryable } from '../../sql/database.ts';
import { FerryError } from '../../validators/codes.ts';
import { isRecord } from './context.ts';
import { ownDocId } from './policy.ts';
import type { Inbox, Upstream } from './upstream.ts';
import { upstreamFailure } from './upstream.ts';

// The pull side (DESIGN §4, second design; docs/SYNC.md "The pull side").
// The worker stamps each status doc with a per-tenant counter and, in the statement that allocates
// it, lists the doc in the platform table `feed_index` at that counter (once, at its latest); after
// the batch's `_bulk_docs` it raises `feed:head`. A user's `_changes?since=N` is the index range
// owner = caller, N < counter <= head, with revs from the index or the docs by key (`_bulk_get`):
// O(log n + the user's own rows), and no CouchDB view to build. Longpolls wait on one watcher per
// tenant.

import { FEED_HEAD_ID } from '../../couchdb/design/index.ts';

export interface FeedRow {
  seq: number;
  id: string;
  rev: string;
  doc?: Record<string, unknown>;
}

/** The counter in `feed:head`, 0 before the worker has written any. */
export async function readHead(inbox: Inbox, signal?: AbortSignal): Promise<number> {
  const res = await inbox.request({ path: [FEED_HEAD_ID], ...(signal ? { signal } : {}) });
  if (res.status === 404) {
    // A missing doc is "no head yet"; a missing database is a tenant without an inbox.
    const body = (await res.json().catch(() => ({}))) as { reason?: unknown };
    if (body.reason === 'missing' || body.reason === 'deleted') return 0;
    throw new FerryError('NOT_FOUND');
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw upstreamFailure(res.status);
  }
  const doc = (await res.json()) as { counter?: unknown };
  return typeof doc.counter === 'number' && Number.isSafeInteger(doc.counter) ? doc.counter : 0;
}

// ---------------------------------------------------------------------------------------------
// The feed index (platform database, written by the worker: gateway/worker/position.ts)

export interface IndexRow {
  id: string;
  counter: number;
  /** The rev the write at this very counter produced, when recorded: the doc's current rev. */
  rev?: string;
}

export interface FeedIndex {
  /** The owner's rows with after < counter <= upto, in counter order, at most `limit`. */
  range(tenant: string, owner: string, after: number, upto: number, limit: number, descending: boolean): Promise<IndexRow[]>;
  /** The owner's rows for `ids` with after < counter <= upto (unordered). */
  ofIds(tenant: string, owner: string, ids: readonly string[], after: number, upto: number): Promise<IndexRow[]>;
  /** The owner's newest counter at or below `upto`, 0 if none. */
  latest(tenant: string, owner: string, upto: number): Promise<number>;
  /**
   * Which of `owners` have a row with after < counter <= upto: one probe of the owner index per
   * owner, so it costs what the waiting owners cost, not the tenant. Null while the tenant's index
   * is still being filled (every waiter must look then).
   */
  ownersWithRows(tenant: string, owners: readonly string[], after: number, upto: number): Promise<ReadonlySet<string> | null>;
  /**
   * False while the worker is still indexing status docs that predate the index (worker migration
   * `worker_feed_backfill`): a partial index could let a reader step past a row not yet indexed, so
   * such a tenant's feed reads as empty until then.
   */
  ready(tenant: string): Promise<boolean>;
}

/**
 * The head a reader may use: `feed:head`, or 0 while the tenant's index is being filled. `known`
 * is a head the tenant's live watcher has already read (`HeadWatchers.known`): a reader that will
 * wait for the head to move anyway takes it instead of reading `feed:head` again.
 */
export async function readableHead(feed: FeedIndex, inbox: Inbox, tenant: string, signal?: AbortSignal, known: number | null = null): Promise<number> {
  const head = known ?? (await readHead(inbox, signal));
  return (await feed.ready(tenant)) ? head : 0;
}

type CounterRow = { doc_id: string; counter: string | number; rev: string | null };
const toIndexRow = (r: CounterRow): IndexRow => ({ id: r.doc_id, counter: Number(r.counter), ...(r.rev !== null ? { rev: r.rev } : {}) });
/** A row's rev only if it was recorded for its current counter (no later write allocated since). */
const COLUMNS = 'doc_id, counter, CASE WHEN rev_counter = counter THEN rev END AS rev';

const UNDEFINED_TABLE = '42P01';

export function createFeedIndex(db: Queryable): FeedIndex {
  // Once complete, a tenant's index stays complete: remembered for the process's life.
  const complete = new Set<string>();
  return {
    async ready(tenant) {
      if (complete.has(tenant)) return true;
      try {
        const { rows } = await db.query('SELECT 1 FROM worker_feed_backfill WHERE tenant = $1', [tenant]);
        if (rows.length > 0) return false;
      } catch (err) {
        // No worker migrations in this database yet: no worker has written an index row either.
        if ((err as { code?: unknown }).code !== UNDEFINED_TABLE) throw err;
        return true;
      }
      complete.add(tenant);
      return true;
    },
    async range(tenant, owner, after, upto, limit, descending) {
      if (upto <= after || limit <= 0) return [];
      const { rows } = await db.query<CounterRow>(
        `SELECT ${COLUMNS} FROM feed_index WHERE tenant = $1 AND owner = $2 AND counter > $3 AND counter <= $4
         ORDER BY counter ${descending ? 'DESC' : 'ASC'} LIMIT $5`,
        [tenant, owner, after, upto, limit],
      );
      return rows.map(toIndexRow);
    },
    async ofIds(tenant, owner, ids, after, upto) {
      if (ids.length === 0 || upto <= after) return [];
      const { rows } = await db.query<CounterRow>(
        `SELECT ${COLUMNS} FROM feed_index WHERE tenant = $1 AND doc_id = ANY($2::text[]) AND owner = $3 AND counter > $4 AND counter <= $5`,
        [tenant, ids, owner, after, upto],
      );
      return rows.map(toIndexRow);
    },
    async ownersWithRows(tenant, owners, after, upto) {
      if (!(await this.ready(tenant))) return null;
      if (owners.length === 0 || upto <= after) return new Set();
      const { rows } = await db.query<{ owner: string }>(
        `SELECT o.owner FROM unnest($2::text[]) AS o(owner)
         WHERE EXISTS (SELECT 1 FROM feed_index f WHERE f.tenant = $1 AND f.owner = o.owner AND f.counter > $3 AND f.counter <= $4)`,
        [tenant, [...new Set(owners)], after, upto],
      );
      return new Set(rows.map((r) => r.owner));
    },
    async latest(tenant, owner, upto) {
      if (upto <= 0) return 0;
      const { rows } = await db.query<{ counter: string | number | null }>(
        'SELECT max(counter) AS counter FROM feed_index WHERE tenant = $1 AND owner = $2 AND counter <= $3',
        [tenant, owner, upto],
      );
      const c = rows[0]?.counter;
      return c === null || c === undefined ? 0 : Number(c);
    },
  };
}

export interface FeedQuery {
  tenant: string;
  owner: string;
  /** Exclusive lower bound (the client's `since`). */
  after: number;
  /** Inclusive upper bound (`feed:head`). */
  upto: number;
  /** Rows wanted; the page is filled up to it unless the range runs out. */
  limit: number;
  descending: boolean;
  includeDocs: boolean;
  conflicts: boolean;
  signal?: AbortSignal;
}

export interface FeedPage {
  rows: FeedRow[];
  /**
   * The caller's last counter looked at, served or not (null if none). A page shorter than `limit`
   * means the range is exhausted: PouchDB stops paging on a short page (trap 14), so a page is
   * never cut short while the index holds more.
   */
  scanned: number | null;
}

type AllDocsRow = { key: string; value?: { rev?: string; deleted?: boolean }; doc?: unknown; error?: string };
type BulkGetResult = { id?: string; docs?: Array<{ ok?: unknown; error?: unknown }> };

/** The current winning doc of each id, by key; absent and deleted ids are left out. */
async function currentDocs(inbox: Inbox, ids: readonly string[], conflicts: boolean, signal?: AbortSignal): Promise<Map<string, Record<string, unknown>>> {
  const out = new Map<string, Record<string, unknown>>();
  const extra = signal ? { signal } : {};
  if (conflicts) {
    // `_conflicts` comes only with `_all_docs` (`_bulk_get` has no such option).
    const body = await inbox.json<{ rows: AllDocsRow[] }>({ method: 'POST', path: ['_all_docs'], query: { include_docs: true, conflicts: true }, body: { keys: ids }, ...extra });
    for (const row of body.rows) if (row.value?.deleted !== true && isRecord(row.doc)) out.set(row.key, row.doc);
    return out;
  }
  // `_bulk_get` rather than `_all_docs?keys`: express-pouchdb runs a range query per key for the
  // latter, about twice the cost of fetching the (small) status docs themselves.
  const body = await inbox.json<{ results: BulkGetResult[] }>({ method: 'POST', path: ['_bulk_get'], body: { docs: ids.map((id) => ({ id })) }, ...extra });
  for (const result of body.results) {
    // A missing or deleted doc is an `error` entry (or `{}` on express-pouchdb, trap 7).
    const doc = result.docs?.find((d) => isRecord(d.ok))?.ok;
    if (typeof result.id === 'string' && isRecord(doc) && doc._deleted !== true) out.set(result.id, doc);
  }
  return out;
}

/**
 * Index rows as change rows at their counters, with the docs' current revs. Without `include_docs`
 * a row whose rev was recorded for its current counter needs no inbox read: the status writer
 * records it before the head passes the batch, and any later write moves the row to a later
 * counter first. Every other row is fetched by key: its doc may be at a newer rev than the row (a
 * later write), shown now and again at its later counter, as in CouchDB's feed. Rows whose doc is
 * absent or deleted (a status write that never landed, a tombstone) are left out; `readFeed`
 * refills the page.
 */
export async function docsOfRows(
  inbox: Inbox,
  owner: string,
  rows: readonly IndexRow[],
  opts: { includeDocs: boolean; conflicts: boolean; signal?: AbortSignal },
): Promise<FeedRow[]> {
  const own = rows.filter((r) => ownDocId(r.id, owner) === r.id && r.id.startsWith('s:'));
  if (own.length === 0) return [];
  const known = (r: IndexRow): r is IndexRow & { rev: string } => !opts.includeDocs && r.rev !== undefined;
  const ask = [...new Set(own.filter((r) => !known(r)).map((r) => r.id))];
  const docs = ask.length > 0 ? await currentDocs(inbox, ask, opts.includeDocs && opts.conflicts, opts.signal) : new Map<string, Record<string, unknown>>();
  const out: FeedRow[] = [];
  for (const r of own) {
    if (known(r)) {
      out.push({ seq: r.counter, id: r.id, rev: r.rev });
      continue;
    }
    const doc = docs.get(r.id);
    if (!doc || typeof doc._rev !== 'string' || doc._id !== r.id) continue;
    const item: FeedRow = { seq: r.counter, id: r.id, rev: doc._rev };
    if (opts.includeDocs) item.doc = doc;
    out.push(item);
  }
  return out;
}

/** One page of the caller's own rows, in counter order. Never reads another owner's rows. */
export async function readFeed(index: FeedIndex, inbox: Inbox, q: FeedQuery): Promise<FeedPage> {
  const rows: FeedRow[] = [];
  let lo = q.after;
  let hi = q.upto;
  let scanned: number | null = null;
  while (rows.length < q.limit && hi > lo) {
    const want = q.limit - rows.length;
    const found = await index.range(q.tenant, q.owner, lo, hi, want, q.descending);
    if (found.length === 0) break;
    rows.push(...(await docsOfRows(inbox, q.owner, found, q)));
    scanned = found[found.length - 1]!.counter;
    if (q.descending) hi = scanned - 1;
    else lo = scanned;
    if (found.length < want) break;
  }
  return { rows, scanned };
}

// ---------------------------------------------------------------------------------------------
// One watcher per tenant

export interface HeadWatchers {
  /**
   * Resolves with the tenant's head once it is above `after`, or with null when `signal` aborts.
   * All waiters of a tenant share one upstream longpoll, which stops when the last one leaves.
   */
  next(tenant: string, after: number, signal: AbortSignal, owner?: string): Promise<number | null>;
  /**
   * The head the tenant's watcher last read, while its upstream feed is positioned and open;
   * otherwise null. Never above the real `feed:head`, and behind it only until the open feed
   * delivers a move, so only a reader that waits for the head to move may use it.
   */
  known(tenant: string): number | null;
  /** Number of tenants with a live upstream watcher (for tests and metrics). */
  active(): number;
  close(): void;
}

export interface HeadWatcherOptions {
  upstream: Upstream;
  /** Upstream longpoll timeout; a real CouchDB answers after it, express-pouchdb ignores it. */
  longpollTimeoutMs?: number;
  retryMs?: number;
  /** How long an upstream feed outlives its last waiter. */
  lingerMs?: number;
  /**
   * Which of the waiting owners have feed rows in (after, upto] (`FeedIndex.ownersWithRows`).
   * With it, a head move wakes only the waiters whose owner it concerns, instead of every waiting
   * device of the tenant, each to find nothing. Null from it, or an error, wakes them all.
   */
  ownersWithRows?: (tenant: string, owners: readonly string[], after: number, upto: number) => Promise<ReadonlySet<string> | null>;
}

interface Waiter {
  cancel(): void;
  /** Whose feed the waiter reads; null wakes it on any move. */
  owner: string | null;
}

interface Watch {
  head: number;
  /** True while the upstream feed is positioned (head read, longpoll open or about to be). */
  live: boolean;
  /** Each waiter's wake-up, and its way out when the watchers close. */
  waiters: Map<() => void, Waiter>;
  controller: AbortController;
  linger: NodeJS.Timeout | null;
}

export function createHeadWatchers(opts: HeadWatcherOptions): HeadWatchers {
  const watches = new Map<string, Watch>();
  const longpollTimeout = opts.longpollTimeoutMs ?? 50_000;
  const retryMs = opts.retryMs ?? 1_000;
  const lingerMs = opts.lingerMs ?? 5_000;
  let closed = false;

  const notify = (w: Watch) => {
    for (const wake of [...w.waiters.keys()]) wake();
  };

  /**
   * The head moved from `prev`: wake the waiters it concerns. A waiter left asleep has no row in
   * (prev, head], and had none up to `prev` when it began to wait (it would have been answered),
   * so by induction it has nothing to read until a later move names its owner.
   */
  const moved = async (tenant: string, w: Watch, prev: number): Promise<void> => {
    if (w.head <= prev) return;
    const owners = [...new Set([...w.waiters.values()].flatMap((x) => (x.owner === null ? [] : [x.owner])))];
    let concerned: ReadonlySet<string> | null = null;
    if (opts.ownersWithRows && owners.length > 1) {
      concerned = await opts.ownersWithRows(tenant, owners, prev, w.head).catch(() => null);
    }
    for (const [wake, x] of [...w.waiters]) if (concerned === null || x.owner === null || concerned.has(x.owner)) wake();
  };

  async function run(tenant: string, w: Watch): Promise<void> {
    const inbox = opts.upstream.inbox(tenant);
    const signal = w.controller.signal;
    let since: string | number | null = null;
    while (!signal.aborted) {
      try {
        if (since === null) {
          // Position first, then read the head: a head written in between wakes the longpoll.
          const info = await inbox.json<{ update_seq: string | number }>({ signal });
          since = info.update_seq;
          w.head = Math.max(w.head, await readHead(inbox, signal));
          w.live = true;
          notify(w);
        }
        const res = await inbox.request({
          path: ['_changes'],
          query: { feed: 'longpoll', filter: '_doc_ids', doc_ids: JSON.stringify([FEED_HEAD_ID]), since, include_docs: true, timeout: longpollTimeout },
          signal,
          unbounded: true,
        });
        if (!res.ok) {
          await res.body?.cancel();
          throw upstreamFailure(res.status);
        }
        // express-pouchdb streams heartbeat newlines before the JSON (STACK-NOTES trap 18).
        const text = (await res.text()).trim();
        const page = JSON.parse(text) as { results: Array<{ doc?: { counter?: unknown } }>; last_seq: string | number };
        since = page.last_seq;
        const prev = w.head;
        for (const row of page.results) {
          const c = row.doc?.counter;
          if (typeof c === 'number' && c > w.head) w.head = c;
        }
        await moved(tenant, w, prev);
      } catch {
        w.live = false;
        if (signal.aborted) break;
        since = null;
        await new Promise((r) => setTimeout(r, retryMs).unref());
      }
    }
  }

  const stop = (tenant: string, w: Watch) => {
    if (watches.get(tenant) === w) watches.delete(tenant);
    w.controller.abort();
  };

  return {
    next(tenant, after, signal, owner) {
      if (closed || signal.aborted) return Promise.resolve(null);
      let w = watches.get(tenant);
      if (!w) {
        w = { head: 0, live: false, waiters: new Map(), controller: new AbortController(), linger: null };
        watches.set(tenant, w);
        void run(tenant, w);
      }
      const watch = w;
      if (watch.linger) {
        clearTimeout(watch.linger);
        watch.linger = null;
      }
      if (watch.head > after) return Promise.resolve(watch.head);
      return new Promise((resolve) => {
        const leave = () => {
          watch.waiters.delete(wake);
          signal.removeEventListener('abort', cancel);
          // Keep the upstream feed a moment: a woken longpoll usually comes straight back.
          if (watch.waiters.size === 0 && !watch.linger && !watch.controller.signal.aborted) {
            watch.linger = setTimeout(() => stop(tenant, watch), lingerMs);
            watch.linger.unref();
          }
        };
        const wake = () => {
          if (watch.head <= after) return;
          leave();
          resolve(watch.head);
        };
        const cancel = () => {
          leave();
          resolve(null);
        };
        watch.waiters.set(wake, { cancel, owner: owner ?? null });
        signal.addEventListener('abort', cancel, { once: true });
      });
    },
    known(tenant) {
      const w = watches.get(tenant);
      return w && w.live && !w.controller.signal.aborted ? w.head : null;
    },
    active: () => watches.size,
    close() {
      closed = true;
      for (const [tenant, w] of [...watches]) {
        if (w.linger) clearTimeout(w.linger);
        stop(tenant, w);
        for (const waiter of [...w.waiters.values()]) waiter.cancel();
        if (w.linger) clearTimeout(w.linger);
      }
    },
  };
}
