import { Router, urlencoded, type Request, type Response, type NextFunction } from 'express';
import { z } from 'zod';
import { FerryError } from '../../validators/codes.ts';
import { parseWith } from '../../validators/issues.ts';
import type { TokenIssuer, TokenVerifier } from '../../identity/tokens.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';
import type { SessionStore } from './sessions.ts';

// What both identity modes share (DESIGN §3): opening a refresh session for a member of a tenant,
// the token answer, and `POST /auth/refresh`. The dev IdP reaches it with a password, the external
// mode with an IdP token; either way the Ferry token carries the opaque `owner` as `sub`.

export interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  expires_in: number;
  user: { id: string; tenant: string; roles: string[] };
}

export interface SessionDeps {
  memberships: MembershipDirectory;
  sessions: SessionStore;
  issuer: TokenIssuer;
  /** Verifies an access token presented to `POST /auth/revoke`; without it only refresh tokens revoke. */
  verifyToken?: TokenVerifier;
}

const refreshRequest = z.strictObject({ refresh_token: z.string().min(16).max(256) });

export const asyncRoute = (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: NextFunction) => {
  fn(req, res).catch(next);
};

const notMember = () => new FerryError('FORBIDDEN', { message: 'The user is not a member of this tenant.' });

async function answer(deps: SessionDeps, owner: string, tenant: string, roles: string[], sid: string, refreshToken: string): Promise<TokenAnswer> {
  return {
    access_token: await deps.issuer.mintAccess({ sub: owner, owner, tid: tenant, roles, sid }),
    refresh_token: refreshToken,
    token_type: 'Bearer',
    expires_in: deps.issuer.accessTtlSeconds,
    user: { id: owner, tenant, roles },
  };
}

/** Checks membership (403 when none), opens a refresh session and answers with a Ferry token. */
export async function openSession(deps: SessionDeps, owner: string, tenant: string): Promise<TokenAnswer> {
  const roles = await deps.memberships.rolesOf(tenant, owner);
  if (!roles) throw notMember();
  const session = await deps.sessions.open(owner, tenant);
  return answer(deps, owner, tenant, roles, session.sid, session.refreshToken);
}

/** `POST /refresh {"refresh_token"}`: rotates, keeps the tenant, re-checks membership. */
export function refreshRoute(deps: SessionDeps): Router {
  const router = Router();
  router.post(
    '/refresh',
    asyncRoute(async (req, res) => {
      const parsed = parseWith(refreshRequest, req.body);
      if (!parsed.ok) throw new FerryError('VALIDATION_FAILED', { errors: parsed.errors });
      const outcome = await deps.sessions.refresh(parsed.value.refresh_token, async (s) => {
        // The tenant never changes on refresh; membership is checked again so removal takes effect.
        // Throwing here rolls the rotation back, so the same refresh token still works once.
        if (!s.roles) throw notMember();
        return answer(deps, s.userId, s.tenantId, s.roles, s.sid, s.refreshToken);
      });
      if (outcome.kind !== 'rotated') throw new FerryError('UNAUTHENTICATED', { message: 'The refresh token is not valid.' });
      res.setHeader('Cache-Control', 'no-store');
      res.json(outcome.value);
    }),
  );
  return router;
}

const revokeRequest = z.object({
  token: z.string().min(1).max(4096),
  token_type_hint: z.enum(['refresh_token', 'access_token']).optional(),
});

/**
 * `POST /revoke` in the manner of RFC 7009 (OAuth token revocation): `token` is a refresh or an
 * access token, form-encoded or JSON, with an optional `token_type_hint`. Either kind ends the
 * session it belongs to on the server, so its refresh token stops working and every access token of
 * the session is refused on /sync and /v1 within the liveness TTL (at once in this process). The
 * answer is 200 with an empty body whether or not the token meant anything, so it tells a caller
 * nothing about a token it does not hold; only a request without a `token` is 400.
 */
export function revokeRoute(deps: Pick<SessionDeps, 'sessions' | 'verifyToken'>): Router {
  const router = Router();
  router.post(
    '/revoke',
    urlencoded({ extended: false, limit: '8kb' }),
    asyncRoute(async (req, res) => {
      const parsed = parseWith(revokeRequest, req.body);
      if (!parsed.ok) throw new FerryError('VALIDATION_FAILED', { errors: parsed.errors });
      await revokeToken(deps, parsed.value.token, parsed.value.token_type_hint);
      res.setHeader('Cache-Control', 'no-store');
      res.status(200).end();
    }),
  );
  return router;
}

/** A JWT has two dots; a refresh token is base64url without any. The hint only picks the first try. */
async function revokeToken(deps: Pick<SessionDeps, 'sessions' | 'verifyToken'>, token: string, hint: 'refresh_token' | 'access_token' | undefined): Promise<void> {
  const looksLikeJwt = token.split('.').length === 3;
  const asRefresh = async () => (await deps.sessions.revokeByRefreshToken(token)) !== null;
  const asAccess = async () => {
    if (!deps.verifyToken || !looksLikeJwt) return false;
    // Only a token this platform signed names a session to end; anything else is ignored (still 200).
    const claims = await deps.verifyToken(token).catch(() => null);
    if (!claims) return false;
    await deps.sessions.revoke(claims.sid);
    return true;
  };
  const order = hint === 'access_token' || (hint === undefined && looksLikeJwt) ? [asAccess, asRefresh] : [asRefresh, asAccess];
  for (const attempt of order) if (await attempt()) return;
}

/** One tenant the signed-in user belongs to, as the app's tenant picker shows it. */
export interface MembershipAnswer {
  tenant: string;
  roles: string[];
  /** The facilities the user serves there: what the app's facility field offers. */
  facilities: string[];
}

/**
 * `GET /memberships` with a Ferry access token: the tenants the token's user belongs to, with
 * their roles and facilities, so the app offers a picker instead of a free-text tenant. Only the caller's own
 * memberships; a missing or unverifiable token is 401.
 */
export function membershipsRoute(deps: Pick<SessionDeps, 'memberships' | 'verifyToken'>): Router {
  const router = Router();
  router.get(
    '/memberships',
    asyncRoute(async (req, res) => {
      const header = req.get('authorization') ?? '';
      const token = /^Bearer ([A-Za-z0-9._-]+)$/.exec(header)?.[1];
      const claims = token && deps.verifyToken ? await deps.verifyToken(token).catch(() => null) : null;
      if (!claims) throw new FerryError('UNAUTHENTICATED');
      const tenants = await deps.memberships.tenantsOf(claims.owner);
      const rows = await Promise.all(tenants.map((t) => deps.memberships.membershipOf(t, claims.owner)));
      const memberships: MembershipAnswer[] = tenants.flatMap((tenant, i) => {
        const m = rows[i];
        return m ? [{ tenant, roles: m.roles, facilities: m.facilities }] : [];
      });
      res.setHeader('Cache-Control', 'no-store');
      res.json({ memberships });
    }),
  );
  return router;
}
