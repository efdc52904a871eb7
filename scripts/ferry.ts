import { readConfig, ConfigError } from './config.ts';
import { openPlatform } from '../gateway/platform/open.ts';
import { prepareCouch } from '../couchdb/prepare.ts';
import { provisionTenant, InvalidTenantError } from '../couchdb/provision.ts';
import { CouchIdentityError } from '../couchdb/identities.ts';
import { findRunningEmbedded } from '../couchdb/embedded/supervisor.ts';
import { TENANT_ID } from '../validators/identity.ts';

// Operator CLI. Reads the same configuration as `npm start` (FERRY_DATA_DIR, COUCHDB_URL,
// DATABASE_URL).
//
//   npm run ferry -- tenant create <id>   provision inbox_{id} and record the tenant (idempotent)
//   npm run ferry -- tenant list          the tenants in the registry

const USAGE = `usage:
  npm run ferry -- tenant create <id>   provision inbox_<id> (idempotent)
  npm run ferry -- tenant list          list the registered tenants`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<void> {
  const [group, command, arg, ...rest] = argv;
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    console.log(USAGE);
    return;
  }
  if (group !== 'tenant' || (command !== 'create' && command !== 'list')) throw new UsageError(`unknown command: ${argv.join(' ')}`);
  if (command === 'create' && (arg === undefined || rest.length)) throw new UsageError('tenant create takes exactly one tenant id');
  if (command === 'list' && arg !== undefined) throw new UsageError('tenant list takes no arguments');
  if (command === 'create' && !TENANT_ID.test(arg!)) throw new InvalidTenantError();

  const config = readConfig();
  // PGlite is single-process: with the embedded defaults, the CLI must not open the data dir
  // while `npm start` holds it.
  const running = !config.couchdbUrl ? findRunningEmbedded(config.dataDir) : null;
  if (running && !config.databaseUrl) {
    throw new UsageError(`Ferry is running on ${config.dataDir} (process ${running.pid}); stop it first, or set DATABASE_URL`);
  }
  const platform = await openPlatform({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
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

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof UsageError) console.error(`${err.message}\n${USAGE}`);
    else if (err instanceof InvalidTenantError || err instanceof ConfigError || err instanceof CouchIdentityError) console.error(`error: ${err.message}`);
    else console.error(err);
    process.exit(err instanceof UsageError || err instanceof InvalidTenantError ? 2 : 1);
  },
);
