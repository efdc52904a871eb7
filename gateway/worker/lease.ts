import type { Queryable } from '../../sql/database.ts';

// One lease per tenant with a fencing token (DESIGN §4 "One worker per tenant"). Time is the
// database's clock, so workers on different hosts agree on expiry. Every later write of the
// holder carries (tenant, holder, fence) and is refused once the lease has lapsed.

export interface Fence {
  tenant: string;
  holder: string;
  fence: number;
}

export class LeaseLost extends Error {
  override name = 'LeaseLost';
  constructor(readonly tenant: string) {
    super(`lease on ${tenant} lost`);
  }
}

export interface LeaseStore {
  /** Takes the lease when it is free, expired, or already this holder's (after a restart); bumps the fence. */
  acquire(tenant: string, holder: string, ttlMs: number): Promise<Fence | null>;
  /** Extends a live lease; false once it lapsed or was taken. */
  renew(lease: Fence, ttlMs: number): Promise<boolean>;
  /** Lets a standby take over at once (graceful stop). */
  release(lease: Fence): Promise<void>;
  holderOf(tenant: string): Promise<{ holder: string; fence: number; live: boolean } | null>;
}

export function createLeaseStore(db: Queryable): LeaseStore {
  return {
    async acquire(tenant, holder, ttlMs) {
      const { rows } = await db.query<{ fence: string }>(
        `INSERT INTO worker_leases (tenant, holder, fence, expires_at)
           VALUES ($1, $2, 1, now() + $3::double precision * interval '1 millisecond')
         ON CONFLICT (tenant) DO UPDATE SET holder = EXCLUDED.holder, fence = worker_leases.fence + 1,
           expires_at = EXCLUDED.expires_at, acquired_at = now()
         WHERE worker_leases.expires_at <= now() OR worker_leases.holder = EXCLUDED.holder
         RETURNING fence`,
        [tenant, holder, ttlMs],
      );
      return rows[0] ? { tenant, holder, fence: Number(rows[0].fence) } : null;
    },
    async renew(lease, ttlMs) {
      const { rows } = await db.query(
        `UPDATE worker_leases SET expires_at = now() + $4::double precision * interval '1 millisecond'
         WHERE tenant = $1 AND holder = $2 AND fence = $3 AND expires_at > now() RETURNING fence`,
        [lease.tenant, lease.holder, lease.fence, ttlMs],
      );
      return rows.length === 1;
    },
    async release(lease) {
      await db.query(
        `UPDATE worker_leases SET expires_at = now() - interval '1 millisecond' WHERE tenant = $1 AND holder = $2 AND fence = $3`,
        [lease.tenant, lease.holder, lease.fence],
      );
    },
    async holderOf(tenant) {
      const { rows } = await db.query<{ holder: string; fence: string; live: boolean }>(
        'SELECT holder, fence, expires_at > now() AS live FROM worker_leases WHERE tenant = $1',
        [tenant],
      );
      return rows[0] ? { holder: rows[0].holder, fence: Number(rows[0].fence), live: rows[0].live } : null;
    },
  };
}
