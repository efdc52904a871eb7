import type { Queryable } from '../../../sql/database.ts';
import type { Patient, PatientRecord } from '../../../validators/patient.ts';
import { identifierKey, nameKey, normaliseName, type ExistingPatient } from './matching.ts';

// SQL for patient rows. Every query is scoped by tenant: a patient of another tenant simply does
// not exist here (DESIGN §6: a 404, never a 403 that would confirm the id).

interface PatientRow {
  id: string;
  tenant: string;
  version: number;
  data: Patient | string;
  created_at: Date | string;
  updated_at: Date | string;
}

/** The stored representation, fields in the order of DESIGN §6, absent optionals left out. */
export function patientFields(p: Patient): Patient {
  return {
    givenName: p.givenName,
    familyName: p.familyName,
    birthDate: p.birthDate,
    sex: p.sex,
    ...(p.identifiers ? { identifiers: p.identifiers.map((i) => ({ system: i.system, value: i.value })) } : {}),
    ...(p.phone !== undefined ? { phone: p.phone } : {}),
    facility: p.facility,
    ...(p.address ? { address: p.address } : {}),
  };
}

/** The record as GET shows it, built from what was just written. */
export function recordOf(fields: { id: string; tenant: string; version: number; patient: Patient; createdAt: Date | string; updatedAt: Date }): PatientRecord {
  return {
    id: fields.id,
    tenant: fields.tenant,
    version: fields.version,
    ...patientFields(fields.patient),
    createdAt: new Date(fields.createdAt).toISOString(),
    updatedAt: fields.updatedAt.toISOString(),
  };
}

