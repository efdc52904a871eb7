import { createHmac } from 'node:crypto';

// Record doc revisions are a function of (tenant, patient, version) under the deployment's secret,
// not of the write: version k of a record is always revision `k-{hmac(k)}`, with versions 1..k-1
// as its ancestors. So replaying the events from the start writes the very same revisions (a
// rebuild leaves devices' copies current, no conflicting branch), a write of an older version is
// already in the revision tree (a no-op), and the gateway can name a record's revisions and its
// scope-leave tombstone from the index alone. Keyed, so a caller who knows only an id cannot name
// one of its revisions, and `_bulk_get`/`_revs_diff` reveal nothing about records out of scope.

/** CouchDB's default `_revs_limit`: older ancestors are not sent. */
export const MAX_REVISIONS = 1000;

export interface RevisionKey {
  secret: string;
  tenant: string;
  patientId: string;
}

function hashOf(key: RevisionKey, what: string): string {
  return createHmac('sha256', key.secret).update(`${key.tenant}\n${key.patientId}\n${what}`).digest('hex').slice(0, 32);
}

/** The revision id (the part after `N-`) of version `version`. */
export function revisionIdOf(key: RevisionKey, version: number): string {
  return hashOf(key, `v${version}`);
}

export function revOf(key: RevisionKey, version: number): string {
  return `${version}-${revisionIdOf(key, version)}`;
}

export interface Revisions {
  start: number;
  ids: string[];
}

/** `_revisions` of version `version`: itself and every earlier version, newest first. */
export function revisionsOf(key: RevisionKey, version: number): Revisions {
  const ids: string[] = [];
  for (let v = version; v >= 1 && ids.length < MAX_REVISIONS; v--) ids.push(revisionIdOf(key, v));
  return { start: version, ids };
}

/**
 * The tombstone that takes a record out of a device's replica when it leaves the caller's scope:
 * a child of version `version` (generation version + 1), so it wins over any copy the device holds
 * of that version or an earlier one. If the record later comes back in scope, its next version is
 * a live sibling of the tombstone of the same generation, and a live leaf wins over a deleted one.
 */
export function tombstoneRevOf(key: RevisionKey, version: number): string {
  return `${version + 1}-${hashOf(key, `leave${version}`)}`;
}

export function tombstoneOf(key: RevisionKey, docId: string, version: number): { _id: string; _rev: string; _deleted: true; _revisions: Revisions } {
  const parent = revisionsOf(key, version);
  return {
    _id: docId,
    _rev: tombstoneRevOf(key, version),
    _deleted: true,
    _revisions: { start: version + 1, ids: [hashOf(key, `leave${version}`), ...parent.ids].slice(0, MAX_REVISIONS) },
  };
}

/** What a revision a caller names is, for a record whose current version is `current`. */
export type NamedRevision = { kind: 'version'; version: number } | { kind: 'tombstone'; version: number } | { kind: 'unknown' };

const REV = /^([1-9]\d{0,9})-([0-9a-f]{32})$/;

export function nameRevision(key: RevisionKey, rev: string, current: number): NamedRevision {
  const m = REV.exec(rev);
  if (!m) return { kind: 'unknown' };
  const gen = Number(m[1]);
  if (gen <= current && m[2] === revisionIdOf(key, gen)) return { kind: 'version', version: gen };
  if (gen - 1 >= 1 && gen - 1 <= current && m[2] === hashOf(key, `leave${gen - 1}`)) return { kind: 'tombstone', version: gen - 1 };
  return { kind: 'unknown' };
}
