// The three-way merge of a VERSION_CONFLICT, field by field: base (the version the edit started
// from), mine (the edit) and server (the record now). A field only one side changed takes that
// side; a field both changed the same way is settled; only a field both changed differently asks
// the clinician. Pure: the screen renders `fields` and turns the choices into the payload.

import type { Patient } from '../../validators/patient.ts';

export const MERGE_FIELDS = ['givenName', 'familyName', 'birthDate', 'sex', 'phone', 'identifiers', 'facility', 'address'] as const;
export type MergeField = (typeof MERGE_FIELDS)[number];

export type FieldOutcome = 'same' | 'mine' | 'server' | 'choose';

export interface FieldMerge {
  field: MergeField;
  base: unknown;
  mine: unknown;
  server: unknown;
  outcome: FieldOutcome;
}

/** Order-insensitive for object keys, so `{a,b}` equals `{b,a}`. */
function canonical(v: unknown): string {
  if (v === undefined || v === null || v === '') return '';
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => a.localeCompare(b));
    return `{${entries.map(([k, x]) => `${k}:${canonical(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export function sameValue(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

/**
 * Without a base (the device never saw the version the edit started from), every field where
 * mine and the server differ is the clinician's choice: nothing is merged on a guess.
 */
export function threeWay(base: Partial<Patient> | null, mine: Partial<Patient>, server: Partial<Patient>): FieldMerge[] {
  return MERGE_FIELDS.map((field) => {
    const b = base?.[field];
    const m = mine[field];
    const s = server[field];
    let outcome: FieldOutcome;
    if (sameValue(m, s)) outcome = 'same';
    else if (base && sameValue(b, s)) outcome = 'mine';
    else if (base && sameValue(b, m)) outcome = 'server';
    else outcome = 'choose';
    return { field, base: b, mine: m, server: s, outcome };
  });
}

export type Choices = Partial<Record<MergeField, 'mine' | 'server'>>;

export function unresolvedFields(fields: readonly FieldMerge[], choices: Choices): MergeField[] {
  return fields.filter((f) => f.outcome === 'choose' && !choices[f.field]).map((f) => f.field);
}

/** The merged full representation; null while a field is still to be chosen. */
export function mergedPayload(fields: readonly FieldMerge[], choices: Choices): Record<string, unknown> | null {
  if (unresolvedFields(fields, choices).length > 0) return null;
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const side = f.outcome === 'choose' ? choices[f.field] : f.outcome === 'same' ? 'server' : f.outcome;
    const value = side === 'mine' ? f.mine : f.server;
    if (value !== undefined && value !== null && value !== '') out[f.field] = value;
  }
  return out;
}
