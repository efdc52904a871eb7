import { z } from 'zod';
import { patientSchema } from '../../validators/patient.ts';

// Which of a tenant's records a member's device may hold: the replica scope. A membership names
// the facilities its user serves; a record belongs to the facility in its `facility` field. Pure
// decisions here; the membership directory (membership.ts) stores the facilities.

/**
 * A facility id as a membership names it: the same shape as a patient's `facility` (trimmed,
 * 1–64 characters), taken from the patient schema so the two can never drift apart and every
 * facility a patient can be registered at can be put in someone's scope.
 */
export const facilityIdSchema = patientSchema.shape.facility;

/** Most facilities one membership may name: a pull's cost grows with them, so keep it bounded. */
export const MAX_FACILITIES = 100;

/** A membership's facilities as an operator gives them; duplicates are allowed here and dropped by `normaliseFacilities`. */
export const facilitiesSchema = z.array(facilityIdSchema).max(MAX_FACILITIES);

/** Roles that see every facility of the tenant. */
export const ALL_FACILITY_ROLES: readonly string[] = ['admin', 'platform-admin'];

/**
 * A user's replica scope in one tenant.
 * - `all`: every record of the tenant, whatever its facility.
 * - `facilities`: exactly the records whose `facility` is in the list; an empty list means none.
 */
export type ReplicaScope = { kind: 'all' } | { kind: 'facilities'; facilities: readonly string[] };

/** What a scope is decided from: one membership row, read in one go (`MembershipDirectory.membershipOf`). */
export interface ScopeInput {
  roles: readonly string[];
  facilities: readonly string[];
}

/** The facilities as stored: each once, in a fixed order (so answers and comparisons are stable). */
export function normaliseFacilities(facilities: readonly string[]): string[] {
  return [...new Set(facilities)].sort();
}

/**
 * Decides which records a member's replica holds. Tenant `admin` or `platform-admin` see every
 * facility of the tenant; anyone else exactly the facilities their membership names. Fails closed:
 * no membership (null) or no facility means no records, never "everything".
 *
 * The `/replica/{tenant}` endpoint calls this on every request with the membership read for that
 * request, so a change an operator makes reaches the user's next pull.
 */
export function replicaScopeOf(membership: ScopeInput | null): ReplicaScope {
  if (!membership) return { kind: 'facilities', facilities: [] };
  if (membership.roles.some((r) => ALL_FACILITY_ROLES.includes(r))) return { kind: 'all' };
  return { kind: 'facilities', facilities: Object.freeze(normaliseFacilities(membership.facilities)) };
}

/** True when a record at `facility` is in the scope. */
export function scopeIncludes(scope: ReplicaScope, facility: string): boolean {
  return scope.kind === 'all' || scope.facilities.includes(facility);
}
