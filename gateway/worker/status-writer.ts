import { CouchError, type CouchDb } from '../../couchdb/client.ts';
import { isTerminal, parseInboxDocId, type StatusState } from '../../validators/mutation.ts';
import type { Fence } from './lease.ts';
import { LeaseLost } from './lease.ts';
import type { PositionStore } from './position.ts';
import type { WorkerStatusDoc } from './status.ts';

// Writes status docs in batches for the pull feed (DESIGN §4 "What the device sees"; docs/SYNC.md):
// allocate consecutive counters under the lease (the same statement puts each doc in the platform
// database's feed index at its counter and drops terminal mutations from the pending quota), write
// the batch with `_bulk_docs`, and only then move `feed:head` up to the batch's highest counter,
// so a reader never passes a counter whose batch has not landed. Every doc carries the lease's
// fencing token.

export const FEED_HEAD_ID = 'feed:head';

export type StatusWrite = Omit<WorkerStatusDoc, 'fence' | 'counter'> & { _rev?: string | undefined; _deleted?: boolean };

/** Someone else changed the status doc since it was read; read it again and decide again. */
export class StatusConflict extends Error {
  override name = 'StatusConflict';
  constructor(readonly id: string) {
    super(`status ${id} changed underneath`);
  }
}

export interface StatusWriter {
  /** Resolves with the new revision once the doc is written; `feed:head` follows in counter order. */
  write(doc: StatusWrite): Promise<string>;
  /**
   * After taking over a lease: indexes the inbox's status docs and mutations once if they predate
   * the feed index (platform tables `feed_index`, `pending_mutations`), then moves `feed:head` up to
   * every counter ever allocated.
   */
  healHead(): Promise<void>;
  /** Resolves when the head moves queued so far are done. */
  settled(): Promise<void>;
}

export interface StatusWriterOptions {
  db: CouchDb;
  lease: Fence;
  positions: PositionStore;
  /** Throws LeaseLost when the lease can no longer be trusted locally. */
  assertLease: () => void;
  maxBatch?: number;
}

type Queued = { doc: StatusWrite; resolve: (rev: string) => void; reject: (err: unknown) => void };
type FeedHead = { _id: string; _rev?: string; type: 'feed-head'; counter: number; fence: number };
/** Counters handed to one batch; the head may pass them once every earlier batch is done too. */
type Allocation = { first: number; last: number; done: boolean };

const MAX_FLUSHES = 4;
const BACKFILL_PAGE = 1000;


