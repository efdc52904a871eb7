// Everything one run needs, fresh and private to it: a temp data dir, PostgreSQL schemas for the
// platform and the registration service, the embedded CouchDB (owned by this process, so killing
// the gateway leaves it up), synthetic tenants and users, and the registration service (relaying
// to the real NATS JetStream), the gateway and the worker as child processes: in production an
// owning service runs apart, and in this process it would share an event loop with 50 devices.

import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createLogger, type Logger } from '../http/log.ts';
import { openPlatform, type Platform } from '../gateway/platform/open.ts';
import { prepareCouch, type PreparedCouch } from '../couchdb/prepare.ts';
import { inboxName, provisionTenant } from '../couchdb/provision.ts';
import { DEMO_TENANTS } from '../gateway/tenant/demo.ts';
import { GATEWAY_PASSWORD_ENV, WORKER_PASSWORD_ENV } from '../couchdb/identities.ts';
import { loadOrCreateSigningKey, type SigningKey } from '../identity/keys.ts';
import { createLicensing, openRegistrationDatabase } from '../services/registration/index.ts';
import type { Database } from '../sql/database.ts';
import { GATEWAY_ENTRY, REGISTRATION_ENTRY, WORKER_ENTRY, managedProcess, type ManagedProcess } from './processes.ts';

export const DEFAULT_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const DEFAULT_NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
/** The platform's token issuer name (scripts/config.ts default); the harness mints expired tokens with it. */
export const ISSUER = 'ferry';

export interface HarnessUser {
  id: string;
  password: string;
  tenants: string[];
}

export interface Infra {
  runTag: string;
  dataDir: string;
  logDir: string;
  tenants: string[];
  databaseUrl: string;
  natsUrl: string;
  platformSchema: string;
  registrationSchema: string;
  platform: Platform;
  couch: PreparedCouch;
  key: SigningKey;
  serviceDb: Database;
  registration: ManagedProcess;
  /** The first gateway's URL (sign-in goes there directly; sync goes through the fault proxy). */
  gatewayUrl: string;
  /** Every gateway's URL, in the order of `gateways`. */
  gatewayUrls: string[];
  gateways: ManagedProcess[];
  workers: HarnessWorker[];
  /** The worker lease TTL and tick every worker runs with. */
  lease: { ttlMs: number; tickMs: number };
  /** True when the run uses an external CouchDB (COUCHDB_URL), not the embedded server. */
  externalCouch: boolean;
  /** The harness's own log (pino, JSON lines), also checked for PHI. */
  logger: Logger;
  addUser(id: string, tenants: string[]): Promise<HarnessUser>;
  close(opts: { keep: boolean }): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function dropSchemas(databaseUrl: string, schemas: string[]): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    for (const s of schemas) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await client.end();
  }
}

export interface HarnessWorker extends ManagedProcess {
  /** Its lease holder id in the current incarnation (a restarted worker is a new holder). */
  id(): string;
}

/** Lease holder id of worker `index` (0-based) in its `incarnation`. */
export const harnessWorkerId = (runTag: string, index: number, incarnation: number) => `harness-${runTag}-w${index + 1}-${incarnation}`;

export const HARNESS_LEASE = { ttlMs: 2_000, tickMs: 200 } as const;

export interface InfraOptions {
  tenants: number;
  databaseUrl?: string | undefined;
  natsUrl?: string | undefined;
  /** An external CouchDB (admin credentials in the URL; FERRY_COUCH_GATEWAY_PASSWORD and FERRY_COUCH_WORKER_PASSWORD in the environment). */
  couchdbUrl?: string | undefined;
  /** Gateway processes (default 1). */
  gateways?: number;
  /** Worker processes (default 1); beyond one they stand by for each other's tenants. */
  workers?: number;
}

