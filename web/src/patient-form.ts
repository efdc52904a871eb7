// The register/edit form's model: what the inputs hold, how it becomes a patient payload, and
// how the zod schema's issues become plain-language messages on their fields. Pure, so the
// same rules are tested without a browser. The schema is registration's own (validators/patient.ts).

import { patientCreateSchema, patientUpdateSchema, isNotInFuture, type Patient } from '../../validators/patient.ts';
import type { MessageKey } from './i18n.ts';

export const FORM_FIELDS = ['givenName', 'familyName', 'birthDate', 'sex', 'phone', 'nationalId', 'facility'] as const;
export type FormField = (typeof FORM_FIELDS)[number];
export type FormValues = Record<FormField, string>;

export const NATIONAL_ID = 'national-id';

/** An empty form: no clinical field has a default (sex is unset until chosen). */
export function emptyForm(facility: string): FormValues {
  return { givenName: '', familyName: '', birthDate: '', sex: '', phone: '', nationalId: '', facility };
}

export function formFromPatient(p: Patient): FormValues {
  return {
    givenName: p.givenName,
    familyName: p.familyName,
    birthDate: p.birthDate,
    sex: p.sex,
    phone: p.phone ?? '',
    nationalId: p.identifiers?.find((i) => i.system === NATIONAL_ID)?.value ?? '',
    facility: p.facility,
  };
}

/** The payload from the form; identifiers and the address the form does not edit are kept from `base`. */
export function payloadOf(v: FormValues, base: Patient | null): Record<string, unknown> {
  const out: Record<string, unknown> = {
    givenName: v.givenName.trim(),
    familyName: v.familyName.trim(),
    birthDate: v.birthDate.trim(),
    facility: v.facility.trim(),
  };
  if (v.sex) out.sex = v.sex;
  if (v.phone.trim()) out.phone = v.phone.trim();
  const others = (base?.identifiers ?? []).filter((i) => i.system !== NATIONAL_ID);
  const identifiers = v.nationalId.trim() ? [...others, { system: NATIONAL_ID, value: v.nationalId.trim() }] : others;
  if (identifiers.length) out.identifiers = identifiers;
  if (base?.address) out.address = base.address;
  return out;
}

export type FormErrors = Partial<Record<FormField, MessageKey>>;

/** The plain-language message for one field's first issue. */
function messageFor(field: FormField, code: string, value: string): MessageKey {
  switch (field) {
    case 'givenName':
    case 'familyName':
      return code === 'too_big' ? 'err.name.long' : field === 'givenName' ? 'err.givenName.required' : 'err.familyName.required';
    case 'birthDate': {
      if (!value) return 'err.birthDate.required';
      const year = /^(\d{4})-\d{2}-\d{2}$/.exec(value)?.[1];
      if (year && Number(year) < 1850) return 'err.birthDate.before1850';
      if (year && !isNotInFuture(value)) return 'err.birthDate.future';
      return 'err.birthDate.invalid';
    }
    case 'sex':
      return 'err.sex.required';
    case 'phone':
      return 'err.phone.invalid';
    case 'facility':
      return 'err.facility.required';
    case 'nationalId':
      return 'err.nationalId.invalid';
  }
}

/** Maps an issue path (`identifiers.0.value`) to the input that holds it. */
function fieldOfPath(path: readonly PropertyKey[]): FormField | null {
  const head = String(path[0] ?? '');
  if (head === 'identifiers') return 'nationalId';
  return (FORM_FIELDS as readonly string[]).includes(head) ? (head as FormField) : null;
}

export type Checked = { ok: true; payload: Record<string, unknown> } | { ok: false; errors: FormErrors; order: FormField[] };

/** Checks the form with the op's zod schema; errors come back per field, in form order. */
export function checkForm(v: FormValues, base: Patient | null, kind: 'create' | 'update'): Checked {
  const payload = payloadOf(v, base);
  const result = (kind === 'create' ? patientCreateSchema : patientUpdateSchema).safeParse(payload);
  if (result.success) return { ok: true, payload };
  const errors: FormErrors = {};
  for (const issue of result.error.issues) {
    const field = fieldOfPath(issue.path);
    if (field && !errors[field]) errors[field] = messageFor(field, issue.code, v[field].trim());
  }
  return { ok: false, errors, order: FORM_FIELDS.filter((f) => errors[f]) };
}

/** Server-side field errors (a VALIDATION_FAILED rejection) on the same inputs. */
export function errorsFromPaths(paths: readonly string[], v: FormValues): FormErrors {
  const errors: FormErrors = {};
  for (const p of paths) {
    const field = fieldOfPath(p.split('.'));
    if (field && !errors[field]) errors[field] = messageFor(field, 'custom', v[field]);
  }
  return errors;
}
