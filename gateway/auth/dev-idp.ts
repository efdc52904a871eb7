import { Router, json, type Request, type Response, type NextFunction } from 'express';
import { z } from 'zod';
import { FerryError } from '../../validators/codes.ts';
import { parseWith } from '../../validators/issues.ts';
import { tenantIdSchema } from '../../validators/identity.ts';
import { verifyPassword } from '../../identity/password.ts';
import type { TokenIssuer } from '../../identity/tokens.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';
import type { SessionStore } from './sessions.ts';
import type { UserStore } from './users.ts';

const tokenRequest = z.strictObject({ username: z.string().min(1).max(128), password: z.string().min(1).max(1024), tenant: tenantIdSchema });
const refreshRequest = z.strictObject({ refresh_token: z.string().min(16).max(256) });

export interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  expires_in: number;
  user: { id: string; tenant: string; roles: string[] };
}

export interface DevIdpDeps {
  users: UserStore;
  memberships: MembershipDirectory;
  sessions: SessionStore;
  issuer: TokenIssuer;
}

// scrypt of a fixed password, so an unknown username costs as much as a wrong password.
const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

const asyncRoute = (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: NextFunction) => {
  fn(req, res).catch(next);
};

/** The built-in identity provider of DESIGN §3: `POST /auth/token` and `POST /auth/refresh`. */
export function devIdentityRoutes(deps: DevIdpDeps): Router {
  const router = Router();
  router.use(json({ limit: '4kb' }));

  const answer = async (userId: string, tenant: string, roles: string[], sid: string, refreshToken: string): Promise<TokenAnswer> => ({
    access_token: await deps.issuer.mintAccess({ sub: userId, owner: userId, tid: tenant, roles, sid }),
    refresh_token: refreshToken,
    token_type: 'Bearer',
    expires_in: deps.issuer.accessTtlSeconds,
    user: { id: userId, tenant, roles },
  });

  router.post(
    '/token',
    asyncRoute(async (req, res) => {
      const parsed = parseWith(tokenRequest, req.body);
      if (!parsed.ok) throw new FerryError('VALIDATION_FAILED', { errors: parsed.errors });
      const { username, password, tenant } = parsed.value;
      const user = await deps.users.byUsername(username);
      const ok = await verifyPassword(password, user?.passwordHash ?? DUMMY_HASH);
      if (!user || !ok) throw new FerryError('INVALID_CREDENTIALS');
      const roles = await deps.memberships.rolesOf(tenant, user.id);
      if (!roles) throw new FerryError('FORBIDDEN', { message: 'The user is not a member of this tenant.' });
      const session = await deps.sessions.open(user.id, tenant);
      res.setHeader('Cache-Control', 'no-store');
      res.json(await answer(user.id, tenant, roles, session.sid, session.refreshToken));
    }),
  );

  router.post(
    '/refresh',
    asyncRoute(async (req, res) => {
      const parsed = parseWith(refreshRequest, req.body);
      if (!parsed.ok) throw new FerryError('VALIDATION_FAILED', { errors: parsed.errors });
      const outcome = await deps.sessions.refresh(parsed.value.refresh_token, async (s) => {
        // The tenant never changes on refresh; membership is checked again so removal takes effect.
        const roles = await deps.memberships.rolesOf(s.tenantId, s.userId);
        if (!roles) throw new FerryError('FORBIDDEN', { message: 'The user is not a member of this tenant.' });
        return answer(s.userId, s.tenantId, roles, s.sid, s.refreshToken);
      });
      if (outcome.kind !== 'rotated') throw new FerryError('UNAUTHENTICATED', { message: 'The refresh token is not valid.' });
      res.setHeader('Cache-Control', 'no-store');
      res.json(outcome.value);
    }),
  );
  return router;
}
