import { FerryError } from '../../validators/codes.ts';
import type { Inbox, Upstream } from './upstream.ts';
import { upstreamFailure } from './upstream.ts';

// The pull side: a view-backed feed (DESIGN §4, second design; docs/SYNC.md).
// The worker stamps each status doc with a per-tenant `counter` and then raises `feed:head`.
// A user's `_changes?since=N` is the range [owner, N+1] … [owner, head] of view `_design/ferry/feed`,
// so a pull costs O(log n + the user's own rows). Longpolls wait on one watcher per tenant.

import { DESIGN_NAME as DESIGN_DOC, FEED_HEAD_ID, FEED_VIEW, PENDING_VIEW } from '../../couchdb/design/index.ts';

export interface FeedRow {
  seq: number;
  id: string;
  rev: string;
  doc?: Record<string, unknown>;
}

interface ViewRow {
  id: string;
  key: [string, number];
  value: unknown;
  doc?: Record<string, unknown> & { _rev?: string };
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

export interface FeedQuery {
  owner: string;
  /** Exclusive lower bound (the client's `since`). */
  after: number;
  /** Inclusive upper bound (`feed:head`). */
  upto: number;
  limit: number | null;
  descending: boolean;
  includeDocs: boolean;
  conflicts: boolean;
  signal?: AbortSignal;
}

/** One page of the caller's own rows, in counter order. Never reads another owner's key range. */
export async function queryFeed(inbox: Inbox, q: FeedQuery): Promise<FeedRow[]> {
  if (q.upto <= q.after || q.limit === 0) return [];
  const lo = JSON.stringify([q.owner, q.after + 1]);
  const hi = JSON.stringify([q.owner, q.upto]);
  const body = await inbox.json<{ rows: ViewRow[] }>({
    path: ['_design', DESIGN_DOC, '_view', FEED_VIEW],
    query: {
      startkey: q.descending ? hi : lo,
      endkey: q.descending ? lo : hi,
      descending: q.descending ? true : undefined,
      limit: q.limit ?? undefined,
      include_docs: q.includeDocs ? true : undefined,
      conflicts: q.includeDocs && q.conflicts ? true : undefined,
      reduce: false,
    },
    ...(q.signal ? { signal: q.signal } : {}),
  });
  const out: FeedRow[] = [];
  for (const row of body.rows) {
    if (!Array.isArray(row.key) || row.key[0] !== q.owner || typeof row.key[1] !== 'number') continue;
    const rev = typeof row.value === 'string' ? row.value : row.doc?._rev;
    if (typeof rev !== 'string') continue;
    const item: FeedRow = { seq: row.key[1], id: row.id, rev };
    if (q.includeDocs && row.doc) item.doc = row.doc;
    out.push(item);
  }
  return out;
}

/** The caller's newest counter at or below `upto` (their `update_seq`), 0 if none. */
export async function ownLatest(inbox: Inbox, owner: string, upto: number): Promise<number> {
  if (upto <= 0) return 0;
  const rows = await queryFeed(inbox, { owner, after: 0, upto, limit: 1, descending: true, includeDocs: false, conflicts: false });
  return rows[0]?.seq ?? 0;
}

/** The caller's pending (not yet terminal) mutations, from view `pending` (reduce `_sum`). */
export async function pendingCount(inbox: Inbox, owner: string): Promise<number> {
  const body = await inbox.json<{ rows: Array<{ value: unknown }> }>({
    path: ['_design', DESIGN_DOC, '_view', PENDING_VIEW],
    query: { key: JSON.stringify(owner), reduce: true, group: true },
  });
  const v = body.rows[0]?.value;
  return typeof v === 'number' ? Math.max(0, v) : 0;
}

// ---------------------------------------------------------------------------------------------
// One watcher per tenant

export interface HeadWatchers {
  /**
   * Resolves with the tenant's head once it is above `after`, or with null when `signal` aborts.
   * All waiters of a tenant share one upstream longpoll, which stops when the last one leaves.
   */
  next(tenant: string, after: number, signal: AbortSignal): Promise<number | null>;
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
}

interface Watch {
  head: number;
  /** Each waiter's wake-up, and its way out when the watchers close. */
  waiters: Map<() => void, () => void>;
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
        for (const row of page.results) {
          const c = row.doc?.counter;
          if (typeof c === 'number' && c > w.head) w.head = c;
        }
        notify(w);
      } catch {
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
    next(tenant, after, signal) {
      if (closed || signal.aborted) return Promise.resolve(null);
      let w = watches.get(tenant);
      if (!w) {
        w = { head: 0, waiters: new Map(), controller: new AbortController(), linger: null };
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
        watch.waiters.set(wake, cancel);
        signal.addEventListener('abort', cancel, { once: true });
      });
    },
    active: () => watches.size,
    close() {
      closed = true;
      for (const [tenant, w] of [...watches]) {
        if (w.linger) clearTimeout(w.linger);
        stop(tenant, w);
        for (const cancel of [...w.waiters.values()]) cancel();
        if (w.linger) clearTimeout(w.linger);
      }
    },
  };
}
