import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { jetstreamManager } from '@nats-io/jetstream';
import { generateSigningKey, jwksOf } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier, type TokenVerifier } from '../../identity/tokens.ts';
import type { Database } from '../../sql/database.ts';
import { openRegistrationDatabase } from '../../services/registration/schema.ts';
import type { PatientEvent } from '../../services/registration/events/outbox.ts';
import { connectTestNats, dropSchema, TEST_DATABASE_URL, TEST_NATS_URL, uniqueSchema } from '../support/services.ts';

// Shared by the registration suites: a database per suite on either backend, tokens, synthetic
// patients and a reader of the REGISTRATION stream. No real people: names are random letters.

export type Backend = 'pglite' | 'postgres';
export const BACKENDS: readonly Backend[] = ['pglite', 'postgres'];

export interface OpenedDb {
  db: Database;
  close(): Promise<void>;
}

export async function openBackend(kind: Backend, label: string): Promise<OpenedDb> {
  if (kind === 'pglite') {
    const db = await openRegistrationDatabase({});
    return { db, close: () => db.close() };
  }
  const schema = uniqueSchema(label);
  const db = await openRegistrationDatabase({ url: TEST_DATABASE_URL, schema, max: 12 });
  return {
    db,
    async close() {
      await db.close();
      await dropSchema(schema);
    },
  };
}

export interface User {
  owner: string;
  tid: string;
  roles: string[];
}

export interface Identity {
  verifier: TokenVerifier;
  token(user: User): Promise<string>;
  delegated(user: User): Promise<string>;
  /** A token for the same claims signed by a key the service does not trust. */
  foreignToken(user: User): Promise<string>;
}

export async function makeIdentity(): Promise<Identity> {
  const key = await generateSigningKey();
  const other = await generateSigningKey();
  const issuer = 'ferry-test';
  const tokens = createTokenIssuer({ key, issuer });
  const foreign = createTokenIssuer({ key: other, issuer });
  const grant = (u: User) => ({ sub: u.owner, tid: u.tid, owner: u.owner, roles: u.roles, sid: `s-${u.owner}` });
  return {
    verifier: createTokenVerifier({ jwks: jwksOf([key]), issuer }),
    token: (u) => tokens.mintAccess(grant(u)),
    delegated: (u) => tokens.mintDelegated({ sub: u.owner, tid: u.tid, owner: u.owner, roles: u.roles }),
    foreignToken: (u) => foreign.mintAccess(grant(u)),
  };
}

export const USERS = {
  ada: { owner: 'ada', tid: 'north', roles: ['registrar'] },
  ben: { owner: 'ben', tid: 'north', roles: ['registrar'] },
  dee: { owner: 'dee', tid: 'north', roles: ['viewer'] },
  admin: { owner: 'admin', tid: 'north', roles: ['admin'] },
  ops: { owner: 'ops', tid: 'north', roles: ['platform-admin'] },
  cySouth: { owner: 'cy', tid: 'south', roles: ['registrar'] },
  cyEast: { owner: 'cy', tid: 'east', roles: ['registrar'] },
} satisfies Record<string, User>;

export const LICENSED = ['north', 'south'];

function word(): string {
  const letters = 'bcdfghjklmnpqrstvwxz';
  const vowels = 'aeiou';
  let w = '';
  const bytes = randomBytes(6);
  for (let i = 0; i < 6; i++) w += i % 2 ? vowels[bytes[i]! % 5] : letters[bytes[i]! % 20];
  return w[0]!.toUpperCase() + w.slice(1);
}

export function newPatientId(): string {
  return `pat_${uuidv7()}`;
}

export function newKey(): string {
  return uuidv7();
}

/** A synthetic patient with random names and a random identifier. */
export function syntheticPatient(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    givenName: word(),
    familyName: word(),
    birthDate: '1990-04-12',
    sex: 'female',
    identifiers: [{ system: 'national-id', value: `NI-${randomBytes(5).toString('hex')}` }],
    phone: '+2348000000000',
    facility: 'north-hc-1',
    address: { line: '1 Test Rd', city: 'Testville', country: 'NG' },
    ...overrides,
  };
}

export interface CallOptions {
  token?: string | undefined;
  key?: string;
  ifMatch?: string;
  body?: unknown;
  rawBody?: string;
  contentType?: string | null;
}

export interface Reply {
  status: number;
  text: string;
  // Parsed JSON bodies are data for assertions; their shape varies by route.
  body: Record<string, unknown> & { [k: string]: unknown };
  headers: Headers;
}

