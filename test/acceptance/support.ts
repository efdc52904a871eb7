// Acceptance support: the full real stack (gateway, embedded CouchDB server, worker, registration
// service on PGlite, real NATS) in this process, and devices running the real client library on
// Node (memory adapter). Nothing here stands in for a Ferry component; the only fakes are network
// faults injected into a device's own fetch.

// First: mocha tries require() before import(); the stack's modules use import.meta.resolve, so
// require() must fail on them before client/node.ts plugs PouchDB (a second, ESM, load would
// then plug the same CJS pouchdb-core again and throw "Cannot redefine property: replicate").
import { startTestStack, type TestStack } from '../support/stack.ts';
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { NodePouch, openNodeSession, type Session, type TokenProvider } from '../../client/node.ts';
import type { FetchLike } from '../../client/auth-fetch.ts';
import type { MutationInfo, MutationState } from '../../client/reconcile.ts';
import { openStore } from '../../client/store.ts';
import type { StackOptions } from '../../scripts/stack.ts';

export const PASSWORD = 'ferry-dev';

/** Short worker timings so retries and ticks happen in test time. */
export const FAST_WORKER: StackOptions['workerTuning'] = {
  retry: { baseMs: 50, maxMs: 400, jitter: 0.5 },
  tickMs: 50,
  pollTimeoutMs: 2_000,
  leaseTtlMs: 5_000,
};

export function startAcceptanceStack(opts: StackOptions = {}): Promise<TestStack> {
  return startTestStack({ workerTuning: FAST_WORKER, ...opts });
}

interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  user: { id: string; tenant: string; roles: string[] };
}

