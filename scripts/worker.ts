// Runs one worker as its own process (DESIGN §2: one active worker per tenant, more stand by).
//
//   DATABASE_URL=postgres://… COUCHDB_URL=http://127.0.0.1:5984 FERRY_COUCH_WORKER_PASSWORD=… \
//     tsx scripts/worker.ts
//
// Several of these may run at once: leases in the platform database decide which one works on
// which tenant. PGlite is single-process, so DATABASE_URL is required. Prints one JSON line
// `{"event":"ready",…}` on stdout once it is looking at the tenant registry. Retention runs only
// with FERRY_COUCH_RETENTION_URL, a CouchDB server admin (scripts/worker-retention.ts).
import { hostname } from 'node:os';
import { readConfig, readEnv, registrationUrlOf, ConfigError, type FerryConfig } from './config.ts';
import { createLogger } from '../http/log.ts';
import { createCouchServer } from '../couchdb/client.ts';
import { WORKER_PASSWORD_ENV, WORKER_USER } from '../couchdb/identities.ts';
import { openPlatform } from '../gateway/platform/open.ts';
import { startWorker } from '../gateway/worker/worker.ts';
import { DEFAULT_RETRY_POLICY } from '../gateway/worker/backoff.ts';
import { loadOrCreateSigningKey } from '../identity/keys.ts';
import { createTokenIssuer } from '../identity/tokens.ts';
import { makeDataDirPrivate } from './data-dir.ts';
import { closeOnSignal } from './signals.ts';
import { createProjection } from '../gateway/replica/projection.ts';
import { readWorkerRetention, startWorkerRetention, type WorkerRetentionConfig } from './worker-retention.ts';

type Env = Record<string, string | undefined>;

export interface WorkerProcessConfig {
  couchUrl: string;
  workerPassword: string;
  platformSchema: string;
  registrationUrl: string;
  workerId: string;
  leaseTtlMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  tickMs: number;
  /** Mutations per round, i.e. per service batch. */
  batchSize: number;
  /** FERRY_COUCH_RETENTION_URL: retention runs here only with it (scripts/worker-retention.ts). */
  retention: WorkerRetentionConfig | null;
}

export function readWorkerConfig(config: FerryConfig, env: Env = process.env): WorkerProcessConfig {
  if (!config.databaseUrl) throw new ConfigError('the worker runs as its own process only against PostgreSQL: set DATABASE_URL', ['DATABASE_URL']);
  if (!config.couchdbUrl) throw new ConfigError('set COUCHDB_URL to the CouchDB server the inboxes live on', ['COUCHDB_URL']);
  const e = readEnv(env);
  const password = e.FERRY_COUCH_WORKER_PASSWORD;
  if (!password) throw new ConfigError(`set ${WORKER_PASSWORD_ENV} to the ${WORKER_USER} CouchDB user's password`, [WORKER_PASSWORD_ENV]);
  const url = new URL(config.couchdbUrl);
  // Admin credentials in COUCHDB_URL are for provisioning only; the worker is ferry-worker.
  url.username = '';
  url.password = '';
  return {
    couchUrl: url.toString().replace(/\/+$/, ''),
    workerPassword: password,
    platformSchema: config.platformSchema,
    registrationUrl: registrationUrlOf(config),
    workerId: e.FERRY_WORKER_ID ?? `${hostname()}:${process.pid}`,
    leaseTtlMs: e.FERRY_WORKER_LEASE_TTL_MS ?? 15_000,
    retryBaseMs: e.FERRY_WORKER_RETRY_BASE_MS ?? DEFAULT_RETRY_POLICY.baseMs,
    retryMaxMs: e.FERRY_WORKER_RETRY_MAX_MS ?? DEFAULT_RETRY_POLICY.maxMs,
    tickMs: e.FERRY_WORKER_TICK_MS ?? 1_000,
    batchSize: e.FERRY_WORKER_BATCH_SIZE ?? 200,
    retention: readWorkerRetention(config, e.FERRY_COUCH_RETENTION_URL),
  };
}

async function main(config: FerryConfig, wc: WorkerProcessConfig): Promise<void> {
  makeDataDirPrivate(config.dataDir);
  const logger = createLogger('ferry-worker', { level: config.logLevel });
  const platform = await openPlatform({ databaseUrl: config.databaseUrl, schema: wc.platformSchema });
  const key = await loadOrCreateSigningKey(config.dataDir);
  const issuer = createTokenIssuer({ key, issuer: config.issuer });
  const couch = createCouchServer({ url: wc.couchUrl, auth: { username: WORKER_USER, password: wc.workerPassword } });
  const retention = await startWorkerRetention(wc.retention, logger);
  const worker = await startWorker({
    platform,
    couch,
    issuer,
    services: { registration: wc.registrationUrl },
    workerId: wc.workerId,
    logger,
    leaseTtlMs: wc.leaseTtlMs,
    waitingTimeoutMs: config.waitingTimeoutMs,
    retry: { ...DEFAULT_RETRY_POLICY, baseMs: wc.retryBaseMs, maxMs: wc.retryMaxMs },
    tickMs: wc.tickMs,
    batchSize: wc.batchSize,
    ...(retention ? { retention } : {}),
  });
  // The replica projection shares the worker's CouchDB identity. Several workers may run it: each resumes from the
  // position kept in the platform database, and a record's index row and revisions only move to a newer version.
  const projection = config.replicaProjection
    ? createProjection({
        db: platform.db,
        couch,
        issuer,
        registrationUrl: wc.registrationUrl,
        natsUrl: config.natsUrl,
        ...(Object.values(config.natsAuth).some(Boolean) ? { natsAuth: config.natsAuth } : {}),
        tenants: () => platform.tenants.list(),
        logger,
      })
    : null;
  projection?.start();
  logger.info({ workerId: wc.workerId, replicaProjection: projection !== null }, 'worker started');
  process.stdout.write(`${JSON.stringify({ event: 'ready', workerId: wc.workerId, pid: process.pid })}\n`);

  closeOnSignal(logger, 'worker stopping', async () => {
    await projection?.stop();
    await worker.stop();
    await platform.close();
  });
}

try {
  const config = readConfig();
  const wc = readWorkerConfig(config);
  main(config, wc).catch((err: Error) => {
    console.error('ferry-worker: failed to start:', err.name, err.message);
    process.exit(err instanceof ConfigError ? 2 : 1);
  });
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`ferry-worker: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
