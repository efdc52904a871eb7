import { z } from 'zod';
import { FerryError } from '../../validators/codes.ts';
import { MANIFESTS } from '../../validators/manifest.ts';
import { ROLES, ownerIdSchema, tenantIdSchema, type Role } from '../../validators/identity.ts';
import { toFieldErrors } from '../../validators/issues.ts';
import type { TenantRegistry } from './registry.ts';
import type { Membership, MembershipDirectory } from './membership.ts';
import { facilitiesSchema, normaliseFacilities } from './scope.ts';

// Tenant administration: the one place the operator commands are carried out. The `ferry` CLI
// runs them here directly when no server holds the data directory, and the running server runs
// them here for the CLI through the operator API (operator-api.ts), so both paths share every
// rule: which tenants and modules exist, what a role is, what each command answers.

/** Module ids an operator can license: the modules that have a manifest. */
export const MODULES: readonly string[] = MANIFESTS.map((m) => m.module);

const tenant = tenantIdSchema;
const owner = ownerIdSchema;
const moduleId = z.string().min(1).max(64);

export const adminRequestSchema = z.discriminatedUnion('command', [
  z.object({ command: z.literal('tenant.create'), tenant }).strict(),
  z.object({ command: z.literal('tenant.list') }).strict(),
  z.object({ command: z.literal('tenant.license'), tenant, module: moduleId }).strict(),
  z.object({ command: z.literal('tenant.unlicense'), tenant, module: moduleId }).strict(),
  // `facilities` is the member's whole set: an add replaces what they served before, and one
  // without facilities leaves them none (their replica then holds no records; admins see all).
  z.object({ command: z.literal('member.add'), tenant, owner, roles: z.array(z.enum(ROLES)).min(1).max(ROLES.length), facilities: facilitiesSchema.default([]) }).strict(),
  z.object({ command: z.literal('member.remove'), tenant, owner }).strict(),
  z.object({ command: z.literal('member.list'), tenant }).strict(),
]);

export type AdminRequest = z.infer<typeof adminRequestSchema>;
export type AdminCommand = AdminRequest['command'];

export type AdminResult =
  | { command: 'tenant.create'; tenant: string; db: string; dbCreated: boolean; securityUpdated: boolean; designUpdated: boolean }
  | { command: 'tenant.list'; tenants: string[] }
  | { command: 'tenant.license' | 'tenant.unlicense'; tenant: string; module: string; changed: boolean }
  | { command: 'member.add'; tenant: string; owner: string; roles: Role[]; facilities: string[] }
  | { command: 'member.remove'; tenant: string; owner: string }
  | { command: 'member.list'; tenant: string; members: Array<{ userId: string } & Membership> };

/** A module's licence table, in the owning service's own database (DESIGN §1: the service decides). */
export interface ModuleLicensing {
  license(tenant: string): Promise<void>;
  revoke(tenant: string): Promise<void>;
  isLicensed(tenant: string): Promise<boolean>;
}

export interface AdminDeps {
  tenants: TenantRegistry;
  memberships: MembershipDirectory;
  users: { ensureExternal(owner: string): Promise<void> };
  /** Creates the tenant's inbox (idempotent) and records the tenant. */
  provision(tenant: string): Promise<Omit<Extract<AdminResult, { command: 'tenant.create' }>, 'command'>>;
  /** The licence table of a known module; null when its service runs elsewhere (license it there). */
  licensing(module: string): Promise<ModuleLicensing | null>;
}

/** Checks an operator request; anything else is VALIDATION_FAILED with the paths at fault. */
export function parseAdminRequest(raw: unknown): AdminRequest {
  const parsed = adminRequestSchema.safeParse(raw);
  if (!parsed.success) throw new FerryError('VALIDATION_FAILED', { errors: toFieldErrors(parsed.error) });
  return parsed.data;
}

async function knownTenant(deps: AdminDeps, id: string): Promise<void> {
  if (!(await deps.tenants.exists(id))) throw new FerryError('UNKNOWN_TENANT', { details: { tenant: id } });
}

async function licensingOf(deps: AdminDeps, module: string): Promise<ModuleLicensing> {
  if (!MODULES.includes(module)) throw new FerryError('UNKNOWN_MODULE', { details: { module, modules: [...MODULES] } });
  const licensing = await deps.licensing(module);
  if (!licensing) throw new FerryError('UNAVAILABLE', { details: { module, reason: 'module-runs-elsewhere' } });
  return licensing;
}

export async function runAdmin(deps: AdminDeps, req: AdminRequest): Promise<AdminResult> {
  switch (req.command) {
    case 'tenant.create':
      return { command: req.command, ...(await deps.provision(req.tenant)) };
    case 'tenant.list':
      return { command: req.command, tenants: await deps.tenants.list() };
    case 'tenant.license':
    case 'tenant.unlicense': {
      // The module is checked first: an unknown module is the same answer for every tenant.
      const licensing = await licensingOf(deps, req.module);
      await knownTenant(deps, req.tenant);
      const was = await licensing.isLicensed(req.tenant);
      if (req.command === 'tenant.license') await licensing.license(req.tenant);
      else await licensing.revoke(req.tenant);
      return { command: req.command, tenant: req.tenant, module: req.module, changed: was !== (req.command === 'tenant.license') };
    }
    case 'member.add': {
      await knownTenant(deps, req.tenant);
      const roles = [...new Set(req.roles)];
      // A membership needs a users row; an external user's row has no password.
      await deps.users.ensureExternal(req.owner);
      const facilities = normaliseFacilities(req.facilities);
      // One statement for roles and facilities: no pull sees the new roles with the old facilities.
      await deps.memberships.set(req.tenant, req.owner, roles, facilities);
      return { command: req.command, tenant: req.tenant, owner: req.owner, roles, facilities };
    }
    case 'member.remove':
      await knownTenant(deps, req.tenant);
      await deps.memberships.remove(req.tenant, req.owner);
      return { command: req.command, tenant: req.tenant, owner: req.owner };
    case 'member.list':
      await knownTenant(deps, req.tenant);
      return { command: req.command, tenant: req.tenant, members: await deps.memberships.membersOf(req.tenant) };
  }
}
