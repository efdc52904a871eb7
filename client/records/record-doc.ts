// The record doc of the replica (DESIGN §8): what `/replica/{tenant}` serves, checked on the way
// into the device's replica store. A pulled deletion (the record left the caller's scope) is kept
// as a bare tombstone, so no demographics of a record out of scope stay in it.

import { z } from 'zod';
import { PATIENT_ID, patientSchema, type Patient } from '../../validators/patient.ts';

export const RECORD_PREFIX = 'r:patient:';

export function recordDocId(id: string): string {
  return `${RECORD_PREFIX}${id}`;
}

/** The patient id a record doc id names, or null. */
export function parseRecordDocId(docId: string): string | null {
  if (!docId.startsWith(RECORD_PREFIX)) return null;
  const id = docId.slice(RECORD_PREFIX.length);
  return PATIENT_ID.test(id) ? id : null;
}

/** The patient as `GET /v1/patients/{id}` returns it: the demographics and the server's own fields. */
const recordDataSchema = patientSchema.extend({
  id: z.string().regex(PATIENT_ID),
  tenant: z.string(),
  version: z.number().int().min(1),
  createdAt: z.string(),
  updatedAt: z.string(),
});

const recordDocSchema = z.object({
  _id: z.string(),
  _rev: z.string().optional(),
  type: z.literal('record'),
  v: z.literal(1),
  tenant: z.string(),
  resource: z.literal('patient'),
  id: z.string().regex(PATIENT_ID),
  version: z.number().int().min(1),
  facility: z.string(),
  updatedAt: z.string(),
  data: recordDataSchema,
});

/** A server record as the device holds it. `data` is PHI: in memory only while unlocked. */
export interface ReplicaRecord {
  id: string;
  version: number;
  facility: string;
  updatedAt: string;
  data: Patient & { id: string; tenant: string; version: number; createdAt: string; updatedAt: string };
}

/** The record a stored doc holds, or null if it is not a record doc of this tenant. */
export function parseRecordDoc(doc: unknown, tenant: string): ReplicaRecord | null {
  const parsed = recordDocSchema.safeParse(doc);
  if (!parsed.success) return null;
  const d = parsed.data;
  if (d.tenant !== tenant || d._id !== recordDocId(d.id) || d.data.id !== d.id || d.data.tenant !== tenant) return null;
  return { id: d.id, version: d.version, facility: d.facility, updatedAt: d.updatedAt, data: d.data };
}

/**
 * The replica store's pull guard: this tenant's record docs pass as they are; a deletion of a
 * record id passes as a bare tombstone (`_id`, `_rev`, `_deleted`, `_revisions`); anything else is
 * dropped.
 */
export function admitRecordDoc(tenant: string): (doc: unknown) => object | null {
  return (doc) => {
    if (typeof doc !== 'object' || doc === null) return null;
    const d = doc as Record<string, unknown>;
    if (typeof d._id !== 'string' || parseRecordDocId(d._id) === null) return null;
    if (d._deleted === true) {
      const stub: Record<string, unknown> = { _id: d._id, _deleted: true };
      if (typeof d._rev === 'string') stub._rev = d._rev;
      if (d._revisions !== undefined) stub._revisions = d._revisions;
      return stub;
    }
    const { _revisions: _r, ...body } = d;
    return parseRecordDoc(body, tenant) ? doc : null;
  };
}
