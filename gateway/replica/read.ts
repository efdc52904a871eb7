import { badRequest, flatQuery, isRecord, missing, sendJson } from '../sync/context.ts';
import { docQuery, jsonString, openRevsMultipart } from '../sync/read.ts';
import { upstreamFailure, type QueryValue } from '../sync/upstream.ts';
import { scopeIncludes } from '../tenant/scope.ts';
import { patientIdOfRecordDoc, RECORD_DOC_PREFIX, recordDocId } from '../../validators/record.ts';
import { revisionKey, type ReplicaContext } from './context.ts';
import { decideRead, missingRevs, type ReadAnswer } from './policy.ts';
import { nameRevision, revOf, tombstoneOf } from './revisions.ts';
import type { IndexedRecord } from './decide.ts';
import { formatPosition } from './seq.ts';
import { INSTANCE_START_TIME } from '../sync/read.ts';

// Reads of /replica: db info, single docs (with `open_revs`, JSON or multipart), `_bulk_get`,
// `_all_docs` and `_revs_diff`. Which records a caller may see is decided from the index
// (policy.ts) before anything is read from CouchDB; a doc read there is checked again, since it
// may have moved on since the index was read.

type Doc = Record<string, unknown>;

/** `GET /replica/{tenant}`: the caller's own view; tenant-wide figures are never shown. */
export async function dbInfo(ctx: ReplicaContext): Promise<void> {
  const latest = await ctx.store.latest(ctx.caller.tenant, ctx.scope);
  const seq = formatPosition({ cursor: latest, base: latest, tag: ctx.tag, catchUp: false });
  sendJson(ctx.res, 200, {
    db_name: ctx.caller.tenant,
    doc_count: 0,
    doc_del_count: 0,
    update_seq: seq,
    committed_update_seq: seq,
    purge_seq: 0,
    compact_running: false,
    disk_format_version: 8,
    sizes: { file: 0, external: 0, active: 0 },
    instance_start_time: INSTANCE_START_TIME,
  });
}

/** The index rows of these doc ids, with whether each is in the caller's scope. */
async function lookUp(ctx: ReplicaContext, docIds: readonly unknown[]): Promise<Map<string, IndexedRecord & { inScope: boolean }>> {
  const ids = [...new Set(docIds.map(patientIdOfRecordDoc).filter((x): x is string => x !== null))];
  const found = await ctx.store.indexed(ctx.caller.tenant, ids);
  return new Map([...found].map(([id, r]) => [recordDocId(id), { ...r, inScope: scopeIncludes(ctx.scope, r.facility) }]));
}

function answerOf(ctx: ReplicaContext, docId: string, rev: string | undefined, record: (IndexedRecord & { inScope: boolean }) | undefined): ReadAnswer {
  const named = rev === undefined || !record ? null : nameRevision(revisionKey(ctx, record.id), rev, record.version);
  return decideRead(record ?? null, named);
}

function tombstone(ctx: ReplicaContext, docId: string, patientId: string, version: number, revs: boolean): Doc {
  const t = tombstoneOf(revisionKey(ctx, patientId), docId, version);
  if (revs) return t;
  const { _revisions: _r, ...bare } = t;
  return bare;
}

/** A doc fetched from CouchDB, checked against the scope again: one that moved out is its tombstone. */
function screened(ctx: ReplicaContext, doc: Doc, revs: boolean): Doc | null {
  const id = patientIdOfRecordDoc(doc._id);
  if (!id) return null;
  if (doc._deleted === true) return null;
  if (typeof doc.facility === 'string' && scopeIncludes(ctx.scope, doc.facility)) return doc;
  return typeof doc.version === 'number' ? tombstone(ctx, String(doc._id), id, doc.version, revs) : null;
}

function boolParam(q: Record<string, string>, name: string, body?: unknown): boolean {
  const v = q[name] ?? (isRecord(body) && body[name] === true ? 'true' : undefined);
  if (v === undefined || v === 'false') return false;
  if (v === 'true') return true;
  throw badRequest();
}

