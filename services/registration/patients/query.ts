import type { FieldError } from '../../../validators/codes.ts';
import { PATIENT_ID, identifierSchema } from '../../../validators/patient.ts';
import { normaliseName } from './matching.ts';
import type { PatientQuery } from './store.ts';

// The search's query string (`?name=` and/or `?identifier=system|value`), read into plain data.

export function readPatientQuery(query: Record<string, unknown>): { ok: true; value: PatientQuery } | { ok: false; errors: FieldError[] } {
  const name = query.name;
  const identifier = query.identifier;
  const errors: FieldError[] = [];
  let nameTokens: string[] = [];
  if (name !== undefined) {
    const tokens = typeof name === 'string' && name.length <= 100 ? normaliseName(name).split(' ').filter(Boolean) : [];
    if (tokens.length === 0 || tokens.length > 5 || tokens.join('').length < 2) errors.push({ path: 'name', message: 'must be a name of 2 to 100 characters' });
    nameTokens = tokens;
  }
  let id: PatientQuery['identifier'] = null;
  if (identifier !== undefined) {
    const bar = typeof identifier === 'string' ? identifier.indexOf('|') : -1;
    const parsed = bar > 0 ? identifierSchema.safeParse({ system: (identifier as string).slice(0, bar), value: (identifier as string).slice(bar + 1) }) : null;
    if (parsed?.success) id = parsed.data;
    else errors.push({ path: 'identifier', message: 'must be system|value' });
  }
  if (name === undefined && identifier === undefined) errors.push({ path: 'name', message: 'name or identifier is required' });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: { nameTokens, identifier: id } };
}

/** Most ids one `POST /v1/patients/lookup` names: a projection batch. */
export const LOOKUP_MAX_IDS = 200;

/** The body of `POST /v1/patients/lookup`: `{"ids": [...]}`, 1 to 200 patient ids, duplicates folded. */
export function readPatientLookup(body: unknown): { ok: true; value: string[] } | { ok: false; errors: FieldError[] } {
  const ids = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as { ids?: unknown }).ids : undefined;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > LOOKUP_MAX_IDS) {
    return { ok: false, errors: [{ path: 'ids', message: `must be an array of 1 to ${LOOKUP_MAX_IDS} patient ids` }] };
  }
  const errors: FieldError[] = [];
  ids.forEach((id, i) => {
    if (typeof id !== 'string' || !PATIENT_ID.test(id)) errors.push({ path: `ids.${i}`, message: 'must be a patient id' });
  });
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value: [...new Set(ids as string[])] };
}
