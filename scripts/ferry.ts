import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { openPlatform, type Platform } from '../gateway/platform/open.ts';
import { prepareCouch, type PreparedCouch } from '../couchdb/prepare.ts';
import { provisionTenant, InvalidTenantError } from '../couchdb/provision.ts';
import { CouchIdentityError } from '../couchdb/identities.ts';
import { makeDataDirPrivate } from './data-dir.ts';
import { acquireDataDirLock, DataDirLockedError, type DataDirLock } from './data-dir-lock.ts';
import { TENANT_ID, OWNER_ID, ROLES, type Role } from '../validators/identity.ts';
import { deriveOwner, loadOrCreateOwnerSecret } from '../identity/owner.ts';
import { FerryError } from '../validators/codes.ts';
import { MODULES, parseAdminRequest, runAdmin, type AdminDeps, type AdminRequest, type AdminResult } from '../gateway/tenant/admin.ts';
import { replicaScopeOf, type ScopeInput } from '../gateway/tenant/scope.ts';
import { callOperatorApi, OperatorApiError, socketAnswers, socketPathOf } from '../gateway/tenant/operator-api.ts';
import { createLicensing, openRegistrationDatabase } from '../services/registration/index.ts';
import type { Database } from '../sql/database.ts';

// Operator CLI. Reads the same configuration as `npm start` (FERRY_DATA_DIR, COUCHDB_URL,
// DATABASE_URL).
//
//   npm run ferry -- tenant create <id>   provision inbox_{id} and record the tenant (idempotent)
//   npm run ferry -- tenant list          the tenants in the registry
//   npm run ferry -- tenant license|unlicense <id> <module>   the module licence, in its service's database
//   npm run ferry -- member add|remove|list …   memberships (external IdP users are known by owner)
//   npm run ferry -- owner-of <sub>       the owner derived from a sub under FERRY_AUTH_ISSUER
//
// The commands themselves are gateway/tenant/admin.ts. While a server runs on FERRY_DATA_DIR it
// holds the embedded databases, so the CLI sends the command to its operator API
// (FERRY_DATA_DIR/operator.sock); otherwise it opens the databases itself and runs it here.

const USAGE = `usage:
  npm run ferry -- tenant create <id>                  provision inbox_<id> (idempotent)
  npm run ferry -- tenant list                         list the registered tenants
  npm run ferry -- tenant license <id> <module>        license a module for a tenant (modules: ${MODULES.join(', ')})
  npm run ferry -- tenant unlicense <id> <module>      withdraw a module's licence
  npm run ferry -- member add <tenant> <owner> --role R [--role R …] [--facility F …]
                                                       grant roles (${ROLES.join(', ')}; or <roles>
                                                       comma-separated) and the facilities whose records the
                                                       member's device holds, replacing what the member had.
                                                       No facility: no records; admin, platform-admin: all.
  npm run ferry -- member remove <tenant> <owner>      revoke a membership
  npm run ferry -- member list <tenant>                list a tenant's members, roles and facilities
  npm run ferry -- owner-of <sub>                      print the owner of an external IdP subject (needs FERRY_AUTH_*)
Works whether or not the server is running (through its operator API on FERRY_DATA_DIR/operator.sock).`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<void> {
  const [group] = argv;
  if (group === undefined || group === 'help' || group === '--help' || group === '-h') {
    console.log(USAGE);
    return;
  }
  if (group === 'owner-of') return ownerOf(argv.slice(1));
  const request = group === 'member' ? memberRequest(argv.slice(1)) : group === 'tenant' ? tenantRequest(argv.slice(1)) : null;
  if (!request) throw new UsageError(`unknown command: ${argv.join(' ')}`);
  const config = readConfig();
  // Checked here too, not only by the server: the direct path has no server, and both paths then
  // refuse the same input with the same structured error (and run on trimmed facility ids).
  for (const line of describe(await run(config, parseAdminRequest(request)))) console.log(line);
}

