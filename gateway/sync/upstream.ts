import { FerryError } from '../../validators/codes.ts';
import { inboxName } from '../../couchdb/provision.ts';

// The gateway's view of the tenant inbox, as the non-admin CouchDB user `ferry-gateway`.
// URLs are only ever built here, from the database name and canonical doc ids that the policy has
// already checked, each percent-encoded as one path segment: a client's raw path never reaches it.

export interface UpstreamOptions {
  /** CouchDB server root (no credentials in the URL). */
  url: string;
  auth?: { username: string; password: string } | undefined;
  fetch?: typeof fetch;
  /** Per-request timeout for everything except the feed watcher. */
  timeoutMs?: number;
  /** The tenant's database; the inbox (`inbox_{tenant}`) by default, the records database for /replica. */
  database?: (tenant: string) => string;
}

export type QueryValue = string | number | boolean | undefined;

export interface UpstreamRequest {
  method?: 'GET' | 'POST' | 'HEAD';
  /** Path below the database: segments, each encoded on its own (`['_design','ferry','_view','feed']`). */
  path?: readonly string[];
  query?: Record<string, QueryValue>;
  body?: unknown;
  signal?: AbortSignal;
  /** No timeout (the per-tenant feed watcher, which is aborted explicitly). */
  unbounded?: boolean;
}

export interface Inbox {
  readonly name: string;
  request(req: UpstreamRequest): Promise<Response>;
  json<T>(req: UpstreamRequest): Promise<T>;
}

export interface Upstream {
  inbox(tenant: string): Inbox;
}


function encodeQuery(query: Record<string, QueryValue> | undefined): string {
  if (!query) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined) continue;
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

export function createUpstream(opts: UpstreamOptions): Upstream {
  const base = opts.url.replace(/\/$/, '');
  const doFetch = opts.fetch ?? fetch;
  const authorization = opts.auth ? `Basic ${Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64')}` : undefined;
  const timeoutMs = opts.timeoutMs ?? 60_000;

  const inbox = (tenant: string): Inbox => {
    const name = (opts.database ?? inboxName)(tenant);
    const root = `${base}/${encodeURIComponent(name)}`;
    const request = async (req: UpstreamRequest): Promise<Response> => {
      // Uncompressed, as in couchdb/client.ts: gzip between the gateway and CouchDB only costs CPU.
      const headers: Record<string, string> = { accept: 'application/json', 'accept-encoding': 'identity' };
      if (authorization) headers.authorization = authorization;
      if (req.body !== undefined) headers['content-type'] = 'application/json';
      const path = (req.path ?? []).map((s) => `/${encodeURIComponent(s)}`).join('');
      const signals: AbortSignal[] = [];
      if (req.signal) signals.push(req.signal);
      if (!req.unbounded) signals.push(AbortSignal.timeout(timeoutMs));
      try {
        return await doFetch(`${root}${path}${encodeQuery(req.query)}`, {
          method: req.method ?? 'GET',
          headers,
          ...(req.body !== undefined ? { body: typeof req.body === 'string' ? req.body : JSON.stringify(req.body) } : {}),
          ...(signals.length ? { signal: signals.length === 1 ? signals[0]! : AbortSignal.any(signals) } : {}),
        });
      } catch (err) {
        if (req.signal?.aborted) throw err;
        throw new FerryError('UNAVAILABLE');
      }
    };
    return {
      name,
      request,
      async json<T>(req: UpstreamRequest): Promise<T> {
        const res = await request(req);
        if (res.status === 404) {
          await res.body?.cancel();
          throw new FerryError('NOT_FOUND');
        }
        if (!res.ok) {
          await res.body?.cancel();
          throw upstreamFailure(res.status);
        }
        return (await res.json()) as T;
      },
    };
  };
  return { inbox };
}

/** Upstream refusals are the gateway's own fault (its user lacks a right) or an outage: never the client's. */
export function upstreamFailure(status: number): FerryError {
  return status >= 500 || status === 429 ? new FerryError('UNAVAILABLE') : new FerryError('INTERNAL');
}
