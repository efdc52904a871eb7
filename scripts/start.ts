// `npm start`: every Ferry piece on one machine, on embedded defaults (DESIGN §2): the gateway,
// the embedded CouchDB-compatible server, the worker and the registration service.
import { createLogger } from '../http/log.ts';
import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { startStack } from './stack.ts';
import { isLoopbackHost, StartupError } from './startup-error.ts';
import { DataDirLockedError } from './data-dir-lock.ts';
import { closeOnSignal } from './signals.ts';

async function main(config: FerryConfig): Promise<void> {
  const logger = createLogger('ferry', { level: config.logLevel });
  if (config.externalAuth === null) {
    const exposed = !isLoopbackHost(config.host);
    const banner = exposed
      ? `DEV IDENTITY PROVIDER IS ON AND FERRY_HOST=${config.host} EXPOSES IT: anyone who can reach this machine can sign in with the demo users' shared password.`
      : 'DEV IDENTITY PROVIDER IS ON: demo users with a shared password can sign in. Never use this in production.';
    console.warn(`\n${'!'.repeat(banner.length)}\n${banner}\n${'!'.repeat(banner.length)}\n`);
    logger.warn({ component: 'auth', host: config.host, exposed }, 'dev identity provider is on');
  }
  const stack = await startStack(config, { logger });
  const port = stack.url ? Number(new URL(stack.url).port) : config.port;
  logger.info({ component: 'gateway', host: config.host, port }, 'Ferry is listening');
  console.log(`Ferry is up on http://${isLoopbackHost(config.host) ? 'localhost' : config.host}:${port} (data in ${config.dataDir})`);

  closeOnSignal(logger, 'stopping', () => stack.close());
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
  // StartupError and DataDirLockedError name the component and the setting to change.
  console.error(`ferry: failed to start: ${err instanceof StartupError || err instanceof DataDirLockedError ? err.message : `${err.name}: ${err.message}`}`);
  process.exit(1);
});