export async function call(base: string, method: string, path: string, o: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.key) headers['idempotency-key'] = o.key;
  if (o.ifMatch) headers['if-match'] = o.ifMatch;
  const body = o.rawBody ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  if (body !== undefined && o.contentType !== null) headers['content-type'] = o.contentType ?? 'application/json';
  const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  return { status: res.status, text, body: text ? (JSON.parse(text) as Reply['body']) : {}, headers: res.headers };
}

/** Retries while the key is in flight elsewhere (409 IDEMPOTENCY_IN_PROGRESS), as the worker would. */
export async function callUntilSettled(base: string, method: string, path: string, o: CallOptions): Promise<{ final: Reply; inProgress: number }> {
  let inProgress = 0;
  for (let i = 0; i < 100; i++) {
    const r = await call(base, method, path, o);
    if (!(r.status === 409 && r.body.code === 'IDEMPOTENCY_IN_PROGRESS')) return { final: r, inProgress };
    inProgress++;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error('key stayed in progress');
}

export async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000, stepMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((res) => setTimeout(res, stepMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

export interface StreamedEvent {
  seq: number;
  subject: string;
  msgId: string | undefined;
  event: PatientEvent;
}

/** Reads the REGISTRATION stream by sequence from `afterSeq`, keeping only events for `patientIds`. */
export async function streamEventsFor(patientIds: ReadonlySet<string>, afterSeq: number): Promise<StreamedEvent[]> {
  const nc = await connectTestNats();
  try {
    const jsm = await jetstreamManager(nc);
    const last = (await jsm.streams.info('REGISTRATION')).state.last_seq;
    const out: StreamedEvent[] = [];
    for (let seq = afterSeq + 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage('REGISTRATION', { seq }).catch(() => null);
      if (!m) continue;
      const event = m.json<PatientEvent>();
      if (patientIds.has(event.patientId)) out.push({ seq, subject: m.subject, msgId: m.header?.get('Nats-Msg-Id'), event });
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** The stream's last sequence now (0 when it does not exist yet), to read only what follows. */
export async function streamLastSeq(): Promise<number> {
  const nc = await connectTestNats();
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info('REGISTRATION')).state.last_seq;
  } catch {
    return 0;
  } finally {
    await nc.close();
  }
}

/** A TCP hop in front of NATS that tests can take away and bring back on the same port. */
export interface NatsProxy {
  url: string;
  up(): Promise<void>;
  down(): Promise<void>;
  /** Down for good: the port is released. */
  close(): Promise<void>;
}

export async function natsProxy(): Promise<NatsProxy> {
  const target = new URL(TEST_NATS_URL);
  const sockets = new Set<net.Socket>();
  let accepting = false;
  // The port stays bound while NATS is "down" and every connection is dropped at once. A port
  // left free in between can be taken: a client retrying 127.0.0.1:P with nothing listening may
  // get P as its own source port (a TCP self-connect), and the next listen is EADDRINUSE.
  const server = net.createServer((client) => {
    if (!accepting) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: target.hostname, port: Number(target.port) });
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  // The hop passes bytes through, so the client still authenticates to NATS: keep the credentials.
  const auth = target.username ? `${target.username}${target.password ? `:${target.password}` : ''}@` : '';
  return {
    url: `nats://${auth}127.0.0.1:${port}`,
    up: async () => {
      accepting = true;
    },
    down: async () => {
      accepting = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close: async () => {
      accepting = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface BatchItem {
  method: 'POST' | 'PUT';
  path: string;
  idempotencyKey?: string;
  ifMatch?: string;
  correlationId?: string;
  authorization?: string;
  requires?: number;
  body?: unknown;
}

export interface BatchItemReply {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
  skipped?: true;
  /** The item's body as JSON text, to compare byte for byte with a single call's. */
  text: string;
}

/** `POST /v1/batch`; the items' answers with their bodies also as JSON text. */
export async function callBatch(base: string, token: string | undefined, items: readonly BatchItem[] | unknown): Promise<Reply & { items: BatchItemReply[] }> {
  const r = await call(base, 'POST', '/v1/batch', { token, body: { items } });
  const answers = (r.body.items as Omit<BatchItemReply, 'text'>[] | undefined) ?? [];
  return { ...r, items: answers.map((a) => ({ ...a, text: JSON.stringify(a.body) })) };
}

/** A small deterministic PRNG (mulberry32), so generated sequences are the same every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
