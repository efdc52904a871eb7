import { checkDocShape } from '../../validators/doc-shape.ts';
import type { ErrorCode } from '../../validators/codes.ts';
import { mutationDocSchema, parseInboxDocId } from '../../validators/mutation.ts';

// Pure decisions for /sync/{tenant} (DESIGN §5). Every function here takes plain data that the
// router has already loaded and returns a decision; none does I/O, so each is tested from a table.

/** Who is calling: the two claims of the access token that scope everything on /sync. */
export interface Caller {
  tenant: string;
  owner: string;
}

export const MAX_DOC_BYTES = 64 * 1024;

/** The caller's two key prefixes, each with its trailing colon (`m:ada:` never matches `m:adam:`). */
export function ownPrefixes(owner: string): readonly [string, string] {
  return [`m:${owner}:`, `s:${owner}:`];
}

/**
 * A doc id from the client, parsed once: the canonical id when it is exactly `m:`/`s:` + the
 * caller's owner + a uuid, otherwise null. Null ids are never sent upstream; they are answered as
 * missing (reads) or forbidden (writes), whichever reveals nothing.
 */
export function ownDocId(raw: unknown, owner: string): string | null {
  if (typeof raw !== 'string') return null;
  const ref = parseInboxDocId(raw);
  if (!ref || ref.owner !== owner) return null;
  const id = `${ref.kind === 'mutation' ? 'm' : 's'}:${ref.owner}:${ref.mid}`;
  return id === raw ? id : null;
}

// ---------------------------------------------------------------------------------------------
// Writes

/** What the inbox already holds for an id the client pushes (loaded before deciding). */
export type Existing = { kind: 'absent' } | { kind: 'present'; rev: string; deleted: boolean; doc: Record<string, unknown> | null };

export type WriteDecision =
  | { kind: 'write'; doc: Record<string, unknown> }
  | { kind: 'noop'; id: string; rev: string }
  | { kind: 'forbidden'; id: string | null; reason: WriteReason };

/** Reasons come from this fixed list; they never echo submitted values. */
export const WRITE_REASONS = {
  notOwn: 'Only your own mutation documents may be written here.',
  notMutation: 'Only mutation documents may be written here.',
  badRev: 'A mutation must be a single root revision (1-…).',
  deleted: 'Mutations cannot be deleted.',
  attachments: 'Mutations cannot carry attachments.',
  reservedField: 'The document carries a reserved field that is not allowed.',
  shape: 'The document is not a valid mutation.',
  ownerMismatch: 'The mutation owner or tenant does not match your token.',
  tooLarge: 'The document is larger than 64 KB.',
  tooComplex: 'The document is nested too deeply or has too many keys.',
  immutable: 'Mutations are immutable once written.',
} as const;
export type WriteReason = keyof typeof WRITE_REASONS;

/** Catalogue codes a per-doc refusal carries beside CouchDB's `error`/`reason`, where one applies. */
export const WRITE_REASON_CODES: Partial<Record<WriteReason, ErrorCode>> = { tooComplex: 'DOC_TOO_COMPLEX' };

