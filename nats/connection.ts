import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, tokenAuthenticator, usernamePasswordAuthenticator, type Authenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';

// The one place that turns NATS settings into what nats.js connects with. Credentials come from
// exactly one source: the URL (`nats://user:pass@host:4222`, or `nats://token@host:4222`),
// NATS_USER + NATS_PASSWORD, or a creds file (NATS_CREDS: a user JWT and its nkey seed, as
// `nsc` writes them). They are taken out of the server URLs handed to nats.js, and `display` is
// the only form of the target that may be logged.

export interface NatsAuth {
  user?: string | undefined;
  password?: string | undefined;
  /** Path of a `.creds` file; read at each connect, so a rotated file is picked up on reconnect. */
  credsFile?: string | undefined;
}

export interface NatsTarget {
  /** Server URLs without credentials. */
  servers: string[];
  authenticator?: Authenticator;
  /** The servers with any credentials replaced: safe for logs. */
  display: string;
  /** Which source the credentials came from: for logs and /readyz, never the secret itself. */
  auth: 'none' | 'url' | 'user-password' | 'creds-file';
}

/** A setting that cannot be used. `variable` names it; the message never quotes the value. */
export class NatsSettingError extends Error {
  override name = 'NatsSettingError';
  constructor(
    readonly variable: 'NATS_URL' | 'NATS_USER' | 'NATS_PASSWORD' | 'NATS_CREDS',
    message: string,
  ) {
    super(`${variable} ${message}`);
  }
}

// The Node transport speaks plain and TLS NATS; websocket URLs belong to another transport.
const SCHEMES = new Set(['nats:', 'tls:']);

function parseServer(raw: string): URL {
  // nats.js accepts `host:port` without a scheme; so do we.
  const text = raw.includes('://') ? raw : `nats://${raw}`;
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new NatsSettingError('NATS_URL', 'must be a nats://host:port URL, or a comma-separated list of them');
  }
  if (!SCHEMES.has(u.protocol) || !u.hostname) throw new NatsSettingError('NATS_URL', 'must be a nats://host:port URL, or a comma-separated list of them');
  return u;
}

function bare(u: URL): string {
  const c = new URL(u.toString());
  c.username = '';
  c.password = '';
  return c.toString().replace(/\/$/, '');
}

/** `nats://user:secret@host:4222` → `nats://***@host:4222`; what is not a URL is not shown at all. */
export function redactNatsUrl(url: string): string {
  return url
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      try {
        const u = parseServer(s);
        return u.username || u.password ? bare(u).replace('://', '://***@') : bare(u);
      } catch {
        return '[invalid]';
      }
    })
    .join(',');
}

/** Decides how to connect; throws NatsSettingError for settings that are contradictory or unusable. */
export function natsConnectionTarget(url: string, auth: NatsAuth = {}): NatsTarget {
  const parsed = url
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(parseServer);
  if (parsed.length === 0) throw new NatsSettingError('NATS_URL', 'must name at least one server');
  const inUrl = new Set(parsed.filter((u) => u.username || u.password).map((u) => `${u.username}:${u.password}`));
  if (inUrl.size > 1) throw new NatsSettingError('NATS_URL', 'carries different credentials for different servers; use one user for all');
  if (inUrl.size === 1 && parsed.some((u) => !u.username && !u.password)) {
    throw new NatsSettingError('NATS_URL', 'carries credentials for some servers only; give them on every server, or use NATS_USER and NATS_PASSWORD');
  }
  const user = auth.user || undefined;
  const password = auth.password || undefined;
  if ((user === undefined) !== (password === undefined)) {
    throw new NatsSettingError(user === undefined ? 'NATS_USER' : 'NATS_PASSWORD', `must be set together with ${user === undefined ? 'NATS_PASSWORD' : 'NATS_USER'}`);
  }
  const sources = [inUrl.size > 0, user !== undefined, Boolean(auth.credsFile)].filter(Boolean).length;
  if (sources > 1) {
    throw new NatsSettingError(auth.credsFile ? 'NATS_CREDS' : 'NATS_USER', 'conflicts with other NATS credentials: use one of the URL, NATS_USER/NATS_PASSWORD or NATS_CREDS');
  }
  const servers = parsed.map(bare);
  const display = redactNatsUrl(url);

  if (auth.credsFile) {
    const path = auth.credsFile;
    let creds: string;
    try {
      creds = readFileSync(path, 'utf8');
    } catch {
      throw new NatsSettingError('NATS_CREDS', 'names a file that cannot be read');
    }
    if (!/-----BEGIN NATS USER JWT-----/.test(creds)) throw new NatsSettingError('NATS_CREDS', 'is not a NATS .creds file (user JWT and nkey seed)');
    // Read again at every (re)connect, so rotating the file needs no restart.
    return { servers, display, auth: 'creds-file', authenticator: credsAuthenticator(() => new Uint8Array(readFileSync(path))) };
  }
  if (user !== undefined) return { servers, display, auth: 'user-password', authenticator: usernamePasswordAuthenticator(user, password) };
  const first = parsed[0]!;
  if (first.username && first.password) {
    return { servers, display, auth: 'url', authenticator: usernamePasswordAuthenticator(decodeURIComponent(first.username), decodeURIComponent(first.password)) };
  }
  if (first.username) return { servers, display, auth: 'url', authenticator: tokenAuthenticator(decodeURIComponent(first.username)) };
  return { servers, display, auth: 'none' };
}

/** The part of nats.js connect options that says where and as whom. */
export function natsConnectOptions(target: NatsTarget): { servers: string[]; authenticator?: Authenticator } {
  return target.authenticator ? { servers: target.servers, authenticator: target.authenticator } : { servers: target.servers };
}

/** Connects to `url` (credentials in it, or in `auth`) with the other options given. */
export function connectNats(url: string, auth: NatsAuth = {}, opts: Omit<NodeConnectionOptions, 'servers' | 'authenticator' | 'user' | 'pass' | 'token'> = {}): Promise<NatsConnection> {
  return connect({ ...opts, ...natsConnectOptions(natsConnectionTarget(url, auth)) });
}
