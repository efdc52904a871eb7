// `npm run start:cluster -- --gateways N --workers M`: N gateway processes and M worker processes
// (and one registration service unless FERRY_REGISTRATION_URL names one) on this machine, against
// DATABASE_URL, NATS_URL and COUCHDB_URL (DESIGN §2). Each is its own OS process, started from the
// same entry points as `npm run start:gateway` / `start:worker` / `start:registration`, and restarted
// if it dies; gateway i listens on FERRY_PORT + i. A load balancer (or the harness's fault proxy)
// goes in front of the gateways.
//
// CouchDB: with COUCHDB_URL (admin credentials in it, for provisioning only) every child inherits
// COUCHDB_URL, FERRY_COUCH_GATEWAY_PASSWORD and FERRY_COUCH_WORKER_PASSWORD. Without it this process
// starts one embedded CouchDB for all of them on FERRY_DATA_DIR; its admin and service passwords
// are generated once under FERRY_DATA_DIR/couch (0600 files): the gateways find the running server
// and read them there, the workers are handed the worker password in their environment.
// Retention (docs/SYNC.md "Retention"): with the embedded server the workers are also handed its
// admin credential as FERRY_COUCH_RETENTION_URL, so the lease holder of each tenant purges it; with
// COUCHDB_URL they inherit FERRY_COUCH_RETENTION_URL if the operator set it, and run none otherwise.
// Signing keys are shared the same way, through FERRY_DATA_DIR/keys.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger } from '../http/log.ts';
import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { openPlatform } from '../gateway/platform/open.ts';
import { prepareCouch, type PreparedCouch } from '../couchdb/prepare.ts';
import { WORKER_PASSWORD_ENV } from '../couchdb/identities.ts';
import { RETENTION_URL_ENV } from './worker-retention.ts';
import { DEMO_LICENSED, seedDemo } from '../gateway/tenant/demo.ts';
import { createLicensing, openRegistrationDatabase } from '../services/registration/index.ts';
import { makeDataDirPrivate } from './data-dir.ts';
import { closeOnSignal } from './signals.ts';

type Env = Record<string, string | undefined>;

export interface ClusterArgs {
  gateways: number;
  workers: number;
}

/** `--gateways N --workers M` (also `--gateways=N`); 1 ≤ N ≤ 32, 0 ≤ M ≤ 32. Defaults 2 and 2. */
export function parseClusterArgs(argv: readonly string[]): ClusterArgs {
  const out: ClusterArgs = { gateways: 2, workers: 2 };
  const limits = { gateways: [1, 32], workers: [0, 32] } as const;
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(gateways|workers)(?:=(.*))?$/.exec(argv[i]!);
    if (!m) throw new ConfigError(`unknown argument ${JSON.stringify(argv[i])}: use --gateways N --workers M`);
    const name = m[1] as keyof ClusterArgs;
    const raw = m[2] ?? argv[++i];
    const [min, max] = limits[name];
    if (raw === undefined || !/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) throw new ConfigError(`--${name} must be a whole number from ${min} to ${max}`);
    out[name] = Number(raw);
  }
  return out;
}

export interface ChildPlan {
  name: string;
  entry: 'gateway' | 'worker' | 'registration';
  env: Record<string, string>;
}

/**
 * What to start, as data: the registration service (unless it runs elsewhere), then the gateways
 * on consecutive ports, then the workers. `couch` is what the children need to reach CouchDB.
 */
export function planCluster(
  config: Pick<FerryConfig, 'port' | 'registrationUrl' | 'registrationPort'>,
  args: ClusterArgs,
  couch: { url: string; workerPassword: string; retentionUrl?: string },
): ChildPlan[] {
  const plans: ChildPlan[] = [];
  // FERRY_PORT=0: every gateway on an ephemeral port (printed in the ready line); the registration
  // service then needs a port of its own, since the gateways must be told where it is.
  if (!config.registrationUrl && !config.registrationPort && config.port === 0) {
    throw new ConfigError('with FERRY_PORT=0 set FERRY_REGISTRATION_PORT (or FERRY_REGISTRATION_URL) too', ['FERRY_REGISTRATION_PORT']);
  }
  const registrationPort = config.registrationPort || config.port + 100;
  const registrationUrl = config.registrationUrl ?? `http://127.0.0.1:${registrationPort}`;
  if (!config.registrationUrl) plans.push({ name: 'registration', entry: 'registration', env: { FERRY_REGISTRATION_PORT: String(registrationPort) } });
  for (let i = 0; i < args.gateways; i++) {
    plans.push({
      name: `gateway-${i + 1}`,
      entry: 'gateway',
      // COUCHDB_URL and its passwords, when set, come with the inherited environment; without them
      // each gateway finds the running embedded server on FERRY_DATA_DIR.
      env: { FERRY_PORT: String(config.port === 0 ? 0 : config.port + i), FERRY_REGISTRATION_URL: registrationUrl },
    });
  }
  for (let i = 0; i < args.workers; i++) {
    plans.push({
      name: `worker-${i + 1}`,
      entry: 'worker',
      env: {
        FERRY_WORKER_ID: `worker-${i + 1}`,
        FERRY_REGISTRATION_URL: registrationUrl,
        COUCHDB_URL: couch.url,
        [WORKER_PASSWORD_ENV]: couch.workerPassword,
        ...(couch.retentionUrl ? { [RETENTION_URL_ENV]: couch.retentionUrl } : {}),
      },
    });
  }
  return plans;
}

