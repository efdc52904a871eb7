// Every read of patients goes through here: the list, the search and one patient's record with
// its sync state. Today they come from what this device wrote (the outbox entities of
// `session.mutations()` / `session.entity(id)`); once the device library has the replica
// (`session.records`, DESIGN §8), this module switches to it and the screens do not change.

import { isPending, type MutationInfo, type Session } from '../../client/browser.ts';
import { SEX_CODES, type Patient } from '../../validators/patient.ts';

export interface PatientHit {
  id: string;
  version: number | null;
  facility: string | null;
  patient: Patient;
  /** Changes from this device not confirmed yet. */
  pending: boolean;
}

export interface PatientQuery {
  text?: string;
  identifier?: string;
  birthDate?: string;
}

/** One patient as the record screen shows it. */
export interface PatientDetail {
  id: string;
  /** What the clinician sees: the server's record with this device's pending changes laid over. */
  patient: Patient | null;
  version: number | null;
  /** When the server last confirmed a change (its `updatedAt`). */
  confirmedAt: string | null;
  history: MutationInfo[];
  pending: MutationInfo[];
  problems: MutationInfo[];
}

const PATIENT_FIELDS = ['givenName', 'familyName', 'birthDate', 'sex', 'identifiers', 'phone', 'facility', 'address'] as const;

/** The patient fields of a record or payload (server fields and device-only fields dropped). */
export function toPatient(record: Record<string, unknown> | null | undefined): Patient | null {
  if (!record) return null;
  const out: Record<string, unknown> = {};
  for (const f of PATIENT_FIELDS) if (record[f] !== undefined) out[f] = record[f];
  if (typeof out.givenName !== 'string' || typeof out.familyName !== 'string') return null;
  if (typeof out.sex !== 'string' || !(SEX_CODES as readonly string[]).includes(out.sex)) out.sex = 'unknown';
  return out as unknown as Patient;
}

function fold(text: string): string {
  return text.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase().trim();
}

/**
 * Whether a patient matches a query: every word of `text` starts a word of the names, or equals
 * an identifier or the birth date; `identifier` equals one identifier value; `birthDate` equals.
 */
export function matchesQuery(p: Patient, q: PatientQuery): boolean {
  const ids = (p.identifiers ?? []).map((i) => fold(i.value));
  if (q.identifier && !ids.includes(fold(q.identifier))) return false;
  if (q.birthDate && p.birthDate !== q.birthDate) return false;
  if (q.text) {
    const names = fold(`${p.givenName} ${p.familyName}`).split(/\s+/);
    for (const word of fold(q.text).split(/\s+/).filter(Boolean)) {
      const hit = names.some((n) => n.startsWith(word)) || ids.includes(word) || p.birthDate === word || (p.phone ? fold(p.phone).replace(/\D/g, '') === word.replace(/\D/g, '') && word.replace(/\D/g, '').length > 3 : false);
      if (!hit) return false;
    }
  }
  return true;
}

function hitOf(session: Session, id: string): PatientHit | null {
  const d = patientDetail(session, id);
  if (!d.patient) return null;
  return { id, version: d.version, facility: d.patient.facility ?? null, patient: d.patient, pending: d.pending.length > 0 };
}

function byName(a: PatientHit, b: PatientHit): number {
  return fold(`${a.patient.familyName} ${a.patient.givenName}`).localeCompare(fold(`${b.patient.familyName} ${b.patient.givenName}`));
}

export function listPatients(session: Session, opts: { limit?: number; offset?: number } = {}): PatientHit[] {
  const ids = [...new Set(session.mutations().map((m) => m.entity))];
  const hits = ids.map((id) => hitOf(session, id)).filter((h): h is PatientHit => h !== null).sort(byName);
  const offset = opts.offset ?? 0;
  return hits.slice(offset, opts.limit === undefined ? undefined : offset + opts.limit);
}

export function searchPatients(session: Session, q: PatientQuery, opts: { limit?: number } = {}): PatientHit[] {
  return listPatients(session)
    .filter((h) => matchesQuery(h.patient, q))
    .slice(0, opts.limit);
}

export function patientDetail(session: Session, id: string): PatientDetail {
  const view = session.entity(id);
  const latest = view.history.at(-1);
  // A create the server never took (conflict, rejected) still shows what was captured.
  const patient = toPatient(view.current) ?? toPatient(latest?.payload);
  const updatedAt = view.confirmed?.record.updatedAt;
  return {
    id,
    patient,
    version: view.confirmed?.version ?? null,
    confirmedAt: typeof updatedAt === 'string' ? updatedAt : null,
    history: view.history,
    pending: view.pending,
    problems: view.problems,
  };
}

/**
 * The record a VERSION_CONFLICT's edit started from: the server's answer this device got for that
 * version (a commit or an earlier conflict's `current`). Null when the device never saw it.
 */
export function baseRecord(session: Session, entity: string, baseVersion: number | null): Patient | null {
  if (baseVersion === null) return null;
  for (const m of session.entity(entity).history) {
    const body = m.state.kind === 'committed' ? m.state.response?.body : m.state.kind === 'conflict' ? m.state.current : undefined;
    if (body && typeof body === 'object' && (body as { version?: unknown }).version === baseVersion) return toPatient(body as Record<string, unknown>);
  }
  return null;
}

/** A duplicate candidate as the comparison shows it; null fields when the device has not got it. */
export function candidatePatient(session: Session, id: string): Patient | null {
  return hitOf(session, id)?.patient ?? null;
}

export function pendingCount(session: Session): number {
  return session.mutations().filter((m) => isPending(m.state)).length;
}

/** Rejections and conflicts nobody has resolved or discarded, oldest first. */
export function openProblems(session: Session): MutationInfo[] {
  return session.mutations().filter((m) => (m.state.kind === 'rejected' || m.state.kind === 'conflict') && m.resolvedBy === null);
}
