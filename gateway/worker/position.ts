import type { Queryable } from '../../sql/database.ts';
import { LEASE_HELD } from './schema.ts';
import { LeaseLost, type Fence } from './lease.ts';

// The worker's durable positions per tenant: the inbox feed checkpoint, the next feed counter
// for status docs (view-backed pull feed, DESIGN §4), and the index of mutation ids seen.

export interface PositionStore {
  checkpoint(tenant: string): Promise<string | null>;
  /** Fenced: throws LeaseLost when the lease lapsed. */
  saveCheckpoint(lease: Fence, since: string): Promise<void>;
  /** Allocates `n` consecutive counters under the lease; returns the first. */
  allocateCounters(lease: Fence, n: number): Promise<number>;
  /** The highest counter ever allocated (0 when none). */
  lastCounter(tenant: string): Promise<number>;
  /** Remembers which owner and entity each mutation id belongs to. */
  recordSeen(tenant: string, rows: ReadonlyArray<{ mid: string; owner: string; entity: string | null }>): Promise<void>;
  seen(tenant: string, mid: string): Promise<{ owner: string; entity: string | null } | null>;
}

export function createPositionStore(db: Queryable): PositionStore {
  return {
    async checkpoint(tenant) {
      const { rows } = await db.query<{ since: string }>('SELECT since FROM worker_checkpoints WHERE tenant = $1', [tenant]);
      return rows[0]?.since ?? null;
    },
    async saveCheckpoint(lease, since) {
      const res = await db.query(
        `INSERT INTO worker_checkpoints (tenant, since, fence) SELECT $1::text, $4::text, $3::bigint WHERE ${LEASE_HELD}
         ON CONFLICT (tenant) DO UPDATE SET since = EXCLUDED.since, fence = EXCLUDED.fence, updated_at = now()`,
        [lease.tenant, lease.holder, lease.fence, since],
      );
      if (res.rowCount !== 1) throw new LeaseLost(lease.tenant);
    },
    async allocateCounters(lease, n) {
      const { rows } = await db.query<{ next: string }>(
        `INSERT INTO worker_feed_counters (tenant, next) SELECT $1::text, 1 + $4::bigint WHERE ${LEASE_HELD}
         ON CONFLICT (tenant) DO UPDATE SET next = worker_feed_counters.next + $4::bigint
         RETURNING next`,
        [lease.tenant, lease.holder, lease.fence, n],
      );
      if (!rows[0]) throw new LeaseLost(lease.tenant);
      return Number(rows[0].next) - n;
    },
    async lastCounter(tenant) {
      const { rows } = await db.query<{ next: string }>('SELECT next FROM worker_feed_counters WHERE tenant = $1', [tenant]);
      return rows[0] ? Number(rows[0].next) - 1 : 0;
    },
    async recordSeen(tenant, rows) {
      if (rows.length === 0) return;
      await db.query(
        `INSERT INTO worker_mutations (tenant, mid, owner, entity)
         SELECT $1::text, u.mid, u.owner, u.entity FROM unnest($2::text[], $3::text[], $4::text[]) AS u(mid, owner, entity)
         ON CONFLICT (tenant, mid) DO NOTHING`,
        [tenant, rows.map((r) => r.mid), rows.map((r) => r.owner), rows.map((r) => r.entity)],
      );
    },
    async seen(tenant, mid) {
      const { rows } = await db.query<{ owner: string; entity: string | null }>('SELECT owner, entity FROM worker_mutations WHERE tenant = $1 AND mid = $2', [tenant, mid]);
      return rows[0] ?? null;
    },
  };
}
