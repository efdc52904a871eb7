// A small client for the documented CouchDB 3 HTTP API, used by provisioning, the gateway and the
// worker. Only documented endpoints are called, so the embedded server and a real CouchDB 3.x
// behave the same (DESIGN §2). Doc ids and db names are always percent-encoded here.

export interface CouchCredentials {
  username: string;
  password: string;
}

export interface CouchOptions {
  /** Server root, e.g. http://127.0.0.1:5984 (no credentials in the URL). */
  url: string;
  auth?: CouchCredentials;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

export class CouchError extends Error {
  override name = 'CouchError';
  constructor(
    readonly status: number,
    readonly error: string,
    readonly reason: string,
  ) {
    super(`CouchDB ${status} ${error}`);
  }
}

export interface DocMeta {
  _id: string;
  _rev?: string;
  _conflicts?: string[];
  _deleted?: boolean;
}

export interface ChangeRow<D> {
  seq: string | number;
  id: string;
  changes: Array<{ rev: string }>;
  deleted?: boolean;
  doc?: D & DocMeta;
}

export interface ChangesPage<D> {
  results: ChangeRow<D>[];
  last_seq: string | number;
  pending?: number;
}

export interface ChangesQuery {
  since?: string | number;
  limit?: number;
  include_docs?: boolean;
  conflicts?: boolean;
  feed?: 'normal' | 'longpoll';
  timeout?: number;
  style?: 'main_only' | 'all_docs';
  signal?: AbortSignal;
}

export type BulkResult = { id: string; rev?: string; ok?: boolean; error?: string; reason?: string };

export interface CouchDb {
  readonly name: string;
  info(): Promise<{ db_name: string; doc_count: number; update_seq: string | number }>;
  get<D>(id: string, query?: Record<string, string | boolean | number>): Promise<(D & DocMeta) | null>;
  put<D extends DocMeta>(doc: D): Promise<{ id: string; rev: string }>;
  bulkDocs<D>(docs: readonly D[], opts?: { new_edits?: boolean }): Promise<BulkResult[]>;
  changes<D>(query?: ChangesQuery): Promise<ChangesPage<D>>;
  allDocs<D>(query?: { keys?: string[]; include_docs?: boolean; startkey?: string; endkey?: string; limit?: number }): Promise<{
    rows: Array<{ id: string; key: string; value: { rev: string; deleted?: boolean }; doc?: D & DocMeta; error?: string }>;
  }>;
  view<V, D = unknown>(design: string, view: string, query?: Record<string, unknown>): Promise<{
    rows: Array<{ id: string; key: unknown; value: V; doc?: D & DocMeta }>;
  }>;
  /** Raw request below this database, for the few calls not wrapped above. */
  request(method: string, path: string, body?: unknown, query?: Record<string, string>): Promise<Response>;
}

export interface CouchServer {
  readonly url: string;
  db(name: string): CouchDb;
  /** Creates the database; true if created, false if it already existed. */
  createDb(name: string): Promise<boolean>;
  allDbs(): Promise<string[]>;
  up(): Promise<boolean>;
  request(method: string, path: string, body?: unknown, query?: Record<string, string>): Promise<Response>;
}

function encodeQuery(query: Record<string, unknown> | undefined): string {
  if (!query) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined) continue;
    // CouchDB expects JSON-encoded keys for key/startkey/endkey/keys; plain values for the rest.
    const value = ['key', 'keys', 'startkey', 'endkey', 'start_key', 'end_key', 'open_revs'].includes(k) ? JSON.stringify(v) : String(v);
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(value)}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** Encodes a doc id for a URL path; `_design/` and `_local/` keep their slash as CouchDB wants. */
export function encodeDocId(id: string): string {
  for (const prefix of ['_design/', '_local/']) {
    if (id.startsWith(prefix)) return prefix + encodeURIComponent(id.slice(prefix.length));
  }
  return encodeURIComponent(id);
}

async function failure(res: Response): Promise<CouchError> {
  let error = 'unknown_error';
  let reason = '';
  try {
    const body = (await res.json()) as { error?: string; reason?: string };
    error = body.error ?? error;
    reason = body.reason ?? '';
  } catch {
    // not JSON
  }
  return new CouchError(res.status, error, reason);
}

export function createCouchServer(opts: CouchOptions): CouchServer {
  const base = opts.url.replace(/\/$/, '');
  const doFetch = opts.fetch ?? fetch;
  const authHeader = opts.auth ? `Basic ${Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64')}` : undefined;

  const request = (method: string, path: string, body?: unknown, query?: Record<string, unknown>, signal?: AbortSignal): Promise<Response> => {
    // Uncompressed: on loopback or a data-centre link, gzip costs both ends more CPU than it saves.
    const headers: Record<string, string> = { accept: 'application/json', 'accept-encoding': 'identity' };
    if (authHeader) headers.authorization = authHeader;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? 60_000);
    return doFetch(`${base}${path}${encodeQuery(query)}`, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
  };

  const json = async <T>(res: Response): Promise<T> => {
    if (!res.ok) throw await failure(res);
    return (await res.json()) as T;
  };

  const db = (name: string): CouchDb => {
    const root = `/${encodeURIComponent(name)}`;
    return {
      name,
      info: async () => json(await request('GET', root)),
      async get<D>(id: string, query?: Record<string, string | boolean | number>) {
        const res = await request('GET', `${root}/${encodeDocId(id)}`, undefined, query);
        if (res.status === 404) {
          await res.body?.cancel();
          return null;
        }
        return json<D & DocMeta>(res);
      },
      async put(doc) {
        const res = await request('PUT', `${root}/${encodeDocId(doc._id)}`, doc);
        const body = await json<{ id: string; rev: string }>(res);
        return { id: body.id, rev: body.rev };
      },
      async bulkDocs(docs, o) {
        return json(await request('POST', `${root}/_bulk_docs`, { docs, ...(o?.new_edits === false ? { new_edits: false } : {}) }));
      },
      async changes(query = {}) {
        const { signal, ...q } = query;
        return json(await request('GET', `${root}/_changes`, undefined, q, signal));
      },
      async allDocs(query = {}) {
        const { keys, ...rest } = query;
        if (keys) return json(await request('POST', `${root}/_all_docs`, { keys }, rest));
        return json(await request('GET', `${root}/_all_docs`, undefined, rest));
      },
      async view(design, view, query = {}) {
        const { keys, ...rest } = query as { keys?: unknown[] };
        const path = `${root}/_design/${encodeURIComponent(design)}/_view/${encodeURIComponent(view)}`;
        if (keys) return json(await request('POST', path, { keys }, rest));
        return json(await request('GET', path, undefined, rest));
      },
      request: (method, path, body, query) => request(method, `${root}${path}`, body, query),
    };
  };

  return {
    url: base,
    db,
    async createDb(name) {
      const res = await request('PUT', `/${encodeURIComponent(name)}`);
      if (res.status === 412) {
        await res.body?.cancel();
        return false;
      }
      await json(res);
      return true;
    },
    allDbs: async () => json(await request('GET', '/_all_dbs')),
    async up() {
      try {
        const res = await request('GET', '/');
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    },
    request,
  };
}