function tenantRequest(args: string[]): AdminRequest {
  const [command, tenant, module, ...rest] = args;
  if (command === 'list') {
    if (args.length !== 1) throw new UsageError('tenant list takes no arguments');
    return { command: 'tenant.list' };
  }
  if (command === 'create') {
    if (tenant === undefined || module !== undefined) throw new UsageError('tenant create takes exactly one tenant id');
    if (!TENANT_ID.test(tenant)) throw new InvalidTenantError();
    return { command: 'tenant.create', tenant };
  }
  if (command === 'license' || command === 'unlicense') {
    if (tenant === undefined || module === undefined || rest.length) throw new UsageError(`tenant ${command} takes a tenant id and a module`);
    if (!TENANT_ID.test(tenant)) throw new InvalidTenantError();
    return { command: `tenant.${command}`, tenant, module };
  }
  throw new UsageError(`unknown command: tenant ${args.join(' ')}`);
}

function rolesOf(args: readonly string[]): Role[] {
  const roles = args.flatMap((a) => a.split(',')).map((r) => r.trim());
  const known: readonly string[] = ROLES;
  if (!roles.length || roles.some((r) => !known.includes(r))) throw new UsageError(`roles must be one or more of: ${ROLES.join(', ')} (--role R, repeatable, or comma-separated)`);
  return [...new Set(roles)] as Role[];
}

/** `node:util` parseArgs, its errors (unknown option, missing value) turned into usage errors. */
function parseMemberArgs(args: string[], withOptions: boolean) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: withOptions ? { role: { type: 'string', multiple: true }, facility: { type: 'string', multiple: true } } : {},
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

function memberRequest(args: string[]): AdminRequest {
  const [command, ...rest] = args;
  if (command !== 'add' && command !== 'remove' && command !== 'list') throw new UsageError(`unknown command: member ${args.join(' ')}`);
  const { positionals, values } = parseMemberArgs(rest, command === 'add');
  const [tenant, owner, roleArg] = positionals;
  // add: tenant, owner and optionally the comma-separated roles of the older form.
  const arity = { add: [2, 3], remove: [2], list: [1] } as const;
  const allowed: readonly number[] = arity[command];
  if (!allowed.includes(positionals.length)) throw new UsageError(`member ${command} takes ${allowed.join(' or ')} argument(s)`);
  if (!TENANT_ID.test(tenant!)) throw new InvalidTenantError();
  if (command !== 'list' && !OWNER_ID.test(owner!)) throw new UsageError('owner must match ^[A-Za-z0-9_-]{1,64}$ (see owner-of)');
  if (command === 'list') return { command: 'member.list', tenant: tenant! };
  if (command === 'remove') return { command: 'member.remove', tenant: tenant!, owner: owner! };
  const opts = values as { role?: string[]; facility?: string[] };
  const roles = rolesOf([...(roleArg === undefined ? [] : [roleArg]), ...(opts.role ?? [])]);
  // Facility ids are checked (and trimmed) by the request schema, with a structured error.
  return { command: 'member.add', tenant: tenant!, owner: owner!, roles, facilities: opts.facility ?? [] };
}

/** A facility id as printed: plain when it is a plain token, else JSON-quoted (so commas, spaces and control characters cannot mislead). */
function showFacility(facility: string): string {
  return /^[A-Za-z0-9._:/-]+$/.test(facility) ? facility : JSON.stringify(facility);
}

/** What a member's device holds, in words: the scope `replicaScopeOf` decides. */
function showScope(membership: ScopeInput, style: 'line' | 'column'): string {
  const scope = replicaScopeOf(membership);
  if (scope.kind === 'all') return style === 'line' ? 'all facilities (admin)' : '(all facilities)';
  if (scope.facilities.length === 0) return style === 'line' ? 'no facility (sees no records)' : '(no facility)';
  const list = scope.facilities.map(showFacility).join(',');
  return style === 'line' ? `facilities ${list}` : list;
}

