import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

// Logs carry ids, tenants, codes and timings only. Bodies, tokens and headers that might hold
// PHI or secrets are never passed to the logger; the redaction list is a second line of defence.
const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'headers.cookie',
  'body',
  'payload',
  'password',
  'token',
  'access_token',
  'refresh_token',
  '*.password',
  '*.payload',
  '*.body',
];

export interface LogOptions {
  level?: string;
  destination?: DestinationStream;
}

export function createLogger(name: string, opts: LogOptions = {}): Logger {
  const options = { name, level: opts.level ?? process.env.FERRY_LOG_LEVEL ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/** A logger that drops everything, for components under test that are given no logger. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * An error as it may be logged: its name, a driver code if any, and the stack frames without the
 * message line. Driver messages can quote submitted values (`invalid input syntax … "…"`), so the
 * message itself never reaches a log.
 */
export function loggableError(err: unknown): { name: string; code?: string; frames?: string } {
  const e = err as { name?: unknown; code?: unknown; stack?: unknown } | null;
  const name = typeof e?.name === 'string' ? e.name : 'Error';
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const frames =
    typeof e?.stack === 'string'
      ? e.stack
          .split('\n')
          .filter((line) => /^\s+at /.test(line))
          .join('\n')
      : undefined;
  return { name, ...(code ? { code } : {}), ...(frames ? { frames } : {}) };
}
