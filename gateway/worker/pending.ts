import type { Queryable } from '../../sql/database.ts';
import { LEASE_HELD } from './schema.ts';
import { LeaseLost, type Fence } from './lease.ts';

// The durable pending table (DESIGN §4 "Exactly once"): every mutation the feed has passed that
// is not terminal yet, i.e. `waiting` for its predecessor or `retrying` after a transient failure.

export interface PendingRow {
  mid: string;
  owner: string;
  entity: string;
  state: 'waiting' | 'retrying';
  after: string | null;
  attempts: number;
  /** ms since the epoch; for waiting rows, when to look again at the latest. */
  nextAttemptAt: number;
  firstSeenAt: number;
}

export interface PendingStore {
  /** Records or updates a pending mutation; keeps its first-seen time. Throws LeaseLost when fenced out. */
  put(lease: Fence, row: PendingRow): Promise<void>;
  remove(lease: Fence, owner: string, mid: string): Promise<void>;
  list(tenant: string): Promise<PendingRow[]>;
  get(tenant: string, owner: string, mid: string): Promise<PendingRow | null>;
  count(tenant: string): Promise<number>;
}

type Raw = { mid: string; owner: string; entity: string; state: 'waiting' | 'retrying'; after: string | null; attempts: number; next_attempt_at: string; first_seen_at: string };

const fromRaw = (r: Raw): PendingRow => ({
  mid: r.mid,
  owner: r.owner,
  entity: r.entity,
  state: r.state,
  after: r.after,
  attempts: Number(r.attempts),
  nextAttemptAt: Number(r.next_attempt_at),
  firstSeenAt: Number(r.first_seen_at),
});

export function createPendingStore(db: Queryable): PendingStore {
  return {
    async put(lease, row) {
      const res = await db.query(
        `INSERT INTO worker_pending (tenant, mid, owner, entity, state, after, attempts, next_attempt_at, first_seen_at)
         SELECT $1::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::integer, $10::bigint, $11::bigint WHERE ${LEASE_HELD}
         ON CONFLICT (tenant, owner, mid) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts,
           next_attempt_at = EXCLUDED.next_attempt_at, after = EXCLUDED.after`,
        [lease.tenant, lease.holder, lease.fence, row.mid, row.owner, row.entity, row.state, row.after, row.attempts, row.nextAttemptAt, row.firstSeenAt],
      );
      if (res.rowCount !== 1) throw new LeaseLost(lease.tenant);
    },
    async remove(lease, owner, mid) {
      await db.query(`DELETE FROM worker_pending WHERE tenant = $1::text AND owner = $4::text AND mid = $5::text AND ${LEASE_HELD}`, [lease.tenant, lease.holder, lease.fence, owner, mid]);
    },
    async list(tenant) {
      const { rows } = await db.query<Raw>('SELECT * FROM worker_pending WHERE tenant = $1 ORDER BY first_seen_at, mid', [tenant]);
      return rows.map(fromRaw);
    },
    async get(tenant, owner, mid) {
      const { rows } = await db.query<Raw>('SELECT * FROM worker_pending WHERE tenant = $1 AND owner = $2 AND mid = $3', [tenant, owner, mid]);
      return rows[0] ? fromRaw(rows[0]) : null;
    },
    async count(tenant) {
      const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM worker_pending WHERE tenant = $1', [tenant]);
      return Number(rows[0]?.n ?? 0);
    },
  };
}
