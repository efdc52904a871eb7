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
}

export const DEFAULT_QUOTAS: SyncQuotas = {
  writesPerSecond: 20,
  writeBurst: 100,
  maxPending: 10_000,
  maxLocalDocs: 50,
  maxLocalBytes: 64 * 1024,
  pendingRetryAfterSeconds: 30,
};

export interface PendingEstimate {
  /**
   * True when `adding` more mutations keep the user within `max`. Asks `exact` (the ledger's count)
   * only when the running estimate (last exact count plus what this process wrote since, an
   * over-estimate, as statuses only lower it) could pass the limit, or when it is older than
   * `maxAgeMs` (other gateway processes write too).
   */
  allow(key: string, adding: number, exact: () => Promise<number>): Promise<boolean>;
}

export function createPendingEstimate(opts: { max: number; maxAgeMs?: number; now?: () => number }): PendingEstimate {
  const now = opts.now ?? (() => Date.now());
  const maxAge = opts.maxAgeMs ?? 30_000;
  const known = new Map<string, { count: number; at: number }>();
  return {
    async allow(key, adding, exact) {
      let e = known.get(key);
      if (!e || now() - e.at > maxAge || e.count + adding > opts.max) {
        e = { count: await exact(), at: now() };
        known.set(key, e);
        if (known.size > 100_000) known.clear();
      }
      if (e.count + adding > opts.max) return false;
      e.count += adding;
      return true;
    },
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
