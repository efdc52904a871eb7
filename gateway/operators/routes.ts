import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Router, json, urlencoded, type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import { FerryError } from '../../validators/codes.ts';
import { bearerToken, type TokenVerifier } from '../../identity/tokens.ts';
import { verifyPassword } from '../../identity/password.ts';
import type { UserStore } from '../auth/users.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';
import type { AdminSessionStore } from './admin-sessions.ts';
import type { Liveness } from '../auth/liveness.ts';
import type { Logger } from '../../http/log.ts';

// Operators reach Fauxton and the CouchDB admin API through the gateway (DESIGN §5). Browsers
// cannot send a Bearer token on page loads, so a platform-admin gets an HttpOnly, SameSite=Strict
// cookie; Fauxton's root-path calls are then proxied to CouchDB as the server admin for that
// session only. A tenant `admin` without `platform-admin` never gets through.

export const ADMIN_COOKIE = 'ferry_admin';

/** First path segments that belong to Ferry itself and are never proxied to CouchDB. */
const FERRY_SEGMENTS = new Set(['sync', 'v1', 'auth', 'metrics', 'healthz', 'readyz', '.well-known', 'app', 'favicon.ico']);
/** CouchDB server endpoints Fauxton and operators use. */
const COUCH_ENDPOINTS = new Set([
  '_utils', '_session', '_all_dbs', '_dbs_info', '_uuids', '_up', '_active_tasks', '_membership', '_scheduler', '_node',
  '_config', '_replicate', '_stats', '_users', '_replicator', '_global_changes', '_db_updates', '_cluster_setup',
]);
const DB_NAME = /^[a-z][a-z0-9_$()+-]*$/;

/** Is this request path one the operator proxy may forward? Pure, so it is tested from a table. */
export function isOperatorPath(path: string): boolean {
  if (path === '/') return true;
  const first = decodeURIComponentSafe(path.split('/')[1] ?? '');
  if (first === null || FERRY_SEGMENTS.has(first)) return false;
  return COUCH_ENDPOINTS.has(first) || DB_NAME.test(first);
}

/**
 * Is an Origin header the gateway's own origin: same scheme, host and port (default ports
 * normalised, so `https://h` equals `https://h:443`)? `null` and anything unparsable are not.
 * `protocol` and `host` are what the request arrived as (behind a trusted proxy, what the browser
 * used). Pure, so it is tested from a table.
 */
export function isSameOrigin(origin: string, request: { protocol: string; host: string | undefined }): boolean {
  if (!request.host) return false;
  try {
    const theirs = new URL(origin);
    const ours = new URL(`${request.protocol}://${request.host}`);
    return theirs.origin !== 'null' && theirs.origin === ours.origin;
  } catch {
    return false;
  }
}

