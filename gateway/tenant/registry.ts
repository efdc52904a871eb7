import type { Queryable } from '../../sql/database.ts';
import { TENANT_ID } from '../../validators/identity.ts';

/** The tenants Ferry serves. The worker reads it to know which inboxes exist (no `_db_updates`). */
export interface TenantRegistry {
  record(tenant: string): Promise<void>;
  list(): Promise<string[]>;
  exists(tenant: string): Promise<boolean>;
}

export function createTenantRegistry(db: Queryable): TenantRegistry {
  return {
    async record(tenant) {
      if (!TENANT_ID.test(tenant)) throw new Error('invalid tenant id');
      await db.query('INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [tenant]);
    },
    async list() {
      const { rows } = await db.query<{ id: string }>('SELECT id FROM tenants ORDER BY id');
      return rows.map((r) => r.id);
    },
    async exists(tenant) {
      const { rows } = await db.query('SELECT 1 FROM tenants WHERE id = $1', [tenant]);
      return rows.length > 0;
    },
  };
}
