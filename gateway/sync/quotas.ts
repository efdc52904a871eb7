import type { Queryable } from '../../sql/database.ts';

// Per-user quotas of /sync (DESIGN §5). All configurable; these are the contract's defaults.

export interface SyncQuotas {
  /** Sustained write requests per second per (tenant, owner). */
  writesPerSecond: number;
  /** Burst of write requests per (tenant, owner). */
  writeBurst: number;
  /** Mutations per user not yet terminal (platform table `pending_mutations`). */
  maxPending: number;
  /** `_local` docs per user. */
  maxLocalDocs: number;
  /** Bytes per `_local` doc. */
  maxLocalBytes: number;
  /** Seconds a client is told to wait after a pending-quota refusal. */
  pendingRetryAfterSeconds: number;
  /** Sustained read requests (everything that is not a write) per second per (tenant, owner). */
  readsPerSecond: number;
  /** Burst of read requests per (tenant, owner). */
  readBurst: number;
  /** Open longpoll/continuous `_changes` feeds per (tenant, owner) and gateway process. */
  maxLiveFeeds: number;
}

export const DEFAULT_QUOTAS: SyncQuotas = {
  writesPerSecond: 20,
  writeBurst: 100,
  maxPending: 10_000,
  maxLocalDocs: 50,
  maxLocalBytes: 64 * 1024,
  pendingRetryAfterSeconds: 30,
  // A pull costs ~3 reads a batch (`_changes`, `_bulk_get`, db info): at 100/s a stock PouchDB
  // (batch_size 100) still pulls ~3,300 docs/s after the burst, close to the server's own ceiling,
  // and the burst alone covers a first pull of ~30,000 docs.
  readsPerSecond: 100,
  readBurst: 1000,
  // One live pull per device; a user with a phone, a tablet and two browser tabs fits.
  maxLiveFeeds: 4,
};

export interface PendingEstimate {
  /**
   * Reserves room for `adding` more mutations when that keeps the user within `max`, else null.
   * Asks `exact` (the ledger's count) only when the running estimate (last exact count plus what
   * this process wrote since, an over-estimate, as statuses only lower it) could pass the limit,
   * or when it is older than `maxAgeMs` (other gateway processes write too).
   */
  reserve(key: string, adding: number, exact: () => Promise<number>): Promise<PendingReservation | null>;
  /** The running estimate for `key` (undefined when none is kept); for tests and diagnostics. */
  peek(key: string): number | undefined;
}

/**
 * Room held for one write. Settle it exactly once: `commit(n)` with how many the inbox accepted
 * (n ≤ reserved), or `release()` when the write failed. Only what was reserved on the estimate
 * still in use is given back, so a settle after a fresh exact count never subtracts from it.
 */
export interface PendingReservation {
  commit(accepted: number): void;
  release(): void;
}

interface Estimate {
  count: number;
  at: number;
}

export function createPendingEstimate(opts: { max: number; maxAgeMs?: number; now?: () => number }): PendingEstimate {
  const now = opts.now ?? (() => Date.now());
  const maxAge = opts.maxAgeMs ?? 30_000;
  const known = new Map<string, Estimate>();
  return {
    async reserve(key, adding, exact) {
      let e = known.get(key);
      if (!e || now() - e.at > maxAge || e.count + adding > opts.max) {
        e = { count: await exact(), at: now() };
        known.set(key, e);
        if (known.size > 100_000) known.clear();
      }
      if (e.count + adding > opts.max) return null;
      e.count += adding;
      const held = e;
      let settled = false;
      const giveBack = (n: number) => {
        if (settled) return;
        settled = true;
        // The estimate was replaced (re-counted) meanwhile: the exact count it started from already
        // says what the inbox holds, and taking `n` off it could push it below what is real, even
        // below zero, which would then let the user past `max`.
        if (known.get(key) !== held || n <= 0) return;
        held.count = Math.max(0, held.count - n);
      };
      return {
        commit: (accepted) => giveBack(adding - Math.min(adding, Math.max(0, accepted))),
        release: () => giveBack(adding),
      };
    },
    peek: (key) => known.get(key)?.count,
  };
}

/**
 * Each user's mutations in the inbox and whether the worker made them terminal (platform table
 * `pending_mutations`). The gateway adds the ids the inbox accepted; the worker's status writer
 * marks terminal ones in the statement that allocates its counters (gateway/worker/position.ts).
 * Either may come first: the row keeps `terminal` once set, so the count is right in both orders,
 * never negative, and a re-pushed id is one row.
 */
export interface PendingLedger {
  /** Mutations of the user not yet terminal. */
  count(tenant: string, owner: string): Promise<number>;
  /** Records mutation ids the inbox has just accepted for the user. */
  accepted(tenant: string, owner: string, mids: readonly string[]): Promise<void>;
}

export function createPendingLedger(db: Queryable): PendingLedger {
  return {
    async count(tenant, owner) {
      const { rows } = await db.query<{ n: string | number }>(
        'SELECT count(*) AS n FROM pending_mutations WHERE tenant = $1 AND owner = $2 AND NOT terminal',
        [tenant, owner],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async accepted(tenant, owner, mids) {
      if (mids.length === 0) return;
      await db.query(
        `INSERT INTO pending_mutations (tenant, owner, mid, terminal) SELECT $1::text, $2::text, m, false FROM unnest($3::text[]) AS m
         ON CONFLICT (tenant, owner, mid) DO NOTHING`,
        [tenant, owner, [...new Set(mids)]],
      );
    },
  };
}
