import { createHash } from 'node:crypto';
import type { ExpressPouchApp, Middleware } from 'express-pouchdb';
import { pathSegments } from './access.ts';

// express-pouchdb checks HTTP Basic credentials from scratch on every request: it reads the
// user's `_users` doc twice, runs PBKDF2 in pure JavaScript and computes two session HMACs. The
// gateway and the worker send Basic credentials with every call, so under load this is several
// per cent of the embedded server's CPU. Apache CouchDB keeps an authentication cache for the
// same reason (couch_auth_cache), dropped when `_users` changes. So does this: a successful Basic
// check is kept for a short while, keyed by a hash of the header, and everything is forgotten as
// soon as `_users` or the server admins change. A failed check is never kept, so a wrong password
// always costs the full check.

/** How long a successful check is reused without looking again. */
export const AUTH_CACHE_TTL_MS = 30_000;
/** Bound on distinct credentials kept; past it the cache starts over. */
export const AUTH_CACHE_MAX = 1_000;

/** What express-pouchdb's authentication leaves on a request. */
export interface CouchSession {
  ok?: boolean;
  userCtx: { name: string | null; roles: string[] };
  info: { authenticated?: string; authentication_handlers?: string[] } & Record<string, unknown>;
}

type AuthRequest = Parameters<Middleware>[0] & { couchSession?: CouchSession; cookies?: Record<string, string> };

export interface AuthCache {
  /** The session of an earlier successful check of exactly this header, if still valid. */
  lookup(authorization: string, now: number): CouchSession | null;
  /** Taken before a full check; a check may only be kept if nothing changed until it ended. */
  ticket(): number;
  remember(authorization: string, session: CouchSession, now: number, ticket: number): void;
  /** A write to `_users` begins: forget everything, and keep nothing until it ends. */
  writeStarted(): void;
  writeEnded(): void;
  /** Forgets everything: the admins or the auth settings changed. */
  clear(): void;
  size(): number;
}

const keyOf = (authorization: string) => createHash('sha256').update(authorization).digest('base64');

/** Which requests may use the cache: Basic credentials and no session cookie (which wins in express-pouchdb). */
export function cacheableAuthorization(req: { headers: { authorization?: string | undefined }; cookies?: Record<string, string> | undefined }): string | null {
  const auth = req.headers.authorization;
  if (!auth || !/^Basic\s+\S+$/i.test(auth)) return null;
  if (req.cookies?.AuthSession) return null;
  return auth;
}

/** Only a named user whose Basic credentials checked out is kept. */
export function isRememberable(session: CouchSession | undefined): session is CouchSession {
  return !!session && session.info.authenticated === 'default' && typeof session.userCtx.name === 'string' && session.userCtx.name.length > 0;
}

export function createAuthCache(ttlMs = AUTH_CACHE_TTL_MS, max = AUTH_CACHE_MAX): AuthCache {
  let entries = new Map<string, { session: CouchSession; expires: number }>();
  let generation = 0;
  let writing = 0;
  const clear = () => {
    generation++;
    entries = new Map();
  };
  return {
    lookup(authorization, now) {
      if (writing > 0) return null;
      const key = keyOf(authorization);
      const hit = entries.get(key);
      if (!hit) return null;
      if (hit.expires <= now) {
        entries.delete(key);
        return null;
      }
      return structuredClone(hit.session);
    },
    ticket: () => (writing > 0 ? -1 : generation),
    remember(authorization, session, now, ticket) {
      if (writing > 0 || ticket !== generation) return;
      if (entries.size >= max) entries = new Map();
      entries.set(keyOf(authorization), { session: structuredClone(session), expires: now + ttlMs });
    },
    writeStarted() {
      writing++;
      clear();
    },
    writeEnded() {
      writing = Math.max(0, writing - 1);
      clear();
    },
    clear,
    size: () => entries.size,
  };
}

const usersDbName = (app: ExpressPouchApp) => String(app.couchConfig.get('couch_httpd_auth', 'authentication_db') ?? '_users');

/**
 * True for a request that may change the users database: any method but a read on any path in
 * it (docs, `_bulk_docs`, `_purge`, the database itself). The embedded server is reachable only
 * over HTTP and leaves out server-side replication, so every write to `_users` is such a request.
 */
export function mayWriteUsers(method: string, path: string, usersDb: string): boolean {
  if (method === 'GET' || method === 'HEAD') return false;
  const segments = pathSegments(path);
  return segments === null || segments[0] === usersDb;
}

/**
 * Wraps express-pouchdb's authentication middleware (the layer right after cookie-parser) with
 * the cache. Fails closed when the stack does not look as expected.
 */
export function installAuthCache(app: ExpressPouchApp, cache: AuthCache = createAuthCache()): AuthCache {
  const stack = app._router.stack;
  const cookieParser = stack.findIndex((layer) => layer.name === 'cookieParser');
  const layer = cookieParser === -1 ? undefined : stack[cookieParser + 1];
  // express-pouchdb 4.2's authentication is an anonymous middleware; recognise it by what it calls.
  if (!layer || !layer.handle.toString().includes('buildCookieSession')) throw new Error('express-pouchdb: authentication middleware not found');
  const authenticate = layer.handle;

  layer.handle = function ferryCachedAuthentication(req, res, next) {
    const r = req as AuthRequest;
    // A write to `_users` (a new password, a changed role, a deleted user) drops every kept
    // check, and nothing is kept or used until it is answered; a check that began before it and
    // ends after it is not kept either (its ticket is stale).
    if (mayWriteUsers(req.method ?? 'GET', (req.url ?? '/').split('?')[0]!, usersDbName(app))) {
      cache.writeStarted();
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        cache.writeEnded();
      };
      res.once('finish', end);
      res.once('close', end);
      return authenticate(req, res, next);
    }
    const auth = cacheableAuthorization(r);
    const ticket = cache.ticket();
    if (auth) {
      const session = cache.lookup(auth, Date.now());
      if (session) {
        r.couchSession = session;
        return next();
      }
    }
    authenticate(req, res, (err?: unknown) => {
      if (!err && auth && isRememberable(r.couchSession)) cache.remember(auth, r.couchSession, Date.now(), ticket);
      next(err);
    });
  };

  const config = app.couchConfig as unknown as { on?: (event: string, listener: () => void) => void };
  if (typeof config.on !== 'function') throw new Error('express-pouchdb: config events not available');
  for (const event of ['admins', 'couch_httpd_auth.authentication_db', 'couch_httpd_auth.secret', 'couch_httpd_auth.iterations']) config.on(event, () => cache.clear());
  return cache;
}
