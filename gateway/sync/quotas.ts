// Per-user quotas of /sync (DESIGN §5). All configurable; these are the contract's defaults.

export interface SyncQuotas {
  /** Sustained write requests per second per (tenant, owner). */
  writesPerSecond: number;
  /** Burst of write requests per (tenant, owner). */
  writeBurst: number;
  /** Mutations per user not yet terminal (view `pending`). */
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

export type RateDecision = { kind: 'allow' } | { kind: 'limited'; retryAfterSeconds: number };

interface Bucket {
  tokens: number;
  at: number;
}

export interface RateLimiter {
  take(key: string): RateDecision;
}

/**
 * A token bucket per key, in this process's memory: with several gateway processes each enforces
 * its own share (documented in docs/SYNC.md). Idle buckets are swept so the map stays small.
 */
export function createRateLimiter(opts: { ratePerSecond: number; burst: number; now?: () => number }): RateLimiter {
  const now = opts.now ?? (() => Date.now());
  const buckets = new Map<string, Bucket>();
  let lastSweep = now();
  const fullAfterMs = (opts.burst / opts.ratePerSecond) * 1000;
  return {
    take(key) {
      const t = now();
      if (t - lastSweep > 60_000) {
        for (const [k, b] of buckets) if (t - b.at > fullAfterMs) buckets.delete(k);
        lastSweep = t;
      }
      const b = buckets.get(key) ?? { tokens: opts.burst, at: t };
      b.tokens = Math.min(opts.burst, b.tokens + ((t - b.at) / 1000) * opts.ratePerSecond);
      b.at = t;
      buckets.set(key, b);
      if (b.tokens >= 1) {
        b.tokens -= 1;
        return { kind: 'allow' };
      }
      return { kind: 'limited', retryAfterSeconds: Math.max(1, Math.ceil((1 - b.tokens) / opts.ratePerSecond)) };
    },
  };
}

export interface PendingEstimate {
  /**
   * True when `adding` more mutations keep the user within `max`. Asks `exact` (the `pending` view)
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