// ---------------------------------------------------------------------------------------------
// _bulk_get

type BulkGetDocs = Array<{ ok?: unknown; error?: unknown }>;

function notFound(id: string, rev: unknown) {
  return { id, docs: [{ error: { id, rev: typeof rev === 'string' ? rev : 'undefined', error: 'not_found', reason: 'missing' } }] };
}

export async function bulkGet(ctx: ReplicaContext): Promise<void> {
  const body: unknown = ctx.req.body;
  if (!isRecord(body) || !Array.isArray(body.docs)) throw badRequest();
  const q = flatQuery(ctx.req);
  const revs = boolParam(q, 'revs', body);
  const latest = boolParam(q, 'latest', body);
  const items = body.docs.map((item) => {
    if (!isRecord(item) || typeof item.id !== 'string' || (item.rev !== undefined && typeof item.rev !== 'string')) throw badRequest();
    return { id: item.id, rev: item.rev as string | undefined };
  });
  const index = await lookUp(ctx, items.map((i) => i.id));
  const answers = items.map((i) => answerOf(ctx, i.id, i.rev, index.get(i.id)));
  const fetch = items.filter((_, n) => answers[n]!.kind === 'fetch');
  let fetched: Array<{ id: string; docs: BulkGetDocs }> = [];
  if (fetch.length > 0) {
    const query: Record<string, QueryValue> = { revs: revs || undefined, latest: latest || undefined };
    fetched = (await ctx.records.json<{ results: Array<{ id: string; docs: BulkGetDocs }> }>({
      method: 'POST',
      path: ['_bulk_get'],
      query,
      body: { docs: fetch.map((i) => (i.rev ? { id: i.id, rev: i.rev } : { id: i.id })) },
      signal: ctx.signal,
    })).results;
  }
  let f = 0;
  const results = items.map((item, n) => {
    const a = answers[n]!;
    if (a.kind === 'missing') return notFound(item.id, item.rev);
    const record = index.get(item.id)!;
    if (a.kind === 'tombstone') return { id: item.id, docs: [{ ok: tombstone(ctx, item.id, record.id, a.version, revs) }] };
    const r = fetched[f++];
    const docs = (r && r.id === item.id ? r.docs : []).flatMap((d) => {
      if (!isRecord(d) || !isRecord(d.ok)) return [];
      const ok = screened(ctx, d.ok, revs);
      return ok ? [{ ok }] : [];
    });
    // express-pouchdb answers `{}` for an absent rev where CouchDB answers an error: say it as CouchDB does.
    return docs.length > 0 ? { id: item.id, docs } : notFound(item.id, item.rev);
  });
  sendJson(ctx.res, 200, { results });
}

// ---------------------------------------------------------------------------------------------
// Single doc (incl. the `open_revs` fallback PouchDB uses when `_bulk_get` failed once)

