import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { silentLogger, type Logger } from '../../http/log.ts';
import type { TokenVerifier } from '../../identity/tokens.ts';
import type { Database } from '../../sql/database.ts';
import { createRegistrationApp } from './app.ts';
import type { NatsAuth } from '../../nats/connection.ts';
import { createOutboxRelay, type OutboxRelay, type RelayOptions } from './events/relay.ts';
import { DEFAULT_RETENTION_MS } from './idempotency/decision.ts';
import { purgeExpiredIdempotencyKeys } from './idempotency/store.ts';
import { createLicensing, type Licensing } from './licensing.ts';

// The registration service as one process-level piece: HTTP app, outbox relay and the periodic
// purge of expired idempotency keys. The caller owns the database and closes it after close().

export { createRegistrationApp, type RegistrationAppDeps } from './app.ts';
export { openRegistrationDatabase, migrateRegistration } from './schema.ts';
export { createLicensing, type Licensing } from './licensing.ts';
export { createOutboxRelay, type OutboxRelay, type RelayOptions } from './events/relay.ts';
export { purgeExpiredIdempotencyKeys } from './idempotency/store.ts';
export { STREAM_NAME } from './events/outbox.ts';

export interface RegistrationServiceOptions {
  db: Database;
  verifier: TokenVerifier;
  logger?: Logger;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Null runs without a relay: events wait in the outbox. */
  natsUrl?: string | null;
  /** Credentials when `natsUrl` carries none (NATS_USER/NATS_PASSWORD, NATS_CREDS). */
  natsAuth?: NatsAuth;
  relay?: Omit<RelayOptions, 'db' | 'natsUrl' | 'natsAuth' | 'logger'>;
  idempotencyRetentionMs?: number;
  purgeIntervalMs?: number;
  /** Tenants to license at start (idempotent), e.g. the dev seed's `north` and `south`. */
  licensedTenants?: readonly string[];
}

export interface RegistrationService {
  url: string;
  port: number;
  server: Server;
  licensing: Licensing;
  relay: OutboxRelay | null;
  close(): Promise<void>;
}

export async function startRegistrationService(opts: RegistrationServiceOptions): Promise<RegistrationService> {
  const logger = opts.logger ?? silentLogger();
  const licensing = createLicensing(opts.db);
  for (const tenant of opts.licensedTenants ?? []) await licensing.license(tenant);
  const relay = opts.natsUrl ? createOutboxRelay({ ...opts.relay, db: opts.db, natsUrl: opts.natsUrl, ...(opts.natsAuth ? { natsAuth: opts.natsAuth } : {}), logger }) : null;
  const app = createRegistrationApp({
    db: opts.db,
    verifier: opts.verifier,
    logger,
    licensing,
    idempotencyRetentionMs: opts.idempotencyRetentionMs ?? DEFAULT_RETENTION_MS,
    ...(relay ? { onCommit: () => relay.notify() } : {}),
  });
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  relay?.start();
  const purge = () => {
    purgeExpiredIdempotencyKeys(opts.db).then(
      (n) => n > 0 && logger.info({ component: 'registration', purged: n }, 'purged expired idempotency keys'),
      (err: Error) => logger.warn({ component: 'registration', err: { name: err.name } }, 'idempotency purge failed'),
    );
  };
  const purgeTimer = setInterval(purge, opts.purgeIntervalMs ?? 3600_000);
  purgeTimer.unref();
  const { port } = server.address() as AddressInfo;
  const host = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
  logger.info({ component: 'registration', port, relay: relay !== null }, 'registration service listening');
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    server,
    licensing,
    relay,
    async close() {
      clearInterval(purgeTimer);
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      await relay?.stop();
    },
  };
}
