// Synthetic record docs as `/replica/{tenant}` serves them (DESIGN §8), for the replica tests and
// the device-replica bench. Synthetic patients only.

import { randomUUID } from 'node:crypto';
import type { Patient } from '../../validators/patient.ts';

export const newPatientId = (): string => `pat_${randomUUID()}`;

export interface RecordDocInput {
  id?: string;
  tenant?: string;
  version?: number;
  patient?: Partial<Patient>;
  rev?: string;
}

export function syntheticPatient(overrides: Partial<Patient> = {}): Patient {
  return { givenName: 'Zyxwvuta', familyName: 'Testpatient', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1', ...overrides };
}

/** A record doc for one patient; `_rev` only when given (an update of a doc the test wrote). */
export function recordDoc(input: RecordDocInput = {}): Record<string, unknown> & { _id: string; id: string } {
  const id = input.id ?? newPatientId();
  const tenant = input.tenant ?? 'north';
  const version = input.version ?? 1;
  const p = syntheticPatient(input.patient);
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, version)).toISOString();
  return {
    _id: `r:patient:${id}`,
    ...(input.rev ? { _rev: input.rev } : {}),
    type: 'record',
    v: 1,
    tenant,
    resource: 'patient',
    id,
    version,
    facility: p.facility,
    updatedAt: at,
    data: { ...p, id, tenant, version, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: at },
  };
}

/** Writes (or moves on) a record in a server db as the projection would: a new revision per version. */
export async function putRecord(db: PouchDB.Database, input: RecordDocInput & { id: string }): Promise<void> {
  const existing = await db.get(`r:patient:${input.id}`).catch(() => null);
  await db.put(recordDoc({ ...input, ...(existing ? { rev: existing._rev } : {}) }) as PouchDB.Core.PutDocument<object>);
}