export async function startInfra(opts: InfraOptions): Promise<Infra> {
  const runTag = randomBytes(4).toString('hex');
  const databaseUrl = opts.databaseUrl ?? DEFAULT_DATABASE_URL;
  const natsUrl = opts.natsUrl ?? DEFAULT_NATS_URL;
  const dataDir = mkdtempSync(join(tmpdir(), `ferry-harness-${runTag}-`));
  const logDir = join(dataDir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const platformSchema = `h_platform_${runTag}`;
  const registrationSchema = `h_registration_${runTag}`;
  const tenants = Array.from({ length: opts.tenants }, (_, i) => `h${i + 1}-${runTag}`);
  const logFile: WriteStream = createWriteStream(join(logDir, 'harness.log'), { flags: 'a' });
  const logger = createLogger('ferry-harness', { level: 'info', destination: logFile });

  const closers: Array<() => Promise<void>> = [];
  let schemasCreated = false;
  let keepInboxes = false;
  const closeAll = async (keep: boolean) => {
    keepInboxes = keep;
    for (const c of closers.reverse()) await c().catch((err: Error) => console.error(`harness: cleanup step failed: ${err.name}: ${err.message}`));
    closers.length = 0;
    await new Promise<void>((r) => logFile.end(() => r()));
    if (!keep) {
      if (schemasCreated) await dropSchemas(databaseUrl, [platformSchema, registrationSchema]).catch((err: Error) => console.error(`harness: could not drop schemas: ${err.message}`));
      rmSync(dataDir, { recursive: true, force: true });
    }
  };

  try {
    schemasCreated = true;
    const platform = await openPlatform({ databaseUrl, schema: platformSchema });
    closers.push(() => platform.close());
    const couch = await prepareCouch({ dataDir, couchdbUrl: opts.couchdbUrl }, platform, logger, { demoTenants: false, reprovisionRegistered: false });
    closers.push(() => couch.stop());
    if (opts.couchdbUrl) {
      // An external CouchDB outlives the run: drop this run's inboxes (DELETE /{db}, CouchDB 3 API).
      const auth = `Basic ${Buffer.from(`${couch.identities.admin.username}:${couch.identities.admin.password}`).toString('base64')}`;
      // The gateways (dev IdP) also provision the demo tenants' inboxes: drop those too, unless they were there before the run.
      const before = new Set(await couch.server.allDbs());
      const demo = DEMO_TENANTS.map(inboxName).filter((db) => !before.has(db));
      closers.push(async () => {
        if (keepInboxes) return;
        for (const db of [...tenants.map(inboxName), ...demo]) await fetch(`${couch.identities.url}/${encodeURIComponent(db)}`, { method: 'DELETE', headers: { authorization: auth } });
      });
    }
    for (const tenant of tenants) await provisionTenant({ admin: couch.server, tenant, registry: platform.tenants });

    const key = await loadOrCreateSigningKey(dataDir);
    // The harness's own connection: it migrates the schema, licenses the tenants and reads the
    // service's rows for the invariants; the service process opens its own.
    const serviceDb = await openRegistrationDatabase({ url: databaseUrl, schema: registrationSchema, max: 4 });
    closers.push(() => serviceDb.close());
    const licensing = createLicensing(serviceDb);
    for (const tenant of tenants) await licensing.license(tenant);

    const gatewayCount = opts.gateways ?? 1;
    const workerCount = opts.workers ?? 1;
    const gatewayPorts: number[] = [];
    for (let i = 0; i < gatewayCount; i++) gatewayPorts.push(await freePort());
    const registrationPort = await freePort();
    const gatewayUrls = gatewayPorts.map((p) => `http://127.0.0.1:${p}`);
    const common = {
      FERRY_DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
      NATS_URL: natsUrl,
      FERRY_PLATFORM_SCHEMA: platformSchema,
      FERRY_REGISTRATION_SCHEMA: registrationSchema,
      FERRY_REGISTRATION_URL: `http://127.0.0.1:${registrationPort}`,
      FERRY_ISSUER: ISSUER,
      FERRY_LOG_LEVEL: 'info',
      NODE_ENV: 'test',
    };
    const registration = managedProcess({
      name: 'registration',
      entry: REGISTRATION_ENTRY,
      logFile: join(logDir, 'registration.log'),
      env: () => ({ ...common, FERRY_REGISTRATION_PORT: String(registrationPort)}),
    });
    closers.push(() => registration.stop());
    await registration.start();
    // External CouchDB: the gateways provision with the admin URL and need both service passwords
    // (inherited from this process's environment); embedded: they find the server on FERRY_DATA_DIR.
    const couchEnv: Record<string, string> = opts.couchdbUrl
      ? { COUCHDB_URL: opts.couchdbUrl, [GATEWAY_PASSWORD_ENV]: couch.identities.gateway.password, [WORKER_PASSWORD_ENV]: couch.identities.worker.password }
      : {};
    const gateways = gatewayPorts.map((port, i) => {
      const g = managedProcess({
        name: gatewayCount === 1 ? 'gateway' : `gateway-${i + 1}`,
        entry: GATEWAY_ENTRY,
        logFile: join(logDir, gatewayCount === 1 ? 'gateway.log' : `gateway-${i + 1}.log`),
        env: () => ({ ...common, ...couchEnv, FERRY_PORT: String(port), FERRY_HOST: '127.0.0.1' }),
      });
      closers.push(() => g.stop());
      return g;
    });
    const workers: HarnessWorker[] = Array.from({ length: workerCount }, (_, i) => {
      const w = managedProcess({
        name: workerCount === 1 ? 'worker' : `worker-${i + 1}`,
        entry: WORKER_ENTRY,
        logFile: join(logDir, workerCount === 1 ? 'worker.log' : `worker-${i + 1}.log`),
        env: (n) => ({
          ...common,
          COUCHDB_URL: couch.identities.url,
          [WORKER_PASSWORD_ENV]: couch.identities.worker.password,
          FERRY_WORKER_ID: harnessWorkerId(runTag, i, n),
          FERRY_WORKER_LEASE_TTL_MS: String(HARNESS_LEASE.ttlMs),
          FERRY_WORKER_RETRY_BASE_MS: '100',
          FERRY_WORKER_RETRY_MAX_MS: '2000',
          FERRY_WORKER_TICK_MS: String(HARNESS_LEASE.tickMs),
        }),
      });
      closers.push(() => w.stop());
      return Object.assign(w, { id: () => harnessWorkerId(runTag, i, w.incarnations()) });
    });
    // One gateway first (it bundles the web app), then the rest and the workers together.
    await gateways[0]!.start();
    await Promise.all([...gateways.slice(1).map((g) => g.start()), ...workers.map((w) => w.start())]);
    const gatewayUrl = gatewayUrls[0]!;

    return {
      runTag,
      dataDir,
      logDir,
      tenants,
      databaseUrl,
      natsUrl,
      platformSchema,
      registrationSchema,
      platform,
      couch,
      key,
      serviceDb,
      registration,
      gatewayUrl,
      gatewayUrls,
      gateways,
      workers,
      lease: { ...HARNESS_LEASE },
      externalCouch: Boolean(opts.couchdbUrl),
      logger,
      async addUser(id, userTenants) {
        const password = randomBytes(12).toString('base64url');
        await platform.users.upsert({ id, username: id, password });
        for (const t of userTenants) await platform.memberships.set(t, id, ['registrar']);
        return { id, password, tenants: userTenants };
      },
      close: ({ keep }) => closeAll(keep),
    };
  } catch (err) {
    await closeAll(false);
    throw err;
  }
}
