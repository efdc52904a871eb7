import { randomBytes } from 'node:crypto';
import { badRequest, flatQuery, isRecord, missing, sendJson, type SyncContext } from './context.ts';
import { readableHead } from './feed.ts';
import { ownDocId, scopeRange, type KeyRange } from './policy.ts';
import { upstreamFailure, type QueryValue } from './upstream.ts';

// Reads of /sync: db info, single docs (incl. `open_revs`, JSON or multipart/mixed), `_bulk_get`
// and `_all_docs`. Only the caller's own ids ever reach upstream; anything else is answered as a
// missing doc, word for word what a truly absent id gets, so nothing about other ids leaks.

/** The database's instance start time, constant as in CouchDB 2+ (the replicator compares it). */
export const INSTANCE_START_TIME = '0';

/** `GET /sync/{tenant}`: the caller's own view of the database; tenant-wide figures are never shown. */
export async function dbInfo(ctx: SyncContext): Promise<void> {
  const head = await readableHead(ctx.feed, ctx.inbox, ctx.caller.tenant, ctx.signal);
  const latest = await ctx.feed.latest(ctx.caller.tenant, ctx.caller.owner, head);
  sendJson(ctx.res, 200, {
    db_name: ctx.caller.tenant,
    doc_count: 0,
    doc_del_count: 0,
    update_seq: latest,
    committed_update_seq: latest,
    purge_seq: 0,
    compact_running: false,
    disk_format_version: 8,
    sizes: { file: 0, external: 0, active: 0 },
    instance_start_time: INSTANCE_START_TIME,
  });
}

/** `GET /sync/`: PouchDB asks for a uuid to name its replication (trap 13). */
export function serverRoot(uuid: string) {
  return function serverRootHandler(ctx: SyncContext): void {
    sendJson(ctx.res, 200, { couchdb: 'Welcome', version: '3.3.3', uuid, vendor: { name: 'Ferry' }, features: [] });
  };
}

/** `POST _ensure_full_commit`: the CouchDB replicator calls it on both ends at every checkpoint. */
export function ensureFullCommit(ctx: SyncContext): void {
  sendJson(ctx.res, 201, { ok: true, instance_start_time: INSTANCE_START_TIME });
}

// ---------------------------------------------------------------------------------------------
// Single doc

const REV = /^[1-9]\d{0,9}-[0-9a-f]{1,64}$/;
const BOOL_PARAMS = ['revs', 'revs_info', 'latest', 'conflicts', 'deleted_conflicts', 'local_seq'] as const;
const MAX_OPEN_REVS = 100;

function parseOpenRevs(raw: string): string[] | 'all' | null {
  if (raw === 'all') return 'all';
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length > MAX_OPEN_REVS || !v.every((r) => typeof r === 'string' && REV.test(r))) return null;
  return v as string[];
}

/** Doc query parameters we pass on (trap 13's fallback needs `revs`, `latest`, `open_revs`), re-encoded. */
export function docQuery(q: Record<string, string>): { query: Record<string, QueryValue>; openRevs: string[] | 'all' | null } {
  const query: Record<string, QueryValue> = {};
  for (const p of BOOL_PARAMS) {
    const v = q[p];
    if (v === undefined) continue;
    if (v !== 'true' && v !== 'false') throw badRequest();
    query[p] = v;
  }
  if (q.attachments !== undefined && q.attachments !== 'false') throw badRequest();
  let openRevs: string[] | 'all' | null = null;
  if (q.open_revs !== undefined) {
    openRevs = parseOpenRevs(q.open_revs);
    if (!openRevs) throw badRequest();
    query.open_revs = openRevs === 'all' ? 'all' : JSON.stringify(openRevs);
  }
  if (q.rev !== undefined) {
    if (!REV.test(q.rev)) throw badRequest();
    query.rev = q.rev;
  }
  return { query, openRevs };
}

type OpenRevsEntry = { ok?: Record<string, unknown>; missing?: string };

/** An `open_revs` answer as multipart/mixed, which the CouchDB replicator asks for (Accept header). */
export function openRevsMultipart(entries: OpenRevsEntry[]): { contentType: string; body: string } {
  const boundary = randomBytes(16).toString('hex');
  let body = '';
  for (const e of entries) {
    const isMissing = e.ok === undefined;
    body += `--${boundary}\r\nContent-Type: application/json${isMissing ? '; error="true"' : ''}\r\n\r\n`;
    body += JSON.stringify(isMissing ? { missing: e.missing } : e.ok);
    body += '\r\n';
  }
  body += `--${boundary}--`;
  return { contentType: `multipart/mixed; boundary="${boundary}"`, body };
}