function toRecord(row: PatientRow): PatientRecord {
  const data = typeof row.data === 'string' ? (JSON.parse(row.data) as Patient) : row.data;
  return {
    id: row.id,
    tenant: row.tenant,
    version: Number(row.version),
    ...patientFields(data),
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

export async function loadPatient(tx: Queryable, tenant: string, id: string, opts: { forUpdate?: boolean } = {}): Promise<PatientRecord | null> {
  const { rows } = await tx.query<PatientRow>(
    `SELECT id, tenant, version, data, created_at, updated_at FROM patients WHERE id = $1 AND tenant = $2${opts.forUpdate ? ' FOR UPDATE' : ''}`,
    [id, tenant],
  );
  return rows[0] ? toRecord(rows[0]) : null;
}

export async function idTaken(tx: Queryable, id: string): Promise<boolean> {
  // Ids are global (device-minted UUIDv7s), so a clash with another tenant's id is still a clash.
  const { rows } = await tx.query('SELECT 1 FROM patients WHERE id = $1', [id]);
  return rows.length > 0;
}

function searchKeys(p: Patient) {
  return { name_key: nameKey(p.givenName, p.familyName), given_key: normaliseName(p.givenName), family_key: normaliseName(p.familyName) };
}

/** Inserts the row; false when the id was taken meanwhile (a concurrent create). */
export async function insertPatient(
  tx: Queryable,
  row: { id: string; tenant: string; patient: Patient; by: string; at: Date; overrideReason: string | null },
): Promise<boolean> {
  const k = searchKeys(row.patient);
  const { rows } = await tx.query(
    `INSERT INTO patients (id, tenant, version, data, name_key, given_key, family_key, birth_date, sex, duplicate_override_reason, created_by, updated_by, created_at, updated_at)
     VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $11)
     ON CONFLICT (id) DO NOTHING RETURNING id`,
    [row.id, row.tenant, JSON.stringify(patientFields(row.patient)), k.name_key, k.given_key, k.family_key, row.patient.birthDate, row.patient.sex, row.overrideReason, row.by, row.at],
  );
  return rows.length === 1;
}

export async function updatePatientRow(tx: Queryable, row: { id: string; tenant: string; version: number; patient: Patient; by: string; at: Date }): Promise<void> {
  const k = searchKeys(row.patient);
  await tx.query(
    `UPDATE patients SET version = $3, data = $4, name_key = $5, given_key = $6, family_key = $7, birth_date = $8, sex = $9, updated_by = $10, updated_at = $11
     WHERE id = $1 AND tenant = $2`,
    [row.id, row.tenant, row.version, JSON.stringify(patientFields(row.patient)), k.name_key, k.given_key, k.family_key, row.patient.birthDate, row.patient.sex, row.by, row.at],
  );
}

/**
 * Writes the patient's identifiers (replacing earlier ones on update). False when one is held by
 * another patient: a concurrent writer got there after our check.
 */
export async function writeIdentifiers(tx: Queryable, tenant: string, patientId: string, identifiers: Patient['identifiers'], replace: boolean): Promise<boolean> {
  if (replace) await tx.query('DELETE FROM patient_identifiers WHERE patient_id = $1', [patientId]);
  const list = identifiers ?? [];
  if (list.length === 0) return true;
  const { rows } = await tx.query(
    `INSERT INTO patient_identifiers (tenant, system, value_key, patient_id)
     SELECT $1, s, v, $2 FROM unnest($3::text[], $4::text[]) AS i (s, v)
     ON CONFLICT (tenant, system, value_key) DO NOTHING RETURNING 1`,
    [tenant, patientId, list.map((i) => i.system), list.map((i) => identifierKey(i.value))],
  );
  return rows.length === list.length;
}

// PGlite plans every statement afresh and planning dominates a join-heavy query, so the lookups
// below stay small: each is one index probe per key.

/** Ids of other patients of the tenant holding any of these identifiers. */
export async function identifierHolders(tx: Queryable, tenant: string, identifiers: Patient['identifiers'], exceptId: string | null): Promise<string[]> {
  const rows = await identifierRows(tx, tenant, identifiers);
  return [...new Set(rows.filter((r) => r.patient_id !== exceptId).map((r) => r.patient_id))].sort();
}

async function identifierRows(tx: Queryable, tenant: string, identifiers: Patient['identifiers']) {
  if (!identifiers || identifiers.length === 0) return [];
  const wanted = new Set(identifiers.map((i) => `${i.system}|${identifierKey(i.value)}`));
  // ANY over each column probes the primary key; the exact (system, value) pairs are kept below.
  const { rows } = await tx.query<{ patient_id: string; system: string; value_key: string }>(
    'SELECT patient_id, system, value_key FROM patient_identifiers WHERE tenant = $1 AND system = ANY($2::text[]) AND value_key = ANY($3::text[])',
    [tenant, identifiers.map((i) => i.system), identifiers.map((i) => identifierKey(i.value))],
  );
  return rows.filter((r) => wanted.has(`${r.system}|${r.value_key}`));
}

/** What duplicate detection needs: patients with the same name key, birth date and sex, and holders of the same identifiers. */
export async function possibleDuplicates(tx: Queryable, tenant: string, p: Patient): Promise<ExistingPatient[]> {
  const { rows } = await tx.query<{ id: string; name_key: string; birth_date: string; sex: string }>(
    'SELECT id, name_key, birth_date, sex FROM patients WHERE tenant = $1 AND name_key = $2 AND birth_date = $3 AND sex = $4 LIMIT 100',
    [tenant, nameKey(p.givenName, p.familyName), p.birthDate, p.sex],
  );
  const byName: ExistingPatient[] = rows.map((r) => ({ id: r.id, nameKey: r.name_key, birthDate: r.birth_date, sex: r.sex, identifiers: [] }));
  const byIdentifier: ExistingPatient[] = (await identifierRows(tx, tenant, p.identifiers)).map((r) => ({
    id: r.patient_id,
    nameKey: null,
    birthDate: null,
    sex: null,
    identifiers: [{ system: r.system, valueKey: r.value_key }],
  }));
  return [...byName, ...byIdentifier];
}

export interface PatientSummary {
  id: string;
  version: number;
  givenName: string;
  familyName: string;
  birthDate: string;
  sex: string;
}

export type PatientQuery = { nameTokens: string[]; identifier: { system: string; value: string } | null };

export async function searchPatients(db: Queryable, tenant: string, q: PatientQuery, limit: number): Promise<PatientSummary[]> {
  const params: unknown[] = [tenant];
  const where = ['p.tenant = $1'];
  // Normalised names hold only letters, digits and spaces, so the tokens need no LIKE escaping.
  for (const token of q.nameTokens) {
    params.push(token);
    where.push(`(' ' || p.name_key) LIKE '% ' || $${params.length} || '%'`);
  }
  if (q.identifier) {
    params.push(q.identifier.system, identifierKey(q.identifier.value));
    where.push(`p.id IN (SELECT patient_id FROM patient_identifiers WHERE tenant = $1 AND system = $${params.length - 1} AND value_key = $${params.length})`);
  }
  params.push(limit);
  const { rows } = await db.query<PatientRow>(
    `SELECT p.id, p.tenant, p.version, p.data, p.created_at, p.updated_at FROM patients p
     WHERE ${where.join(' AND ')} ORDER BY p.family_key, p.given_key, p.id LIMIT $${params.length}`,
    params,
  );
  return rows.map(toRecord).map((r) => ({ id: r.id, version: r.version, givenName: r.givenName, familyName: r.familyName, birthDate: r.birthDate, sex: r.sex }));
}
