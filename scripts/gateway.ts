// Runs the gateway alone (HTTP edge: /auth, /sync, /v1, /_utils, /metrics), for deployments that
// run the pieces as separate processes. The worker runs as scripts/worker.ts, the registration
// service at FERRY_REGISTRATION_URL. Several gateways may run at once against PostgreSQL: what each
// keeps in memory is safe across processes (docs/ARCHITECTURE.md "Per-process state").
//
// In embedded mode (no COUCHDB_URL) it uses the embedded CouchDB already running on FERRY_DATA_DIR,
// or starts one. Prints `{"event":"ready","url":…}` on stdout once it listens.
import { createLogger } from '../http/log.ts';
import { readConfig, ConfigError, type FerryConfig } from './config.ts';
import { startStack } from './stack.ts';
import { closeOnSignal } from './signals.ts';

async function main(config: FerryConfig): Promise<void> {
  const logger = createLogger('ferry-gateway');
  if (config.externalAuth === null) logger.warn({ component: 'auth' }, 'dev identity provider is on');
  const stack = await startStack(config, { logger, worker: false, registration: false });
  process.stdout.write(`${JSON.stringify({ event: 'ready', url: stack.url })}\n`);
  closeOnSignal(logger, 'gateway stopping', () => stack.close());
}

let config: FerryConfig;
try {
  config = readConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`ferry-gateway: ${err.message}`);
    process.exit(2);
  }
  throw err;
}
main(config).catch((err: Error) => {
  console.error('ferry-gateway: failed to start:', err.name, err.message);
  process.exit(1);
});