export async function authPost(url: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** A dev-IdP token provider (login + rotating refresh) whose current token a test can swap. */
export interface DevTokens extends TokenProvider {
  owner: string;
  tenant: string;
  current: string;
  refreshToken: string;
  refreshes: number;
  /** When set, refresh() fails with this (e.g. membership gone: the IdP answers 403). */
  refreshStatus: number | null;
}

export async function devTokens(url: string, username: string, tenant: string): Promise<DevTokens> {
  const first = await authPost(url, '/auth/token', { username, password: PASSWORD, tenant });
  if (first.status !== 200) throw new Error(`login ${username}@${tenant}: ${first.status}`);
  const answer = first.body as TokenAnswer;
  const tokens: DevTokens = {
    owner: answer.user.id,
    tenant,
    current: answer.access_token,
    refreshToken: answer.refresh_token,
    refreshes: 0,
    refreshStatus: null,
    getToken: async () => tokens.current,
    refresh: async () => {
      tokens.refreshes++;
      const r = await authPost(url, '/auth/refresh', { refresh_token: tokens.refreshToken });
      if (r.status !== 200) {
        tokens.refreshStatus = r.status;
        throw new Error(`refresh answered ${r.status}`);
      }
      const next = r.body as TokenAnswer;
      tokens.current = next.access_token;
      tokens.refreshToken = next.refresh_token;
      return tokens.current;
    },
  };
  return tokens;
}

export interface Device {
  session: Session;
  tokens: DevTokens;
  prefix: string;
  passphrase: string;
}

export const PASSPHRASE = 'correct horse battery staple';

/** A device: the real client library on Node, memory adapter, its own store name prefix. */
export async function openDevice(
  stack: TestStack,
  tokens: DevTokens,
  opts: { autoSync?: boolean; fetch?: FetchLike; batchSize?: number; prefix?: string } = {},
): Promise<Device> {
  const prefix = opts.prefix ?? `acc-${randomUUID()}-`;
  const session = await openNodeSession({
    gatewayUrl: stack.url,
    tenant: tokens.tenant,
    owner: tokens.owner,
    passphrase: PASSPHRASE,
    tokens,
    adapter: 'memory',
    prefix,
    kdfIterations: 1_000,
    idleTimeoutMs: null,
    online: null,
    backoff: { base: 100, cap: 1_000 },
    autoSync: opts.autoSync ?? true,
    ...(opts.batchSize ? { batchSize: opts.batchSize } : {}),
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
  return { session, tokens, prefix, passphrase: PASSPHRASE };
}

/** Closes (and wipes) a device, even with unsynced work: tests clean up after themselves. */
export async function dispose(device: Device | undefined): Promise<void> {
  if (!device || device.session.closed) return;
  await device.session.wipe({ confirm: true }).catch(() => undefined);
}

/** Every doc in the device's local database, decrypted with its passphrase (the session must be closed). */
export async function everyLocalDoc(device: Device): Promise<Array<Record<string, unknown> & { _id: string }>> {
  const { db } = await openStore(
    { PouchDB: NodePouch, adapter: 'memory', prefix: device.prefix, tenant: device.session.tenant, owner: device.session.owner },
    { passphrase: device.passphrase },
  );
  try {
    const all = await db.allDocs({ include_docs: true });
    return all.rows.map((r) => r.doc as unknown as Record<string, unknown> & { _id: string });
  } finally {
    await db.close();
  }
}

export async function waitFor<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeout = 20_000): Promise<T> {
  const until = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function waitForState<K extends MutationState['kind']>(session: Session, mid: string, kind: K, timeout = 20_000): Promise<MutationInfo & { state: Extract<MutationState, { kind: K }> }> {
  return waitFor(`${mid} to be ${kind}`, () => {
    const m = session.mutation(mid);
    if (m && m.state.kind !== kind && ['committed', 'rejected', 'conflict', 'discarded'].includes(m.state.kind)) {
      throw new Error(`${mid} ended ${m.state.kind} (${JSON.stringify(m.state)}), expected ${kind}`);
    }
    return m?.state.kind === kind ? (m as MutationInfo & { state: Extract<MutationState, { kind: K }> }) : null;
  }, timeout);
}

/** Synthetic, unique demographics (letters only, so no real person is named). */
export function syntheticPatient(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const tag = Array.from(randomBytes(6), (b) => String.fromCharCode(97 + (b % 26))).join('');
  return {
    givenName: `Testa${tag}`,
    familyName: `Synthetica${tag}`,
    birthDate: '1987-03-14',
    sex: 'female',
    facility: 'north-hc-1',
    ...overrides,
  };
}

export interface Recorded {
  method: string;
  path: string;
  body: string | null;
  status: number | 'dropped' | 'error';
  auth: string | null;
}

/** A device transport that records every request and lets a test drop answers. */
export function recordingFetch(hook?: (req: Recorded, index: number) => 'drop-answer' | void): { fetch: FetchLike; log: Recorded[] } {
  const log: Recorded[] = [];
  const f: FetchLike = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const headers = new Headers(init?.headers);
    const entry: Recorded = {
      method: init?.method ?? 'GET',
      path: new URL(url).pathname,
      body: typeof init?.body === 'string' ? init.body : null,
      status: 'error',
      auth: headers.get('authorization'),
    };
    log.push(entry);
    const decision = hook?.(entry, log.length - 1);
    try {
      const res = await globalThis.fetch(input, init);
      if (decision === 'drop-answer') {
        // The gateway did the work; the device never hears back (a timeout on the way home).
        await res.arrayBuffer();
        entry.status = 'dropped';
        throw new TypeError('fetch failed: the answer was lost (injected timeout)');
      }
      entry.status = res.status;
      return res;
    } catch (err) {
      if (entry.status === 'error') entry.status = 'error';
      throw err;
    }
  };
  return { fetch: f, log };
}

/** Ids of the docs in a `_bulk_docs` body. */
export function bulkDocIds(body: string | null): string[] {
  if (!body) return [];
  const parsed = JSON.parse(body) as { docs?: Array<{ _id?: string }> };
  return (parsed.docs ?? []).map((d) => d._id ?? '');
}

export interface ProxiedRequest {
  method: string;
  path: string;
  idempotencyKey: string | null;
  status: number;
  replayed: string | null;
  dropped: boolean;
}

/**
 * An HTTP proxy in front of a service that can drop an answer after the service produced it:
 * the caller sees a timeout although the work was done. A `POST /v1/batch` (the worker's call) is
 * recorded item by item, as if each item had been its own request; its answer is dropped when any
 * item's should be.
 */
export async function startDroppingProxy(target: string, shouldDrop: (req: { method: string; path: string; index: number; idempotencyKey: string | null }) => boolean): Promise<{ url: string; requests: ProxiedRequest[]; close(): Promise<void> }> {
  const requests: ProxiedRequest[] = [];
  const upstream = new URL(target);
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks as Uint8Array[]);
      const batch = req.method === 'POST' && req.url === '/v1/batch';
      const items = batch ? ((JSON.parse(body.toString('utf8')) as { items?: Array<{ method: string; path: string; idempotencyKey?: string }> }).items ?? []) : [];
      const entries: ProxiedRequest[] = (batch ? items : [null]).map((item) => ({
        method: item?.method ?? req.method ?? 'GET',
        path: item?.path ?? req.url ?? '/',
        idempotencyKey: item ? (item.idempotencyKey ?? null) : ((req.headers['idempotency-key'] as string | undefined) ?? null),
        status: 0,
        replayed: null,
        dropped: false,
      }));
      let drop = false;
      for (const entry of entries) {
        const index = requests.length;
        requests.push(entry);
        if (shouldDrop({ method: entry.method, path: entry.path, index, idempotencyKey: entry.idempotencyKey })) drop = true;
      }
      const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        const parts: Buffer[] = [];
        answer.on('data', (c: Buffer) => parts.push(c));
        answer.on('end', () => {
          const text = Buffer.concat(parts as Uint8Array[]);
          if (batch && answer.statusCode === 200) {
            const answered = (JSON.parse(text.toString('utf8')) as { items: Array<{ status: number; headers?: Record<string, string> }> }).items;
            entries.forEach((e, i) => {
              e.status = answered[i]?.status ?? 0;
              e.replayed = answered[i]?.headers?.['idempotent-replayed'] ?? null;
            });
          } else {
            for (const e of entries) {
              e.status = answer.statusCode ?? 0;
              e.replayed = (answer.headers['idempotent-replayed'] as string | undefined) ?? null;
            }
          }
          if (drop) {
            for (const e of entries) e.dropped = true;
            req.socket.destroy();
            return;
          }
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.end(text);
        });
      });
      out.on('error', () => res.destroy());
      out.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** `/v1` as a user, online (reads and the "other actor" edits tests need). */
export async function v1(url: string, token: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${url}/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: ((await res.json().catch(() => ({}))) ?? {}) as Record<string, unknown>, headers: res.headers };
}

const SYSTEM_FIELDS = ['id', 'tenant', 'version', 'createdAt', 'updatedAt'];
/** A server record's demographics: what a full-representation update carries. */
export function demographics(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).filter(([k]) => !SYSTEM_FIELDS.includes(k)));
}
