import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { openPlatform, type Platform } from '../gateway/platform/open.ts';
import { prepareCouch } from '../couchdb/prepare.ts';
import { provisionTenant, InvalidTenantError } from '../couchdb/provision.ts';
import { CouchIdentityError } from '../couchdb/identities.ts';
import { acquireDataDirLock, DataDirLockedError, type DataDirLock } from './data-dir-lock.ts';
import { TENANT_ID, OWNER_ID, ROLES, type Role } from '../validators/identity.ts';
import { deriveOwner, loadOrCreateOwnerSecret } from '../identity/owner.ts';

// Operator CLI. Reads the same configuration as `npm start` (FERRY_DATA_DIR, COUCHDB_URL,
// DATABASE_URL).
//
//   npm run ferry -- tenant create <id>   provision inbox_{id} and record the tenant (idempotent)
//   npm run ferry -- tenant list          the tenants in the registry
//   npm run ferry -- member add|remove|list …   memberships (external IdP users are known by owner)
//   npm run ferry -- owner-of <sub>       the owner derived from a sub under FERRY_AUTH_ISSUER

const USAGE = `usage:
  npm run ferry -- tenant create <id>                  provision inbox_<id> (idempotent)
  npm run ferry -- tenant list                         list the registered tenants
  npm run ferry -- member add <tenant> <owner> <roles> grant roles (comma-separated: ${ROLES.join(',')})
  npm run ferry -- member remove <tenant> <owner>      revoke a membership
  npm run ferry -- member list <tenant>                list a tenant's members and roles
  npm run ferry -- owner-of <sub>                      print the owner of an external IdP subject (needs FERRY_AUTH_*)`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<void> {
  const [group, command, arg, ...rest] = argv;
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    console.log(USAGE);
    return;
  }
  if (group === 'owner-of') return ownerOf(argv.slice(1));
  if (group === 'member') return member(argv.slice(1));
  if (group !== 'tenant' || (command !== 'create' && command !== 'list')) throw new UsageError(`unknown command: ${argv.join(' ')}`);
  if (command === 'create' && (arg === undefined || rest.length)) throw new UsageError('tenant create takes exactly one tenant id');
  if (command === 'list' && arg !== undefined) throw new UsageError('tenant list takes no arguments');
  if (command === 'create' && !TENANT_ID.test(arg!)) throw new InvalidTenantError();

  const config = readConfig();
  const platform = await openPlatformOf(config);
  try {
    if (command === 'list') {
      for (const t of await platform.tenants.list()) console.log(t);
      return;
    }
    const couch = await prepareCouch(config, platform, undefined, {
      demoTenants: false,
      reprovisionRegistered: false,
      reuseRunning: true,
    });
    try {
      const result = await provisionTenant({ admin: couch.server, tenant: arg!, registry: platform.tenants });
      const changes = [result.dbCreated && 'database created', result.securityUpdated && '_security set', result.designUpdated && 'design doc written'].filter(Boolean);
      console.log(`tenant ${result.tenant}: ${result.db} ${changes.length ? changes.join(', ') : 'already up to date'}`);
    } finally {
      await couch.stop();
    }
  } finally {
    await platform.close();
  }
}

async function openPlatformOf(config: FerryConfig): Promise<Platform> {
  // PGlite is single-process: with the embedded platform database the CLI takes the data dir's
  // lock for as long as it runs, so it never opens the files under a running server, and a server
  // started meanwhile is refused.
  let lock: DataDirLock | null = null;
  if (!config.databaseUrl) {
    try {
      lock = acquireDataDirLock(config.dataDir, 'cli');
    } catch (err) {
      if (err instanceof DataDirLockedError) {
        throw new UsageError(`Ferry is running on ${config.dataDir} (${err.holder.component}, process ${err.holder.pid}); stop it first, or set DATABASE_URL`);
      }
      throw err;
    }
  }
  try {
    const platform = await openPlatform({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, schema: config.databaseUrl ? config.platformSchema : undefined });
    const close = platform.close.bind(platform);
    return Object.assign(platform, {
      close: async () => {
        try {
          await close();
        } finally {
          lock?.release();
        }
      },
    });
  } catch (err) {
    lock?.release();
    throw err;
  }
}

/** Prints the owner of an external subject, so an operator can grant access without storing the sub. */
function ownerOf(args: string[]): void {
  if (args.length !== 1 || !args[0]) throw new UsageError('owner-of takes exactly one subject');
  const config = readConfig();
  if (!config.externalAuth) throw new ConfigError('owner-of needs the external identity provider (FERRY_AUTH_JWKS_URL, _ISSUER, _AUDIENCE)');
  console.log(deriveOwner(loadOrCreateOwnerSecret(config.dataDir), config.externalAuth.issuer, args[0]));
}

function rolesOf(arg: string): Role[] {
  const roles = arg.split(',').map((r) => r.trim());
  const known: readonly string[] = ROLES;
  if (!roles.length || roles.some((r) => !known.includes(r))) throw new UsageError(`roles must be a comma-separated list of: ${ROLES.join(', ')}`);
  return [...new Set(roles)] as Role[];
}

async function member(args: string[]): Promise<void> {
  const [command, tenant, owner, roleArg, ...rest] = args;
  const arity = { add: 3, remove: 2, list: 1 } as const;
  if (command !== 'add' && command !== 'remove' && command !== 'list') throw new UsageError(`unknown command: member ${args.join(' ')}`);
  if (args.length - 1 !== arity[command] || rest.length) throw new UsageError(`member ${command} takes ${arity[command]} argument(s)`);
  if (!TENANT_ID.test(tenant!)) throw new InvalidTenantError();
  if (command !== 'list' && !OWNER_ID.test(owner!)) throw new UsageError('owner must match ^[A-Za-z0-9_-]{1,64}$ (see owner-of)');
  const roles = command === 'add' ? rolesOf(roleArg!) : [];
  const config = readConfig();
  const platform = await openPlatformOf(config);
  try {
    if (!(await platform.tenants.exists(tenant!))) throw new UsageError(`unknown tenant ${tenant}; run tenant create first`);
    if (command === 'list') {
      for (const m of await platform.memberships.membersOf(tenant!)) console.log(`${m.userId}\t${m.roles.join(',')}`);
    } else if (command === 'add') {
      // The memberships need a users row; an external user's row has no password.
      await platform.users.ensureExternal(owner!);
      await platform.memberships.set(tenant!, owner!, roles);
      console.log(`member ${owner} of ${tenant}: ${roles.join(',')}`);
    } else {
      await platform.memberships.remove(tenant!, owner!);
      console.log(`member ${owner} removed from ${tenant}`);
    }
  } finally {
    await platform.close();
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof UsageError) console.error(`${err.message}\n${USAGE}`);
    else if (err instanceof InvalidTenantError || err instanceof ConfigError || err instanceof CouchIdentityError) console.error(`error: ${err.message}`);
    else console.error(err);
    process.exit(err instanceof UsageError || err instanceof InvalidTenantError ? 2 : 1);
  },
);
