// Every request the replication makes to /sync is safe to send twice: reads (db info, _local,
// _changes, _revs_diff, _bulk_get, doc GETs), `_bulk_docs` with `new_edits:false` (an identical
// re-push is a no-op) and checkpoint PUTs (PouchDB reads the checkpoint again on a conflict). So a
// request whose connection failed before any answer came (reset, refused, answer lost) is sent
// once more after a short pause before the replication is told. Without this, one lost packet
// tears down both replications and restarts them from their checkpoints behind a backoff.

import type { FetchLike } from './auth-fetch.ts';

export interface TransientRetryOptions {
  /** Further attempts after the first (default 1). */
  retries?: number;
  /** Pause before a retry, uniform in [delayMs/2, delayMs] (default 200). */
  delayMs?: number;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** A connection that failed without an HTTP answer; not a caller's abort or timeout. */
export function isTransientNetworkError(err: unknown): boolean {
  return err instanceof TypeError;
}

/** A body that can be sent again as it is. */
function replayable(init: RequestInit | undefined): boolean {
  const body = init?.body;
  return body === undefined || body === null || typeof body === 'string';
}

export function withTransientRetry(fetch: FetchLike, opts: TransientRetryOptions = {}): FetchLike {
  const retries = opts.retries ?? 1;
  const delayMs = opts.delayMs ?? 200;
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  return async (input, init) => {
    const canRetry = typeof input !== 'object' || input instanceof URL ? replayable(init) : false;
    for (let attempt = 0; ; attempt++) {
      try {
        return await fetch(input, init);
      } catch (err) {
        if (!canRetry || attempt >= retries || init?.signal?.aborted || !isTransientNetworkError(err)) throw err;
        await sleep(Math.round(delayMs * (0.5 + 0.5 * random())));
        if (init?.signal?.aborted) throw err;
      }
    }
  };
}
