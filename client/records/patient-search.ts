// Offline patient search: how names, identifiers and birth dates are normalised and matched, and
// the order hits are listed in. Pure functions over plain data; the terms of one patient are
// computed once (`searchTerms`) and kept in memory only (see README "Search without a plaintext
// index at rest").

import { ClientError } from '../errors.ts';
import type { Patient } from '../../validators/patient.ts';
import type { PatientView } from '../reconcile.ts';

export interface PatientQuery {
  /** Name parts, any order; each word must begin a given or family name part (case and accents ignored). */
  text?: string;
  /** An identifier value, exact or its beginning (case, spaces and dashes ignored). */
  identifier?: string;
  /** `YYYY-MM-DD` (exact) or `YYYY` (the year). */
  birthDate?: string;
}

export interface PatientHit {
  id: string;
  /** The newest server version known (replica or a commit answer); null for a pending create. */
  version: number | null;
  facility: string | null;
  /** The record with this user's pending changes laid over it. */
  patient: PatientView;
  /** This user has changes on it that the server has not answered yet. */
  pending: boolean;
}

/** What one patient is found by, normalised once. */
export interface SearchTerms {
  names: string[];
  identifiers: string[];
  birthDate: string;
  /** family, given, id: the list order. */
  sortKey: string;
}

/**
 * Case-folded, compatibility-decomposed, without combining marks (Latin accents, Arabic harakat,
 * Hebrew niqqud) or the Arabic tatweel, so `José`, `JOSE` and `jose` meet, and `مُحَمَّد` meets `محمد`.
 */
export function normaliseText(text: string): string {
  return text.normalize('NFKD').replace(/[\p{M}\u0640]+/gu, '').toLowerCase();
}

/** The words of a name: letters and digits of any script, split on everything else. */
export function nameParts(text: string): string[] {
  return normaliseText(text)
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

export function normaliseIdentifier(value: string): string {
  return value.normalize('NFKC').toLowerCase().replace(/[\s\-–—]+/g, '');
}

export function searchTerms(patient: Pick<Patient, 'givenName' | 'familyName' | 'birthDate' | 'identifiers'> & { id?: string }): SearchTerms {
  return {
    names: [...nameParts(patient.givenName), ...nameParts(patient.familyName)],
    identifiers: (patient.identifiers ?? []).map((i) => normaliseIdentifier(i.value)),
    birthDate: patient.birthDate,
    sortKey: `${normaliseText(patient.familyName)}\u0000${normaliseText(patient.givenName)}\u0000${patient.id ?? ''}`,
  };
}

/** A query made ready to match; null when it asks for nothing. */
export interface CompiledQuery {
  words: string[];
  identifier: string | null;
  birthDate: { exact: string } | { year: string } | null;
}

export function compileQuery(query: PatientQuery): CompiledQuery | null {
  const words = query.text ? nameParts(query.text) : [];
  const identifier = query.identifier ? normaliseIdentifier(query.identifier) : '';
  let birthDate: CompiledQuery['birthDate'] = null;
  if (query.birthDate !== undefined && query.birthDate !== '') {
    if (/^\d{4}-\d{2}-\d{2}$/.test(query.birthDate)) birthDate = { exact: query.birthDate };
    else if (/^\d{4}$/.test(query.birthDate)) birthDate = { year: query.birthDate };
    else throw new ClientError('INVALID_ARGUMENT', 'birthDate must be YYYY-MM-DD or YYYY.');
  }
  if (words.length === 0 && !identifier && !birthDate) return null;
  return { words, identifier: identifier || null, birthDate };
}

/** Every criterion given must hold. */
export function matches(terms: SearchTerms, q: CompiledQuery): boolean {
  if (q.birthDate) {
    if ('exact' in q.birthDate ? terms.birthDate !== q.birthDate.exact : !terms.birthDate.startsWith(`${q.birthDate.year}-`)) return false;
  }
  if (q.identifier !== null) {
    const wanted = q.identifier;
    if (!terms.identifiers.some((v) => v.startsWith(wanted))) return false;
  }
  for (const w of q.words) if (!terms.names.some((n) => n.startsWith(w))) return false;
  return true;
}

/** Family name, then given name, then id: stable across calls. */
export function byName(a: { sortKey: string }, b: { sortKey: string }): number {
  return a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0;
}

export const DEFAULT_LIMIT = 50;

export function pageOf<T>(items: readonly T[], options: { limit?: number; offset?: number }): T[] {
  const limit = options.limit ?? DEFAULT_LIMIT;
  const offset = options.offset ?? 0;
  if (!Number.isInteger(limit) || limit < 0 || !Number.isInteger(offset) || offset < 0) throw new ClientError('INVALID_ARGUMENT', 'limit and offset must be non-negative integers.');
  return items.slice(offset, offset + limit);
}
