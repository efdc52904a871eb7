import type { TenantRegistry } from './registry.ts';
import type { MembershipDirectory } from './membership.ts';
import type { UserStore } from '../auth/users.ts';

// The seeded demo data of DESIGN §3. Dev only: never seeded when the external IdP is configured.
export const DEMO_TENANTS = ['north', 'south', 'east'] as const;
export const DEMO_PASSWORD = 'ferry-dev';
export const DEMO_LICENSED = { registration: ['north', 'south'] } as const;

export const DEMO_MEMBERSHIPS: ReadonlyArray<{ user: string; tenant: string; roles: string[] }> = [
  { user: 'ada', tenant: 'north', roles: ['registrar'] },
  { user: 'ben', tenant: 'north', roles: ['registrar'] },
  { user: 'cy', tenant: 'north', roles: ['registrar'] },
  { user: 'cy', tenant: 'south', roles: ['registrar'] },
  { user: 'cy', tenant: 'east', roles: ['registrar'] },
  { user: 'dee', tenant: 'north', roles: ['viewer'] },
  { user: 'admin', tenant: 'north', roles: ['admin', 'platform-admin'] },
  { user: 'admin', tenant: 'south', roles: ['admin', 'platform-admin'] },
  { user: 'admin', tenant: 'east', roles: ['admin', 'platform-admin'] },
];

export async function seedDemo(deps: { tenants: TenantRegistry; memberships: MembershipDirectory; users: UserStore }): Promise<void> {
  for (const t of DEMO_TENANTS) await deps.tenants.record(t);
  const userIds = [...new Set(DEMO_MEMBERSHIPS.map((m) => m.user))];
  for (const id of userIds) {
    if (!(await deps.users.byUsername(id))) await deps.users.upsert({ id, username: id, password: DEMO_PASSWORD });
  }
  for (const m of DEMO_MEMBERSHIPS) await deps.memberships.set(m.tenant, m.user, m.roles);
}
