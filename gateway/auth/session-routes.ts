import { Router, type Request, type Response, type NextFunction } from 'express';
import { z } from 'zod';
import { FerryError } from '../../validators/codes.ts';
import { parseWith } from '../../validators/issues.ts';
import type { TokenIssuer } from '../../identity/tokens.ts';
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
        const roles = await deps.memberships.rolesOf(s.tenantId, s.userId);
        if (!roles) throw notMember();
        return answer(deps, s.userId, s.tenantId, roles, s.sid, s.refreshToken);
      });
      if (outcome.kind !== 'rotated') throw new FerryError('UNAUTHENTICATED', { message: 'The refresh token is not valid.' });
      res.setHeader('Cache-Control', 'no-store');
      res.json(outcome.value);
    }),
  );
  return router;
}
