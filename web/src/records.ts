// Every read of patients goes through here: the list, the search and one patient's record with
// its sync state, over the device library's replica (`session.records`, `session.entity(id)`,
// DESIGN §8) with this device's pending changes laid over. Screens never call those directly.

import { isPending, type MutationInfo, type Session } from '../../client/index.ts';
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

type LibraryHit = ReturnType<Session['records']['list']>[number];

function hitOf(h: LibraryHit): PatientHit | null {
  const patient = toPatient(h.patient);
  return patient ? { id: h.id, version: h.version, facility: h.facility, patient, pending: h.pending } : null;
}

const present = (h: PatientHit | null): h is PatientHit => h !== null;

function fold(text: string): string {
  return text.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase().trim();
}

function byName(a: PatientHit, b: PatientHit): number {
  return fold(`${a.patient.familyName} ${a.patient.givenName}`).localeCompare(fold(`${b.patient.familyName} ${b.patient.givenName}`));
}

/**
 * Patients this device wrote and the server confirmed, which the replica does not hold (yet): its
 * pull can lag the commit answer, and a patient just registered must not vanish from the list.
 */
function confirmedOnlyHere(session: Session, known: ReadonlySet<string>): PatientHit[] {
  const ids = new Set(session.mutations().map((m) => m.entity));
  const out: PatientHit[] = [];
  for (const id of ids) {
    if (known.has(id) || session.entity(id).record) continue;
    const d = patientDetail(session, id);
    if (d.patient && d.version !== null) out.push({ id, version: d.version, facility: d.patient.facility, patient: d.patient, pending: d.pending.length > 0 });
  }
  return out;
}

/** The library's own rules, for the few patients only this device knows: name-part prefixes, identifier prefix, date or year. */
export function matchesQuery(p: Patient, q: PatientQuery): boolean {
  if (q.birthDate) return q.birthDate.length === 4 ? p.birthDate.startsWith(`${q.birthDate}-`) : p.birthDate === q.birthDate;
  if (q.identifier) {
    const norm = (v: string) => fold(v).replace(/[\s-]/g, '');
    return (p.identifiers ?? []).some((i) => norm(i.value).startsWith(norm(q.identifier!)));
  }
  const names = fold(`${p.givenName} ${p.familyName}`).split(/[\s-]+/);
  const words = fold(q.text ?? '').split(/\s+/).filter(Boolean);
  return words.length > 0 && words.every((w) => names.some((n) => n.startsWith(w)));
}

export function listPatients(session: Session, opts: { limit?: number; offset?: number } = {}): PatientHit[] {
  const held = session.records.list().map(hitOf).filter(present);
  const all = [...held, ...confirmedOnlyHere(session, new Set(held.map((h) => h.id)))].sort(byName);
  const offset = opts.offset ?? 0;
  return all.slice(offset, opts.limit === undefined ? undefined : offset + opts.limit);
}

/**
 * What one search box asks: a date (YYYY-MM-DD) or a year searches birth dates; text with a digit
 * is an identifier too; otherwise name parts.
 */
export function queriesOf(text: string): PatientQuery[] {
  const q = text.trim();
  if (!q) return [];
  if (/^\d{4}(-\d{2}-\d{2})?$/.test(q)) return [{ birthDate: q }, { identifier: q }];
  if (/\d/.test(q)) return [{ identifier: q }, { text: q }];
  return [{ text: q }];
}

/** Patients matching any of the queries, each once, in the order found. */
export function searchPatients(session: Session, text: string, opts: { limit?: number } = {}): PatientHit[] {
  const seen = new Set<string>();
  const out: PatientHit[] = [];
  for (const q of queriesOf(text)) {
    for (const h of session.records.search(q, opts).map(hitOf).filter(present)) {
      if (seen.has(h.id)) continue;
      seen.add(h.id);
      out.push(h);
    }
  }
  const held = new Set(session.records.list().map((h) => h.id));
  for (const h of confirmedOnlyHere(session, held)) {
    if (!seen.has(h.id) && queriesOf(text).some((q) => matchesQuery(h.patient, q))) {
      seen.add(h.id);
      out.push(h);
    }
  }
  return opts.limit === undefined ? out : out.slice(0, opts.limit);
}

export function patientDetail(session: Session, id: string): PatientDetail {
  const view = session.entity(id);
  const latest = view.history.at(-1);
  // A create the server never took (conflict, rejected) still shows what was captured.
  const patient = toPatient(view.current) ?? toPatient(latest?.payload);
  const confirmedVersion = view.confirmed?.version ?? null;
  const recordVersion = view.record?.version ?? null;
  const fromRecord = recordVersion !== null && (confirmedVersion === null || recordVersion >= confirmedVersion);
  const confirmedUpdatedAt = view.confirmed?.record.updatedAt;
  return {
    id,
    patient,
    version: fromRecord ? recordVersion : confirmedVersion,
    confirmedAt: fromRecord ? (view.record?.updatedAt ?? null) : typeof confirmedUpdatedAt === 'string' ? confirmedUpdatedAt : null,
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

/** A duplicate candidate as the comparison shows it; null when it is not in the user's replica. */
export function candidatePatient(session: Session, id: string): Patient | null {
  return toPatient(session.entity(id).record?.data);
}

/** When the replica last caught up with the server (kept across restarts). */
export function lastPulledAt(session: Session): string | null {
  return session.records.state.lastPulledAt;
}

export function pendingCount(session: Session): number {
  return session.mutations().filter((m) => isPending(m.state)).length;
}

/** Rejections and conflicts nobody has resolved or discarded, oldest first. */
export function openProblems(session: Session): MutationInfo[] {
  return session.mutations().filter((m) => (m.state.kind === 'rejected' || m.state.kind === 'conflict') && m.resolvedBy === null);
}
