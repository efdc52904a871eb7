import { join } from 'node:path';
import { openDatabase, type Database } from '../../sql/database.ts';
import { migratePlatform } from './schema.ts';
import { createTenantRegistry, type TenantRegistry } from '../tenant/registry.ts';
import { createMembershipDirectory, type MembershipDirectory } from '../tenant/membership.ts';
import { createUserStore, type UserStore } from '../auth/users.ts';
import { createSessionStore, type SessionStore } from '../auth/sessions.ts';
import { createLiveness, invalidatingMemberships, platformLiveLoader, type Liveness } from '../auth/liveness.ts';

export interface Platform {
  db: Database;
  tenants: TenantRegistry;
  memberships: MembershipDirectory;
  users: UserStore;
  sessions: SessionStore;
  /** Is a token's session still open, which roles does its user hold now (cached briefly). */
  liveness: Liveness;
  close(): Promise<void>;
}

export interface PlatformOptions {
  databaseUrl?: string | undefined;
  dataDir?: string | undefined;
  /** Postgres schema, so tests can share one server. */
  schema?: string | undefined;
  /** How long a session/membership check is trusted (`FERRY_SESSION_CHECK_TTL_MS`). */
  sessionCheckTtlMs?: number | undefined;
}

/** Opens the platform database (PGlite under `{dataDir}/pg/platform` by default) and migrates it. */
export async function openPlatform(opts: PlatformOptions): Promise<Platform> {
  const db = await openDatabase({
    url: opts.databaseUrl,
    dataDir: opts.databaseUrl || !opts.dataDir ? undefined : join(opts.dataDir, 'pg', 'platform'),
    schema: opts.schema,
  });
  await migratePlatform(db);
  const liveness = createLiveness({ load: platformLiveLoader(db), ...(opts.sessionCheckTtlMs !== undefined ? { ttlMs: opts.sessionCheckTtlMs } : {}) });
  return {
    db,
    tenants: createTenantRegistry(db),
    // Changes made through this process reach its liveness cache at once; others' within its TTL.
    memberships: invalidatingMemberships(createMembershipDirectory(db), liveness),
    users: createUserStore(db),
    sessions: createSessionStore(db, { onRevoke: (sid) => liveness.sessionRevoked(sid) }),
    liveness,
    close: () => db.close(),
  };
}
