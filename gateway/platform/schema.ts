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
];

export async function migratePlatform(db: Database): Promise<void> {
  await migrate(db, 'platform', PLATFORM_MIGRATIONS);
}
