import type { Response } from 'express';
import { badRequest, flatQuery, type SyncContext } from './context.ts';
import { docsOfRows, readFeed, readableHead, type FeedPage, type FeedRow, type HeadWatchers } from './feed.ts';
import { scopeChangesQuery, type ChangesRequest } from './policy.ts';
import { deadlineSignal } from '../../http/deadline.ts';

// `_changes` of /sync, answered from the feed index (docs/SYNC.md): normal, longpoll and
// continuous (the CouchDB replicator's live mode). A waiting longpoll streams heartbeat newlines
// (trap 18), shares one upstream watcher per tenant, and stops all work when the client leaves.

const NORMAL_PAGE = 500;
/** Rows per answer of a longpoll/continuous request without `limit`; the client asks again from `last_seq`. */
const LIVE_PAGE = 1000;

type ChangeRow = { seq: number; id: string; changes: Array<{ rev: string }>; doc?: Record<string, unknown> };

function toChange(row: FeedRow): ChangeRow {
  const out: ChangeRow = { seq: row.seq, id: row.id, changes: [{ rev: row.rev }] };
  if (row.doc) out.doc = row.doc;
  return out;
}

/** Rows for `filter=_doc_ids`: only the caller's own status ids were kept; bounded by their number. */
async function docIdRows(ctx: SyncContext, r: ChangesRequest, after: number, upto: number, limit: number): Promise<FeedPage> {
  const ids = r.docIds ?? [];
  const found = await ctx.feed.ofIds(ctx.caller.tenant, ctx.caller.owner, ids, after, upto);
  found.sort((a, b) => (r.descending ? b.counter - a.counter : a.counter - b.counter));
  const rows = await docsOfRows(ctx.inbox, ctx.caller.owner, found, { includeDocs: r.includeDocs, conflicts: r.conflicts, signal: ctx.signal });
  // Cut only after the absent docs are gone, so a short page really is the end.
  const page = rows.slice(0, limit);
  return { rows: page, scanned: page.length > 0 ? page[page.length - 1]!.seq : null };
}

function fetchRows(ctx: SyncContext, r: ChangesRequest, after: number, upto: number, limit: number): Promise<FeedPage> {
  if (r.docIds) return docIdRows(ctx, r, after, upto, limit);
  return readFeed(ctx.feed, ctx.inbox, {
    tenant: ctx.caller.tenant,
    owner: ctx.caller.owner,
    after,
    upto,
    limit,
    descending: r.descending,
    includeDocs: r.includeDocs,
    conflicts: r.conflicts,
    signal: ctx.signal,
  });
}

/**
 * `last_seq` of an answer: the last row, or past the caller's own rows that had no doc to show;
 * with nothing of the caller's, the `since` asked for (the tenant's head is never revealed).
 */
function lastSeqOf(page: FeedPage, since: number, descending: boolean): number {
  const last = page.rows.length > 0 ? page.rows[page.rows.length - 1]!.seq : since;
  if (descending || page.scanned === null) return last;
  return Math.max(last, page.scanned);
}

export function startStream(res: Response): void {
  res.status(200);
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Cache-Control', 'must-revalidate');
  res.flushHeaders();
}

export function changes(watchers: HeadWatchers) {
  return async function changesHandler(ctx: SyncContext): Promise<void> {
    const decision = scopeChangesQuery(flatQuery(ctx.req), ctx.req.method === 'POST' ? ctx.req.body : undefined, ctx.caller.owner);
    if (decision.kind !== 'ok') throw badRequest();
    const r = decision.request;
    // A live feed waits for the head to move anyway, so the watcher's head will do.
    let head = await readableHead(ctx.feed, ctx.inbox, ctx.caller.tenant, ctx.signal, r.feed === 'normal' ? null : watchers.known(ctx.caller.tenant));
    const since = r.since === 'now' ? await ctx.feed.latest(ctx.caller.tenant, ctx.caller.owner, head) : r.since;
    const { res } = ctx;

    if (r.feed === 'normal' && r.limit === null && !r.docIds) {
      await streamAll(ctx, r, since, head);
      return;
    }

    const limit = r.limit ?? (r.feed === 'normal' ? Number.MAX_SAFE_INTEGER : LIVE_PAGE);
    let page: FeedPage = r.limit === 0 ? { rows: [], scanned: null } : await fetchRows(ctx, r, since, head, limit);
    if (r.feed !== 'normal' && page.rows.length === 0 && r.limit !== 0) {
      // Wait for the tenant's head to move past what we have read, then look again.
      startStream(res);
      const deadline = deadlineSignal(ctx.signal, r.timeoutMs);
      const beat = r.heartbeatMs ? setInterval(() => res.write('\n'), r.heartbeatMs) : null;
      try {
        let seen = head;
        while (page.rows.length === 0) {
          const next = await watchers.next(ctx.caller.tenant, seen, deadline.signal, ctx.caller.owner);
          if (next === null) break;
          seen = next;
          if (!(await ctx.feed.ready(ctx.caller.tenant))) continue;
          head = next;
          page = await fetchRows(ctx, r, since, head, limit);
        }
      } finally {
        if (beat) clearInterval(beat);
        deadline.clear();
      }
    }
    if (ctx.signal.aborted) return;
    const rows = page.rows;
    const lastSeq = lastSeqOf(page, since, r.descending);
    if (r.feed === 'continuous') {
      if (!res.headersSent) startStream(res);
      for (const row of rows) res.write(`${JSON.stringify(toChange(row))}\n`);
      res.end(`${JSON.stringify({ last_seq: lastSeq })}\n`);
      return;
    }
    const body = JSON.stringify({ results: rows.map(toChange), last_seq: lastSeq, pending: 0 });
    if (res.headersSent) res.end(body);
    else {
      res.status(200);
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('Cache-Control', 'must-revalidate');
      res.end(body);
    }
  };
}

/** A normal feed without `limit` (the CouchDB replicator's one-shot pull): streamed in pages. */
async function streamAll(ctx: SyncContext, r: ChangesRequest, since: number, head: number): Promise<void> {
  const { res } = ctx;
  startStream(res);
  res.write('{"results":[');
  let after = since;
  let upto = head;
  let first = true;
  let last = since;
  for (;;) {
    const page = await fetchRows(ctx, r, r.descending ? since : after, r.descending ? upto : head, NORMAL_PAGE);
    for (const row of page.rows) {
      res.write(`${first ? '' : ','}${JSON.stringify(toChange(row))}`);
      first = false;
    }
    if (page.scanned === null || ctx.signal.aborted) break;
    if (r.descending) upto = page.scanned - 1;
    else after = page.scanned;
    last = r.descending ? (page.rows.length > 0 ? page.rows[page.rows.length - 1]!.seq : last) : Math.max(last, page.scanned);
    if (page.rows.length < NORMAL_PAGE) break;
  }
  res.end(`],"last_seq":${last},"pending":0}`);
}
