import { resolve } from 'node:path';

// Configuration is read from the environment here, at the entry points, and handed to each
// component as plain data (DESIGN §2). Components never read process.env themselves.

export interface ExternalAuthConfig {
  jwksUrl: string;
  issuer: string;
  audience: string;
}

export interface FerryConfig {
  port: number;
  host: string;
  dataDir: string;
  couchdbUrl: string | undefined;
  databaseUrl: string | undefined;
  natsUrl: string;
  /** Null when the built-in dev identity provider is on. */
  externalAuth: ExternalAuthConfig | null;
  issuer: string;
  production: boolean;
  registrationPort: number;
  /** Set when the registration service runs elsewhere; otherwise the stack starts one. */
  registrationUrl: string | undefined;
  /** Postgres schemas, so the platform and the service can share one server apart (tests, harness). */
  platformSchema: string;
  registrationSchema: string;
  /** Access-token lifetime; 5 minutes in dev (DESIGN §3). */
  accessTtlSeconds: number;
  /** Browser origins allowed to call the gateway (the app it serves itself needs none). */
  corsOrigins: string[];
  fauxton: boolean;
  metricsToken: string | undefined;
  waitingTimeoutMs: number;
  /** The local operator API on FERRY_DATA_DIR/operator.sock; on by default with the embedded database. */
  operatorApi: boolean;
  /** How long /readyz waits for any one dependency before it counts as down. */
  readyzTimeoutMs: number;
  /** Events waiting in a service outbox above which /readyz reports `degraded`. */
  readyzOutboxBacklog: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function portOf(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${name} must be a port number`);
  return n;
}

function schemaOf(env: Env, name: string, fallback: string): string {
  const v = env[name] || fallback;
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(v)) throw new ConfigError(`${name} must be a lower-case SQL identifier`);
  return v;
}

export function positiveOf(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${name} must be a positive number`);
  return n;
}

function switchOf(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|on|true|yes)$/i.test(raw)) return true;
  if (/^(0|off|false|no)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be on or off`);
}

function countOf(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a whole number, 0 or more`);
  return n;
}

/** Fails closed: partial external-auth settings, or the dev IdP in production, refuse to start. */
export function readConfig(env: Env = process.env): FerryConfig {
  const production = env.NODE_ENV === 'production';
  const auth = [env.FERRY_AUTH_JWKS_URL, env.FERRY_AUTH_ISSUER, env.FERRY_AUTH_AUDIENCE];
  const set = auth.filter((v) => v !== undefined && v !== '').length;
  if (set !== 0 && set !== 3) {
    throw new ConfigError('FERRY_AUTH_JWKS_URL, FERRY_AUTH_ISSUER and FERRY_AUTH_AUDIENCE must be set together, or none of them');
  }
  const externalAuth = set === 3 ? { jwksUrl: auth[0]!, issuer: auth[1]!, audience: auth[2]! } : null;
  if (!externalAuth && production) {
    throw new ConfigError('NODE_ENV=production needs an external identity provider (FERRY_AUTH_*); the dev IdP refuses to start');
  }
  return {
    port: portOf(env, 'FERRY_PORT', 8080),
    host: env.FERRY_HOST ?? '0.0.0.0',
    dataDir: resolve(env.FERRY_DATA_DIR ?? './data'),
    couchdbUrl: env.COUCHDB_URL || undefined,
    databaseUrl: env.DATABASE_URL || undefined,
    natsUrl: env.NATS_URL || 'nats://127.0.0.1:4222',
    externalAuth,
    issuer: env.FERRY_ISSUER || 'ferry',
    production,
    registrationPort: portOf(env, 'FERRY_REGISTRATION_PORT', 8081),
    registrationUrl: env.FERRY_REGISTRATION_URL || undefined,
    platformSchema: schemaOf(env, 'FERRY_PLATFORM_SCHEMA', 'ferry_platform'),
    registrationSchema: schemaOf(env, 'FERRY_REGISTRATION_SCHEMA', 'ferry_registration'),
    accessTtlSeconds: positiveOf(env, 'FERRY_ACCESS_TTL_SECONDS', 300),
    corsOrigins: (env.FERRY_CORS_ORIGINS ?? '')
      .split(',')
      .map((o) => o.trim())
      .filter((o) => o !== ''),
    fauxton: !production || env.FERRY_FAUXTON === '1',
    metricsToken: env.FERRY_METRICS_TOKEN || undefined,
    waitingTimeoutMs: Number(env.FERRY_WAITING_TIMEOUT_MS ?? 7 * 24 * 3600_000),
    operatorApi: switchOf(env, 'FERRY_OPERATOR_API', !env.DATABASE_URL),
    readyzTimeoutMs: positiveOf(env, 'FERRY_READYZ_TIMEOUT_MS', 2000),
    readyzOutboxBacklog: countOf(env, 'FERRY_READYZ_OUTBOX_BACKLOG', 1000),
  };
}
