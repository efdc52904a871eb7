import type { Database } from '../../sql/database.ts';
import { migrate } from '../../sql/migrate.ts';

// The worker's durable state in the platform database (DESIGN §2, §4 "Exactly once"): leases with
// fencing tokens, feed checkpoints, the pending queue (waiting/retrying), per-tenant feed counters
// and an index of mutation ids seen (to tell when `after` names another user's mutation).
export const WORKER_MIGRATIONS: readonly string[] = [
  `CREATE TABLE worker_leases (
     tenant text PRIMARY KEY,
     holder text NOT NULL,
     fence bigint NOT NULL,
     expires_at timestamptz NOT NULL,
     acquired_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE worker_checkpoints (
     tenant text PRIMARY KEY,
     since text NOT NULL,
     fence bigint NOT NULL,
     updated_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE worker_pending (
     tenant text NOT NULL,
     mid text NOT NULL,
     owner text NOT NULL,
     entity text NOT NULL,
     state text NOT NULL CHECK (state IN ('waiting', 'retrying')),
     after text,
     attempts integer NOT NULL DEFAULT 0,
     next_attempt_at bigint NOT NULL,
     first_seen_at bigint NOT NULL,
     PRIMARY KEY (tenant, mid)
   );
   CREATE INDEX worker_pending_after ON worker_pending (tenant, after);
   CREATE TABLE worker_feed_counters (
     tenant text PRIMARY KEY,
     next bigint NOT NULL
   );
   CREATE TABLE worker_mutations (
     tenant text NOT NULL,
     mid text NOT NULL,
     owner text NOT NULL,
     entity text,
     PRIMARY KEY (tenant, mid)
   );`,
  // A mid is unique only within its owner's ids: another user reusing it must not touch this row.
  `ALTER TABLE worker_pending DROP CONSTRAINT worker_pending_pkey;
   ALTER TABLE worker_pending ADD PRIMARY KEY (tenant, owner, mid);`,
  // Tenants whose status docs predate the platform's feed index (`feed_index`, `pending_mutations`):
  // the next lease holder fills both from the inbox (StatusWriter.healHead), and until then the
  // gateway serves their feed as empty rather than from a partial index.
  `CREATE TABLE worker_feed_backfill (tenant text PRIMARY KEY);
   INSERT INTO worker_feed_backfill (tenant) SELECT tenant FROM worker_feed_counters;`,
  // Retention (docs/SYNC.md "Retention"): when each mutation became terminal (its window starts
  // there; rows already terminal start it now, the conservative choice), and, once its docs are
  // purged from the inbox, when and with which state. The row stays as the purged mutation's
  // tombstone: ids and a state, no PHI, so a later mutation naming it in `after` still finds its
  // state and a re-push of it is not counted as pending.
  `ALTER TABLE pending_mutations ADD COLUMN terminal_at timestamptz;
   ALTER TABLE pending_mutations ADD COLUMN purged_at timestamptz;
   ALTER TABLE pending_mutations ADD COLUMN purged_state text;
   UPDATE pending_mutations SET terminal_at = now() WHERE terminal;
   CREATE INDEX pending_mutations_retention ON pending_mutations (tenant, terminal_at) WHERE terminal AND purged_at IS NULL;`,
  // The re-purge guard (docs/SYNC.md "Retention"): on a CouchDB 3.5.0 cluster purged docs came back
  // once, re-inserted by a shard copy (docs/DEPLOY.md "Purge and compaction"). Each pass looks again
  // at what it purged within the horizon; `repurged_at` is when a mutation's docs were last found
  // back and purged again (the horizon restarts there), `repurges` how often, for audit.
  `ALTER TABLE pending_mutations ADD COLUMN repurged_at timestamptz;
   ALTER TABLE pending_mutations ADD COLUMN repurges integer NOT NULL DEFAULT 0;
   CREATE INDEX pending_mutations_recheck ON pending_mutations (tenant, (COALESCE(repurged_at, purged_at)), owner, mid) WHERE purged_at IS NOT NULL;`,
];

export async function migrateWorker(db: Database): Promise<void> {
  await migrate(db, 'worker', WORKER_MIGRATIONS);
}

/** SQL condition that holds while (tenant $1, holder $2, fence $3) is the live lease. */
export const LEASE_HELD = `EXISTS (SELECT 1 FROM worker_leases l
  WHERE l.tenant = $1::text AND l.holder = $2::text AND l.fence = $3::bigint AND l.expires_at > now())`;
