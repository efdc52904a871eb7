import { TENANT_ID } from '../validators/identity.ts';
import { CouchError, type CouchServer } from './client.ts';
import { DESIGN_DOC_ID, ferryDesignDoc, sameDesign } from './design/index.ts';
import { GATEWAY_ROLE, WORKER_ROLE } from './design/validate.ts';

// Tenant provisioning (DESIGN §5 "Tenant registry"): `inbox_{tenant}` with its `_security` and
// design doc, then the registry row the worker watches. Every step checks before it writes, so
// running it again changes nothing.

export class InvalidTenantError extends Error {
  override name = 'InvalidTenantError';
  constructor() {
    super('tenant ids must match ^[a-z][a-z0-9-]{0,39}$ (lowercase letter first, then lowercase letters, digits or dashes; at most 40)');
  }
}

export function inboxName(tenant: string): string {
  if (!TENANT_ID.test(tenant)) throw new InvalidTenantError();
  return `inbox_${tenant}`;
}

/** The tenant's replica source (DESIGN §8): record docs the projection writes (gateway/replica), read by /replica. */
export function recordsName(tenant: string): string {
  if (!TENANT_ID.test(tenant)) throw new InvalidTenantError();
  return `records_${tenant}`;
}

export interface SecurityObject {
  admins: { names: string[]; roles: string[] };
  members: { names: string[]; roles: string[] };
}

/** Only the platform's own identities are members; db admins: none (server admins only). */
export function inboxSecurity(): SecurityObject {
  return {
    admins: { names: [], roles: [] },
    members: { names: [], roles: [GATEWAY_ROLE, WORKER_ROLE] },
  };
}

function sameSecurity(existing: unknown, wanted: SecurityObject): boolean {
  const norm = (s: unknown) => {
    const o = (s ?? {}) as Partial<SecurityObject>;
    const part = (p: { names?: string[]; roles?: string[] } | undefined) => ({
      names: [...(p?.names ?? [])].sort(),
      roles: [...(p?.roles ?? [])].sort(),
    });
    return JSON.stringify({ admins: part(o.admins), members: part(o.members) });
  };
  return norm(existing) === norm(wanted);
}

export interface ProvisionResult {
  tenant: string;
  db: string;
  dbCreated: boolean;
  securityUpdated: boolean;
  designUpdated: boolean;
}

export interface TenantRecorder {
  record(tenant: string): Promise<void>;
}

export interface ProvisionOptions {
  /** A client authenticated as a server admin. */
  admin: CouchServer;
  tenant: string;
  /** The platform's tenant registry (`createTenantRegistry(db)`). */
  registry: TenantRecorder;
}

async function ensureDesign(admin: CouchServer, db: string, tenant: string): Promise<boolean> {
  const wanted = ferryDesignDoc(tenant);
  for (let attempt = 0; ; attempt++) {
    const existing = await admin.db(db).get<Record<string, unknown>>(DESIGN_DOC_ID);
    if (existing && sameDesign(existing, wanted)) return false;
    try {
      await admin.db(db).put(existing?._rev ? { ...wanted, _rev: existing._rev } : wanted);
      return true;
    } catch (err) {
      if (err instanceof CouchError && err.status === 409 && attempt < 3) continue;
      throw err;
    }
  }
}

async function ensureSecurity(admin: CouchServer, db: string, wanted: SecurityObject): Promise<boolean> {
  const res = await admin.db(db).request('GET', '/_security');
  if (!res.ok) throw new CouchError(res.status, 'security_read_failed', '');
  const current: unknown = await res.json();
  if (sameSecurity(current, wanted)) return false;
  const put = await admin.db(db).request('PUT', '/_security', wanted);
  if (!put.ok) throw new CouchError(put.status, 'security_write_failed', '');
  await put.body?.cancel();
  return true;
}

/**
 * `records_{tenant}`: the same members as the inbox (the platform's own identities), so tenant
 * members never reach it directly; only the projection writes it. No `validate_doc_update`: on the
 * embedded server pouchdb-validation silently drops a `new_edits: false` update of an existing doc
 * (the answer is `[]`, nothing is written), and the projection writes only that way.
 */
async function ensureRecords(admin: CouchServer, tenant: string): Promise<void> {
  const db = recordsName(tenant);
  await admin.createDb(db);
  await ensureSecurity(admin, db, inboxSecurity());
}

/** Creates or repairs `inbox_{tenant}` and `records_{tenant}`, and records the tenant. Idempotent. */
export async function provisionTenant(opts: ProvisionOptions): Promise<ProvisionResult> {
  const { admin, tenant } = opts;
  const db = inboxName(tenant);
  const dbCreated = await admin.createDb(db);

  const securityUpdated = await ensureSecurity(admin, db, inboxSecurity());

  const designUpdated = await ensureDesign(admin, db, tenant);
  await ensureRecords(admin, tenant);
  // Last, so the worker only learns of an inbox that is ready.
  await opts.registry.record(tenant);
  return { tenant, db, dbCreated, securityUpdated, designUpdated };
}
