// Test support for the device library: a stand-in for the gateway's `/sync/{tenant}` (a real
// express-pouchdb server behind a small token check), a fake worker that writes status docs, fake
// tokens, a fake scheduler and synthetic patients. Nothing here is used by the library itself.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import expressPouchdb from 'express-pouchdb';
import { NodePouch } from '../../client/node.ts';
import type { TokenProvider } from '../../client/auth-fetch.ts';
import type { Scheduler } from '../../client/sync.ts';
import type { MutationDoc, StatusDoc } from '../../validators/mutation.ts';

export type Pouch = PouchDB.Database;

export function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** An unsigned JWT-shaped token; the stand-in gateway keeps its own list of valid ones. */
export function fakeJwt(claims: { tid: string; owner: string; n?: number }): string {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ ...claims, sub: claims.owner, roles: ['registrar'], sid: 's1', exp: 9_999_999_999 })}.sig${claims.n ?? 0}`;
}

export interface RecordedRequest {
  method: string;
  path: string;
  token: string | null;
  /** 0 until answered. */
  status: number;
  /** The client went away before an answer (an aborted longpoll). */
  abandoned: boolean;
}

export interface GatewayStandIn {
  url: string;
  /** The inbox database behind `/sync/{tenant}`, for the fake worker and assertions. */
  inbox(tenant: string): Pouch;
  /**
   * The database behind `/replica/{tenant}` for one caller (the token's `owner` claim): the records
   * in that caller's scope, written by the test (a leave of scope is a deletion there).
   */
  records(tenant: string, owner: string): Pouch;
  requests: RecordedRequest[];
  /** Tokens the stand-in accepts, with their tenant. */
  valid: Map<string, string>;
  /** While true, every request has its socket destroyed (network failure). */
  down: boolean;
  /** Network failure: drops open connections (e.g. a waiting longpoll) and every new one. */
  setDown(down: boolean): void;
  close(): Promise<void>;
}

/**
 * express-pouchdb (memory, unique prefix) run standalone (STACK-NOTES trap 3) behind a handler
 * that maps `/sync/{tenant}` to `inbox_{tenant}` and checks the bearer token: unknown → 401,
 * other tenant → 403 TENANT_MISMATCH. It does not scope reads per owner (the gateway does); the
 * client's own pull guard is what keeps foreign docs out, and the tests rely on that.
 */
export async function startGateway(): Promise<GatewayStandIn> {
  // express-pouchdb (pouchdb-all-dbs) adds constructor listeners per app; one app per test is fine.
  (NodePouch as unknown as { setMaxListeners(n: number): void }).setMaxListeners(200);
  const ServerPouch = NodePouch.defaults({ adapter: 'memory', prefix: `srv-${randomUUID()}-` } as PouchDB.Configuration.DatabaseConfiguration);
  // Library boundary: express-pouchdb has no types.
  const app = (expressPouchdb as unknown as (p: unknown, o: unknown) => (req: IncomingMessage, res: ServerResponse) => void)(ServerPouch, {
    mode: 'minimumForPouchDB',
    overrideMode: { include: ['validation'] },
    inMemoryConfig: true,
    logPath: '/dev/null',
  });
  const inboxes = new Map<string, Pouch>();
  const replicas = new Map<string, Pouch>();
  // eslint-disable-next-line prefer-const
  let server: ReturnType<typeof createServer>;
  const state: GatewayStandIn = {
    url: '',
    requests: [],
    valid: new Map(),
    down: false,
    setDown(down) {
      state.down = down;
      if (down) server.closeAllConnections();
    },
    inbox(tenant) {
      let db = inboxes.get(tenant);
      if (!db) {
        db = new ServerPouch(`inbox_${tenant}`);
        inboxes.set(tenant, db);
      }
      return db;
    },
    records(tenant, owner) {
      const key = `records_${tenant}_${owner}`;
      let db = replicas.get(key);
      if (!db) {
        db = new ServerPouch(key);
        replicas.set(key, db);
      }
      return db;
    },
    close: async () => undefined,
  };
  server = createServer((req, res) => {
    if (state.down) {
      req.socket.destroy();
      return;
    }
    const url = req.url ?? '/';
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    const rec: RecordedRequest = { method: req.method ?? 'GET', path: url, token, status: 0, abandoned: false };
    res.on('close', () => {
      if (!res.writableFinished) rec.abandoned = true;
    });
    state.requests.push(rec);
    const answer = (status: number, json: unknown): void => {
      rec.status = status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(json));
    };
    if (url === '/sync/' || url === '/sync' || url === '/replica/' || url === '/replica') return answer(200, { couchdb: 'Welcome', uuid: 'ferry-test', version: '3.3.3' });
    const replica = /^\/replica\/([a-z][a-z0-9-]*)(\/.*)?$/.exec(url.split('?')[0]!);
    if (replica) {
      const tenant = replica[1]!;
      const rest = replica[2] ?? '';
      const tokenTenant = token ? state.valid.get(token) : undefined;
      if (!tokenTenant) return answer(401, { code: 'UNAUTHENTICATED', message: 'A valid access token is required.' });
      if (tokenTenant !== tenant) return answer(403, { code: 'TENANT_MISMATCH', message: 'The request does not belong to the caller\'s tenant.' });
      const reads = req.method === 'GET' || req.method === 'HEAD' || (req.method === 'POST' && /^\/(_bulk_get|_revs_diff|_all_docs)$/.test(rest)) || rest.startsWith('/_local/');
      if (!reads) return answer(403, { code: 'READ_ONLY', message: 'The replica is read-only.' });
      const owner = tokenOwner(token!);
      const db = state.records(tenant, owner);
      req.url = url.replace(/^\/replica\/[a-z][a-z0-9-]*/, `/records_${tenant}_${owner}`);
      res.on('finish', () => {
        rec.status = res.statusCode;
      });
      void db.info().then(
        () => app(req, res),
        () => answer(500, { code: 'INTERNAL' }),
      );
      return;
    }
    const m = /^\/sync\/([a-z][a-z0-9-]*)(\/.*)?$/.exec(url.split('?')[0]!);
    if (!m) return answer(404, { code: 'NOT_FOUND' });
    const tenant = m[1]!;
    const tokenTenant = token ? state.valid.get(token) : undefined;
    if (!tokenTenant) return answer(401, { code: 'UNAUTHENTICATED', message: 'A valid access token is required.' });
    if (tokenTenant !== tenant) return answer(403, { code: 'TENANT_MISMATCH', message: 'The request does not belong to the caller\'s tenant.' });
    // express-pouchdb answers 404 no_db_file until its list of dbs has this one: wait for it.
    const ready = state.inbox(tenant).info();
    req.url = url.replace(/^\/sync\/[a-z][a-z0-9-]*/, `/inbox_${tenant}`);
    res.on('finish', () => {
      rec.status = res.statusCode;
    });
    void ready.then(
      () => app(req, res),
      () => answer(500, { code: 'INTERNAL' }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    for (const db of [...inboxes.values(), ...replicas.values()]) await db.destroy().catch(() => undefined);
  };
  return state;
}

/** The `owner` claim of a fake JWT (the stand-in trusts it; the gateway verifies), or `anyone`. */
function tokenOwner(token: string): string {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { owner?: unknown };
    return typeof claims.owner === 'string' && /^[a-z0-9-]+$/.test(claims.owner) ? claims.owner : 'anyone';
  } catch {
    return 'anyone';
  }
}

/** A token provider whose refresh mints a new valid token for the same tenant. */
export class FakeTokens implements TokenProvider {
  refreshes = 0;
  current: string;
  private n = 0;

  constructor(
    private readonly gateway: GatewayStandIn,
    public tenant: string,
    public owner: string,
  ) {
    this.current = this.mint();
  }

  mint(tenant = this.tenant): string {
    const token = fakeJwt({ tid: tenant, owner: this.owner, n: ++this.n });
    this.gateway.valid.set(token, tenant);
    return token;
  }

  /** The gateway stops accepting the current token (it expired). */
  expire(): void {
    this.gateway.valid.delete(this.current);
  }

  async getToken(): Promise<string> {
    return this.current;
  }

  async refresh(): Promise<string> {
    this.refreshes++;
    await new Promise((r) => setTimeout(r, 5));
    this.current = this.mint();
    return this.current;
  }
}

/** A scheduler driven by hand: `advance(ms)` fires what is due. */
export class FakeScheduler implements Scheduler {
  now = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private nextId = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.now + ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }
  get pending(): number[] {
    return this.timers.map((t) => t.at - this.now);
  }
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > until) break;
      this.timers.shift();
      this.now = next.at;
      next.fn();
    }
    this.now = until;
  }
}

export function patient(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { givenName: 'Zyxwvuta', familyName: 'Testpatient', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1', ...overrides };
}

export async function waitFor<T>(fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, { timeout = 5_000, interval = 10 } = {}): Promise<T> {
  const until = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error('waitFor: timed out');
    await new Promise((r) => setTimeout(r, interval));
  }
}

export function mutationDocs(rows: { doc?: unknown }[]): MutationDoc[] {
  return rows.map((r) => r.doc as MutationDoc).filter((d) => d && d._id.startsWith('m:'));
}

type Decision = (m: MutationDoc, records: Map<string, Record<string, unknown>>) => Pick<StatusDoc, 'state' | 'code'> & Partial<StatusDoc>;

/**
 * A stand-in worker for client-level tests: processes every `m:` doc without a status, in `seq`
 * order, and writes one status doc each. Default decisions: create → committed v1; update on the
 * right base version → committed v+1; stale → conflict with `current`; predecessor failed and
 * not resolved → DEPENDENCY_FAILED.
 */
export class FakeWorker {
  readonly records = new Map<string, Record<string, unknown>>();
  processed: string[] = [];
  constructor(
    private readonly inbox: Pouch,
    private readonly decide?: Decision,
  ) {}

  async run(): Promise<number> {
    const all = await this.inbox.allDocs({ include_docs: true });
    const statuses = new Map<string, StatusDoc>();
    for (const r of all.rows) if (r.id.startsWith('s:')) statuses.set((r.doc as unknown as StatusDoc).mutation, r.doc as unknown as StatusDoc);
    const todo = mutationDocs(all.rows).filter((m) => !statuses.has(m._id.split(':')[2]!)).sort((a, b) => a.seq - b.seq);
    for (const m of todo) {
      const mid = m._id.split(':')[2]!;
      const outcome = this.outcome(m, mid, statuses);
      const status: StatusDoc = {
        _id: `s:${m.owner}:${mid}`,
        type: 'status',
        v: 1,
        tenant: m.tenant,
        owner: m.owner,
        mutation: mid,
        attempts: 1,
        updatedAt: new Date().toISOString(),
        ...outcome,
      } as StatusDoc;
      await this.inbox.put(status);
      statuses.set(mid, status);
      this.processed.push(mid);
    }
    return todo.length;
  }

  private outcome(m: MutationDoc, _mid: string, statuses: Map<string, StatusDoc>): Partial<StatusDoc> & Pick<StatusDoc, 'state' | 'code'> {
    if (m.after) {
      const pred = statuses.get(m.after);
      if (pred && pred.state !== 'committed' && m.resolves !== m.after) return { state: 'rejected', code: 'DEPENDENCY_FAILED' };
    }
    if (this.decide) return this.decide(m, this.records);
    const existing = this.records.get(m.entity);
    const { confirmNotDuplicate: _c, ...fields } = m.payload as Record<string, unknown>;
    if (m.op === 'patient.create') {
      if (existing) return { state: 'rejected', code: 'ID_CONFLICT' };
      const rec = { id: m.entity, tenant: m.tenant, version: 1, ...fields };
      this.records.set(m.entity, rec);
      return { state: 'committed', code: null, response: { status: 201, body: rec } };
    }
    if (!existing) return { state: 'rejected', code: 'NOT_FOUND' };
    if (existing.version !== m.baseVersion) return { state: 'conflict', code: 'VERSION_CONFLICT', current: existing };
    const rec = { id: m.entity, tenant: m.tenant, version: (existing.version as number) + 1, ...fields };
    this.records.set(m.entity, rec);
    return { state: 'committed', code: null, response: { status: 200, body: rec } };
  }
}
