import type { Queryable } from '../../sql/database.ts';
import { TENANT_ID } from '../../validators/identity.ts';

// Which tenants license the registration module. It lives in the service's own database, so the
// decision is made by the owning service (spec §1.1), never by the device or the gateway.

export interface Licensing {
  license(tenant: string): Promise<void>;
  revoke(tenant: string): Promise<void>;
  isLicensed(tenant: string, tx?: Queryable): Promise<boolean>;
  list(): Promise<string[]>;
}

export function createLicensing(db: Queryable): Licensing {
  return {
    async license(tenant) {
      if (!TENANT_ID.test(tenant)) throw new Error('invalid tenant id');
      await db.query('INSERT INTO licensed_tenants (tenant) VALUES ($1) ON CONFLICT (tenant) DO NOTHING', [tenant]);
    },
    async revoke(tenant) {
      await db.query('DELETE FROM licensed_tenants WHERE tenant = $1', [tenant]);
    },
    async isLicensed(tenant, tx) {
      const { rows } = await (tx ?? db).query('SELECT 1 FROM licensed_tenants WHERE tenant = $1', [tenant]);
      return rows.length > 0;
    },
    async list() {
      const { rows } = await db.query<{ tenant: string }>('SELECT tenant FROM licensed_tenants ORDER BY tenant');
      return rows.map((r) => r.tenant);
    },
  };
}
