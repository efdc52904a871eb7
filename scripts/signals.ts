import type { Logger } from '../http/log.ts';

// How every entry point ends: the first SIGINT or SIGTERM closes what it started, once, then the
// process exits (1 when closing failed, so a supervisor sees it).

export function closeOnSignal(logger: Pick<Logger, 'info'>, message: string, close: () => Promise<void>): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, message);
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
