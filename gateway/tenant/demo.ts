import type { TenantRegistry } from './registry.ts';
import type { MembershipDirectory } from './membership.ts';
import type { UserStore } from '../auth/users.ts';

// The seeded demo data (README "Dev identity provider and demo data"). Dev only: never seeded when the external IdP is configured.
export const DEMO_TENANTS = ['north', 'south', 'east'] as const;
export const DEMO_PASSWORD = 'ferry-dev';
export const DEMO_LICENSED = { registration: ['north', 'south'] } as const;

/**
 * Roles and, per tenant, the facilities each demo user serves, which scope their device's replica:
 * ada, ben and dee at north-hc-1; cy at one facility in each of her three tenants; admin holds the
 * admin role, so sees every facility and needs none named.
 */
export const DEMO_MEMBERSHIPS: ReadonlyArray<{ user: string; tenant: string; roles: string[]; facilities: string[] }> = [
  { user: 'ada', tenant: 'north', roles: ['registrar'], facilities: ['north-hc-1'] },
  { user: 'ben', tenant: 'north', roles: ['registrar'], facilities: ['north-hc-1'] },
  { user: 'cy', tenant: 'north', roles: ['registrar'], facilities: ['north-hc-2'] },
  { user: 'cy', tenant: 'south', roles: ['registrar'], facilities: ['south-hc-1'] },
  { user: 'cy', tenant: 'east', roles: ['registrar'], facilities: ['east-hc-1'] },
  { user: 'dee', tenant: 'north', roles: ['viewer'], facilities: ['north-hc-1'] },
  { user: 'admin', tenant: 'north', roles: ['admin', 'platform-admin'], facilities: [] },
  { user: 'admin', tenant: 'south', roles: ['admin', 'platform-admin'], facilities: [] },
  { user: 'admin', tenant: 'east', roles: ['admin', 'platform-admin'], facilities: [] },
];

export async function seedDemo(deps: { tenants: TenantRegistry; memberships: MembershipDirectory; users: UserStore }): Promise<void> {
  for (const t of DEMO_TENANTS) await deps.tenants.record(t);
  const userIds = [...new Set(DEMO_MEMBERSHIPS.map((m) => m.user))];
  for (const id of userIds) {
    if (!(await deps.users.byUsername(id))) await deps.users.upsert({ id, username: id, password: DEMO_PASSWORD });
  }
  // Every start puts the demo memberships back as listed, facilities included (as it does roles).
  for (const m of DEMO_MEMBERSHIPS) await deps.memberships.set(m.tenant, m.user, m.roles, m.facilities);
}