export async function getDoc(ctx: ReplicaContext, docId: string): Promise<void> {
  const { query, openRevs } = docQuery(flatQuery(ctx.req));
  const index = await lookUp(ctx, [docId]);
  const record = index.get(docId);
  if (!record) throw missing();
  const revs = query.revs === 'true';
  let value: unknown;
  if (openRevs) {
    // `open_revs=all` names no revision: out of scope it is an absent doc, as for any id.
    if (openRevs === 'all' && !record.inScope) throw missing();
    const wanted = openRevs === 'all' ? [undefined] : openRevs;
    const answers = wanted.map((rev) => answerOf(ctx, docId, rev, record));
    const ask = openRevs === 'all' ? (record.inScope ? 'all' : null) : wanted.filter((_, n) => answers[n]!.kind === 'fetch');
    let fromCouch: Array<{ ok?: Doc; missing?: string }> = [];
    if (ask !== null && (ask === 'all' || ask.length > 0)) {
      const res = await ctx.records.request({ path: [docId], query: { ...query, open_revs: ask === 'all' ? 'all' : JSON.stringify(ask) }, signal: ctx.signal });
      if (res.ok) fromCouch = (await res.json()) as typeof fromCouch;
      else await res.body?.cancel();
    }
    const entries: Array<{ ok?: Doc; missing?: string }> = [];
    for (const e of fromCouch) {
      const ok = e.ok ? screened(ctx, e.ok, revs) : null;
      entries.push(ok ? { ok } : { missing: e.missing ?? (typeof e.ok?._rev === 'string' ? e.ok._rev : 'undefined') });
    }
    wanted.forEach((rev, n) => {
      const a = answers[n]!;
      if (a.kind === 'tombstone') entries.push({ ok: tombstone(ctx, docId, record.id, a.version, revs) });
      else if (a.kind === 'missing' && rev !== undefined) entries.push({ missing: rev });
    });
    value = entries;
    const accept = ctx.req.get('accept') ?? '';
    if (/multipart\/mixed/i.test(accept) && !/application\/json/i.test(accept)) {
      const mp = openRevsMultipart(entries);
      ctx.res.status(200);
      ctx.res.setHeader('Content-Type', mp.contentType);
      ctx.res.end(mp.body);
      return;
    }
    sendJson(ctx.res, 200, value);
    return;
  }
  const rev = typeof query.rev === 'string' ? query.rev : undefined;
  const a = answerOf(ctx, docId, rev, record);
  if (a.kind === 'missing') throw missing();
  if (a.kind === 'tombstone') {
    sendJson(ctx.res, 200, tombstone(ctx, docId, record.id, a.version, revs));
    return;
  }
  const res = await ctx.records.request({ path: [docId], query, signal: ctx.signal });
  if (res.status === 404) {
    await res.body?.cancel();
    throw missing();
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw res.status === 400 ? badRequest() : upstreamFailure(res.status);
  }
  const doc = (await res.json()) as Doc;
  const shown = screened(ctx, doc, revs);
  // A doc that left the scope since the index was read is simply not there for a plain GET.
  if (!shown || shown._deleted === true) throw missing();
  sendJson(ctx.res, 200, shown);
}

// ---------------------------------------------------------------------------------------------
// _revs_diff: answered from the index (revisions are fixed by version); nothing is read upstream.

export async function revsDiff(ctx: ReplicaContext): Promise<void> {
  const body: unknown = ctx.req.body;
  if (!isRecord(body)) throw badRequest();
  const index = await lookUp(ctx, Object.keys(body));
  const out: Record<string, { missing: string[] }> = {};
  for (const [id, revs] of Object.entries(body)) {
    if (!Array.isArray(revs) || !revs.every((r) => typeof r === 'string')) throw badRequest();
    const record = index.get(id);
    const missingOnes = missingRevs(revs as string[], record?.inScope ?? false, (rev) => nameRevision(revisionKey(ctx, record?.id ?? ''), rev, record?.version ?? 0));
    if (missingOnes.length > 0) out[id] = { missing: missingOnes };
  }
  sendJson(ctx.res, 200, out);
}

// ---------------------------------------------------------------------------------------------
// _all_docs: the caller's records by id, from the index; docs (include_docs) by key.

const PAGE = 1000;

/** The part of a doc-id range that can hold records, as a range of patient ids; null when none. */
export function recordIdRange(start: string | undefined, end: string | undefined, inclusiveEnd: boolean): { lo: string; hi: string; hiInclusive: boolean } | null {
  const top = `${RECORD_DOC_PREFIX}\uffff`;
  const lo = start === undefined || start < RECORD_DOC_PREFIX ? RECORD_DOC_PREFIX : start;
  const hi = end === undefined || end > top ? top : end;
  if (lo > hi || (lo === hi && !inclusiveEnd)) return null;
  if (!hi.startsWith(RECORD_DOC_PREFIX)) return null;
  return { lo: lo.slice(RECORD_DOC_PREFIX.length), hi: hi.slice(RECORD_DOC_PREFIX.length), hiInclusive: hi === top ? true : inclusiveEnd };
}

