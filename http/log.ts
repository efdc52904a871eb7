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
