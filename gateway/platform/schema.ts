import type { Database } from '../../sql/database.ts';
import { migrate } from '../../sql/migrate.ts';

// The platform database (DESIGN §2): tenant registry, membership directory and refresh sessions.
// The worker keeps its leases, checkpoints and pending queue here too, under its own migrations.
export const PLATFORM_MIGRATIONS: readonly string[] = [
  `CREATE TABLE tenants (
     id text PRIMARY KEY,
     created_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE users (
     id text PRIMARY KEY,
     username text NOT NULL UNIQUE,
     password_hash text,
     created_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE memberships (
     tenant_id text NOT NULL REFERENCES tenants(id),
     user_id text NOT NULL REFERENCES users(id),
     roles text[] NOT NULL,
     PRIMARY KEY (tenant_id, user_id)
   );
   CREATE TABLE refresh_sessions (
     sid text PRIMARY KEY,
     user_id text NOT NULL REFERENCES users(id),
     tenant_id text NOT NULL REFERENCES tenants(id),
     created_at timestamptz NOT NULL DEFAULT now(),
     expires_at timestamptz NOT NULL,
     revoked_at timestamptz
   );
   CREATE TABLE refresh_tokens (
     token_hash text PRIMARY KEY,
     sid text NOT NULL REFERENCES refresh_sessions(sid),
     rotated_at timestamptz,
     created_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE INDEX refresh_tokens_sid ON refresh_tokens (sid);`,
  // Operator (platform-admin) browser sessions for Fauxton: the cookie holds a random id whose
  // hash is stored here, so a database read cannot replay a session.
  `CREATE TABLE admin_sessions (
     id_hash text PRIMARY KEY,
     user_id text NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now(),
     expires_at timestamptz NOT NULL
   );`,
  // The pull feed's index (docs/SYNC.md "The pull side"): each status doc once, at the latest
  // per-tenant counter the worker allocated for it, so a user's `_changes` is a range read of
  // (tenant, owner, counter) instead of a CouchDB view. And each user's mutations with whether the
  // worker made them terminal, for the pending quota. The worker writes both in the statement that
  // allocates a batch's counters; the gateway adds the mutations it wrote. Shared by both, so here.
  // `rev` is the revision the write at counter `rev_counter` produced; it stands for the doc's
  // current rev only while `rev_counter = counter` (no later write allocated since).
  `CREATE TABLE feed_index (
     tenant text NOT NULL,
     doc_id text NOT NULL,
     owner text NOT NULL,
     counter bigint NOT NULL,
     rev text,
     rev_counter bigint,
     PRIMARY KEY (tenant, doc_id)
   );
   CREATE INDEX feed_index_owner ON feed_index (tenant, owner, counter);
   CREATE TABLE pending_mutations (
     tenant text NOT NULL,
     owner text NOT NULL,
     mid text NOT NULL,
     terminal boolean NOT NULL,
     PRIMARY KEY (tenant, owner, mid)
   );
   CREATE INDEX pending_mutations_open ON pending_mutations (tenant, owner) WHERE NOT terminal;`,
  // The facilities a member serves, which bound the records replicated to their device
  // (gateway/tenant/scope.ts). A column of the membership row, not a table of its own: the
  // facilities live and die with the membership (`member remove` drops them in the same statement),
  // and one row read gives roles and facilities together, so a scope is never decided from the
  // roles of one moment and the facilities of another. Existing members get none: fail closed.
  `ALTER TABLE memberships ADD COLUMN facilities text[] NOT NULL DEFAULT '{}';`,
  // The replica's index (gateway/replica/store.ts, docs/SYNC.md "The replica"): each record once,
  // at the per-tenant counter of its latest projected version and its current facility, so a
  // member's `_changes` on /replica is a range read of (tenant, facility, counter); and where each
  // record left a facility, so the feed of that facility can answer it as deleted. Written by the
  // projection in one transaction that allocates the counters (row lock on `record_counters`), so
  // counters become visible in order. `replica_scopes` keeps the scopes a user's feed was served
  // with, keyed by the tag carried in its `since`, so a scope change can be answered.
  `CREATE TABLE record_counters (
     tenant text PRIMARY KEY,
     counter bigint NOT NULL
   );
   CREATE TABLE record_index (
     tenant text NOT NULL,
     record_id text NOT NULL,
     facility text NOT NULL,
     version integer NOT NULL,
     counter bigint NOT NULL,
     PRIMARY KEY (tenant, record_id)
   );
   CREATE INDEX record_index_facility ON record_index (tenant, facility, counter);
   CREATE INDEX record_index_counter ON record_index (tenant, counter);
   CREATE TABLE record_departures (
     tenant text NOT NULL,
     facility text NOT NULL,
     record_id text NOT NULL,
     counter bigint NOT NULL,
     PRIMARY KEY (tenant, facility, record_id)
   );
   CREATE INDEX record_departures_facility ON record_departures (tenant, facility, counter);
   CREATE TABLE replica_scopes (
     tenant text NOT NULL,
     owner text NOT NULL,
     tag text NOT NULL,
     every boolean NOT NULL,
     facilities text[] NOT NULL,
     PRIMARY KEY (tenant, owner, tag)
   );
   CREATE TABLE replica_settings (
     key text PRIMARY KEY,
     value text NOT NULL
   );`,
];

export async function migratePlatform(db: Database): Promise<void> {
  await migrate(db, 'platform', PLATFORM_MIGRATIONS);
}