/** What the operator reads: the same lines whichever path ran the command. */
function describe(result: AdminResult): string[] {
  switch (result.command) {
    case 'tenant.create': {
      const changes = [result.dbCreated && 'database created', result.securityUpdated && '_security set', result.designUpdated && 'design doc written'].filter(Boolean);
      return [`tenant ${result.tenant}: ${result.db} ${changes.length ? changes.join(', ') : 'already up to date'}`];
    }
    case 'tenant.list':
      return result.tenants;
    case 'tenant.license':
    case 'tenant.unlicense': {
      const state = result.command === 'tenant.license' ? 'licensed' : 'not licensed';
      return [`tenant ${result.tenant}: ${result.module} ${state}${result.changed ? '' : ' (unchanged)'}`];
    }
    case 'member.add':
      return [`member ${result.owner} of ${result.tenant}: ${result.roles.join(',')}; ${showScope(result, 'line')}`];
    case 'member.remove':
      return [`member ${result.owner} removed from ${result.tenant}`];
    case 'member.list':
      return result.members.map((m) => `${m.userId}\t${m.roles.join(',')}\t${showScope(m, 'column')}`);
  }
}

/** Through the running server's operator API when it answers; otherwise on the databases directly. */
async function run(config: FerryConfig, request: AdminRequest): Promise<AdminResult> {
  if (await socketAnswers(socketPathOf(config.dataDir))) return callOperatorApi(config.dataDir, request);
  // The CLI may be the first to write the data dir (PGlite, the embedded CouchDB): private, as the server makes it.
  makeDataDirPrivate(config.dataDir);
  const platform = await openPlatformOf(config);
  let couch: PreparedCouch | null = null;
  let registrationDb: Database | null = null;
  const deps: AdminDeps = {
    tenants: platform.tenants,
    memberships: platform.memberships,
    users: platform.users,
    async provision(tenant) {
      couch ??= await prepareCouch(config, platform, undefined, { demoTenants: false, reprovisionRegistered: false, reuseRunning: true });
      return provisionTenant({ admin: couch.server, tenant, registry: platform.tenants });
    },
    async licensing(module) {
      // The licence lives in the owning service's database; one run elsewhere is licensed there.
      if (module !== 'registration' || config.registrationUrl) return null;
      registrationDb ??= await openRegistrationDatabase({
        url: config.databaseUrl,
        dataDir: config.databaseUrl ? undefined : join(config.dataDir, 'pg', 'registration'),
        schema: config.databaseUrl ? config.registrationSchema : undefined,
      });
      return createLicensing(registrationDb);
    },
  };
  try {
    return await runAdmin(deps, request);
  } finally {
    // The casts: TypeScript does not see the assignments made inside the deps' closures.
    await (couch as PreparedCouch | null)?.stop();
    await (registrationDb as Database | null)?.close();
    await platform.close();
  }
}

async function openPlatformOf(config: FerryConfig): Promise<Platform> {
  // PGlite is single-process: with the embedded platform database the CLI takes the data dir's
  // lock for as long as it runs, so it never opens the files under a running server, and a server
  // started meanwhile is refused. A server with its operator API on was reached before this.
  let lock: DataDirLock | null = null;
  if (!config.databaseUrl) {
    try {
      lock = acquireDataDirLock(config.dataDir, 'cli');
    } catch (err) {
      if (err instanceof DataDirLockedError) {
        throw new UsageError(
          `Ferry is running on ${config.dataDir} (${err.holder.component}, process ${err.holder.pid}) without its operator API; stop it first, start it with FERRY_OPERATOR_API=on, or set DATABASE_URL`,
        );
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

/** A structured error: its code, the catalogue message, and the ids it names (never PHI). */
function describeError(err: FerryError): string {
  const { code, message, errors, correlationId: _c, ...details } = err.toBody();
  const extra = Object.entries(details).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`);
  const fields = (errors ?? []).map((e) => `${e.path} ${e.message}`);
  return [`error: ${code}: ${message}`, ...extra, ...fields].join('\n  ');
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof UsageError) console.error(`${err.message}\n${USAGE}`);
    else if (err instanceof FerryError) console.error(describeError(err));
    else if (err instanceof InvalidTenantError || err instanceof ConfigError || err instanceof CouchIdentityError || err instanceof OperatorApiError) console.error(`error: ${err.message}`);
    else console.error(err);
    const clientError = err instanceof UsageError || err instanceof InvalidTenantError || (err instanceof FerryError && err.status < 500);
    process.exit(clientError ? 2 : 1);
  },
);
