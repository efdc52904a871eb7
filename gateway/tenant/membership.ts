import type { Queryable } from '../../sql/database.ts';
import { normaliseFacilities } from './scope.ts';

/** One user's membership of one tenant. */
export interface Membership {
  roles: string[];
  /** The facilities the user serves in this tenant, each once, sorted; what `replicaScopeOf` scopes the replica by. */
  facilities: string[];
}

/**
 * Who belongs to which tenant, with which roles, serving which facilities. Consulted at login,
 * refresh and commit time (roles) and on every replica pull (facilities). Nothing here caches:
 * every call reads the platform database.
 */
export interface MembershipDirectory {
  rolesOf(tenant: string, userId: string): Promise<string[] | null>;
  /** Roles of many users in one query; a user who is not a member maps to null. */
  rolesOfMany(tenant: string, userIds: readonly string[]): Promise<Map<string, string[] | null>>;
  /**
   * Grants the roles (replacing any the user held). With `facilities`, replaces the user's
   * facilities too, in the same statement; without, an existing member keeps theirs and a new
   * member serves none (and so sees no records until given one).
   */
  set(tenant: string, userId: string, roles: readonly string[], facilities?: readonly string[]): Promise<void>;
  remove(tenant: string, userId: string): Promise<void>;
  tenantsOf(userId: string): Promise<string[]>;
  /** Every member of a tenant with their roles and facilities, ordered by user id. */
  membersOf(tenant: string): Promise<Array<{ userId: string } & Membership>>;
  /** True when the user holds `platform-admin` in any tenant. */
  isPlatformAdmin(userId: string): Promise<boolean>;
  /**
   * The facilities a member serves in the tenant (each once, sorted; possibly none), or null when
   * the user is not a member. Read fresh on every call, so a change reaches the user's next pull.
   */
  facilitiesOf(tenant: string, userId: string): Promise<string[] | null>;
  /** Roles and facilities from one row read, or null when not a member: the input of `replicaScopeOf`. */
  membershipOf(tenant: string, userId: string): Promise<Membership | null>;
  /** Replaces a member's facilities (an empty list removes them all). False, and nothing written, when the user is not a member. */
  setFacilities(tenant: string, userId: string, facilities: readonly string[]): Promise<boolean>;
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
    async set(tenant, userId, roles, facilities) {
      if (facilities === undefined) {
        await db.query(
          `INSERT INTO memberships (tenant_id, user_id, roles) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, user_id) DO UPDATE SET roles = EXCLUDED.roles`,
          [tenant, userId, [...roles]],
        );
        return;
      }
      await db.query(
        `INSERT INTO memberships (tenant_id, user_id, roles, facilities) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET roles = EXCLUDED.roles, facilities = EXCLUDED.facilities`,
        [tenant, userId, [...roles], normaliseFacilities(facilities)],
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
      const { rows } = await db.query<{ user_id: string; roles: string[]; facilities: string[] }>(
        'SELECT user_id, roles, facilities FROM memberships WHERE tenant_id = $1 ORDER BY user_id',
        [tenant],
      );
      return rows.map((r) => ({ userId: r.user_id, roles: r.roles, facilities: r.facilities }));
    },
    async isPlatformAdmin(userId) {
      const { rows } = await db.query(`SELECT 1 FROM memberships WHERE user_id = $1 AND 'platform-admin' = ANY(roles) LIMIT 1`, [userId]);
      return rows.length > 0;
    },
    async facilitiesOf(tenant, userId) {
      const { rows } = await db.query<{ facilities: string[] }>('SELECT facilities FROM memberships WHERE tenant_id = $1 AND user_id = $2', [tenant, userId]);
      return rows[0] ? rows[0].facilities : null;
    },
    async membershipOf(tenant, userId) {
      const { rows } = await db.query<Membership>('SELECT roles, facilities FROM memberships WHERE tenant_id = $1 AND user_id = $2', [tenant, userId]);
      return rows[0] ? { roles: rows[0].roles, facilities: rows[0].facilities } : null;
    },
    async setFacilities(tenant, userId, facilities) {
      const { rowCount } = await db.query('UPDATE memberships SET facilities = $3 WHERE tenant_id = $1 AND user_id = $2', [tenant, userId, normaliseFacilities(facilities)]);
      return rowCount > 0;
    },
  };
}