export async function getDoc(ctx: SyncContext, rawId: string): Promise<void> {
  const id = ownDocId(rawId, ctx.caller.owner);
  if (!id) throw missing();
  const { query, openRevs } = docQuery(flatQuery(ctx.req));
  const res = await ctx.inbox.request({ path: [id], query, signal: ctx.signal });
  if (res.status === 404) {
    await res.body?.cancel();
    throw missing();
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw res.status === 400 ? badRequest() : upstreamFailure(res.status);
  }
  const value: unknown = await res.json();
  const accept = ctx.req.get('accept') ?? '';
  if (openRevs && Array.isArray(value) && /multipart\/mixed/i.test(accept) && !/application\/json/i.test(accept)) {
    const mp = openRevsMultipart(value as OpenRevsEntry[]);
    ctx.res.status(200);
    ctx.res.setHeader('Content-Type', mp.contentType);
    ctx.res.end(mp.body);
    return;
  }
  sendJson(ctx.res, 200, value);
}

// ---------------------------------------------------------------------------------------------
// _bulk_get

type BulkGetDocs = Array<{ ok?: unknown; error?: unknown }>;
type BulkGetResult = { id: string; docs: BulkGetDocs };

function notFound(id: string, rev: unknown): BulkGetResult {
  return { id, docs: [{ error: { id, rev: typeof rev === 'string' ? rev : 'undefined', error: 'not_found', reason: 'missing' } }] };
}

/** `_bulk_get`: own ids go upstream; others, and own ids that are absent, get CouchDB's `not_found`. */
export async function bulkGet(ctx: SyncContext): Promise<void> {
  const body: unknown = ctx.req.body;
  if (!isRecord(body) || !Array.isArray(body.docs)) throw badRequest();
  const q = flatQuery(ctx.req);
  const query: Record<string, QueryValue> = {};
  for (const p of ['revs', 'latest'] as const) {
    const v = q[p] ?? (body[p] === true ? 'true' : undefined);
    if (v === undefined) continue;
    if (v !== 'true' && v !== 'false') throw badRequest();
    query[p] = v;
  }
  const own: Array<{ id: string; rev?: string }> = [];
  const plan: Array<{ index: number } | { result: BulkGetResult }> = [];
  for (const item of body.docs) {
    if (!isRecord(item)) throw badRequest();
    const id = ownDocId(item.id, ctx.caller.owner);
    if (item.rev !== undefined && (typeof item.rev !== 'string' || !REV.test(item.rev))) throw badRequest();
    if (!id) {
      plan.push({ result: notFound(typeof item.id === 'string' ? item.id : '', item.rev) });
      continue;
    }
    plan.push({ index: own.length });
    own.push(item.rev !== undefined ? { id, rev: item.rev as string } : { id });
  }
  let upstream: BulkGetResult[] = [];
  if (own.length > 0) {
    const answer = await ctx.inbox.json<{ results: BulkGetResult[] }>({ method: 'POST', path: ['_bulk_get'], query, body: { docs: own }, signal: ctx.signal });
    upstream = answer.results;
  }
  const results = plan.map((p) => {
    if ('result' in p) return p.result;
    const wanted = own[p.index]!;
    const r = upstream[p.index];
    // express-pouchdb answers `{}` for a missing doc (trap 7): say it as CouchDB does.
    const docs = r && r.id === wanted.id && Array.isArray(r.docs) ? r.docs.filter((d) => isRecord(d) && (d.ok !== undefined || d.error !== undefined)) : [];
    return docs.length > 0 ? { id: wanted.id, docs } : notFound(wanted.id, wanted.rev);
  });
  sendJson(ctx.res, 200, { results });
}

// ---------------------------------------------------------------------------------------------
// _all_docs

const ALL_DOCS_PAGE = 1000;

type AllDocsRow = { id?: string; key: string; value?: unknown; doc?: unknown; error?: string };

/** A JSON-encoded string query parameter (`key`, `startkey`, `endkey`); anything else is a 400. */
export function jsonString(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw badRequest();
  }
  if (typeof v !== 'string') throw badRequest();
  return v;
}

function boolOf(raw: string | undefined, fallback: boolean): boolean {
  if (raw === undefined) return fallback;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  throw badRequest();
}

/**
 * `_all_docs`: `keys` are ANDed with the caller's ids (others answered `not_found`), and ranges
 * with the caller's two prefixes `m:{owner}:` and `s:{owner}:`. Rows are streamed page by page, so
 * memory stays bounded whatever the caller owns. `total_rows` counts only what was returned.
 */
