import type { NamedRevision } from './revisions.ts';

// Pure decisions of /replica's reads: what a caller asking for a record (and maybe one of its
// revisions) is answered. Records out of scope are never read from CouchDB.

/** How one requested doc is answered. */
export type ReadAnswer =
  /** Read it from the records database (and check its facility again there). */
  | { kind: 'fetch' }
  /** The scope-leave tombstone that is a child of version `version`. */
  | { kind: 'tombstone'; version: number }
  /** Exactly what CouchDB says of an absent doc. */
  | { kind: 'missing' };

/**
 * - A record the index does not list is missing, whatever was asked.
 * - A named tombstone of the record is answered as that tombstone (it can only be named by a
 *   caller whose feed listed it, the revisions being keyed).
 * - A record in scope is fetched.
 * - A record out of scope is its tombstone, but only to a caller who named one of its revisions
 *   (so held it); anyone else gets "missing", as for an id that never existed.
 */
export function decideRead(record: { version: number; inScope: boolean } | null, named: NamedRevision | null): ReadAnswer {
  if (!record) return { kind: 'missing' };
  if (named?.kind === 'tombstone') return { kind: 'tombstone', version: named.version };
  if (record.inScope) return { kind: 'fetch' };
  if (named?.kind === 'version') return { kind: 'tombstone', version: record.version };
  return { kind: 'missing' };
}

/** `_revs_diff` for one id: in scope, the revisions the record has are not missing; out of scope, all are. */
export function missingRevs(revs: readonly string[], inScope: boolean, name: (rev: string) => NamedRevision): string[] {
  if (!inScope) return [...revs];
  return revs.filter((r) => name(r).kind !== 'version');
}
