// The record doc of the replica on the device: its shape and id live in validators/record.ts (the
// projection writes what the device checks); here is what the device keeps of it, and the pull
// guard of the replica store. A pulled deletion (the record left the caller's scope) is kept as a
// bare tombstone, so no demographics of a record out of scope stay in the store.

import { parseRecordDoc as parseRecordDocShape, patientIdOfRecordDoc, RECORD_DOC_PREFIX, type RecordDoc } from '../../validators/record.ts';

export const RECORD_PREFIX = RECORD_DOC_PREFIX;

/** The patient id a record doc id names, or null. */
export const parseRecordDocId = (docId: string): string | null => patientIdOfRecordDoc(docId);

/** A server record as the device holds it. `data` is PHI: in memory only while unlocked. */
export interface ReplicaRecord {
  id: string;
  version: number;
  facility: string;
  updatedAt: string;
  /** The patient as `GET /v1/patients/{id}` returns it. */
  data: RecordDoc['data'];
}

/** The record a stored doc holds, or null if it is not a record doc of this tenant. */
export function parseRecordDoc(doc: unknown, tenant: string): ReplicaRecord | null {
  const parsed = parseRecordDocShape(doc);
  if (!parsed.ok) return null;
  const d = parsed.value;
  if (d.tenant !== tenant || patientIdOfRecordDoc(d._id) !== d.id || d.data.id !== d.id || d.data.tenant !== tenant) return null;
  return { id: d.id, version: d.version, facility: d.facility, updatedAt: d.updatedAt, data: d.data };
}

/**
 * A record read back from the replica store on unlock. Every doc in that store passed
 * `parseRecordDoc` in the pull guard before it was encrypted, and crypto-pouch's encryption is
 * authenticated, so a structural check is enough here; the full schema (a tenth of a millisecond
 * per record, most of the index load at 10,000 records) ran once, on the way in.
 */
export function storedRecord(doc: unknown, tenant: string): ReplicaRecord | null {
  if (typeof doc !== 'object' || doc === null) return null;
  const d = doc as Partial<RecordDoc>;
  const data = d.data;
  if (d.tenant !== tenant || typeof d.id !== 'string' || patientIdOfRecordDoc(d._id) !== d.id || typeof d.version !== 'number' || typeof d.facility !== 'string' || typeof d.updatedAt !== 'string') return null;
  if (typeof data !== 'object' || data === null || data.id !== d.id || typeof data.givenName !== 'string' || typeof data.familyName !== 'string' || typeof data.birthDate !== 'string') return null;
  return { id: d.id, version: d.version, facility: d.facility, updatedAt: d.updatedAt, data };
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
    if (patientIdOfRecordDoc(d._id) === null) return null;
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
