import { join } from 'node:path';
import { createCouchServer, CouchError, type CouchCredentials, type CouchServer } from './client.ts';
import { couchDir, hasStrings, loadOrCreateSecretFile, randomSecret } from './secrets.ts';
import { GATEWAY_ROLE, WORKER_ROLE } from './design/validate.ts';

// CouchDB identities (DESIGN §5): the admin credential is for provisioning only; the gateway and
// the worker each use their own non-admin user, whose single role is what `_security` and the
// inbox VDU check.

export const GATEWAY_USER = 'ferry-gateway';
export const WORKER_USER = 'ferry-worker';
export const GATEWAY_PASSWORD_ENV = 'FERRY_COUCH_GATEWAY_PASSWORD';
export const WORKER_PASSWORD_ENV = 'FERRY_COUCH_WORKER_PASSWORD';

export interface CouchIdentities {
  /** Server root without credentials, e.g. http://127.0.0.1:5984. */
  url: string;
  /** Server admin: provisioning only. */
  admin: CouchCredentials;
  /** `ferry-gateway`, role `ferry-gateway`. */
  gateway: CouchCredentials;
  /** `ferry-worker`, role `ferry-worker`. */
  worker: CouchCredentials;
  embedded: boolean;
}

export type CouchIdentity = 'admin' | 'gateway' | 'worker';

export class CouchIdentityError extends Error {
  override name = 'CouchIdentityError';
}

type Env = Record<string, string | undefined>;

/** Splits `http://admin:secret@host:5984/` into the bare base URL and the admin credentials. */
export function parseCouchUrl(couchdbUrl: string): { url: string; admin: CouchCredentials } {
  let u: URL;
  try {
    u = new URL(couchdbUrl);
  } catch {
    throw new CouchIdentityError('COUCHDB_URL is not a valid URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CouchIdentityError('COUCHDB_URL must be an http(s) URL');
  if (!u.username || !u.password) {
    throw new CouchIdentityError('COUCHDB_URL must carry the server admin credentials: http(s)://admin:password@host:5984');
  }
  const admin = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  u.username = '';
  u.password = '';
  u.search = '';
  u.hash = '';
  return { url: u.toString().replace(/\/+$/, ''), admin };
}

/** With `COUCHDB_URL`: admin from the URL, service passwords from the environment (required). */
export function externalCouchIdentities(couchdbUrl: string, env: Env = process.env): CouchIdentities {
  const { url, admin } = parseCouchUrl(couchdbUrl);
  const missing = [GATEWAY_PASSWORD_ENV, WORKER_PASSWORD_ENV].filter((k) => !env[k]);
  if (missing.length) throw new CouchIdentityError(`COUCHDB_URL is set, so ${missing.join(' and ')} must be set too`);
  return {
    url,
    admin,
    gateway: { username: GATEWAY_USER, password: env[GATEWAY_PASSWORD_ENV]! },
    worker: { username: WORKER_USER, password: env[WORKER_PASSWORD_ENV]! },
    embedded: false,
  };
}

/** Embedded mode: service passwords generated on first start, kept in `{dataDir}/couch/service-users.json` (0600). */
export function embeddedCouchIdentities(dataDir: string, server: { url: string; admin: CouchCredentials }): CouchIdentities {
  const passwords = loadOrCreateSecretFile(
    join(couchDir(dataDir), 'service-users.json'),
    () => ({ gateway: randomSecret(), worker: randomSecret() }),
    (v): v is { gateway: string; worker: string } => hasStrings(v, ['gateway', 'worker']),
  );
  return {
    url: server.url,
    admin: server.admin,
    gateway: { username: GATEWAY_USER, password: passwords.gateway },
    worker: { username: WORKER_USER, password: passwords.worker },
    embedded: true,
  };
}

export interface ResolveIdentitiesOptions {
  couchdbUrl: string | undefined;
  dataDir: string;
  env?: Env;
  /** The running embedded server; required when `couchdbUrl` is unset. */
  embedded?: { url: string; admin: CouchCredentials };
}

export function resolveCouchIdentities(opts: ResolveIdentitiesOptions): CouchIdentities {
  if (opts.couchdbUrl) return externalCouchIdentities(opts.couchdbUrl, opts.env);
  if (!opts.embedded) throw new CouchIdentityError('COUCHDB_URL is unset and no embedded CouchDB is running');
  return embeddedCouchIdentities(opts.dataDir, opts.embedded);
}

/** A client acting as one of the identities. */
export function couchServerAs(identities: CouchIdentities, who: CouchIdentity, opts: { fetch?: typeof fetch; timeoutMs?: number } = {}): CouchServer {
  return createCouchServer({ url: identities.url, auth: identities[who], ...opts });
}

interface UserDoc {
  _id: string;
  _rev?: string;
  name: string;
  type: 'user';
  roles: string[];
  password?: string;
}

/** True if `creds` log in on the server (documented `GET /_session` with Basic auth). */
export async function canLogIn(url: string, creds: CouchCredentials, fetchImpl: typeof fetch = fetch): Promise<boolean> {
  const res = await createCouchServer({ url, auth: creds, fetch: fetchImpl }).request('GET', '/_session');
  if (!res.ok) {
    await res.body?.cancel();
    return false;
  }
  const body = (await res.json()) as { userCtx?: { name?: string | null } };
  return body.userCtx?.name === creds.username;
}

export interface EnsureUsersResult {
  created: string[];
  updated: string[];
}

/**
 * Creates `ferry-gateway` and `ferry-worker` in `_users` with their single role. Idempotent: an
 * existing user is rewritten only when its roles differ or its password no longer logs in.
 */
export async function ensureServiceUsers(
  admin: CouchServer,
  identities: Pick<CouchIdentities, 'gateway' | 'worker'>,
  fetchImpl: typeof fetch = fetch,
): Promise<EnsureUsersResult> {
  await admin.createDb('_users');
  const users = admin.db('_users');
  const result: EnsureUsersResult = { created: [], updated: [] };
  const wanted: Array<[CouchCredentials, string]> = [
    [identities.gateway, GATEWAY_ROLE],
    [identities.worker, WORKER_ROLE],
  ];
  for (const [creds, role] of wanted) {
    const id = `org.couchdb.user:${creds.username}`;
    for (let attempt = 0; ; attempt++) {
      const existing = await users.get<UserDoc>(id);
      const rolesOk = existing !== null && existing.roles.length === 1 && existing.roles[0] === role;
      if (existing && rolesOk && (await canLogIn(admin.url, creds, fetchImpl))) break;
      const doc: UserDoc = { _id: id, name: creds.username, type: 'user', roles: [role], password: creds.password };
      if (existing?._rev) doc._rev = existing._rev;
      try {
        await users.put(doc);
        (existing ? result.updated : result.created).push(creds.username);
        break;
      } catch (err) {
        // Someone else wrote the user at the same time: read it again.
        if (err instanceof CouchError && err.status === 409 && attempt < 3) continue;
        throw err;
      }
    }
  }
  return result;
}
