// Runs the registration service as its own process, as an owning service runs in production
// (DESIGN §6): the worker and the gateway's /v1 reach it over HTTP.
//
//   DATABASE_URL=postgres://… FERRY_REGISTRATION_PORT=8081 FERRY_DATA_DIR=… tsx scripts/registration.ts
//
// It verifies the platform's delegated and access tokens with the public half of the signing key
// in FERRY_DATA_DIR (shared with the gateway and the worker on one machine). PGlite is
// single-process, so DATABASE_URL is required. Prints one JSON line `{"event":"ready",…}` on stdout
// once it listens.
import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { createLogger } from '../http/log.ts';
import { jwksOf, loadOrCreateSigningKey } from '../identity/keys.ts';
import { createTokenVerifier } from '../identity/tokens.ts';
import { openRegistrationDatabase, startRegistrationService } from '../services/registration/index.ts';
import { makeDataDirPrivate } from './data-dir.ts';
import { listenFailure } from './startup-error.ts';
import { closeOnSignal } from './signals.ts';

async function main(config: FerryConfig): Promise<void> {
  if (!config.databaseUrl) throw new ConfigError('the registration service runs as its own process only against PostgreSQL: set DATABASE_URL', ['DATABASE_URL']);
  makeDataDirPrivate(config.dataDir);
  const logger = createLogger('ferry-registration', { level: config.logLevel });
  const key = await loadOrCreateSigningKey(config.dataDir);
  const verifier = createTokenVerifier({ jwks: jwksOf([key]), issuer: config.issuer });
  const db = await openRegistrationDatabase({ url: config.databaseUrl, schema: config.registrationSchema });
  const service = await startRegistrationService({
    db,
    ...(Object.values(config.natsAuth).some(Boolean) ? { natsAuth: config.natsAuth } : {}),
    verifier,
    logger,
    host: '127.0.0.1',
    port: config.registrationPort,
    natsUrl: config.natsUrl,
  }).catch((err: unknown) => {
    throw listenFailure(err, 'registration service', '127.0.0.1', config.registrationPort, { port: 'FERRY_REGISTRATION_PORT', host: 'FERRY_REGISTRATION_PORT' });
  });
  logger.info({ url: service.url }, 'registration service started');
  process.stdout.write(`${JSON.stringify({ event: 'ready', url: service.url, pid: process.pid })}\n`);

  closeOnSignal(logger, 'registration service stopping', async () => {
    await service.close();
    await db.close();
  });
}

try {
  const config = readConfig();
  main(config).catch((err: Error) => {
    console.error(`ferry-registration: failed to start: ${err.name}: ${err.message}`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  });
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`ferry-registration: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
