import type { FieldError } from '../../../validators/codes.ts';
import { identifierSchema } from '../../../validators/patient.ts';
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
