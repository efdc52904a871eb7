// Conflicts: what the user sees (the server's version or the duplicate candidates next to their own
// change) and the three ways out, as pure builders. The session turns a plan into a mutation or a
// local discard note.

import { MANIFESTS, findOp } from '../validators/manifest.ts';
import type { ErrorCode } from '../validators/codes.ts';
import { versionOf, type MutationInfo } from './reconcile.ts';
import type { ReplicaRecord } from './records/record-doc.ts';

/**
 * A likely duplicate as the device can show it. The server names candidates by id only (the user
 * may not be allowed to see them); the details come from the replica when the record is in the
 * user's facilities (`inScope`), and are null otherwise.
 */
export interface DuplicateCandidate {
  id: string;
  inScope: boolean;
  givenName: string | null;
  familyName: string | null;
  birthDate: string | null;
  facility: string | null;
  version: number | null;
}

/** Looks a patient id up in the replica. */
export type RecordLookup = (id: string) => ReplicaRecord | null;

const noRecords: RecordLookup = () => null;

export function describeCandidates(ids: readonly string[], lookup: RecordLookup): DuplicateCandidate[] {
  return ids.map((id) => {
    const r = lookup(id);
    return r
      ? { id, inScope: true, givenName: r.data.givenName, familyName: r.data.familyName, birthDate: r.data.birthDate, facility: r.facility, version: r.version }
      : { id, inScope: false, givenName: null, familyName: null, birthDate: null, facility: null, version: null };
  });
}

export interface Conflict {
  mid: string;
  entity: string;
  op: string;
  code: ErrorCode | null;
  /** The server's record as the owner may see it (VERSION_CONFLICT). */
  current: Record<string, unknown> | null;
  /** Ids of likely duplicates (DUPLICATE_DETECTED). */
  candidates: string[];
  /** The same candidates, with names and birth dates from the replica where in scope. */
  candidateDetails: DuplicateCandidate[];
  /** What this device tried to write. */
  mine: Record<string, unknown>;
}

export type Resolution =
  /** Write `payload` (the merged full record) as an update on the server's current version. */
  | { kind: 'merge'; payload: Record<string, unknown> }
  /** Create the patient anyway, stating why it is not a duplicate. */
  | { kind: 'create-anyway'; reason: string }
  /** Drop this change; recorded locally. */
  | { kind: 'discard' };

export type ResolutionPlan =
  | { kind: 'mutate'; op: string; entity: string; payload: Record<string, unknown>; baseVersion: number | null; resolves: string }
  | { kind: 'discard'; mid: string }
  | { kind: 'invalid'; reason: 'NOT_OPEN' | 'NOT_A_VERSION_CONFLICT' | 'NOT_A_DUPLICATE' | 'NO_CURRENT_VERSION' | 'NO_SUCH_OP' };

export function toConflict(m: MutationInfo, lookup: RecordLookup = noRecords): Conflict | null {
  if (m.state.kind !== 'conflict') return null;
  const current = typeof m.state.current === 'object' && m.state.current !== null ? (m.state.current as Record<string, unknown>) : null;
  return { mid: m.mid, entity: m.entity, op: m.op, code: m.state.code, current, candidates: m.state.candidates, candidateDetails: describeCandidates(m.state.candidates, lookup), mine: m.payload };
}

/** A conflict built without the replica (e.g. as a pull reports it), with its candidates resolved. */
export function withCandidates(conflict: Conflict, lookup: RecordLookup): Conflict {
  return { ...conflict, candidateDetails: describeCandidates(conflict.candidates, lookup) };
}

/** The op of the same module and entity type with the given kind (`patient.create` → `patient.update`). */
export function siblingOp(op: string, kind: 'create' | 'update'): string | null {
  const def = findOp(op);
  if (!def) return null;
  for (const manifest of MANIFESTS) {
    const found = manifest.ops.find((o) => o.module === def.module && o.entityPrefix === def.entityPrefix && o.kind === kind);
    if (found) return found.op;
  }
  return null;
}

/**
 * What to do for `resolution` of mutation `m`. Only open problems (conflict or rejected, not yet
 * resolved or discarded) can be resolved. Merge needs a VERSION_CONFLICT with `current`; create
 * anyway needs a DUPLICATE_DETECTED create. Discard works for any open problem.
 */
export function planResolution(m: MutationInfo, resolution: Resolution): ResolutionPlan {
  const open = (m.state.kind === 'conflict' || m.state.kind === 'rejected') && m.resolvedBy === null;
  if (!open) return { kind: 'invalid', reason: 'NOT_OPEN' };
  switch (resolution.kind) {
    case 'discard':
      return { kind: 'discard', mid: m.mid };
    case 'merge': {
      if (m.state.kind !== 'conflict' || m.state.code !== 'VERSION_CONFLICT') return { kind: 'invalid', reason: 'NOT_A_VERSION_CONFLICT' };
      const version = versionOf(m.state.current);
      if (version === null) return { kind: 'invalid', reason: 'NO_CURRENT_VERSION' };
      const op = siblingOp(m.op, 'update');
      if (!op) return { kind: 'invalid', reason: 'NO_SUCH_OP' };
      return { kind: 'mutate', op, entity: m.entity, payload: resolution.payload, baseVersion: version, resolves: m.mid };
    }
    case 'create-anyway': {
      if (m.state.kind !== 'conflict' || m.state.code !== 'DUPLICATE_DETECTED' || findOp(m.op)?.kind !== 'create') return { kind: 'invalid', reason: 'NOT_A_DUPLICATE' };
      return {
        kind: 'mutate',
        op: m.op,
        entity: m.entity,
        payload: { ...m.payload, confirmNotDuplicate: { reason: resolution.reason } },
        baseVersion: null,
        resolves: m.mid,
      };
    }
  }
}
