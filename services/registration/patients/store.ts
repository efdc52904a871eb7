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
    // Fixed key order: jsonb reorders keys, and a record read back must be byte-identical to the one answered.
    ...(p.address ? { address: addressFields(p.address) } : {}),
  };
}

function addressFields(a: NonNullable<Patient['address']>): NonNullable<Patient['address']> {
  return {
    ...(a.line !== undefined ? { line: a.line } : {}),
    ...(a.city !== undefined ? { city: a.city } : {}),
    ...(a.district !== undefined ? { district: a.district } : {}),
    ...(a.country !== undefined ? { country: a.country } : {}),
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

/** The committed records of `ids` in the tenant, in the order asked; ids it has not are left out. */
export async function loadPatients(db: Queryable, tenant: string, ids: readonly string[]): Promise<PatientRecord[]> {
  const { rows } = await db.query<PatientRow>('SELECT id, tenant, version, data, created_at, updated_at FROM patients WHERE tenant = $1 AND id = ANY($2::text[])', [tenant, ids]);
  const byId = new Map(rows.map((r) => [r.id, toRecord(r)]));
  return ids.flatMap((id) => byId.get(id) ?? []);
}

function searchKeys(p: Patient) {
  return { name_key: nameKey(p.givenName, p.familyName), given_key: normaliseName(p.givenName), family_key: normaliseName(p.familyName) };
}

// Statements below are set-based: one per batch whatever its size, each parameter an array or a
// jsonb record set.

export async function lockPatientsForUpdate(tx: Queryable, tenant: string, ids: readonly string[]): Promise<PatientRecord[]> {
  if (ids.length === 0) return [];
  // ORDER BY id: two batches locking overlapping patients take them in the same order.
  const { rows } = await tx.query<PatientRow>(
    'SELECT id, tenant, version, data, created_at, updated_at FROM patients WHERE tenant = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE',
    [tenant, ids],
  );
  return rows.map(toRecord);
}

/** Which of these ids the tenant has already (another tenant's ids are not looked at: they would confirm its patients). */
export async function takenIds(tx: Queryable, tenant: string, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { rows } = await tx.query<{ id: string }>('SELECT id FROM patients WHERE tenant = $1 AND id = ANY($2::text[])', [tenant, ids]);
  return rows.map((r) => r.id);
}

/** A duplicate-detection key: normalised name key, birth date, sex. */
export interface DuplicateKey {
  nameKey: string;
  birthDate: string;
  sex: string;
}

export function duplicateKeyOf(p: Patient): DuplicateKey {
  return { nameKey: nameKey(p.givenName, p.familyName), birthDate: p.birthDate, sex: p.sex };
}

/**
 * Serialises creates of the same person (same tenant and key) across transactions, so two of them
 * racing on different keys cannot both pass detection. One statement, locks taken in sorted order
 * so two batches cannot deadlock on each other's keys. PostgreSQL only (PGlite is serialised).
 */
export async function lockDuplicateKeys(tx: Queryable, tenant: string, keys: readonly DuplicateKey[]): Promise<void> {
  if (keys.length === 0) return;
  const names = [...new Set(keys.map((k) => `dup:${tenant}:${k.nameKey}|${k.birthDate}|${k.sex}`))];
  await tx.query(
    `SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(n, 0) AS h FROM unnest($1::text[]) AS n ORDER BY h) AS sorted`,
    [names],
  );
}

// PGlite plans every statement afresh and planning dominates a join-heavy query, so the two
// lookups below probe each column's index with ANY and keep the exact combinations here.

/** The tenant's patients with any of these name key + birth date + sex. */
export async function nameMatches(tx: Queryable, tenant: string, keys: readonly DuplicateKey[]): Promise<ExistingPatient[]> {
  if (keys.length === 0) return [];
  const wanted = new Set(keys.map((k) => `${k.nameKey}|${k.birthDate}|${k.sex}`));
  const { rows } = await tx.query<{ id: string; name_key: string; birth_date: string; sex: string }>(
    'SELECT id, name_key, birth_date, sex FROM patients WHERE tenant = $1 AND name_key = ANY($2::text[]) AND birth_date = ANY($3::text[]) AND sex = ANY($4::text[])',
    [tenant, [...new Set(keys.map((k) => k.nameKey))], [...new Set(keys.map((k) => k.birthDate))], [...new Set(keys.map((k) => k.sex))]],
  );
  return rows
    .filter((r) => wanted.has(`${r.name_key}|${r.birth_date}|${r.sex}`))
    .map((r) => ({ id: r.id, nameKey: r.name_key, birthDate: r.birth_date, sex: r.sex, identifiers: [] }));
}

/** Holders of any of these (system, value key) pairs in the tenant. */
export async function identifierHolderRows(tx: Queryable, tenant: string, pairs: readonly { system: string; valueKey: string }[]) {
  if (pairs.length === 0) return [];
  const wanted = new Set(pairs.map((p) => `${p.system}|${p.valueKey}`));
  const { rows } = await tx.query<{ patient_id: string; system: string; value_key: string }>(
    'SELECT patient_id, system, value_key FROM patient_identifiers WHERE tenant = $1 AND system = ANY($2::text[]) AND value_key = ANY($3::text[])',
    [tenant, [...new Set(pairs.map((p) => p.system))], [...new Set(pairs.map((p) => p.valueKey))]],
  );
  return rows.filter((r) => wanted.has(`${r.system}|${r.value_key}`)).map((r) => ({ system: r.system, valueKey: r.value_key, patientId: r.patient_id }));
}

/** One patient's row as the batch leaves it (a create then updates of it in one batch write once). */
export interface PatientWrite {
  id: string;
  tenant: string;
  version: number;
  patient: Patient;
  createdBy: string;
  updatedBy: string;
  createdAt: Date;
  updatedAt: Date;
  overrideReason: string | null;
}

function rowJson(w: PatientWrite) {
  const k = searchKeys(w.patient);
  return {
    id: w.id,
    tenant: w.tenant,
    version: w.version,
    data: patientFields(w.patient),
    ...k,
    birth_date: w.patient.birthDate,
    sex: w.patient.sex,
    duplicate_override_reason: w.overrideReason,
    created_by: w.createdBy,
    updated_by: w.updatedBy,
    created_at: w.createdAt.toISOString(),
    updated_at: w.updatedAt.toISOString(),
  };
}

const ROW_COLUMNS = `id text, tenant text, version integer, data jsonb, name_key text, given_key text, family_key text, birth_date text, sex text,
  duplicate_override_reason text, created_by text, updated_by text, created_at timestamptz, updated_at timestamptz`;

/** Inserts new patients; returns how many went in (fewer: a concurrent create took an id meanwhile). */
export async function insertPatients(tx: Queryable, writes: readonly PatientWrite[]): Promise<number> {
  if (writes.length === 0) return 0;
  const { rows } = await tx.query(
    `INSERT INTO patients (id, tenant, version, data, name_key, given_key, family_key, birth_date, sex, duplicate_override_reason, created_by, updated_by, created_at, updated_at)
     SELECT id, tenant, version, data, name_key, given_key, family_key, birth_date, sex, duplicate_override_reason, created_by, updated_by, created_at, updated_at
       FROM jsonb_to_recordset($1::jsonb) AS r (${ROW_COLUMNS})
     ON CONFLICT (tenant, id) DO NOTHING RETURNING id`,
    [JSON.stringify(writes.map(rowJson))],
  );
  return rows.length;
}

/** Updates patients this transaction holds FOR UPDATE; returns how many rows changed. */
export async function updatePatients(tx: Queryable, writes: readonly PatientWrite[]): Promise<number> {
  if (writes.length === 0) return 0;
  const { rows } = await tx.query(
    `UPDATE patients AS p SET version = r.version, data = r.data, name_key = r.name_key, given_key = r.given_key, family_key = r.family_key,
            birth_date = r.birth_date, sex = r.sex, updated_by = r.updated_by, updated_at = r.updated_at
       FROM jsonb_to_recordset($1::jsonb) AS r (${ROW_COLUMNS})
      WHERE p.id = r.id AND p.tenant = r.tenant RETURNING p.id`,
    [JSON.stringify(writes.map(rowJson))],
  );
  return rows.length;
}

/**
 * Replaces the identifiers of `replaced` patients and writes those of all `writes`. Returns false
 * when one is held by another patient: a concurrent writer got there after our check.
 */
export async function writeIdentifiers(tx: Queryable, tenant: string, replaced: readonly string[], writes: readonly PatientWrite[]): Promise<boolean> {
  if (replaced.length > 0) await tx.query('DELETE FROM patient_identifiers WHERE tenant = $1 AND patient_id = ANY($2::text[])', [tenant, replaced]);
  const list = writes.flatMap((w) => (w.patient.identifiers ?? []).map((i) => ({ id: w.id, system: i.system, valueKey: identifierKey(i.value) })));
  if (list.length === 0) return true;
  const { rows } = await tx.query(
    `INSERT INTO patient_identifiers (tenant, system, value_key, patient_id)
     SELECT $1, s, v, p FROM unnest($2::text[], $3::text[], $4::text[]) AS i (s, v, p)
     ON CONFLICT (tenant, system, value_key) DO NOTHING RETURNING 1`,
    [tenant, list.map((i) => i.system), list.map((i) => i.valueKey), list.map((i) => i.id)],
  );
  return rows.length === list.length;
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
