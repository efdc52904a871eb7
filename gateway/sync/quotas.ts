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
