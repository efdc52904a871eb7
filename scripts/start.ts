// `npm start`: every Ferry piece on one machine, on embedded defaults (DESIGN §2). Each piece
// reads its real counterpart from the environment through scripts/config.ts.
import { createServer } from 'node:http';
import { join } from 'node:path';
import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { createLogger } from '../http/log.ts';
import { openPlatform } from '../gateway/platform/open.ts';
import { seedDemo, DEMO_LICENSED } from '../gateway/tenant/demo.ts';
import { createGatewayApp } from '../gateway/app.ts';
import { loadOrCreateSigningKey } from '../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier } from '../identity/tokens.ts';
import { openRegistrationDatabase, startRegistrationService } from '../services/registration/index.ts';

async function main(config: FerryConfig): Promise<void> {
  const logger = createLogger('ferry');
  const devIdp = config.externalAuth === null;
  if (devIdp) {
    const banner = 'DEV IDENTITY PROVIDER IS ON: demo users with a shared password can sign in. Never use this in production.';
    console.warn(`\n${'!'.repeat(banner.length)}\n${banner}\n${'!'.repeat(banner.length)}\n`);
    logger.warn({ component: 'auth' }, 'dev identity provider is on');
  }

  const platform = await openPlatform({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, schema: config.databaseUrl ? 'ferry_platform' : undefined });
  if (devIdp) await seedDemo(platform);

  const key = await loadOrCreateSigningKey(config.dataDir);
  const issuer = createTokenIssuer({ key, issuer: config.issuer });
  const jwksUrl = `http://127.0.0.1:${config.port}/.well-known/jwks.json`;

  const registrationDb = await openRegistrationDatabase({
    url: config.databaseUrl,
    dataDir: config.databaseUrl ? undefined : join(config.dataDir, 'pg', 'registration'),
    schema: config.databaseUrl ? 'registration' : undefined,
  });
  const registration = await startRegistrationService({
    db: registrationDb,
    // Services trust only what the platform's published JWKS says, as they would in production.
    verifier: createTokenVerifier({ jwks: jwksUrl, issuer: config.issuer }),
    logger,
    host: '127.0.0.1',
    port: config.registrationPort,
    natsUrl: config.natsUrl,
    licensedTenants: devIdp ? DEMO_LICENSED.registration : [],
  });

  const app = createGatewayApp({
    logger: logger.child({ component: 'gateway' }),
    signingKeys: [key],
    devIdp: devIdp ? { users: platform.users, memberships: platform.memberships, sessions: platform.sessions, issuer } : null,
    v1Routes: [{ collection: 'patients', serviceUrl: registration.url }],
    readiness: async () => {
      await platform.db.query('SELECT 1');
    },
  });
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(config.port, config.host, resolve));
  logger.info({ component: 'gateway', port: config.port }, 'Ferry is listening');
  console.log(`Ferry is up on http://localhost:${config.port} (data in ${config.dataDir})`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await registration.close();
    await registrationDb.close();
    await platform.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

let config: FerryConfig;
try {
  config = readConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`ferry: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
main(config).catch((err: Error) => {
  console.error('ferry: failed to start:', err.name, err.message);
  process.exit(1);
});
