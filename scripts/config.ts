import { resolve } from 'node:path';
import { z } from 'zod';
import { natsConnectionTarget, NatsSettingError, type NatsAuth } from '../nats/connection.ts';
import { parseTrustedProxies } from '../gateway/operators/trusted-proxies.ts';
import { DEFAULT_REPURGE_HORIZON_MS } from '../gateway/worker/retention-rule.ts';

// Configuration is read from the environment here, at the entry points, and handed to each
// component as plain data, so every component can be started in-process by a test with its own
// settings. Every variable is parsed by the zod schema below: a value that does not parse is a
// fatal start-up error that names the variable (and never quotes the value, which may be a
// secret). An empty value counts as unset. The README's configuration table lists every variable
// of ENV_SCHEMA; test/gateway/config.test.ts checks that it does.

export interface ExternalAuthConfig {
  jwksUrl: string;
  issuer: string;
  audience: string;
}

export interface FerryConfig {
  port: number;
  /** Where the gateway listens: loopback unless NODE_ENV=production or FERRY_HOST says otherwise. */
  host: string;
  dataDir: string;
  couchdbUrl: string | undefined;
  databaseUrl: string | undefined;
  /** May carry credentials (`nats://user:pass@host:4222`); log it only through `redactNatsUrl`. */
  natsUrl: string;
  /** NATS_USER/NATS_PASSWORD or NATS_CREDS; empty when the URL carries the credentials or NATS has none. */
  natsAuth: NatsAuth;
  /** Null when the built-in dev identity provider is on. */
  externalAuth: ExternalAuthConfig | null;
  issuer: string;
  production: boolean;
  /** 0 (the default): an ephemeral loopback port, so a second stack on the machine cannot collide. */
  registrationPort: number;
  /** Set when the registration service runs elsewhere; otherwise the stack starts one. */
  registrationUrl: string | undefined;
  /** Postgres schemas, so the platform and the service can share one server apart (tests, harness). */
  platformSchema: string;
  registrationSchema: string;
  /** Access-token lifetime; 5 minutes by default. */
  accessTtlSeconds: number;
  /** Browser origins allowed to call the gateway (the app it serves itself needs none). */
  corsOrigins: string[];
  fauxton: boolean;
  metricsToken: string | undefined;
  waitingTimeoutMs: number;
  /** Retention (docs/SYNC.md "Retention"): window after a terminal status, optional maximum for unacknowledged ones, pass interval. */
  retention: { windowMs: number; maxMs: number | null; intervalMs: number; recheckMs: number };
  logLevel: LogLevel;
  /** How long /sync and /v1 trust a session/membership check (`FERRY_SESSION_CHECK_TTL_MS`, default 2000). */
  sessionCheckTtlMs: number;
  /** `FERRY_TRUSTED_PROXIES`: proxies whose X-Forwarded-* are believed (express `trust proxy`); empty: none. */
  trustedProxies: string[];
  /** The local operator API on FERRY_DATA_DIR/operator.sock; on by default with the embedded database. */
  operatorApi: boolean;
  /** How long /readyz waits for any one dependency before it counts as down. */
  readyzTimeoutMs: number;
  /** Events waiting in a service outbox above which /readyz reports `degraded`. */
  readyzOutboxBacklog: number;
  /** `FERRY_REPLICA_PROJECTION`: the worker processes also project committed records into `records_{tenant}` (default on). */
  replicaProjection: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
  /** The variables at fault, e.g. ['FERRY_WAITING_TIMEOUT_MS']. */
  readonly variables: string[];
  constructor(message: string, variables: string[] = []) {
    super(message);
    this.variables = variables;
  }
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** setTimeout's ceiling: a longer delay fires at once, which would turn a timer into a busy loop. */
const MAX_TIMER_MS = 2 ** 31 - 1;

// Unset and empty are the same thing: `FERRY_PORT= npm start` means the default.
const optional = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema.optional());

