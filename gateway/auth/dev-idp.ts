import { Router, json } from 'express';
import { z } from 'zod';
import { FerryError } from '../../validators/codes.ts';
import { parseWith } from '../../validators/issues.ts';
import { tenantIdSchema } from '../../validators/identity.ts';
import { verifyPassword } from '../../identity/password.ts';
import { asyncRoute, membershipsRoute, openSession, refreshRoute, revokeRoute, type SessionDeps } from './session-routes.ts';
import type { UserStore } from './users.ts';

export type { TokenAnswer } from './session-routes.ts';

const tokenRequest = z.strictObject({ username: z.string().min(1).max(128), password: z.string().min(1).max(1024), tenant: tenantIdSchema.optional() });

export interface DevIdpDeps extends SessionDeps {
  users: UserStore;
}

// scrypt of a fixed password, so an unknown username costs as much as a wrong password.
const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

/** The built-in identity provider of DESIGN §3: `POST /auth/token` and `POST /auth/refresh`. */
export function devIdentityRoutes(deps: DevIdpDeps): Router {
  const router = Router();
  router.use(json({ limit: '4kb' }));

  router.post(
    '/token',
    asyncRoute(async (req, res) => {
      const parsed = parseWith(tokenRequest, req.body);
      if (!parsed.ok) throw new FerryError('VALIDATION_FAILED', { errors: parsed.errors });
      const { username, password, tenant } = parsed.value;
      const user = await deps.users.byUsername(username);
      const ok = await verifyPassword(password, user?.passwordHash ?? DUMMY_HASH);
      if (!user || !ok) throw new FerryError('INVALID_CREDENTIALS');
      // Without a tenant (the app's first sign-in, before its picker knows the memberships): the user's first tenant.
      const chosen = tenant ?? (await deps.memberships.tenantsOf(user.id))[0];
      if (!chosen) throw new FerryError('FORBIDDEN', { message: 'The user is not a member of any tenant.' });
      const body = await openSession(deps, user.id, chosen);
      res.setHeader('Cache-Control', 'no-store');
      res.json(body);
    }),
  );

  router.use(refreshRoute(deps));
  router.use(revokeRoute(deps));
  router.use(membershipsRoute(deps));
  return router;
}
