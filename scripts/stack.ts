// The composition root: wires every Ferry piece from a FerryConfig. `npm start`, the per-piece
// entry points, the acceptance tests and the harness all start Ferry through this one function,
// so what the tests exercise is what runs.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { registrationUrlOf, type FerryConfig } from './config.ts';
import { silentLogger, type Logger } from '../http/log.ts';
import { openPlatform, type Platform } from '../gateway/platform/open.ts';
import { seedDemo, DEMO_LICENSED } from '../gateway/tenant/demo.ts';
import { createGatewayApp } from '../gateway/app.ts';
import { createGatewayServer } from '../gateway/edge/server-timeouts.ts';
import { createAdminSessionStore } from '../gateway/operators/admin-sessions.ts';
import { createUpstream } from '../gateway/sync/upstream.ts';
import { createLocalStore, migrateSync } from '../gateway/sync/local-store.ts';
import { createFeedIndex, createHeadWatchers } from '../gateway/sync/feed.ts';
import { startWorker, type Worker } from '../gateway/worker/worker.ts';
import { createWorkerMetrics } from '../gateway/worker/metrics.ts';
import { createRegistry, processRegistry } from '../gateway/metrics/registry.ts';
import { createHttpMetrics } from '../gateway/metrics/http.ts';
import { registerPlatformMetrics, type ServiceOutbox } from '../gateway/metrics/platform.ts';
import { createReadiness, type ComponentCheck } from '../gateway/health/readiness.ts';
import { couchCheck, databaseCheck, outboxCheck, relayCheck, serviceCheck } from '../gateway/health/checks.ts';
import { loadOrCreateSigningKey, jwksOf } from '../identity/keys.ts';
import { cachingVerifier, createTokenIssuer, createTokenVerifier, type TokenIssuer } from '../identity/tokens.ts';
import { loadOrCreateOwnerSecret } from '../identity/owner.ts';
import { createExternalTokenVerifier } from '../gateway/auth/external-idp.ts';
import { prepareCouch, type PreparedCouch } from '../couchdb/prepare.ts';
import { couchServerAs } from '../couchdb/identities.ts';
import { openRegistrationDatabase, startRegistrationService, type RegistrationService } from '../services/registration/index.ts';
import type { Database } from '../sql/database.ts';
import { buildWebApp } from '../web/build.ts';
import { makeDataDirPrivate } from './data-dir.ts';
import { acquireDataDirLock } from './data-dir-lock.ts';
import { listenFailure } from './startup-error.ts';
import { startOperatorApi } from '../gateway/tenant/operator-api.ts';
import { provisionTenant, recordsName } from '../couchdb/provision.ts';
import { createProjection, type Projection, type ProjectionOptions } from '../gateway/replica/projection.ts';
import { createReplicaMetrics } from '../gateway/replica/metrics.ts';

export interface StackOptions {
  logger?: Logger;
  /** Which pieces run in this process. Default: all of them. */
  gateway?: boolean;
  worker?: boolean;
  /** Start the registration service here (default unless `config.registrationUrl` is set). */
  registration?: boolean;
  /** Passed to the worker; tests shorten the retry and lease timings. */
  workerTuning?: Partial<Pick<Parameters<typeof startWorker>[0], 'leaseTtlMs' | 'retry' | 'tickMs' | 'pollTimeoutMs' | 'commitTimeoutMs' | 'retention'>>;
  workerId?: string;
  /** Bundle the clinician web app (web/ → web/dist, once per process) and serve it at /app/. Default: true. */
  webApp?: boolean;
  /** Passed to the replica projection (runs with the worker unless `FERRY_REPLICA_PROJECTION=off`); tests shorten its timings. */
  replicaTuning?: Partial<Pick<ProjectionOptions, 'fetchExpiresMs' | 'batchSize' | 'backoff' | 'afterDocsWritten'>>;
}

export interface Stack {
  config: FerryConfig;
  /** The gateway's base URL, when this process runs the gateway. */
  url: string | null;
  platform: Platform;
  couch: PreparedCouch;
  issuer: TokenIssuer;
  registration: RegistrationService | null;
  registrationUrl: string;
  worker: Worker | null;
  /** The replica projection, when this process runs it. */
  projection: Projection | null;
  close(): Promise<void>;
}

