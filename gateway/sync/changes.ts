import type { Response } from 'express';
import { badRequest, flatQuery, isRecord, type SyncContext } from './context.ts';
import { ownLatest, queryFeed, readHead, type FeedRow, type HeadWatchers } from './feed.ts';
import { scopeChangesQuery, type ChangesRequest } from './policy.ts';

// `_changes` of /sync, answered from the view-backed feed (docs/SYNC.md): normal, longpoll and
// continuous (the CouchDB replicator's live mode). A waiting longpoll streams heartbeat newlines
// (trap 18), shares one upstream watcher per tenant, and stops all work when the client leaves.

const NORMAL_PAGE = 500;

type ChangeRow = { seq: number; id: string; changes: Array<{ rev: string }>; doc?: Record<string, unknown> };

function toChange(row: FeedRow): ChangeRow {
  const out: ChangeRow = { seq: row.seq, id: row.id, changes: [{ rev: row.rev }] };
  if (row.doc) out.doc = row.doc;
  return out;
}

/** Rows for `filter=_doc_ids`: only the caller's own status ids were kept; bounded by their number. */
async function docIdRows(ctx: SyncContext, r: ChangesRequest, after: number, upto: number): Promise<FeedRow[]> {
  const ids = r.docIds ?? [];
  if (ids.length === 0 || upto <= after) return [];
  const { rows } = await ctx.inbox.json<{ rows: Array<{ key: string; doc?: Record<string, unknown> | null }> }>({
    method: 'POST',
    path: ['_all_docs'],
    query: { include_docs: true, conflicts: r.conflicts || undefined },
    body: { keys: ids },
    signal: ctx.signal,
  });
  const out: FeedRow[] = [];
  for (const row of rows) {
    const doc = row.doc;
    if (!isRecord(doc) || doc.owner !== ctx.caller.owner || typeof doc.counter !== 'number' || typeof doc._rev !== 'string') continue;
    if (doc.counter <= after || doc.counter > upto) continue;
    out.push({ seq: doc.counter, id: row.key, rev: doc._rev, ...(r.includeDocs ? { doc } : {}) });
  }
  out.sort((a, b) => (r.descending ? b.seq - a.seq : a.seq - b.seq));
  return r.limit === null ? out : out.slice(0, r.limit);
}

function fetchRows(ctx: SyncContext, r: ChangesRequest, after: number, upto: number, limit: number | null): Promise<FeedRow[]> {
  if (r.docIds) return docIdRows(ctx, { ...r, limit }, after, upto);
  return queryFeed(ctx.inbox, {
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

function startStream(res: Response): void {
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
    let head = await readHead(ctx.inbox, ctx.signal);
    const since = r.since === 'now' ? await ownLatest(ctx.inbox, ctx.caller.owner, head) : r.since;
    const { res } = ctx;

    if (r.feed === 'normal' && r.limit === null && !r.docIds) {
      await streamAll(ctx, r, since, head);
      return;
    }

    let rows = await fetchRows(ctx, r, since, head, r.limit);
    if (r.feed !== 'normal' && rows.length === 0 && r.limit !== 0) {
      // Wait for the tenant's head to move past what we have read, then look again.
      startStream(res);
      const deadline = AbortSignal.any([ctx.signal, AbortSignal.timeout(r.timeoutMs)]);
      const beat = r.heartbeatMs ? setInterval(() => res.write('\n'), r.heartbeatMs) : null;
      try {
        while (rows.length === 0) {
          const next = await watchers.next(ctx.caller.tenant, head, deadline);
          if (next === null) break;
          head = next;
          rows = await fetchRows(ctx, r, since, head, r.limit);
        }
      } finally {
        if (beat) clearInterval(beat);
      }
    }
    if (ctx.signal.aborted) return;
    const lastSeq = rows.length > 0 ? rows[rows.length - 1]!.seq : since;
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
    const rows = r.descending ? await fetchRows(ctx, r, since, upto, NORMAL_PAGE) : await fetchRows(ctx, r, after, head, NORMAL_PAGE);
    for (const row of rows) {
      res.write(`${first ? '' : ','}${JSON.stringify(toChange(row))}`);
      first = false;
      last = row.seq;
    }
    if (rows.length < NORMAL_PAGE || ctx.signal.aborted) break;
    if (r.descending) upto = last - 1;
    else after = last;
  }
  res.end(`],"last_seq":${last},"pending":0}`);
}
