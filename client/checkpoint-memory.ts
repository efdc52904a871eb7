// What one connection remembers of the replication checkpoints it wrote on /sync, so that it does
// not ask the gateway for them again.
//
// PouchDB writes a checkpoint after every batch by reading the `_local/{replication id}` doc (GET)
// and then writing it (PUT): two gateway requests per batch and side, a fifth of all the device's
// requests in the chaos harness. Within one connection the device knows what it last wrote, so the
// GET is answered from memory. The PUT still goes to the gateway, so the checkpoint stays on both
// sides (a server restored from a backup is caught up, `sync.ts`).
//
// It stays correct when the gateway's copy changed behind the device's back:
// - each new connection starts with nothing remembered, so its first read is a real GET (the
//   comparison with the local checkpoint that catches a restored server);
// - a doc is forgotten before its PUT goes out, and stays forgotten unless the PUT succeeds; a 409
//   (someone else wrote it, or the server lost it) makes PouchDB read it again, for real;
// - any failed request for the doc (thrown or not 2xx) forgets it.
//
// Only PouchDB's checkpoints: the device's own `_local/ferry-*` docs (the acknowledgement) keep
// their revision themselves (`acknowledgement.ts`).

import type { FetchLike } from './auth-fetch.ts';

/** What a request means for the memory. Pure. */
export type CheckpointRequest = { kind: 'read'; key: string } | { kind: 'write'; key: string } | { kind: 'other-write'; key: string } | { kind: 'not-checkpoint' };

const FERRY_LOCAL = '_local/ferry-';

/** Whether this is a request for one of PouchDB's checkpoint docs on `dbUrl`, and which kind. */
export function checkpointRequest(method: string, url: string, dbUrl: string): CheckpointRequest {
  const base = dbUrl.replace(/\/+$/, '') + '/';
  if (!url.startsWith(base)) return { kind: 'not-checkpoint' };
  const rest = url.slice(base.length);
  const [path = '', query] = rest.split('?', 2);
  if (!path.startsWith('_local/') || path.length === '_local/'.length || path.slice('_local/'.length).includes('/')) return { kind: 'not-checkpoint' };
  if (decodeURIComponent(path).startsWith(FERRY_LOCAL)) return { kind: 'not-checkpoint' };
  const key = path;
  const m = method.toUpperCase();
  // A read with parameters (revs, open_revs…) is not the checkpointer's plain read: ask the gateway.
  if (m === 'GET' && (query === undefined || query === '')) return { kind: 'read', key };
  if (m === 'PUT') return { kind: 'write', key };
  if (m === 'GET' || m === 'HEAD') return { kind: 'not-checkpoint' };
  return { kind: 'other-write', key };
}

export interface CheckpointMemory {
  /** The transport to hand PouchDB's remote. */
  readonly fetch: FetchLike;
  /** A new connection: forget everything (its first reads go to the gateway). */
  forget(): void;
  /** How many reads were answered from memory (tests and figures). */
  readonly served: number;
}

function urlOf(input: string | URL | Request): string {
  return typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
}

function asRecord(value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}

export function withCheckpointMemory(fetch: FetchLike, dbUrl: string): CheckpointMemory {
  /** Key → the doc as the gateway would answer it now (JSON text). */
  const docs = new Map<string, string>();
  let served = 0;

  const remembered: FetchLike = async (input, init) => {
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
    const req = checkpointRequest(method, urlOf(input), dbUrl);
    if (req.kind === 'not-checkpoint') return fetch(input, init);
    if (req.kind === 'read') {
      const known = docs.get(req.key);
      if (known !== undefined) {
        served++;
        return new Response(known, { status: 200, headers: { 'content-type': 'application/json' } });
      }
      const res = await fetch(input, init);
      if (res.status === 200) {
        const body = asRecord(await res.clone().json().catch(() => null));
        if (body && typeof body._rev === 'string') docs.set(req.key, JSON.stringify(body));
      }
      return res;
    }
    docs.delete(req.key);
    const res = await fetch(input, init);
    if (req.kind === 'write' && (res.status === 201 || res.status === 200) && typeof init?.body === 'string') {
      const sent = asRecord(parseJson(init.body));
      const answer = asRecord(await res.clone().json().catch(() => null));
      if (sent && answer && answer.ok === true && typeof answer.rev === 'string') docs.set(req.key, JSON.stringify({ ...sent, _rev: answer.rev }));
    }
    return res;
  };

  return {
    fetch: remembered,
    forget: () => docs.clear(),
    get served() {
      return served;
    },
  };
}
