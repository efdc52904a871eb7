import { z } from 'zod';

// The registration module's patient representation (DESIGN §6). The same schemas run on the
// device before a mutation is queued, in the worker before it commits, and in the service.

/** FHIR administrative-gender codes. */
export const SEX_CODES = ['male', 'female', 'other', 'unknown'] as const;

export const PATIENT_ID = /^pat_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const name = z.string().trim().min(1).max(100);

/** YYYY-MM-DD that names a real calendar day. */
export function isCalendarDate(value: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d && y >= 1850;
}

/** Not after today anywhere on Earth (UTC+14), so a device ahead of UTC is not refused. */
export function isNotInFuture(value: string, now: Date = new Date()): boolean {
  const latest = new Date(now.getTime() + 14 * 3600_000).toISOString().slice(0, 10);
  return value <= latest;
}

const birthDate = z
  .string()
  .refine(isCalendarDate, { params: { catalogue: 'must be a real date (YYYY-MM-DD)' } })
  .refine((v) => isNotInFuture(v), { params: { catalogue: 'must not be in the future' } });

export const identifierSchema = z.strictObject({
  system: z.string().trim().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/),
  value: z.string().trim().min(1).max(64),
});

export const addressSchema = z.strictObject({
  line: z.string().trim().min(1).max(200).optional(),
  city: z.string().trim().min(1).max(100).optional(),
  district: z.string().trim().min(1).max(100).optional(),
  country: z.string().regex(/^[A-Z]{2}$/).optional(),
});

export const patientSchema = z.strictObject({
  givenName: name,
  familyName: name,
  birthDate,
  sex: z.enum(SEX_CODES),
  identifiers: z.array(identifierSchema).max(20).optional(),
  phone: z.string().regex(/^\+?[0-9][0-9 ()-]{3,24}$/).optional(),
  facility: z.string().trim().min(1).max(64),
  address: addressSchema.optional(),
});
export type Patient = z.infer<typeof patientSchema>;

export const confirmNotDuplicateSchema = z.strictObject({ reason: z.string().trim().min(3).max(500) });

/** `patient.create` payload; also the body of `POST /v1/patients` minus its optional `id`. */
export const patientCreateSchema = patientSchema.extend({ confirmNotDuplicate: confirmNotDuplicateSchema.optional() });
export type PatientCreate = z.infer<typeof patientCreateSchema>;

/** `patient.update` payload: the full representation. `baseVersion` travels on the mutation. */
export const patientUpdateSchema = patientSchema;
export type PatientUpdate = z.infer<typeof patientUpdateSchema>;

/** Body of `POST /v1/patients`. */
export const createPatientRequestSchema = patientCreateSchema.extend({ id: z.string().regex(PATIENT_ID).optional() });
export type CreatePatientRequest = z.infer<typeof createPatientRequestSchema>;

/** Body of `PUT /v1/patients/{id}`; `baseVersion` may stand in for `If-Match`. */
export const updatePatientRequestSchema = patientSchema.extend({ baseVersion: z.number().int().min(1).optional() });
export type UpdatePatientRequest = z.infer<typeof updatePatientRequestSchema>;

/** What the service answers for a patient. */
export interface PatientRecord extends Patient {
  id: string;
  tenant: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}
