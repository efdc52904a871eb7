// Retention in a worker process of its own (`scripts/worker.ts`; docs/SYNC.md "Retention").
// `_purge` and `_compact` are admin-only in CouchDB 3, and the worker otherwise holds only the
// `ferry-worker` user, so retention runs there only when FERRY_COUCH_RETENTION_URL hands it a
// server-admin credential explicitly. COUCHDB_URL's admin credential stays provisioning-only (the
// worker strips it). The passes run inside the tenant runner, so only the worker holding a
// tenant's lease purges that tenant, and every platform write of a pass is fenced.
import { createCouchServer, type CouchCredentials, type CouchServer } from '../couchdb/client.ts';
import { CouchIdentityError, parseCouchUrl } from '../couchdb/identities.ts';
import type { RetentionPolicy } from '../gateway/worker/retention-rule.ts';
import type { Logger } from '../http/log.ts';
import { ConfigError, type FerryConfig } from './config.ts';

export const RETENTION_URL_ENV = 'FERRY_COUCH_RETENTION_URL';

export interface WorkerRetentionConfig {
  /** Server root without credentials. */
  url: string;
  admin: CouchCredentials;
  policy: RetentionPolicy;
  intervalMs: number;
}

/** FERRY_COUCH_RETENTION_URL (already checked as an http(s) URL by the schema) → what the worker needs, or null when unset. */
export function readWorkerRetention(config: FerryConfig, retentionUrl: string | undefined): WorkerRetentionConfig | null {
  if (retentionUrl === undefined) return null;
  let parsed: { url: string; admin: CouchCredentials };
  try {
    parsed = parseCouchUrl(retentionUrl);
  } catch (err) {
    if (err instanceof CouchIdentityError) throw new ConfigError(`${RETENTION_URL_ENV} must be http(s)://admin:password@host:5984, a CouchDB server admin (retention's _purge and _compact are admin-only)`, [RETENTION_URL_ENV]);
    throw err;
  }
  const { windowMs, maxMs, recheckMs, intervalMs } = config.retention;
  return { url: parsed.url, admin: parsed.admin, policy: { windowMs, maxMs, recheckMs }, intervalMs };
}

/**
 * The one start-up line that says whether this process purges (no URL, no credential), and the
 * admin server for `startWorker`'s `retention` when it does. A credential that is not a server
 * admin refuses to start: passes would otherwise fail quietly, every interval, forever.
 */
export async function startWorkerRetention(rc: WorkerRetentionConfig | null, logger: Logger): Promise<{ purger: CouchServer; policy: RetentionPolicy; intervalMs: number } | null> {
  if (rc === null) {
    logger.warn({ component: 'retention' }, `retention is off in this process: ${RETENTION_URL_ENV} is not set, so this worker purges nothing from the inboxes`);
    return null;
  }
  const purger = createCouchServer({ url: rc.url, auth: rc.admin });
  const res = await purger.request('GET', '/_session');
  const roles = res.ok ? ((await res.json()) as { userCtx?: { roles?: unknown } }).userCtx?.roles : (await res.body?.cancel(), undefined);
  if (!Array.isArray(roles) || !roles.includes('_admin')) {
    throw new ConfigError(`${RETENTION_URL_ENV} must name a CouchDB server admin: its credential was refused or is not _admin`, [RETENTION_URL_ENV]);
  }
  logger.info({ component: 'retention', windowMs: rc.policy.windowMs, maxMs: rc.policy.maxMs, recheckMs: rc.policy.recheckMs, intervalMs: rc.intervalMs }, 'retention is on in this process, for the tenants whose lease it holds');
  return { purger, policy: rc.policy, intervalMs: rc.intervalMs };
}