export async function allDocs(ctx: SyncContext): Promise<void> {
  const q = flatQuery(ctx.req);
  const body: unknown = ctx.req.body;
  const includeDocs = boolOf(q.include_docs, false);
  const conflicts = boolOf(q.conflicts, false);
  const descending = boolOf(q.descending, false);
  const inclusiveEnd = boolOf(q.inclusive_end, true);
  if (q.skip !== undefined && q.skip !== '0') throw badRequest();
  let limit: number | null = null;
  if (q.limit !== undefined) {
    if (!/^\d{1,9}$/.test(q.limit)) throw badRequest();
    limit = Number(q.limit);
  }
  const extra: Record<string, QueryValue> = { include_docs: includeDocs || undefined, conflicts: includeDocs && conflicts ? true : undefined };

  let keys: unknown = isRecord(body) ? body.keys : undefined;
  if (keys === undefined && q.keys !== undefined) {
    try {
      keys = JSON.parse(q.keys);
    } catch {
      throw badRequest();
    }
  }
  if (keys !== undefined) {
    // How many keys may come is capped by the router (bounds.ts), body and query alike.
    if (!Array.isArray(keys)) throw badRequest();
    const own = keys.map((k) => ownDocId(k, ctx.caller.owner));
    const ask = own.filter((k): k is string => k !== null);
    let rows: AllDocsRow[] = [];
    if (ask.length > 0) {
      rows = (await ctx.inbox.json<{ rows: AllDocsRow[] }>({ method: 'POST', path: ['_all_docs'], query: extra, body: { keys: ask }, signal: ctx.signal })).rows;
    }
    let i = 0;
    const out = keys.map((k, n): AllDocsRow => {
      if (own[n] === null) return { key: typeof k === 'string' ? k : '', error: 'not_found' };
      const r = rows[i++];
      return r && r.key === own[n] ? r : { key: own[n]!, error: 'not_found' };
    });
    const limited = limit === null ? out : out.slice(0, limit);
    sendJson(ctx.res, 200, { total_rows: limited.length, offset: 0, rows: limited });
    return;
  }

  const key = jsonString(q.key);
  const start = key ?? jsonString(q.startkey ?? q.start_key);
  const end = key ?? jsonString(q.endkey ?? q.end_key);
  const ranges = scopeRange({ start, end, descending, inclusiveEnd: key !== undefined ? true : inclusiveEnd }, ctx.caller.owner);
  if (descending) ranges.reverse();

  // Headers go out with the first row, so a failure before it (no inbox, upstream down) is a clean error.
  const out = rowWriter(ctx);
  for (const range of ranges) {
    await streamRange(ctx, range, descending, extra, limit, out);
    if (limit !== null && out.count >= limit) break;
  }
  out.end();
}

interface RowWriter {
  count: number;
  row(row: AllDocsRow): void;
  end(): void;
}

function rowWriter(ctx: SyncContext): RowWriter {
  let started = false;
  const start = () => {
    if (started) return;
    started = true;
    ctx.res.status(200);
    ctx.res.setHeader('Content-Type', 'application/json');
    ctx.res.setHeader('Cache-Control', 'must-revalidate');
    ctx.res.write('{"offset":0,"rows":[');
  };
  const w: RowWriter = {
    count: 0,
    row(row) {
      start();
      ctx.res.write(`${w.count > 0 ? ',' : ''}${JSON.stringify(row)}`);
      w.count++;
    },
    end() {
      start();
      ctx.res.end(`],"total_rows":${w.count}}`);
    },
  };
  return w;
}

async function streamRange(ctx: SyncContext, range: KeyRange, descending: boolean, extra: Record<string, QueryValue>, limit: number | null, out: RowWriter): Promise<void> {
  let cursor: string | null = null;
  for (;;) {
    const want = limit === null ? ALL_DOCS_PAGE : Math.min(ALL_DOCS_PAGE, limit - out.count);
    if (want <= 0) return;
    const from = cursor ?? (descending ? range.hi : range.lo);
    const query: Record<string, QueryValue> = {
      ...extra,
      startkey: JSON.stringify(from),
      endkey: JSON.stringify(descending ? range.lo : range.hi),
      descending: descending || undefined,
      inclusive_end: descending ? true : range.hiInclusive,
      limit: want,
      skip: cursor !== null ? 1 : undefined,
    };
    const { rows } = await ctx.inbox.json<{ rows: AllDocsRow[] }>({ path: ['_all_docs'], query, signal: ctx.signal });
    for (const row of rows) {
      // Belt and braces: a row outside the caller's prefixes is never written out.
      if (!ownDocId(row.id ?? row.key, ctx.caller.owner)) continue;
      out.row(row);
    }
    if (rows.length < want) return;
    cursor = rows[rows.length - 1]!.key;
  }
}