export function createStatusWriter(opts: StatusWriterOptions): StatusWriter {
  const { db, lease, positions } = opts;
  const maxBatch = opts.maxBatch ?? 200;
  let queue: Queued[] = [];
  let flushes = 0;
  let scheduled = false;
  let head: FeedHead | null = null;
  const allocations: Allocation[] = [];
  let headChain: Promise<void> = Promise.resolve();
  let headRetry: NodeJS.Timeout | undefined;

  const readHead = async (): Promise<FeedHead> => {
    const found = await db.get<FeedHead>(FEED_HEAD_ID);
    return found ?? { _id: FEED_HEAD_ID, type: 'feed-head', counter: 0, fence: lease.fence };
  };

  const moveHead = async (counter: number): Promise<void> => {
    for (let attempt = 0; attempt < 10; attempt++) {
      head ??= await readHead();
      if (head.counter >= counter && head.fence >= lease.fence) return;
      const next: FeedHead = { ...head, type: 'feed-head', counter: Math.max(head.counter, counter), fence: lease.fence };
      try {
        const { rev } = await db.put(next);
        head = { ...next, _rev: rev };
        return;
      } catch (err) {
        head = null;
        if (err instanceof CouchError && err.status === 409) continue;
        if (err instanceof CouchError && err.status === 403) throw new LeaseLost(lease.tenant);
        throw err;
      }
    }
    throw new Error('feed:head kept changing');
  };

  /**
   * Moves feed:head over the done prefix of allocations, in allocation order, one move at a time.
   * Batches still being written keep it below their counters, so no reader skips them.
   */
  const advanceHead = (): void => {
    headChain = headChain.then(async () => {
      let top = 0;
      while (allocations[0]?.done) top = allocations.shift()!.last;
      if (top === 0) return;
      try {
        await moveHead(top);
      } catch (err) {
        if (err instanceof LeaseLost) return; // the successor heals the head when it takes over
        // Try again shortly; a later batch would move it too.
        allocations.unshift({ first: top, last: top, done: true });
        clearTimeout(headRetry);
        headRetry = setTimeout(advanceHead, 1_000);
        headRetry.unref();
      }
    });
  };

  /** Walks one id prefix of the inbox in pages of `_all_docs`. */
  const walk = async (prefix: 'm:' | 's:', includeDocs: boolean, page: (rows: Array<{ id: string; doc?: Record<string, unknown> }>) => Promise<void>) => {
    let startkey: string = prefix;
    let after: string | null = null;
    for (;;) {
      opts.assertLease();
      const { rows } = await db.allDocs<Record<string, unknown>>({ startkey, endkey: `${prefix}\ufff0`, include_docs: includeDocs, limit: BACKFILL_PAGE + 1 });
      const fresh = rows.filter((r) => r.id !== after);
      await page(fresh.map((r) => ({ id: r.id, ...(r.doc ? { doc: r.doc } : {}) })));
      if (rows.length < BACKFILL_PAGE + 1) return;
      after = rows[rows.length - 1]!.id;
      startkey = after;
    }
  };

  /** Indexes what the inbox held before the feed index existed; idempotent, so a takeover mid-way just redoes it. */
  const backfill = async (): Promise<void> => {
    await walk('m:', false, async (rows) => {
      const mutations = rows.flatMap((r) => {
        const ref = parseInboxDocId(r.id);
        return ref?.kind === 'mutation' ? [{ owner: ref.owner, mid: ref.mid }] : [];
      });
      await positions.backfillFeed(lease, { statuses: [], mutations, terminal: [] });
    });
    await walk('s:', true, async (rows) => {
      const statuses: Array<{ id: string; owner: string; counter: number }> = [];
      const terminal: Array<{ owner: string; mid: string }> = [];
      for (const r of rows) {
        const ref = parseInboxDocId(r.id);
        if (ref?.kind !== 'status' || !r.doc) continue;
        const counter = r.doc.counter;
        if (typeof counter === 'number' && Number.isSafeInteger(counter) && counter > 0) statuses.push({ id: r.id, owner: ref.owner, counter });
        if (isTerminal(r.doc.state as StatusState)) terminal.push({ owner: ref.owner, mid: ref.mid });
      }
      await positions.backfillFeed(lease, { statuses, mutations: [], terminal });
    });
    await positions.finishFeedBackfill(lease);
  };

  const flush = async (batch: Queued[]): Promise<void> => {
    let allocation: Allocation | null = null;
    try {
      opts.assertLease();
      const first = await positions.allocateFeed(
        lease,
        batch.map((q) => ({ id: q.doc._id, owner: q.doc.owner, mid: q.doc.mutation, terminal: isTerminal(q.doc.state) })),
      );
      allocation = { first, last: first + batch.length - 1, done: false };
      // Kept in counter order: concurrent allocations can come back in any order.
      const at = allocations.findIndex((a) => a.first > first);
      if (at < 0) allocations.push(allocation);
      else allocations.splice(at, 0, allocation);
      const docs = batch.map((q, i) => ({ ...q.doc, counter: first + i, fence: lease.fence }));
      const results = await db.bulkDocs(docs);
      // Matched by id when the batch's ids are distinct: express-pouchdb may answer in another order.
      const byId = new Map(results.map((r) => [r.id, r]));
      const distinct = byId.size === batch.length && new Set(batch.map((q) => q.doc._id)).size === batch.length;
      const landed: Array<{ id: string; counter: number; rev: string }> = [];
      const outcomes = batch.map((q, i): (() => void) => {
        const r = distinct ? byId.get(q.doc._id) : results[i];
        if (r && !r.error && r.rev) {
          const rev = r.rev;
          // A deletion (of a conflict branch) leaves the doc at another leaf: its rev is not the doc's.
          if (!q.doc._deleted && distinct) landed.push({ id: q.doc._id, counter: first + i, rev });
          return () => q.resolve(rev);
        }
        if (r?.error === 'conflict') return () => q.reject(new StatusConflict(q.doc._id));
        // The inbox refuses a lower fence: another worker holds the tenant now.
        if (r?.error === 'forbidden' || r?.error === 'unauthorized') return () => q.reject(new LeaseLost(lease.tenant));
        return () => q.reject(new Error(`status write failed: ${r?.error ?? 'no result'}`));
      });
      // Before the head may pass the batch (best effort: a row without its rev is read from the
      // inbox), and before the writes resolve, so `settled()` after them covers this batch's head move.
      await positions.recordRevs(lease.tenant, landed).catch(() => undefined);
      for (const settle of outcomes) settle();
    } catch (err) {
      for (const q of batch) q.reject(err);
    } finally {
      // Counters of docs that failed are holes: they never land, so the head may pass them.
      if (allocation) {
        allocation.done = true;
        advanceHead();
      }
    }
  };

  const pump = (): void => {
    while (queue.length > 0 && flushes < MAX_FLUSHES) {
      const batch = queue.slice(0, maxBatch);
      queue = queue.slice(batch.length);
      flushes++;
      void flush(batch).finally(() => {
        flushes--;
        pump();
      });
    }
  };

  const schedulePump = (): void => {
    if (scheduled) return;
    scheduled = true;
    // Let the writes of this turn of the event loop gather into one batch.
    setImmediate(() => {
      scheduled = false;
      pump();
    });
  };

  return {
    write(doc) {
      return new Promise<string>((resolve, reject) => {
        queue.push({ doc, resolve, reject });
        schedulePump();
      });
    },
    async healHead() {
      opts.assertLease();
      if (await positions.feedBackfillPending(lease.tenant)) await backfill();
      const last = await positions.lastCounter(lease.tenant);
      await moveHead(last);
    },
    settled: () => headChain,
  };
}
