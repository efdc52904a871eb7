import { isRecord } from '../sync/context.ts';
import { PATIENT_ID } from '../../validators/patient.ts';
import { TENANT_ID } from '../../validators/identity.ts';

// The projection's decisions, pure: which events name which record versions, whether a record
// doc is written, and how the index moves. The I/O around them is in projection.ts and store.ts.

/** A record version an event says exists: the projection makes the replica hold it, or a newer one. */
export interface Target {
  tenant: string;
  patientId: string;
  version: number;
}

const keyOf = (tenant: string, patientId: string) => `${tenant}\u0000${patientId}`;

/**
 * The record versions a batch of event payloads names, one per record (its highest version):
 * duplicate deliveries and a record's earlier events collapse, because the record is read from the
 * service anyway, at its current version. Payloads that are not patient events are left out.
 */
export function targetsOf(payloads: readonly unknown[]): Target[] {
  const out = new Map<string, Target>();
  for (const p of payloads) {
    if (!isRecord(p) || p.v !== 1 || (p.type !== 'patient.created' && p.type !== 'patient.updated')) continue;
    const { tenant, patientId, version } = p;
    if (typeof tenant !== 'string' || !TENANT_ID.test(tenant) || typeof patientId !== 'string' || !PATIENT_ID.test(patientId)) continue;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) continue;
    const k = keyOf(tenant, patientId);
    const had = out.get(k);
    if (!had || had.version < version) out.set(k, { tenant, patientId, version });
  }
  return [...out.values()];
}

/** True when the index already lists the record at `target`'s version or later: nothing to read or write. */
export function alreadyProjected(target: Target, indexedVersion: number | undefined): boolean {
  return indexedVersion !== undefined && indexedVersion >= target.version;
}

/** Whether the record doc is written: never over the same or a newer version. */
export function decideDocWrite(existingVersion: number | null, incomingVersion: number): 'write' | 'skip' {
  return existingVersion !== null && existingVersion >= incomingVersion ? 'skip' : 'write';
}

/** A record as the index lists it. */
export interface IndexedRecord {
  id: string;
  facility: string;
  version: number;
}

/** A change to the index: the record at its new version and facility; `from` the facility it left, if it moved. */
export interface IndexChange extends IndexedRecord {
  from: string | null;
}

/**
 * How the index moves for records just written at `incoming`, given what it lists now: a record
 * moves to its newer version (never back), and a change of facility leaves a departure behind.
 */
export function indexChangesOf(current: ReadonlyMap<string, IndexedRecord>, incoming: readonly IndexedRecord[]): IndexChange[] {
  const out = new Map<string, IndexChange>();
  for (const r of incoming) {
    const now = out.get(r.id) ?? current.get(r.id);
    if (now && now.version >= r.version) continue;
    const was = current.get(r.id);
    out.set(r.id, { ...r, from: was && was.facility !== r.facility ? was.facility : null });
  }
  return [...out.values()];
}

/** Whether `feed:head` (its counter, null when absent) must be raised to the index's `counter`: it only ever moves up. */
export function headBehind(head: number | null, counter: number): boolean {
  return counter > 0 && (head === null || head < counter);
}
