import { CouchError, type CouchDb } from '../../couchdb/client.ts';
import type { Fence } from './lease.ts';
import { LeaseLost } from './lease.ts';
import type { PositionStore } from './position.ts';
import type { WorkerStatusDoc } from './status.ts';

// Writes status docs in batches for the view-backed pull feed (DESIGN §4 "What the device sees"):
// allocate consecutive counters under the lease, write the batch with `_bulk_docs`, and only then
// move `feed:head` up to the batch's highest counter, so a reader never skips a lower counter
// that lands later. Every doc carries the lease's fencing token.

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
  /** Resolves with the new revision once the doc is written and `feed:head` covers it. */
  write(doc: StatusWrite): Promise<string>;
  /** Moves `feed:head` up to every counter ever allocated (after taking over a lease). */
  healHead(): Promise<void>;
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

export function createStatusWriter(opts: StatusWriterOptions): StatusWriter {
  const { db, lease, positions } = opts;
  const maxBatch = opts.maxBatch ?? 200;
  let queue: Queued[] = [];
  let flushing = false;
  let head: FeedHead | null = null;

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

  const flush = async (batch: Queued[]): Promise<void> => {
    opts.assertLease();
    const first = await positions.allocateCounters(lease, batch.length);
    const docs = batch.map((q, i) => ({ ...q.doc, counter: first + i, fence: lease.fence }));
    const results = await db.bulkDocs(docs);
    let top = 0;
    const settle: Array<() => void> = [];
    batch.forEach((q, i) => {
      const r = results[i];
      if (r && !r.error && r.rev) {
        top = Math.max(top, first + i);
        const rev = r.rev;
        settle.push(() => q.resolve(rev));
      } else if (r?.error === 'conflict') {
        settle.push(() => q.reject(new StatusConflict(q.doc._id)));
      } else if (r?.error === 'forbidden' || r?.error === 'unauthorized') {
        // The inbox refuses a lower fence: another worker holds the tenant now.
        settle.push(() => q.reject(new LeaseLost(lease.tenant)));
      } else {
        settle.push(() => q.reject(new Error(`status write failed: ${r?.error ?? 'no result'}`)));
      }
    });
    if (top > 0) await moveHead(top);
    for (const s of settle) s();
  };

  const pump = async (): Promise<void> => {
    if (flushing) return;
    flushing = true;
    try {
      // Let the writes of this turn of the event loop gather into one batch.
      await new Promise((r) => setImmediate(r));
      while (queue.length > 0) {
        const batch = queue.slice(0, maxBatch);
        queue = queue.slice(batch.length);
        try {
          await flush(batch);
        } catch (err) {
          for (const q of batch) q.reject(err);
        }
      }
    } finally {
      flushing = false;
    }
  };

  return {
    write(doc) {
      return new Promise<string>((resolve, reject) => {
        queue.push({ doc, resolve, reject });
        void pump();
      });
    },
    async healHead() {
      opts.assertLease();
      const last = await positions.lastCounter(lease.tenant);
      await moveHead(last);
    },
  };
}
