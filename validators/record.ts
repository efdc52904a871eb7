import { z } from 'zod';
import { PATIENT_ID, patientSchema } from './patient.ts';
import { TENANT_ID } from './identity.ts';

// The record doc of the read-only replica (DESIGN §8): the server's committed patient, as the
// projection writes it into `records_{tenant}` and as `/replica/{tenant}` serves it to devices.
// `version` is the service's version, usable as the `baseVersion` of the next update.

export const RECORD_DOC_PREFIX = 'r:patient:';

/** `r:patient:{id}`: the id carries the patient id (a UUIDv7 with a prefix), never PHI. */
export const RECORD_DOC_ID = /^r:patient:pat_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function recordDocId(patientId: string): string {
  return `${RECORD_DOC_PREFIX}${patientId}`;
}

/** The patient id of a record doc id, or null when `docId` is not one. */
export function patientIdOfRecordDoc(docId: unknown): string | null {
  return typeof docId === 'string' && RECORD_DOC_ID.test(docId) ? docId.slice(RECORD_DOC_PREFIX.length) : null;
}

/** The patient as GET /v1/patients/{id} returns it. */
export const patientRecordSchema = patientSchema.extend({
  id: z.string().regex(PATIENT_ID),
  tenant: z.string().regex(TENANT_ID),
  version: z.number().int().min(1),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const recordDocSchema = z.object({
  _id: z.string().regex(RECORD_DOC_ID),
  _rev: z.string().optional(),
  type: z.literal('record'),
  v: z.literal(1),
  tenant: z.string().regex(TENANT_ID),
  resource: z.literal('patient'),
  id: z.string().regex(PATIENT_ID),
  version: z.number().int().min(1),
  facility: z.string(),
  updatedAt: z.string(),
  data: patientRecordSchema,
});
export type RecordDoc = z.infer<typeof recordDocSchema>;

/** The record doc of a patient record (without `_rev`: the projection's writer sets the revision). */
export function recordDocOf(record: z.infer<typeof patientRecordSchema>): RecordDoc {
  return {
    _id: recordDocId(record.id),
    type: 'record',
    v: 1,
    tenant: record.tenant,
    resource: 'patient',
    id: record.id,
    version: record.version,
    facility: record.facility,
    updatedAt: record.updatedAt,
    data: record,
  };
}

export type RecordParse = { ok: true; value: RecordDoc } | { ok: false };

export function parseRecordDoc(value: unknown): RecordParse {
  const r = recordDocSchema.safeParse(value);
  return r.success ? { ok: true, value: r.data } : { ok: false };
}