const wholeNumber = (what: string, min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, `must be ${what}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `must be ${what}`).max(max, `must be ${what}`));

const port = wholeNumber('a port number (0 to 65535; 0 picks a free one)', 0, 65535);
const milliseconds = (max = MAX_TIMER_MS) => wholeNumber(`a whole number of milliseconds from 1 to ${max}`, 1, max);

const httpUrl = z.string().refine((s) => {
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}, 'must be an http(s) URL');

const postgresUrl = z.string().refine((s) => {
  try {
    return ['postgres:', 'postgresql:'].includes(new URL(s).protocol);
  } catch {
    return false;
  }
}, 'must be a postgres:// URL');

const sqlIdentifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'must be a lower-case SQL identifier');
const text = z.string().min(1);
// A host name or an IP address (IPv6 without brackets, as node's listen takes it).
const host = z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/, 'must be a host name or IP address to listen on');

const origins = z.string().transform((s, ctx) => {
  const list = s
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o !== '');
  for (const o of list) {
    let ok: boolean;
    try {
      const u = new URL(o);
      // The browser sends `scheme://host[:port]` and nothing else; anything longer never matches.
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.origin === o;
    } catch {
      ok = false;
    }
    if (!ok) {
      ctx.addIssue({ code: 'custom', message: 'must be a comma-separated list of origins such as https://app.example.org (scheme, host and port, no path)' });
      return z.NEVER;
    }
  }
  return list;
});

const trustedProxies = z.string().transform((s, ctx) => {
  try {
    return parseTrustedProxies(s);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'must be a comma-separated list of IP addresses, CIDR ranges, or loopback/linklocal/uniquelocal' });
    return z.NEVER;
  }
});

const flag = z.enum(['0', '1', 'true', 'false'], { error: 'must be 1 or 0' }).transform((v) => v === '1' || v === 'true');
const onOff = z.enum(['on', 'off', '1', '0', 'true', 'false'], { error: 'must be on or off' }).transform((v) => v === 'on' || v === '1' || v === 'true');