const ROOT_REV = /^1-[0-9a-f]{32}$/;
const ALLOWED_UNDERSCORE = new Set(['_id', '_rev', '_revisions']);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON with object keys sorted, so two equal docs compare equal whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isRecord(value)) {
    return `{${Object.keys(value)
      .sort()
      .filter((k) => value[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

function bodyOf(doc: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) if (!k.startsWith('_')) out[k] = v;
  return out;
}

/**
 * Decides one pushed doc. `newEdits` is false for replication (`new_edits:false`, the doc brings
 * its own `1-…` rev) and true for an interactive create (no `_rev`; upstream mints `1-…`).
 */
export function decideMutationWrite(raw: unknown, caller: Caller, existing: Existing, newEdits: boolean): WriteDecision {
  if (!isRecord(raw)) return { kind: 'forbidden', id: null, reason: 'shape' };
  const rawId = typeof raw._id === 'string' ? raw._id : null;
  const id = ownDocId(rawId, caller.owner);
  if (!id) {
    // Someone else's (or a malformed) inbox id versus anything that is not an inbox doc at all.
    const looksInbox = rawId !== null && (rawId.startsWith('m:') || rawId.startsWith('s:'));
    return { kind: 'forbidden', id: rawId, reason: looksInbox ? 'notOwn' : 'notMutation' };
  }
  if (!id.startsWith('m:')) return { kind: 'forbidden', id, reason: 'notMutation' };
  for (const key of Object.keys(raw)) {
    if (key === '_deleted') return { kind: 'forbidden', id, reason: 'deleted' };
    if (key === '_attachments') return { kind: 'forbidden', id, reason: 'attachments' };
    if (key.startsWith('_') && !ALLOWED_UNDERSCORE.has(key)) return { kind: 'forbidden', id, reason: 'reservedField' };
  }
  // Before anything below walks the doc recursively (JSON.stringify, zod, canonical JSON), which a
  // doc nested a few thousand levels deep would overflow: the whole batch would then be a 500.
  if (checkDocShape(raw).kind !== 'ok') return { kind: 'forbidden', id, reason: 'tooComplex' };
  const rev = raw._rev;
  if (newEdits) {
    if (rev !== undefined || raw._revisions !== undefined) {
      return existing.kind === 'present' ? { kind: 'forbidden', id, reason: 'immutable' } : { kind: 'forbidden', id, reason: 'badRev' };
    }
  } else {
    if (typeof rev !== 'string' || !ROOT_REV.test(rev)) return { kind: 'forbidden', id, reason: existing.kind === 'present' ? 'immutable' : 'badRev' };
    const revisions = raw._revisions;
    if (revisions !== undefined) {
      if (!isRecord(revisions) || revisions.start !== 1 || !Array.isArray(revisions.ids) || revisions.ids.length !== 1 || revisions.ids[0] !== rev.slice(2)) {
        return { kind: 'forbidden', id, reason: 'badRev' };
      }
    }
  }
  if (Buffer.byteLength(JSON.stringify(raw)) > MAX_DOC_BYTES) return { kind: 'forbidden', id, reason: 'tooLarge' };
  const parsed = mutationDocSchema.safeParse(raw);
  if (!parsed.success) return { kind: 'forbidden', id, reason: raw.type !== 'mutation' ? 'notMutation' : 'shape' };
  if (parsed.data.owner !== caller.owner || parsed.data.tenant !== caller.tenant) return { kind: 'forbidden', id, reason: 'ownerMismatch' };

  if (existing.kind === 'present') {
    // An identical re-push (same root rev, same body) is an ok no-op; anything else is an edit.
    const sameRev = !newEdits && existing.rev === rev;
    const sameBody = existing.doc !== null && canonicalJson(bodyOf(existing.doc)) === canonicalJson(bodyOf(raw));
    if (!existing.deleted && sameBody && (sameRev || newEdits)) return { kind: 'noop', id, rev: existing.rev };
    return { kind: 'forbidden', id, reason: 'immutable' };
  }
  const doc: Record<string, unknown> = { ...raw, _id: id };
  return { kind: 'write', doc };
}

// ---------------------------------------------------------------------------------------------
// _local

export const LOCAL_ID = /^[A-Za-z0-9._~+=-]{1,200}$/;

export interface LocalLimits {
  maxDocs: number;
  maxBytes: number;
}

export type LocalWriteDecision =
  | { kind: 'write'; body: Record<string, unknown>; nextRev: number }
  | { kind: 'conflict' }
  | { kind: 'bad-request' }
  | { kind: 'too-complex' }
  | { kind: 'quota' };

/**
 * Decides a `PUT _local/{id}`. The id comes from the URL only; a body `_id` must name the same doc
 * (STACK-NOTES trap 16). `current` is the stored revision number (null when absent) and `count`
 * the caller's number of `_local` docs.
 */
export function decideLocalWrite(
  id: string,
  body: unknown,
  current: number | null,
  count: number,
  limits: LocalLimits,
): LocalWriteDecision {
  if (!LOCAL_ID.test(id) || !isRecord(body)) return { kind: 'bad-request' };
  if (checkDocShape(body).kind !== 'ok') return { kind: 'too-complex' };
  if (body._id !== undefined && body._id !== `_local/${id}`) return { kind: 'bad-request' };
  const rev = body._rev;
  if (current !== null && rev !== `0-${current}`) return { kind: 'conflict' };
  const stored: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) {
    if (k === '_id' || k === '_rev' || k === '_revisions') continue;
    if (k.startsWith('_')) return { kind: 'bad-request' };
    stored[k] = v;
  }
  if (Buffer.byteLength(JSON.stringify(stored)) > limits.maxBytes) return { kind: 'quota' };
  if (current === null && count >= limits.maxDocs) return { kind: 'quota' };
  return { kind: 'write', body: stored, nextRev: (current ?? 0) + 1 };
}

// ---------------------------------------------------------------------------------------------
// Ranges (_all_docs)

export interface KeyRange {
  /** Lowest key, inclusive. */
  lo: string;
  /** Highest key. */
  hi: string;
  hiInclusive: boolean;
}

/** High sentinel of a prefix range, as CouchDB documents it. */
export const HIGH = '\ufff0';

/**
 * ANDs a client's `_all_docs` range with each of the caller's prefixes. Returns the non-empty
 * intersections in ascending key order; the router walks them forwards or backwards.
 */
export function scopeRange(
  client: { start?: string | undefined; end?: string | undefined; descending: boolean; inclusiveEnd: boolean },
  owner: string,
): KeyRange[] {
  // Express the client's range in ascending terms.
  let lo: string | undefined;
  let hi: string | undefined;
  let loInclusive = true;
  let hiInclusive = true;
  if (client.descending) {
    hi = client.start;
    lo = client.end;
    loInclusive = client.inclusiveEnd;
  } else {
    lo = client.start;
    hi = client.end;
    hiInclusive = client.inclusiveEnd;
  }
  const out: KeyRange[] = [];
  for (const prefix of ownPrefixes(owner)) {
    let rLo = prefix;
    let rHi = prefix + HIGH;
    let rHiInclusive = true;
    if (lo !== undefined) {
      if (lo > rLo || (lo === rLo && !loInclusive)) rLo = loInclusive ? lo : lo + '\u0000';
    }
    if (hi !== undefined && hi <= rHi) {
      rHi = hi;
      rHiInclusive = hiInclusive;
    }
    if (rLo < rHi || (rLo === rHi && rHiInclusive)) out.push({ lo: rLo, hi: rHi, hiInclusive: rHiInclusive });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// _changes

export type ChangesFeed = 'normal' | 'longpoll' | 'continuous';

export interface ChangesRequest {
  feed: ChangesFeed;
  /** Counter to start after; 'now' resolves to the caller's newest counter. */
  since: number | 'now';
  limit: number | null;
  includeDocs: boolean;
  conflicts: boolean;
  descending: boolean;
  heartbeatMs: number | null;
  timeoutMs: number;
  /** Own status ids the client restricted the feed to (`filter=_doc_ids`), or null. */
  docIds: string[] | null;
}

export type ChangesDecision = { kind: 'ok'; request: ChangesRequest } | { kind: 'bad-request' };

export const MAX_DOC_IDS = 1000;
const MAX_TIMEOUT_MS = 60_000;

function boolParam(v: unknown): boolean | null {
  if (v === undefined) return false;
  if (v === 'true' || v === true) return true;
  if (v === 'false' || v === false) return false;
  return null;
}

function intParam(v: unknown): number | null | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === 'string' && /^\d{1,15}$/.test(v)) return Number(v);
  return null;
}

/**
 * Turns a client's `_changes` query (and POST body) into the only feed we serve: the caller's own
 * status docs from the feed index. Filter functions, `_selector` and `_view` are refused
 * (they would scan the tenant and crash express-pouchdb, trap 17); `_doc_ids` is ANDed with the
 * caller's own ids; every other parameter is either understood here or dropped.
 */
export function scopeChangesQuery(query: Record<string, unknown>, body: unknown, owner: string): ChangesDecision {
  const filter = query.filter;
  if (filter !== undefined && filter !== '_doc_ids') return { kind: 'bad-request' };
  if (query.selector !== undefined || query.view !== undefined) return { kind: 'bad-request' };
  if (isRecord(body) && (body.selector !== undefined || body.filter !== undefined)) return { kind: 'bad-request' };

  let docIds: string[] | null = null;
  if (filter === '_doc_ids') {
    let raw: unknown = isRecord(body) ? body.doc_ids : undefined;
    if (raw === undefined && typeof query.doc_ids === 'string') {
      try {
        raw = JSON.parse(query.doc_ids);
      } catch {
        return { kind: 'bad-request' };
      }
    }
    if (!Array.isArray(raw) || raw.length > MAX_DOC_IDS) return { kind: 'bad-request' };
    // Foreign or malformed ids simply never match; only own status ids are in the feed.
    docIds = [...new Set(raw.map((id) => ownDocId(id, owner)).filter((id): id is string => id !== null && id.startsWith('s:')))];
  } else if (query.doc_ids !== undefined || (isRecord(body) && body.doc_ids !== undefined)) {
    return { kind: 'bad-request' };
  }

  const feedRaw = query.feed ?? 'normal';
  if (feedRaw !== 'normal' && feedRaw !== 'longpoll' && feedRaw !== 'continuous') return { kind: 'bad-request' };
  let since: number | 'now';
  if (query.since === 'now') since = 'now';
  else {
    const s = intParam(query.since);
    if (s === null) return { kind: 'bad-request' };
    since = s ?? 0;
  }
  const limit = intParam(query.limit);
  const heartbeat = query.heartbeat === 'true' ? 60_000 : intParam(query.heartbeat);
  const timeout = intParam(query.timeout);
  const includeDocs = boolParam(query.include_docs);
  const conflicts = boolParam(query.conflicts);
  const descending = boolParam(query.descending);
  if (limit === null || heartbeat === null || timeout === null || includeDocs === null || conflicts === null || descending === null) {
    return { kind: 'bad-request' };
  }
  if (query.style !== undefined && query.style !== 'main_only' && query.style !== 'all_docs') return { kind: 'bad-request' };
  return {
    kind: 'ok',
    request: {
      feed: feedRaw,
      since,
      limit: limit === undefined || limit === 0 ? (limit === 0 ? 0 : null) : limit,
      includeDocs,
      conflicts,
      descending,
      heartbeatMs: heartbeat === undefined || heartbeat === 0 ? null : Math.max(1000, Math.min(heartbeat, MAX_TIMEOUT_MS)),
      timeoutMs: Math.min(timeout === undefined || timeout === 0 ? MAX_TIMEOUT_MS : timeout, MAX_TIMEOUT_MS),
      docIds,
    },
  };
}
