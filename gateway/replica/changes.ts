import { badRequest, flatQuery, isRecord } from '../sync/context.ts';
import { readHead, type HeadWatchers } from '../sync/feed.ts';
import { startStream } from '../sync/changes.ts';
import { scopeChangesQuery, type ChangesRequest } from '../sync/policy.ts';
import { deadlineSignal } from '../../http/deadline.ts';
import { recordDocId } from '../../validators/record.ts';
import { revisionKey, type ReplicaContext } from './context.ts';
import { revOf, tombstoneOf, tombstoneRevOf } from './revisions.ts';
import { formatPosition, parseSince, planFeed, positionAfter, type FeedPlan, type Position } from './seq.ts';
import type { ReplicaFeedRow } from './store.ts';

// `_changes` of /replica, from the index (store.ts): the caller's facilities' rows past `since`,
// and the records that left them, as deletions. Normal, longpoll and continuous (one page, as on
// /sync). A longpoll waits on the tenant's `feed:head` in the records database (one upstream
// watcher per tenant, shared with every waiting device), and after a wake-up waits a moment more
// (`coalesceMs`) so a burst of commits reaches a live device as one answer, not one round trip
// (changes, `_bulk_get`, db info, checkpoint) per commit.

/** Rows per answer when the client gives no `limit` (a normal feed then streams every page). */
const PAGE = 1000;

export interface ChangesOptions {
  watchers: HeadWatchers;
  /** How long a woken longpoll waits for more commits before it answers. */
  coalesceMs: number;
  /** The tag of the caller's scope as the membership says now (read fresh). */
  currentTag(ctx: ReplicaContext): Promise<string>;
  /** How often a waiting longpoll reads the caller's scope again (default 5 s). */
  scopeCheckMs?: number;
}

/** What a waiting longpoll does after each wait: the feed's deadline, a head move, the scope now. */
export type WaitOutcome = 'answer' | 'read' | 'wait';

/**
 * After a wait ends: a scope other than the one this request was served under ends the longpoll
 * at once with no rows (its rows would be read under a scope the caller no longer holds; the
 * next request's `since` carries the old tag and so becomes a catch-up with the deletions). Else
 * the deadline answers, a head move reads the feed, and a scope check that found no change waits on.
 */
export function afterWait(w: { deadline: boolean; headMoved: boolean; scopeCheckDue: boolean; scopeChanged: boolean }): WaitOutcome {
  if (w.scopeChanged || w.deadline) return 'answer';
  if (w.headMoved) return 'read';
  // Only the scope check's own timer sends the request back to waiting. A wait that ended for none
  // of these reasons (the head watchers closed as the gateway stops) answers: waiting again would
  // return at once, and the loop would spin without yielding.
  return w.scopeCheckDue ? 'wait' : 'answer';
}

type ChangeRow = { seq: string; id: string; changes: Array<{ rev: string }>; deleted?: true; doc?: Record<string, unknown> };

function parse(ctx: ReplicaContext): { request: ChangesRequest; since: Position | 'now' } {
  const q = flatQuery(ctx.req);
  const body: unknown = ctx.req.method === 'POST' ? ctx.req.body : undefined;
  // No client filters at all (a filter would have to scan the tenant); `descending` is not served.
  if (q.filter !== undefined || q.doc_ids !== undefined || q.descending === 'true' || (isRecord(body) && Object.keys(body).length > 0)) throw badRequest();
  const { since: _since, ...rest } = q;
  const decision = scopeChangesQuery(rest, undefined, ctx.caller.owner);
  if (decision.kind !== 'ok') throw badRequest();
  const since = parseSince(q.since);
  if (since === null) throw badRequest();
  return { request: decision.request, since };
}

function rowOf(ctx: ReplicaContext, plan: FeedPlan, r: ReplicaFeedRow): ChangeRow {
  const key = revisionKey(ctx, r.id);
  const seq = formatPosition(positionAfter(plan, ctx.tag, r.counter, true));
  if (r.present) return { seq, id: recordDocId(r.id), changes: [{ rev: revOf(key, r.version) }] };
  return { seq, id: recordDocId(r.id), changes: [{ rev: tombstoneRevOf(key, r.version) }], deleted: true };
}

async function withDocs(ctx: ReplicaContext, rows: ChangeRow[], raw: readonly ReplicaFeedRow[]): Promise<void> {
  const live = rows.filter((r) => !r.deleted).map((r) => r.id);
  const docs = new Map<string, Record<string, unknown>>();
  if (live.length > 0) {
    const body = await ctx.records.json<{ rows: Array<{ key: string; doc?: unknown }> }>({ method: 'POST', path: ['_all_docs'], query: { include_docs: true }, body: { keys: live }, signal: ctx.signal });
    for (const row of body.rows) if (isRecord(row.doc)) docs.set(row.key, row.doc);
  }
  rows.forEach((row, n) => {
    const r = raw[n]!;
    if (row.deleted) {
      const { _revisions: _x, ...t } = tombstoneOf(revisionKey(ctx, r.id), row.id, r.version);
      row.doc = t;
      return;
    }
    const doc = docs.get(row.id);
    if (doc) row.doc = doc;
  });
}