function decodeURIComponentSafe(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

export interface OperatorDeps {
  couch: { url: string; admin: { username: string; password: string } };
  sessions: AdminSessionStore;
  memberships: MembershipDirectory;
  verifier: TokenVerifier;
  /** When present, a Bearer token's session must still be open and `platform-admin` held now, not only when it was minted. */
  liveness?: Liveness;
  /** Null when the dev IdP is off: operators then present a platform-admin Bearer token. */
  users: UserStore | null;
  logger: Logger;
}

const loginBody = z.object({ username: z.string().min(1).max(128), password: z.string().min(1).max(1024) });

function cookieOf(req: Request, name: string): string | null {
  const header = req.headers.cookie;
  if (!header) return null;
  for (const part of header.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return null;
}

function loginPage(failed: boolean): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Ferry operators</title>
<style>body{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto}label{display:block;margin:.5rem 0}input{width:100%;padding:.4rem}</style></head>
<body><h1>Ferry operators</h1><p>Fauxton and the CouchDB admin API are for platform administrators.</p>
${failed ? '<p role="alert">Sign-in failed, or this account is not a platform administrator.</p>' : ''}
<form method="post" action="/auth/session"><label>Username <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></body></html>`;
}

export function operatorRoutes(deps: OperatorDeps): Router {
  const router = Router();
  const upstream = new URL(deps.couch.url);
  const adminAuth = `Basic ${Buffer.from(`${deps.couch.admin.username}:${deps.couch.admin.password}`).toString('base64')}`;

  /** The roles a verified Bearer token stands for: the live ones when liveness is on. */
  async function bearerRoles(token: string): Promise<{ owner: string; roles: readonly string[] }> {
    const claims = await deps.verifier(token);
    const roles = deps.liveness ? await deps.liveness.check(claims) : claims.roles;
    return { owner: claims.owner, roles };
  }

  /** Who is the platform admin behind this request, if anyone: cookie session or Bearer token. */
  async function platformAdminOf(req: Request): Promise<string | null> {
    const token = bearerToken(req.get('authorization'));
    if (token) {
      const caller = await bearerRoles(token);
      if (!caller.roles.includes('platform-admin')) throw new FerryError('FORBIDDEN');
      return caller.owner;
    }
    const sid = cookieOf(req, ADMIN_COOKIE);
    if (!sid) return null;
    const userId = await deps.sessions.userOf(sid);
    // Membership is checked on every request, so removing the role takes effect at once.
    return userId && (await deps.memberships.isPlatformAdmin(userId)) ? userId : null;
  }

  router.post('/auth/session', json({ limit: '4kb' }), urlencoded({ extended: false, limit: '4kb' }), (req, res, next) => {
    const fromForm = req.is('application/x-www-form-urlencoded') === 'application/x-www-form-urlencoded';
    (async () => {
      let userId: string | null = null;
      const token = bearerToken(req.get('authorization'));
      if (token) {
        const caller = await bearerRoles(token);
        if (caller.roles.includes('platform-admin')) userId = caller.owner;
      } else if (deps.users) {
        const parsed = loginBody.safeParse(req.body);
        if (!parsed.success) throw new FerryError('VALIDATION_FAILED');
        const user = await deps.users.byUsername(parsed.data.username);
        if (user?.passwordHash && (await verifyPassword(parsed.data.password, user.passwordHash))) {
          if (await deps.memberships.isPlatformAdmin(user.id)) userId = user.id;
          else throw new FerryError('FORBIDDEN');
        } else throw new FerryError('INVALID_CREDENTIALS');
      }
      if (!userId) throw new FerryError('FORBIDDEN');
      const sid = await deps.sessions.open(userId);
      // `req.secure` is true over TLS, or behind a trusted proxy (FERRY_TRUSTED_PROXIES) that says the browser used https.
      res.cookie(ADMIN_COOKIE, sid, { httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/', maxAge: 8 * 3600_000 });
      if (fromForm) res.redirect(303, '/_utils/');
      else res.json({ ok: true, user: { id: userId } });
    })().catch((err: unknown) => {
      if (fromForm && err instanceof FerryError && err.status < 500) {
        res.status(err.status).type('html').send(loginPage(true));
        return;
      }
      next(err);
    });
  });

  router.delete('/auth/session', (req, res, next) => {
    const sid = cookieOf(req, ADMIN_COOKIE);
    (sid ? deps.sessions.close(sid) : Promise.resolve())
      .then(() => {
        res.clearCookie(ADMIN_COOKIE, { httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/' });
        res.json({ ok: true });
      })
      .catch(next);
  });

  router.use(function operatorProxy(req: Request, res: Response, next: NextFunction) {
    if (!isOperatorPath(req.path)) return next();
    // `/` is the clinician app for everyone else; only an operator's JSON call goes to CouchDB.
    if (req.path === '/' && req.accepts(['html', 'json']) !== 'json') return next();
    platformAdminOf(req)
      .then((admin) => {
        if (!admin) {
          if (req.method === 'GET' && req.path.startsWith('/_utils') && req.accepts('html')) {
            res.status(401).type('html').send(loginPage(false));
            return;
          }
          throw new FerryError('UNAUTHENTICATED');
        }
        // SameSite=Strict already blocks cross-site cookies; a foreign Origin on a write is refused too,
        // and "foreign" includes another scheme or port on the same host (a plain-HTTP page, another service).
        const origin = req.get('origin');
        if (origin && req.method !== 'GET' && req.method !== 'HEAD' && !isSameOrigin(origin, { protocol: req.protocol, host: req.host })) throw new FerryError('FORBIDDEN');
        if (req.path === '/_session' && req.method === 'DELETE') {
          const sid = cookieOf(req, ADMIN_COOKIE);
          if (sid) void deps.sessions.close(sid);
          res.clearCookie(ADMIN_COOKIE, { httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/' });
          res.json({ ok: true });
          return;
        }
        forward(req, res, next);
      })
      .catch(next);
  });

  function forward(req: Request, res: Response, next: NextFunction): void {
    const headers: IncomingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (['host', 'cookie', 'authorization', 'connection', 'origin', 'referer'].includes(k) || k.startsWith('x-ferry-')) continue;
      headers[k] = v;
    }
    headers.authorization = adminAuth;
    const send = upstream.protocol === 'https:' ? httpsRequest : httpRequest;
    const upstreamReq = send(
      { protocol: upstream.protocol, hostname: upstream.hostname, port: upstream.port, method: req.method, path: req.originalUrl, headers },
      (upstreamRes) => {
        const out: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(upstreamRes.headers)) {
          if (v === undefined || k === 'set-cookie' || k.startsWith('access-control-') || k === 'connection') continue;
          out[k] = v;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, out);
        upstreamRes.pipe(res);
      },
    );
    upstreamReq.on('error', () => {
      if (!res.headersSent) next(new FerryError('UNAVAILABLE'));
      else res.destroy();
    });
    res.on('close', () => upstreamReq.destroy());
    req.pipe(upstreamReq);
  }

  return router;
}
