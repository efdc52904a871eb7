// Synthetic patients: generated names, birth dates, identifiers and phones. No real people.
// Every value that counts as PHI is also returned as a needle, so the log check can grep for it.

import { between, type Random } from './random.ts';

export interface SyntheticPatient {
  givenName: string;
  familyName: string;
  birthDate: string;
  sex: 'male' | 'female' | 'other' | 'unknown';
  identifiers: Array<{ system: string; value: string }>;
  phone: string;
  facility: string;
  address: { line: string; city: string; country: string };
}

const CONSONANTS = 'bdfghjklmnprstvz';
const VOWELS = 'aeiou';

/** An 8-letter pronounceable word with a capital; ~10^8 of them, so names do not collide within a run. */
export function syntheticWord(r: Random): string {
  let w = '';
  for (let i = 0; i < 8; i++) w += i % 2 ? VOWELS[between(r, 0, VOWELS.length - 1)] : CONSONANTS[between(r, 0, CONSONANTS.length - 1)];
  return w[0]!.toUpperCase() + w.slice(1);
}

function digits(r: Random, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String(between(r, 0, 9));
  return s;
}

export function syntheticPatient(r: Random, facility: string): SyntheticPatient {
  const year = between(r, 1940, 2015);
  const month = between(r, 1, 12);
  const day = between(r, 1, 28);
  return {
    givenName: syntheticWord(r),
    familyName: syntheticWord(r),
    birthDate: `${year}-${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`,
    sex: (['male', 'female', 'other', 'unknown'] as const)[between(r, 0, 3)]!,
    identifiers: [{ system: 'harness-id', value: `HX${digits(r, 10)}` }],
    phone: `+99${digits(r, 9)}`,
    facility,
    address: { line: `${between(r, 1, 999)} ${syntheticWord(r)} Rd`, city: syntheticWord(r), country: 'ZZ' },
  };
}

/** The same patient with new contact details, as an edit would make (the full representation). */
export function editedPatient(r: Random, p: SyntheticPatient): SyntheticPatient {
  return { ...p, phone: `+99${digits(r, 9)}`, address: { ...p.address, line: `${between(r, 1, 999)} ${syntheticWord(r)} Rd` } };
}

/** The strings that would be PHI if they reached a log. */
export function phiNeedles(p: SyntheticPatient): string[] {
  return [p.givenName, p.familyName, p.birthDate, ...p.identifiers.map((i) => i.value), p.phone, p.address.line, p.address.city];
}
