import type { Queryable } from '../../sql/database.ts';

/** Who belongs to which tenant, with which roles. Consulted at login, refresh and commit time. */
export interface MembershipDirectory {
  rolesOf(tenant: string, userId: string): Promise<string[] | null>;
  /** Roles of many users in one query; a user who is not a member maps to null. */
  rolesOfMany(tenant: string, userIds: readonly string[]): Promise<Map<string, string[] | null>>;
  set(tenant: string, userId: string, roles: readonly string[]): Promise<void>;
  remove(tenant: string, userId: string): Promise<void>;
  tenantsOf(userId: string): Promise<string[]>;
  /** Every member of a tenant with their roles, ordered by user id. */
  membersOf(tenant: string): Promise<Array<{ userId: string; roles: string[] }>>;
  /** True when the user holds `platform-admin` in any tenant. */
  isPlatformAdmin(userId: string): Promise<boolean>;
}

export function createMembershipDirectory(db: Queryable): MembershipDirectory {
  return {
    async rolesOf(tenant, userId) {
      const { rows } = await db.query<{ roles: string[] }>('SELECT roles FROM memberships WHERE tenant_id = $1 AND user_id = $2', [tenant, userId]);
      return rows[0] ? rows[0].roles : null;
    },
    async rolesOfMany(tenant, userIds) {
      const out = new Map<string, string[] | null>(userIds.map((u) => [u, null]));
      if (userIds.length === 0) return out;
      const { rows } = await db.query<{ user_id: string; roles: string[] }>('SELECT user_id, roles FROM memberships WHERE tenant_id = $1 AND user_id = ANY($2::text[])', [tenant, [...new Set(userIds)]]);
      for (const r of rows) out.set(r.user_id, r.roles);
      return out;
    },
    async set(tenant, userId, roles) {
      await db.query(
        `INSERT INTO memberships (tenant_id, user_id, roles) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET roles = EXCLUDED.roles`,
        [tenant, userId, [...roles]],
      );
    },
    async remove(tenant, userId) {
      await db.query('DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2', [tenant, userId]);
    },
    async tenantsOf(userId) {
      const { rows } = await db.query<{ tenant_id: string }>('SELECT tenant_id FROM memberships WHERE user_id = $1 ORDER BY tenant_id', [userId]);
      return rows.map((r) => r.tenant_id);
    },
    async membersOf(tenant) {
      const { rows } = await db.query<{ user_id: string; roles: string[] }>('SELECT user_id, roles FROM memberships WHERE tenant_id = $1 ORDER BY user_id', [tenant]);
      return rows.map((r) => ({ userId: r.user_id, roles: r.roles }));
    },
    async isPlatformAdmin(userId) {
      const { rows } = await db.query(`SELECT 1 FROM memberships WHERE user_id = $1 AND 'platform-admin' = ANY(roles) LIMIT 1`, [userId]);
      return rows.length > 0;
    },
  };
}
