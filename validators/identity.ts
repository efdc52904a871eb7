import { z } from 'zod';

export const TENANT_ID = /^[a-z][a-z0-9-]{0,39}$/;
export const OWNER_ID = /^[A-Za-z0-9_-]{1,64}$/;

export const ROLES = ['registrar', 'viewer', 'admin', 'platform-admin'] as const;
export type Role = (typeof ROLES)[number];

export const tenantIdSchema = z.string().regex(TENANT_ID);
export const ownerIdSchema = z.string().regex(OWNER_ID);

/** Claims of a Ferry access token (DESIGN §3). `act` is present on the worker's delegated tokens. */
export const accessClaimsSchema = z.object({
  sub: z.string().min(1),
  tid: tenantIdSchema,
  owner: ownerIdSchema,
  roles: z.array(z.string()),
  sid: z.string().min(1),
  exp: z.number(),
  act: z.object({ sub: z.string() }).optional(),
});
export type AccessClaims = z.infer<typeof accessClaimsSchema>;

export function hasRole(claims: Pick<AccessClaims, 'roles'>, role: Role): boolean {
  return claims.roles.includes(role);
}