/** `http://user:password@host:port` for a child's environment (never logged). */
function credentialedUrl(url: string, who: { username: string; password: string }): string {
  const u = new URL(url);
  u.username = who.username;
  u.password = who.password;
  return u.toString().replace(/\/+$/, '');
}

const ENTRIES: Record<ChildPlan['entry'], string> = {
  gateway: fileURLToPath(new URL('./gateway.ts', import.meta.url)),
  worker: fileURLToPath(new URL('./worker.ts', import.meta.url)),
  registration: fileURLToPath(new URL('./registration.ts', import.meta.url)),
};
const TSX = import.meta.resolve('tsx');

interface Supervised {
  plan: ChildPlan;
  /** Resolves with the child's ready line (JSON) once it printed it. */
  start(): Promise<Record<string, unknown>>;
  /** No more restarts (a signal reaches the children and this process at once). */
  stopping(): void;
  stop(): Promise<void>;
  pid(): number | undefined;
}

/** One child: its lines go to our stdout/stderr prefixed with its name; it is restarted 1 s after an unexpected exit. */
function supervise(plan: ChildPlan, logger: Logger, base: Env): Supervised {
  let child: ChildProcess | null = null;
  let stopping = false;
  const run = () =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const c = spawn(process.execPath, ['--import', TSX, ENTRIES[plan.entry]], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, NODE_OPTIONS: '', ...plan.env } });
      child = c;
      let ready = false;
      createInterface({ input: c.stdout! }).on('line', (line) => {
        process.stdout.write(`[${plan.name}] ${line}\n`);
        if (!ready && line.includes('"event":"ready"')) {
          ready = true;
          resolve(JSON.parse(line) as Record<string, unknown>);
        }
      });
      createInterface({ input: c.stderr! }).on('line', (line) => process.stderr.write(`[${plan.name}] ${line}\n`));
      c.once('exit', (code, signal) => {
        if (stopping) return;
        if (!ready) return reject(new Error(`${plan.name} exited before it was ready (code ${code}, signal ${signal})`));
        logger.warn({ child: plan.name, code, signal }, 'child exited; restarting it in 1 s');
        setTimeout(() => {
          if (stopping) return;
          void run().catch((err: Error) => logger.error({ child: plan.name, err: { name: err.name } }, 'restart failed'));
        }, 1_000).unref();
      });
    });
  return {
    plan,
    start: run,
    stopping: () => {
      stopping = true;
    },
    pid: () => child?.pid,
    async stop() {
      stopping = true;
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    },
  };
}

async function main(config: FerryConfig, args: ClusterArgs): Promise<void> {
  if (!config.databaseUrl) throw new ConfigError('several processes share one platform database only on PostgreSQL: set DATABASE_URL (PGlite is single-process)', ['DATABASE_URL']);
  makeDataDirPrivate(config.dataDir);
  const logger = createLogger('ferry-cluster', { level: config.logLevel });
  const devIdp = config.externalAuth === null;
  if (devIdp) logger.warn({ component: 'auth' }, 'dev identity provider is on');

  // Set up once, here, what the children would otherwise race on at start-up: migrations, the demo
  // seed, service users and inbox provisioning, and (embedded) the one CouchDB server.
  const platform = await openPlatform({ databaseUrl: config.databaseUrl, schema: config.platformSchema });
  let couch: PreparedCouch | null = null;
  const children: Supervised[] = [];
  const close = async () => {
    for (const c of children) c.stopping();
    for (const c of [...children].reverse()) await c.stop();
    await couch?.stop();
    await platform.close().catch(() => undefined);
  };
  try {
    if (devIdp) await seedDemo(platform);
    couch = await prepareCouch(config, platform, logger, { demoTenants: devIdp });
    if (devIdp && !config.registrationUrl) {
      // The demo tenants are licensed for registration, as `npm start` does.
      const db = await openRegistrationDatabase({ url: config.databaseUrl, schema: config.registrationSchema, max: 2 });
      for (const t of DEMO_LICENSED.registration) await createLicensing(db).license(t);
      await db.close();
    }
    const plans = planCluster(config, args, {
      url: config.couchdbUrl ?? couch.identities.url,
      workerPassword: couch.identities.worker.password,
      ...(couch.identities.embedded ? { retentionUrl: credentialedUrl(couch.identities.url, couch.identities.admin) } : {}),
    });
    for (const plan of plans) children.push(supervise(plan, logger, process.env));
    // One at a time, so that no two gateways seed, provision or bundle the web app at once; the
    // workers (which do none of that) together at the end.
    const urls: string[] = [];
    for (const c of children.filter((x) => x.plan.entry !== 'worker')) {
      const line = await c.start();
      if (c.plan.entry === 'gateway' && typeof line.url === 'string') urls.push(line.url);
    }
    await Promise.all(children.filter((x) => x.plan.entry === 'worker').map((c) => c.start()));
    process.stdout.write(`${JSON.stringify({ event: 'ready', gateways: urls, workers: plans.filter((p) => p.entry === 'worker').map((p) => p.env.FERRY_WORKER_ID), processes: children.map((c) => ({ name: c.plan.name, pid: c.pid() })) })}\n`);
    closeOnSignal(logger, 'cluster stopping', close);
  } catch (err) {
    await close();
    throw err;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    const config = readConfig();
    const args = parseClusterArgs(process.argv.slice(2));
    main(config, args).catch((err: Error) => {
      console.error(`ferry-cluster: failed to start: ${err.name}: ${err.message}`);
      process.exit(err instanceof ConfigError ? 2 : 1);
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`ferry-cluster: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
}