export function changes(opts: ChangesOptions) {
  return async function replicaChangesHandler(ctx: ReplicaContext): Promise<void> {
    const { request: r, since } = parse(ctx);
    const tenant = ctx.caller.tenant;
    const position: Position = since === 'now' ? { cursor: await ctx.store.latest(tenant, ctx.scope), base: 0, tag: null, catchUp: false } : since;
    if (since === 'now') position.base = position.cursor;
    const plan = planFeed(position, ctx.tag);
    // A catch-up needs the scope the device held; an unknown tag (never served to this caller) counts as none.
    const oldScope = plan.kind === 'catch-up' ? await ctx.store.scopeOf(tenant, ctx.caller.owner, plan.fromTag) : null;
    const { res } = ctx;
    const limit = r.limit ?? PAGE;

    // The head before the first read: any commit after this read raises it and wakes the wait below.
    let seen = r.feed === 'normal' ? 0 : (opts.watchers.known(tenant) ?? (await readHead(ctx.records, ctx.signal)));
    let rows = r.limit === 0 ? [] : await ctx.store.feed(tenant, ctx.scope, plan, oldScope, limit);

    if (r.feed === 'normal' && r.limit === null) {
      await streamAll(ctx, r, plan, oldScope, rows);
      return;
    }
    if (r.feed !== 'normal' && rows.length === 0 && r.limit !== 0) {
      startStream(res);
      const deadline = deadlineSignal(ctx.signal, r.timeoutMs);
      const beat = r.heartbeatMs ? setInterval(() => res.write('\n'), r.heartbeatMs) : null;
      try {
        while (rows.length === 0) {
          // Wakes on a head move, the deadline, or the next scope check: a membership change made
          // anywhere (operator API, CLI, another gateway) ends this wait within scopeCheckMs.
          // deadlineSignal, not AbortSignal.any + AbortSignal.timeout: that composite can lose its timer to the GC (http/deadline.ts).
          const scopeCheck = deadlineSignal(deadline.signal, opts.scopeCheckMs ?? 5_000);
          const next = await opts.watchers.next(tenant, seen, scopeCheck.signal).finally(() => scopeCheck.clear());
          const scopeCheckDue = scopeCheck.signal.aborted && !deadline.signal.aborted;
          if (next !== null) {
            seen = next;
            await new Promise<void>((resolve) => {
              const t = setTimeout(resolve, opts.coalesceMs);
              deadline.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
            });
          }
          if (ctx.signal.aborted) break;
          const scopeChanged = (await opts.currentTag(ctx)) !== ctx.tag;
          const outcome = afterWait({ deadline: deadline.signal.aborted, headMoved: next !== null, scopeCheckDue, scopeChanged });
          if (outcome === 'answer') break;
          if (outcome === 'read') rows = await ctx.store.feed(tenant, ctx.scope, plan, oldScope, limit);
        }
      } finally {
        if (beat) clearInterval(beat);
        deadline.clear();
      }
    }
    if (ctx.signal.aborted) return;
    const out = rows.map((row) => rowOf(ctx, plan, row));
    if (r.includeDocs) await withDocs(ctx, out, rows);
    const last = positionAfter(plan, ctx.tag, rows.length > 0 ? rows[rows.length - 1]!.counter : null, rows.length >= limit);
    const lastSeq = formatPosition(last);
    if (r.feed === 'continuous') {
      if (!res.headersSent) startStream(res);
      for (const row of out) res.write(`${JSON.stringify(row)}\n`);
      res.end(`${JSON.stringify({ last_seq: lastSeq })}\n`);
      return;
    }
    const body = JSON.stringify({ results: out, last_seq: lastSeq, pending: 0 });
    if (res.headersSent) res.end(body);
    else {
      res.status(200);
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('Cache-Control', 'must-revalidate');
      res.end(body);
    }
  };
}

/** A normal feed without `limit` (the CouchDB replicator's one-shot pull): every page, streamed. */
async function streamAll(ctx: ReplicaContext, r: ChangesRequest, first: FeedPlan, oldScope: Parameters<ReplicaContext['store']['feed']>[3], rows: ReplicaFeedRow[]): Promise<void> {
  startStream(ctx.res);
  ctx.res.write('{"results":[');
  let plan = first;
  let page = rows;
  let written = 0;
  let last: ReturnType<typeof positionAfter>;
  for (;;) {
    const out = page.map((row) => rowOf(ctx, plan, row));
    if (r.includeDocs) await withDocs(ctx, out, page);
    for (const row of out) ctx.res.write(`${written++ > 0 ? ',' : ''}${JSON.stringify(row)}`);
    const full = page.length >= PAGE;
    last = positionAfter(plan, ctx.tag, page.length > 0 ? page[page.length - 1]!.counter : null, full);
    if (!full || ctx.signal.aborted) break;
    plan = planFeed(last, ctx.tag);
    page = await ctx.store.feed(ctx.caller.tenant, ctx.scope, plan, oldScope, PAGE);
  }
  ctx.res.end(`],"last_seq":${JSON.stringify(formatPosition(last))},"pending":0}`);
}