export async function startStack(config: FerryConfig, opts: StackOptions = {}): Promise<Stack> {
  const logger = opts.logger ?? silentLogger();
  const devIdp = config.externalAuth === null;
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch((err: Error) => logger.warn({ err: { name: err.name } }, 'close failed'));
    closers.length = 0;
  };

  try {
    makeDataDirPrivate(config.dataDir);
    // PGlite is single-process: one Ferry process per data dir (released last, at close).
    if (!config.databaseUrl) {
      const lock = acquireDataDirLock(config.dataDir, 'server');
      closers.push(async () => lock.release());
    }
    const platform = await openPlatform({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      schema: config.databaseUrl ? config.platformSchema : undefined,
      sessionCheckTtlMs: config.sessionCheckTtlMs,
    });
    closers.push(() => platform.close());
    if (devIdp) await seedDemo(platform);

    const key = await loadOrCreateSigningKey(config.dataDir);
    const issuer = createTokenIssuer({ key, issuer: config.issuer, accessTtlSeconds: config.accessTtlSeconds });
    // The edge refuses delegated (worker → service) tokens; services accept them.
    // Cached per token until its exp: a device's requests verify its token once, not each (~0.5 ms of
    // EdDSA per request, ~6% of the gateway's CPU under the harness). Revocation does not rest on
    // this: every request's session and membership go through the liveness check.
    const verifier = cachingVerifier(createTokenVerifier({ jwks: jwksOf([key]), issuer: config.issuer, delegated: 'refuse' }));
    const serviceVerifier = createTokenVerifier({ jwks: jwksOf([key]), issuer: config.issuer });
    // Which identity mode is on (DESIGN §2); the entry points add the loud dev-IdP banner.
    if (config.externalAuth) logger.info({ component: 'auth', mode: 'external-oidc', issuer: config.externalAuth.issuer }, 'external identity provider on (POST /auth/exchange); dev IdP off');
    else logger.info({ component: 'auth', mode: 'dev-idp' }, 'dev identity provider on (POST /auth/token)');

    const couch = await prepareCouch(config, platform, logger, { demoTenants: devIdp, ...(config.couchdbUrl ? {} : { reuseRunning: true }) });
    closers.push(() => couch.stop());

    // A registration database this start creates holds no patient yet: the replica projection need
    // not read the events stored before it (a shared NATS may hold many of other deployments').
    const freshRegistration = !config.databaseUrl && !config.registrationUrl && opts.registration !== false && !existsSync(join(config.dataDir, 'pg', 'registration'));
    const startedAt = new Date(Date.now() - 60_000);
    let registration: RegistrationService | null = null;
    let registrationDb: Database | null = null;
    let registrationUrl: string;
    if (config.registrationUrl || opts.registration === false) {
      registrationUrl = registrationUrlOf(config);
    } else {
      const db: Database = await openRegistrationDatabase({
        url: config.databaseUrl,
        dataDir: config.databaseUrl ? undefined : join(config.dataDir, 'pg', 'registration'),
        schema: config.databaseUrl ? config.registrationSchema : undefined,
      });
      closers.push(() => db.close());
      registrationDb = db;
      registration = await startRegistrationService({
        db,
        ...(Object.values(config.natsAuth).some(Boolean) ? { natsAuth: config.natsAuth } : {}),
        // In one process the service is handed the platform's public keys; run apart, it fetches the JWKS.
        verifier: serviceVerifier,
        logger,
        host: '127.0.0.1',
        port: config.registrationPort,
        natsUrl: config.natsUrl,
        licensedTenants: devIdp ? DEMO_LICENSED.registration : [],
      }).catch((err: unknown) => {
        throw listenFailure(err, 'registration service', '127.0.0.1', config.registrationPort, { port: 'FERRY_REGISTRATION_PORT', host: 'FERRY_REGISTRATION_PORT' });
      });
      closers.push(() => registration!.close());
      registrationUrl = registration.url;
    }

    if (config.operatorApi) {
      // While this process holds the data directory, the `ferry` CLI runs its commands here.
      const service = registration;
      const operatorApi = await startOperatorApi({
        dataDir: config.dataDir,
        logger,
        admin: {
          tenants: platform.tenants,
          memberships: platform.memberships,
          users: platform.users,
          provision: (tenant) => provisionTenant({ admin: couch.server, tenant, registry: platform.tenants }),
          licensing: async (module) => (module === 'registration' && service ? service.licensing : null),
        },
      });
      closers.push(() => operatorApi.close());
    }

    const metrics = createRegistry();
    // The outboxes this process can see: the registration service's, when it runs here.
    const outboxes: ServiceOutbox[] = registration && registrationDb ? [{ service: 'registration', db: registrationDb, relay: registration.relay }] : [];
    registerPlatformMetrics(metrics, { platformDb: platform.db, outboxes });
    // What /readyz probes: what this stack needs, and what it runs itself (DESIGN §5).
    const gatewayCouch = couchServerAs(couch.identities, 'gateway');
    const readinessChecks: ComponentCheck[] = [couchCheck(() => gatewayCouch.up()), databaseCheck('platform_db', platform.db)];
    if (registration && registrationDb) readinessChecks.push(serviceCheck('registration', { db: registrationDb, url: registration.url }));
    for (const o of outboxes) {
      if (o.relay) readinessChecks.push(relayCheck({ ...o, relay: o.relay }));
      readinessChecks.push(outboxCheck(o, config.readyzOutboxBacklog));
    }
    let worker: Worker | null = null;
    if (opts.worker !== false) {
      worker = await startWorker({
        platform,
        couch: couchServerAs(couch.identities, 'worker'),
        issuer,
        services: { registration: registrationUrl },
        workerId: opts.workerId ?? `worker-${process.pid}`,
        logger,
        metrics: createWorkerMetrics(metrics),
        waitingTimeoutMs: config.waitingTimeoutMs,
        // `_purge` and `_compact` are admin-only in CouchDB 3: retention runs with the admin
        // credential this stack already holds for provisioning (docs/SYNC.md "Retention").
        retention: { purger: couchServerAs(couch.identities, 'admin'), policy: { windowMs: config.retention.windowMs, maxMs: config.retention.maxMs, recheckMs: config.retention.recheckMs }, intervalMs: config.retention.intervalMs },
        ...opts.workerTuning,
      });
      closers.push(() => worker!.stop());
    }
    let projection: Projection | null = null;
    if (opts.worker !== false && config.replicaProjection) {
      projection = createProjection({
        db: platform.db,
        couch: couchServerAs(couch.identities, 'worker'),
        issuer,
        registrationUrl,
        natsUrl: config.natsUrl,
        ...(Object.values(config.natsAuth).some(Boolean) ? { natsAuth: config.natsAuth } : {}),
        tenants: () => platform.tenants.list(),
        logger,
        metrics: createReplicaMetrics(metrics),
        ...(freshRegistration ? { freshServiceSince: startedAt } : {}),
        ...opts.replicaTuning,
      });
      projection.start();
      closers.push(() => projection!.stop());
    }

    let url: string | null = null;
    if (opts.gateway !== false) {
      await migrateSync(platform.db);
      const upstream = createUpstream({ url: couch.identities.url, auth: couch.identities.gateway });
      const feedIndex = createFeedIndex(platform.db);
      const watchers = createHeadWatchers({ upstream, ownersWithRows: (...a) => feedIndex.ownersWithRows(...a) });
      closers.push(async () => watchers.close());
      const records = createUpstream({ url: couch.identities.url, auth: couch.identities.gateway, database: recordsName });
      const recordWatchers = createHeadWatchers({ upstream: records });
      closers.push(async () => recordWatchers.close());
      let webDir: string | null = null;
      if (opts.webApp !== false) {
        webDir = await buildWebApp().catch((err: Error) => {
          logger.warn({ err: { name: err.name } }, 'web app bundle failed; /app/ is not served');
          return null;
        });
      }
      const app = createGatewayApp({
        logger,
        webApp: webDir ? { dir: webDir } : null,
        signingKeys: [key],
        devIdp: devIdp ? { users: platform.users, memberships: platform.memberships, sessions: platform.sessions, issuer, verifyToken: verifier } : null,
        externalIdp: config.externalAuth
          ? {
              memberships: platform.memberships,
              sessions: platform.sessions,
              issuer,
              verifyToken: verifier,
              verify: createExternalTokenVerifier({ jwks: config.externalAuth.jwksUrl, issuer: config.externalAuth.issuer, audience: config.externalAuth.audience }),
              ownerSecret: loadOrCreateOwnerSecret(config.dataDir),
            }
          : null,
        v1Routes: [{ collection: 'patients', serviceUrl: registrationUrl }],
        verifyToken: verifier,
        liveness: platform.liveness,
        issuer,
        trustedProxies: config.trustedProxies,
        corsOrigins: config.corsOrigins,
        readiness: createReadiness(readinessChecks, { timeoutMs: config.readyzTimeoutMs }),
        metrics: {
          registries: [processRegistry(), metrics],
          http: createHttpMetrics(metrics),
          verifier,
          liveness: platform.liveness,
          metricsToken: config.metricsToken,
          openToLoopback: !config.production && !config.couchdbUrl,
        },
        sync: { upstream, verifyToken: verifier, liveness: platform.liveness, local: createLocalStore(platform.db), db: platform.db, watchers, logger },
        replica: {
          records,
          verifyToken: verifier,
          liveness: platform.liveness,
          memberships: platform.memberships,
          db: platform.db,
          local: createLocalStore(platform.db),
          watchers: recordWatchers,
          logger,
        },
        operators: config.fauxton
          ? {
              couch: { url: couch.identities.url, admin: couch.identities.admin },
              sessions: createAdminSessionStore(platform.db),
              memberships: platform.memberships,
              verifier,
              liveness: platform.liveness,
              users: devIdp ? platform.users : null,
              logger,
            }
          : null,
      });
      const server: Server = createGatewayServer(app);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(listenFailure(err, 'gateway', config.host, config.port, { port: 'FERRY_PORT', host: 'FERRY_HOST' })));
        server.listen(config.port, config.host, () => resolve());
      });
      closers.push(
        () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      );
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    }

    return { config, url, platform, couch, issuer, registration, registrationUrl, worker, projection, close };
  } catch (err) {
    await close();
    throw err;
  }
}
