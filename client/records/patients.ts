// The patients a user can see on the device: the replica's records (their facilities) with the
// user's pending changes laid over them, plus the patients they are creating. Search and the list
// run offline, synchronously, over the in-memory indexes only.

import { PATIENT_ID } from '../../validators/patient.ts';
import { entityView, type LocalIndex } from '../reconcile.ts';
import type { ReplicaIndex } from './replica-index.ts';
import { byName, compileQuery, matches, pageOf, searchTerms, type PatientHit, type PatientQuery } from './patient-search.ts';

interface Candidate {
  id: string;
  sortKey: string;
}

/** The hit for one patient id, from the entity view (replica record + pending changes). */
function hitFor(id: string, replica: ReplicaIndex, outbox: LocalIndex): PatientHit | null {
  const view = entityView(id, outbox.forEntity(id), replica.get(id));
  if (!view.current) return null;
  const versions = [view.record?.version ?? 0, view.confirmed?.version ?? 0];
  const version = Math.max(...versions);
  return {
    id,
    version: version > 0 ? version : null,
    facility: view.current.facility ?? view.record?.facility ?? null,
    patient: view.current,
    pending: view.pending.length > 0,
  };
}

/** Patients with pending changes: their terms come from the overlay, computed per call (they are few). */
function pendingCandidates(replica: ReplicaIndex, outbox: LocalIndex): Map<string, Candidate & { terms: ReturnType<typeof searchTerms> }> {
  const out = new Map<string, Candidate & { terms: ReturnType<typeof searchTerms> }>();
  for (const id of outbox.pendingEntities()) {
    if (!PATIENT_ID.test(id)) continue;
    const current = entityView(id, outbox.forEntity(id), replica.get(id)).current;
    if (!current || typeof current.givenName !== 'string' || typeof current.familyName !== 'string' || typeof current.birthDate !== 'string') continue;
    const terms = searchTerms({ ...current, id });
    out.set(id, { id, sortKey: terms.sortKey, terms });
  }
  return out;
}

function toHits(candidates: readonly Candidate[], replica: ReplicaIndex, outbox: LocalIndex): PatientHit[] {
  return candidates.flatMap((c) => hitFor(c.id, replica, outbox) ?? []);
}

export function searchPatients(replica: ReplicaIndex, outbox: LocalIndex, query: PatientQuery, options: { limit?: number } = {}): PatientHit[] {
  const q = compileQuery(query);
  if (!q) return [];
  const pending = pendingCandidates(replica, outbox);
  const found: Candidate[] = [];
  for (const e of replica.values()) if (!pending.has(e.record.id) && matches(e.terms, q)) found.push({ id: e.record.id, sortKey: e.sortKey });
  for (const c of pending.values()) if (matches(c.terms, q)) found.push(c);
  found.sort(byName);
  return toHits(pageOf(found, { limit: options.limit }), replica, outbox);
}

export function listPatients(replica: ReplicaIndex, outbox: LocalIndex, options: { limit?: number; offset?: number } = {}): PatientHit[] {
  const pending = [...pendingCandidates(replica, outbox).values()].sort(byName);
  const held = replica.inOrder();
  // Merge the sorted replica (without the pending ones) with the sorted pending patients.
  const merged: Candidate[] = [];
  const pendingIds = new Set(pending.map((p) => p.id));
  let i = 0;
  for (const e of held) {
    if (pendingIds.has(e.record.id)) continue;
    while (i < pending.length && byName(pending[i]!, e) < 0) merged.push(pending[i++]!);
    merged.push({ id: e.record.id, sortKey: e.sortKey });
  }
  while (i < pending.length) merged.push(pending[i++]!);
  return toHits(pageOf(merged, options), replica, outbox);
}
