import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { CouchCredentials } from '../client.ts';
import { hasStrings, loadOrCreateSecretFile, randomSecret } from '../secrets.ts';

// The embedded server's own secrets, under `{dataDir}/couch/` with mode 0600.

export const EMBEDDED_ADMIN_USERNAME = 'ferry-admin';

/** The server admin of the embedded server: generated on first start, re-applied at every start. */
export function loadEmbeddedAdmin(couchDir: string): CouchCredentials {
  return loadOrCreateSecretFile(
    join(couchDir, 'admin.json'),
    () => ({ username: EMBEDDED_ADMIN_USERNAME, password: randomSecret() }),
    (v): v is CouchCredentials => hasStrings(v, ['username', 'password']),
  );
}

export interface ServerSecrets {
  cookieSecret: string;
  uuid: string;
}

export function loadServerSecrets(couchDir: string): ServerSecrets {
  return loadOrCreateSecretFile(
    join(couchDir, 'server.json'),
    () => ({ cookieSecret: randomSecret(32), uuid: randomUUID().replace(/-/g, '') }),
    (v): v is ServerSecrets => hasStrings(v, ['cookieSecret', 'uuid']),
  );
}