/** Every variable Ferry reads. Order is the README table's order. */
export const ENV_SCHEMA = z.object({
  NODE_ENV: optional(text),
  FERRY_PORT: optional(port),
  FERRY_HOST: optional(host),
  FERRY_DATA_DIR: optional(text),
  FERRY_LOG_LEVEL: optional(z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` })),
  COUCHDB_URL: optional(httpUrl),
  FERRY_COUCH_GATEWAY_PASSWORD: optional(text),
  FERRY_COUCH_WORKER_PASSWORD: optional(text),
  // A CouchDB server admin for retention's `_purge` and `_compact` in `scripts/worker.ts`
  // (docs/SYNC.md "Retention"); the URL must carry the credentials (checked there).
  FERRY_COUCH_RETENTION_URL: optional(httpUrl),
  DATABASE_URL: optional(postgresUrl),
  FERRY_PLATFORM_SCHEMA: optional(sqlIdentifier),
  FERRY_REGISTRATION_SCHEMA: optional(sqlIdentifier),
  NATS_URL: optional(text),
  NATS_USER: optional(text),
  NATS_PASSWORD: optional(text),
  NATS_CREDS: optional(text),
  FERRY_AUTH_JWKS_URL: optional(httpUrl),
  FERRY_AUTH_ISSUER: optional(text),
  FERRY_AUTH_AUDIENCE: optional(text),
  FERRY_ISSUER: optional(text),
  FERRY_ACCESS_TTL_SECONDS: optional(wholeNumber('a whole number of seconds from 1 to 86400', 1, 86_400)),
  FERRY_CORS_ORIGINS: optional(origins),
  FERRY_FAUXTON: optional(flag),
  FERRY_METRICS_TOKEN: optional(text),
  FERRY_REGISTRATION_PORT: optional(port),
  FERRY_REGISTRATION_URL: optional(httpUrl),
  FERRY_WAITING_TIMEOUT_MS: optional(milliseconds(365 * 24 * 3600_000)),
  FERRY_RETENTION_WINDOW_MS: optional(milliseconds(3650 * 24 * 3600_000)),
  FERRY_RETENTION_MAX_MS: optional(milliseconds(3650 * 24 * 3600_000)),
  FERRY_RETENTION_INTERVAL_MS: optional(milliseconds()),
  FERRY_RETENTION_RECHECK_MS: optional(milliseconds(365 * 24 * 3600_000)),
  FERRY_WORKER_ID: optional(z.string().regex(/^[A-Za-z0-9._:@-]{1,128}$/, 'must be 1 to 128 letters, digits or . _ : @ -')),
  FERRY_WORKER_LEASE_TTL_MS: optional(milliseconds()),
  FERRY_WORKER_RETRY_BASE_MS: optional(milliseconds()),
  FERRY_WORKER_RETRY_MAX_MS: optional(milliseconds()),
  FERRY_WORKER_TICK_MS: optional(milliseconds()),
  FERRY_WORKER_BATCH_SIZE: optional(wholeNumber('a whole number from 1 to 1000', 1, 1000)),
  FERRY_SESSION_CHECK_TTL_MS: optional(milliseconds()),
  FERRY_TRUSTED_PROXIES: optional(trustedProxies),
  FERRY_OPERATOR_API: optional(onOff),
  FERRY_READYZ_TIMEOUT_MS: optional(milliseconds(60_000)),
  FERRY_READYZ_OUTBOX_BACKLOG: optional(wholeNumber('a whole number, 0 or more', 0, Number.MAX_SAFE_INTEGER)),
  FERRY_REPLICA_PROJECTION: optional(onOff),
});

export type FerryEnv = z.output<typeof ENV_SCHEMA>;

/** The names the schema knows, for the README check and for operators. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(ENV_SCHEMA.shape);

/** Parses every variable; all bad ones are reported at once, by name, without their values. */
export function readEnv(env: Env = process.env): FerryEnv {
  const picked: Env = {};
  for (const name of CONFIG_VARIABLES) picked[name] = env[name];
  const result = ENV_SCHEMA.safeParse(picked);
  if (result.success) return result.data;
  const byVariable = new Map<string, string>();
  for (const issue of result.error.issues) {
    const name = String(issue.path[0] ?? 'configuration');
    if (!byVariable.has(name)) byVariable.set(name, issue.message);
  }
  const lines = [...byVariable].map(([name, message]) => `${name} ${message}`);
  throw new ConfigError(lines.join('; '), [...byVariable.keys()]);
}

/** Kept for entry points that read a single number: a positive whole number or the fallback. */
export function positiveOf(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const parsed = wholeNumber('a positive whole number', 1, Number.MAX_SAFE_INTEGER).safeParse(raw);
  if (!parsed.success) throw new ConfigError(`${name} must be a positive whole number`, [name]);
  return parsed.data;
}

/** Fails closed: partial external-auth settings, or the dev IdP in production, refuse to start. */
export function readConfig(env: Env = process.env): FerryConfig {
  const e = readEnv(env);
  const production = e.NODE_ENV === 'production';
  const auth = [e.FERRY_AUTH_JWKS_URL, e.FERRY_AUTH_ISSUER, e.FERRY_AUTH_AUDIENCE];
  const set = auth.filter((v) => v !== undefined).length;
  if (set !== 0 && set !== 3) {
    throw new ConfigError('FERRY_AUTH_JWKS_URL, FERRY_AUTH_ISSUER and FERRY_AUTH_AUDIENCE must be set together, or none of them', [
      'FERRY_AUTH_JWKS_URL',
      'FERRY_AUTH_ISSUER',
      'FERRY_AUTH_AUDIENCE',
    ]);
  }
  const externalAuth = set === 3 ? { jwksUrl: auth[0]!, issuer: auth[1]!, audience: auth[2]! } : null;
  if (!externalAuth && production) {
    throw new ConfigError('NODE_ENV=production needs an external identity provider (FERRY_AUTH_*); the dev IdP refuses to start', ['NODE_ENV']);
  }
  const retention = { windowMs: e.FERRY_RETENTION_WINDOW_MS ?? 7 * 24 * 3600_000, maxMs: e.FERRY_RETENTION_MAX_MS ?? null, intervalMs: e.FERRY_RETENTION_INTERVAL_MS ?? 3600_000, recheckMs: e.FERRY_RETENTION_RECHECK_MS ?? DEFAULT_REPURGE_HORIZON_MS };
  if (retention.maxMs !== null && retention.maxMs < retention.windowMs) {
    throw new ConfigError('FERRY_RETENTION_MAX_MS must not be shorter than FERRY_RETENTION_WINDOW_MS', ['FERRY_RETENTION_MAX_MS']);
  }
  const natsUrl = e.NATS_URL ?? 'nats://127.0.0.1:4222';
  const natsAuth: NatsAuth = { user: e.NATS_USER, password: e.NATS_PASSWORD, credsFile: e.NATS_CREDS };
  try {
    natsConnectionTarget(natsUrl, natsAuth);
  } catch (err) {
    if (err instanceof NatsSettingError) throw new ConfigError(err.message, [err.variable]);
    throw err;
  }
  return {
    port: e.FERRY_PORT ?? 8080,
    // The dev IdP's shared password, Fauxton and the demo data must not be reachable from the
    // network by default: outside production the gateway listens on loopback only.
    host: e.FERRY_HOST ?? (production ? '0.0.0.0' : '127.0.0.1'),
    dataDir: resolve(e.FERRY_DATA_DIR ?? './data'),
    couchdbUrl: e.COUCHDB_URL,
    databaseUrl: e.DATABASE_URL,
    natsUrl,
    natsAuth,
    externalAuth,
    issuer: e.FERRY_ISSUER ?? 'ferry',
    production,
    registrationPort: e.FERRY_REGISTRATION_PORT ?? 0,
    registrationUrl: e.FERRY_REGISTRATION_URL,
    platformSchema: e.FERRY_PLATFORM_SCHEMA ?? 'ferry_platform',
    registrationSchema: e.FERRY_REGISTRATION_SCHEMA ?? 'ferry_registration',
    accessTtlSeconds: e.FERRY_ACCESS_TTL_SECONDS ?? 300,
    corsOrigins: e.FERRY_CORS_ORIGINS ?? [],
    fauxton: !production || e.FERRY_FAUXTON === true,
    metricsToken: e.FERRY_METRICS_TOKEN,
    waitingTimeoutMs: e.FERRY_WAITING_TIMEOUT_MS ?? 7 * 24 * 3600_000,
    retention,
    logLevel: e.FERRY_LOG_LEVEL ?? 'info',
    sessionCheckTtlMs: e.FERRY_SESSION_CHECK_TTL_MS ?? 2000,
    trustedProxies: e.FERRY_TRUSTED_PROXIES ?? [],
    operatorApi: e.FERRY_OPERATOR_API ?? !e.DATABASE_URL,
    readyzTimeoutMs: e.FERRY_READYZ_TIMEOUT_MS ?? 2000,
    readyzOutboxBacklog: e.FERRY_READYZ_OUTBOX_BACKLOG ?? 1000,
    replicaProjection: e.FERRY_REPLICA_PROJECTION ?? true,
  };
}

/** Where a process that does not host the registration service finds it. */
export function registrationUrlOf(config: FerryConfig): string {
  if (config.registrationUrl) return config.registrationUrl;
  if (config.registrationPort !== 0) return `http://127.0.0.1:${config.registrationPort}`;
  throw new ConfigError('the registration service runs in another process: set FERRY_REGISTRATION_URL (or FERRY_REGISTRATION_PORT, for one on this machine)', [
    'FERRY_REGISTRATION_URL',
  ]);
}