async function docsByKey(ctx: ReplicaContext, ids: readonly string[]): Promise<Map<string, Doc>> {
  if (ids.length === 0) return new Map();
  const body = await ctx.records.json<{ rows: Array<{ key: string; doc?: unknown }> }>({ method: 'POST', path: ['_all_docs'], query: { include_docs: true }, body: { keys: ids }, signal: ctx.signal });
  const out = new Map<string, Doc>();
  for (const row of body.rows) {
    if (!isRecord(row.doc)) continue;
    const ok = screened(ctx, row.doc, false);
    if (ok && ok._deleted !== true) out.set(row.key, ok);
  }
  return out;
}

export async function allDocs(ctx: ReplicaContext): Promise<void> {
  const q = flatQuery(ctx.req);
  const body: unknown = ctx.req.body;
  const includeDocs = boolParam(q, 'include_docs');
  const descending = boolParam(q, 'descending');
  const inclusiveEnd = q.inclusive_end === undefined ? true : boolParam(q, 'inclusive_end');
  if (q.skip !== undefined && q.skip !== '0') throw badRequest();
  let limit = Number.MAX_SAFE_INTEGER;
  if (q.limit !== undefined) {
    if (!/^\d{1,9}$/.test(q.limit)) throw badRequest();
    limit = Number(q.limit);
  }
  let keys: unknown = isRecord(body) ? body.keys : undefined;
  if (keys === undefined && q.keys !== undefined) {
    try {
      keys = JSON.parse(q.keys);
    } catch {
      throw badRequest();
    }
  }
  const key = (id: string, r: IndexedRecord) => ({ id, key: id, value: { rev: revOf(revisionKey(ctx, r.id), r.version) } });
  if (keys !== undefined) {
    if (!Array.isArray(keys)) throw badRequest();
    const index = await lookUp(ctx, keys);
    const shown = keys.map((k) => (typeof k === 'string' ? index.get(k) : undefined)).map((r) => (r && r.inScope ? r : undefined));
    const docs = includeDocs ? await docsByKey(ctx, keys.filter((k, n): k is string => shown[n] !== undefined)) : new Map<string, Doc>();
    const rows = keys.slice(0, limit).map((k, n) => {
      const r = shown[n];
      if (typeof k !== 'string' || !r || (includeDocs && !docs.has(k))) return { key: typeof k === 'string' ? k : '', error: 'not_found' };
      return includeDocs ? { ...key(k, r), doc: docs.get(k) } : key(k, r);
    });
    sendJson(ctx.res, 200, { total_rows: rows.length, offset: 0, rows });
    return;
  }
  const k = jsonString(q.key);
  let start = k ?? jsonString(q.startkey ?? q.start_key);
  let end = k ?? jsonString(q.endkey ?? q.end_key);
  if (descending) [start, end] = [end, start];
  const range = recordIdRange(start, end, k !== undefined ? true : inclusiveEnd);
  const rows: unknown[] = [];
  if (range) {
    let cursor = range;
    while (rows.length < limit) {
      const want = Math.min(PAGE, limit - rows.length);
      const page = await ctx.store.range(ctx.caller.tenant, ctx.scope, { ...cursor, descending, limit: want });
      const docs = includeDocs ? await docsByKey(ctx, page.map((r) => recordDocId(r.id))) : new Map<string, Doc>();
      for (const r of page) {
        const id = recordDocId(r.id);
        if (includeDocs && !docs.has(id)) continue;
        rows.push(includeDocs ? { ...key(id, r), doc: docs.get(id) } : key(id, r));
      }
      if (page.length < want) break;
      const last = page[page.length - 1]!.id;
      // Exclusive bound past the last id read: append a char below every id char (ascending), or stop before it (descending).
      cursor = descending ? { ...cursor, hi: last, hiInclusive: false } : { ...cursor, lo: `${last}\u0000` };
    }
  }
  sendJson(ctx.res, 200, { total_rows: rows.length, offset: 0, rows });
}
