import { join } from 'node:path';
import { openDatabase, type Database } from '../../sql/database.ts';
import { migratePlatform } from './schema.ts';
import { createTenantRegistry, type TenantRegistry } from '../tenant/registry.ts';
import { createMembershipDirectory, type MembershipDirectory } from '../tenant/membership.ts';
import { createUserStore, type UserStore } from '../auth/users.ts';
import { createSessionStore, type SessionStore } from '../auth/sessions.ts';

export interface Platform {
  db: Database;
  tenants: TenantRegistry;
  memberships: MembershipDirectory;
  users: UserStore;
  sessions: SessionStore;
  close(): Promise<void>;
}

export interface PlatformOptions {
  databaseUrl?: string | undefined;
  dataDir?: string | undefined;
  /** Postgres schema, so tests can share one server. */
  schema?: string | undefined;
}

/** Opens the platform database (PGlite under `{dataDir}/pg/platform` by default) and migrates it. */
export async function openPlatform(opts: PlatformOptions): Promise<Platform> {
  const db = await openDatabase({
    url: opts.databaseUrl,
    dataDir: opts.databaseUrl || !opts.dataDir ? undefined : join(opts.dataDir, 'pg', 'platform'),
    schema: opts.schema,
  });
  await migratePlatform(db);
  return {
    db,
    tenants: createTenantRegistry(db),
    memberships: createMembershipDirectory(db),
    users: createUserStore(db),
    sessions: createSessionStore(db),
    close: () => db.close(),
  };
}
