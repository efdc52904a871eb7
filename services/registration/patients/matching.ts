import type { Patient } from '../../../validators/patient.ts';

// Duplicate detection (DESIGN §6): a likely duplicate is a patient of the same tenant with a
// matching identifier, or the same normalised name, birth date and sex. The SQL only narrows the
// rows; these pure functions decide.

/** Lower case, accents and punctuation dropped, whitespace collapsed: "  Ámina-Grace " → "amina grace". */
export function normaliseName(name: string): string {
  return name
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

/** Given and family name tokens, sorted, so a swapped given/family name still matches. */
export function nameKey(givenName: string, familyName: string): string {
  return `${normaliseName(givenName)} ${normaliseName(familyName)}`.split(' ').filter(Boolean).sort().join(' ');
}

/** Identifier values compare without case or whitespace: "ni 123456" is "NI123456". */
export function identifierKey(value: string): string {
  return value.replace(/\s+/g, '').toUpperCase();
}

/** What duplicate detection knows about an existing patient; null where the lookup did not load it. */
export interface ExistingPatient {
  id: string;
  nameKey: string | null;
  birthDate: string | null;
  sex: string | null;
  identifiers: readonly { system: string; valueKey: string }[];
}

/** Ids of likely duplicates of `incoming` among `existing`, in a stable order, ids only. */
export function duplicateCandidates(incoming: Patient, existing: readonly ExistingPatient[]): string[] {
  const key = nameKey(incoming.givenName, incoming.familyName);
  const ids = new Set((incoming.identifiers ?? []).map((i) => `${i.system}|${identifierKey(i.value)}`));
  const matches = existing.filter(
    (p) =>
      (p.nameKey === key && p.birthDate === incoming.birthDate && p.sex === incoming.sex) ||
      p.identifiers.some((i) => ids.has(`${i.system}|${i.valueKey}`)),
  );
  return [...new Set(matches.map((p) => p.id))].sort();
}
