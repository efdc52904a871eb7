import { requirePostgres } from '../support/services.ts';
import { randomBytes } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { createCouchServer, type CouchServer } from '../../couchdb/client.ts';
import { embeddedCouchIdentities, ensureServiceUsers, type CouchIdentities } from '../../couchdb/identities.ts';
import { provisionTenant } from '../../couchdb/provision.ts';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { startWorker, type Worker, type WorkerOptions } from '../../gateway/worker/worker.ts';
import { loadOrCreateSigningKey, jwksOf, type SigningKey } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier, type TokenIssuer } from '../../identity/tokens.ts';
import type { Database } from '../../sql/database.ts';
import { openRegistrationDatabase } from '../../services/registration/schema.ts';
import { startRegistrationService, type RegistrationService } from '../../services/registration/index.ts';
import { dropSchema, TEST_DATABASE_URL, tempDir, uniqueSchema, type TempDir } from '../support/services.ts';

// A whole back end for worker tests: the embedded CouchDB (own process) with its service users,
// provisioned inboxes, the platform database, the real registration service, and helpers that
// write mutation docs the way replication does (`_bulk_docs`, `new_edits:false`, as the gateway).

export const ISSUER = 'ferry-worker-test';

export function newMid(): string {
  return uuidv7();
}
export function newEntity(): string {
  return `pat_${uuidv7()}`;
}

function word(): string {
  const letters = 'bcdfghjklmnpqrstvwxz';
  const vowels = 'aeiou';
  const bytes = randomBytes(7);
  let w = '';
  for (let i = 0; i < 7; i++) w += i % 2 ? vowels[bytes[i]! % 5] : letters[bytes[i]! % 20];
  return w[0]!.toUpperCase() + w.slice(1);
}

/** A synthetic patient: random names and identifier, no real people. */
export function patientPayload(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    givenName: word(),
    familyName: word(),
    birthDate: '1991-03-14',
    sex: 'female',
    identifiers: [{ system: 'national-id', value: `NI-${randomBytes(6).toString('hex')}` }],
    facility: 'north-hc-1',
    ...overrides,
  };
}

export interface MutationSpec {
  owner: string;
  tenant: string;
  mid?: string;
  entity: string;
  op: string;
  after?: string | null;
  resolves?: string | null;
  baseVersion?: number | null;
  payload: Record<string, unknown>;
  seq?: number;
}

let seqCounter = 0;
export type MutationFixture = Record<string, unknown> & { _id: string; mid: string; entity: string; payload: Record<string, unknown> };

export function mutationDoc(spec: MutationSpec): MutationFixture {
  const mid = spec.mid ?? newMid();
  const doc = {
    _id: `m:${spec.owner}:${mid}`,
    type: 'mutation',
    v: 1,
    tenant: spec.tenant,
    owner: spec.owner,
    device: 'dev-test',
    seq: spec.seq ?? ++seqCounter,
    op: spec.op,
    entity: spec.entity,
    after: spec.after ?? null,
    resolves: spec.resolves ?? null,
    baseVersion: spec.baseVersion ?? null,
    payload: spec.payload,
    createdAt: new Date().toISOString(),
  };
  Object.defineProperty(doc, 'mid', { value: mid, enumerable: false });
  return doc as typeof doc & { mid: string };
}

const rev1 = () => `1-${randomBytes(16).toString('hex')}`;

export interface StatusSeen {
  _id: string;
  _rev: string;
  state: string;
  code: string | null;
  errors?: Array<{ path: string; message: string }>;
  response?: { status: number; body: Record<string, unknown> };
  current?: Record<string, unknown>;
  candidates?: string[];
  attempts: number;
  counter?: number;
  fence?: number;
}

export interface EnvOptions {
  tenants?: readonly string[];
  /** 'postgres' puts the platform and the service on PostgreSQL (needed across processes). */
  backend?: 'pglite' | 'postgres';
  members?: ReadonlyArray<{ user: string; tenant: string; roles: string[] }>;
  licensed?: readonly string[];
}

export interface Env {
  dir: TempDir;
  couch: EmbeddedCouch;
  identities: CouchIdentities;
  admin: CouchServer;
  gateway: CouchServer;
  workerCouch: CouchServer;
  platform: Platform;
  key: SigningKey;
  issuer: TokenIssuer;
  serviceDb: Database;
  service: RegistrationService;
  /** Set for the postgres backend: what a worker process needs to reach the same state. */
  databaseUrl: string | null;
  platformSchema: string | null;
  serviceSchema: string | null;
  push(tenant: string, docs: ReadonlyArray<Record<string, unknown>>, as?: 'gateway' | 'admin'): Promise<void>;
  status(tenant: string, owner: string, mid: string): Promise<StatusSeen | null>;
  waitStatus(tenant: string, owner: string, mid: string, ok: (s: StatusSeen) => boolean, timeoutMs?: number): Promise<StatusSeen>;
  startWorker(o?: Partial<WorkerOptions>): Promise<Worker>;
  restartService(): Promise<void>;
  stopService(): Promise<void>;
  close(): Promise<void>;
}

export const DEFAULT_MEMBERS = [
  { user: 'ada', tenant: 'north', roles: ['registrar'] },
  { user: 'ben', tenant: 'north', roles: ['registrar'] },
  { user: 'dee', tenant: 'north', roles: ['viewer'] },
  { user: 'cy', tenant: 'north', roles: ['registrar'] },
  { user: 'cy', tenant: 'south', roles: ['registrar'] },
  { user: 'cy', tenant: 'east', roles: ['registrar'] },
];

export async function waitUntil(check: () => Promise<boolean>, timeoutMs = 15_000, stepMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

export async function startEnv(opts: EnvOptions = {}): Promise<Env> {
  const tenants = opts.tenants ?? ['north', 'south', 'east'];
  const dir = tempDir('ferry-worker-');
  const cleanups: Array<() => Promise<void>> = [async () => dir.remove()];
  try {
    const couch = await startEmbeddedCouch({ dataDir: dir.path });
    cleanups.unshift(() => couch.stop());
    const admin = createCouchServer({ url: couch.url, auth: couch.admin });
    const identities = embeddedCouchIdentities(dir.path, { url: couch.url, admin: couch.admin });
    await ensureServiceUsers(admin, identities);

    const postgres = (opts.backend ?? 'postgres') === 'postgres';
    const platformSchema = postgres ? uniqueSchema('worker_platform') : null;
    const serviceSchema = postgres ? uniqueSchema('worker_service') : null;
    const platform = await openPlatform(postgres ? { databaseUrl: TEST_DATABASE_URL, schema: platformSchema! } : {});
    cleanups.unshift(async () => {
      await platform.close();
      if (platformSchema) await dropSchema(platformSchema);
    });
    for (const tenant of tenants) await provisionTenant({ admin, tenant, registry: platform.tenants });
    const members = opts.members ?? DEFAULT_MEMBERS;
    for (const user of new Set(members.map((m) => m.user))) await platform.users.upsert({ id: user, username: user, password: 'ferry-dev' });
    for (const m of members) if (tenants.includes(m.tenant)) await platform.memberships.set(m.tenant, m.user, m.roles);

    const key = await loadOrCreateSigningKey(dir.path);
    const issuer = createTokenIssuer({ key, issuer: ISSUER });
    const verifier = createTokenVerifier({ jwks: jwksOf([key]), issuer: ISSUER });
    const serviceDb = await openRegistrationDatabase(postgres ? { url: TEST_DATABASE_URL, schema: serviceSchema!, max: 12 } : {});
    cleanups.unshift(async () => {
      await serviceDb.close();
      if (serviceSchema) await dropSchema(serviceSchema);
    });
    const licensed = opts.licensed ?? ['north', 'south'];
    let service = await startRegistrationService({ db: serviceDb, verifier, natsUrl: null, licensedTenants: licensed });
    const port = service.port;
    let serviceUp = true;
    cleanups.unshift(async () => {
      if (serviceUp) await service.close();
    });

    const gateway = createCouchServer({ url: couch.url, auth: identities.gateway });
    const workerCouch = createCouchServer({ url: couch.url, auth: identities.worker });
    const workers: Worker[] = [];
    cleanups.unshift(async () => {
      await Promise.all(workers.map((w) => w.stop()));
    });

    const env: Env = {
      dir,
      couch,
      identities,
      admin,
      gateway,
      workerCouch,
      platform,
      key,
      issuer,
      serviceDb,
      get service() {
        return service;
      },
      databaseUrl: postgres ? TEST_DATABASE_URL : null,
      platformSchema,
      serviceSchema,
      async push(tenant, docs, as = 'gateway') {
        const server = as === 'admin' ? admin : gateway;
        const withRevs = docs.map((d) => ({ ...d, _rev: (d._rev as string | undefined) ?? rev1() }));
        for (let i = 0; i < withRevs.length; i += 500) {
          const res = await server.db(`inbox_${tenant}`).bulkDocs(withRevs.slice(i, i + 500), { new_edits: false });
          const failed = res.filter((r) => r.error);
          if (failed.length) throw new Error(`push refused: ${JSON.stringify(failed[0])}`);
        }
      },
      async status(tenant, owner, mid) {
        return workerCouch.db(`inbox_${tenant}`).get<StatusSeen>(`s:${owner}:${mid}`, { conflicts: true });
      },
      async waitStatus(tenant, owner, mid, ok, timeoutMs = 20_000) {
        let last: StatusSeen | null = null;
        try {
          await waitUntil(async () => {
            last = await env.status(tenant, owner, mid);
            return last !== null && ok(last);
          }, timeoutMs);
        } catch {
          throw new Error(`status of ${mid} never matched; last: ${JSON.stringify(last)}`);
        }
        return last!;
      },
      async startWorker(o = {}) {
        const w = await startWorker({
          platform,
          couch: workerCouch,
          issuer,
          services: { registration: service.url },
          workerId: `test-${randomBytes(3).toString('hex')}`,
          leaseTtlMs: 3_000,
          tickMs: 100,
          pollTimeoutMs: 5_000,
          retry: { baseMs: 100, maxMs: 1_000, jitter: 0.5 },
          ...o,
        });
        workers.push(w);
        return w;
      },
      async stopService() {
        if (!serviceUp) return;
        serviceUp = false;
        await service.close();
      },
      async restartService() {
        if (serviceUp) return;
        service = await startRegistrationService({ db: serviceDb, verifier, natsUrl: null, port, licensedTenants: licensed });
        serviceUp = true;
      },
      async close() {
        for (const c of cleanups) {
          try {
            await c();
          } catch (err) {
            console.warn('cleanup failed', (err as Error).message);
          }
        }
      },
    };
    return env;
  } catch (err) {
    for (const c of cleanups) await c().catch(() => undefined);
    throw err;
  }
}

/** Counts what the service did: patients, the version of one, and outbox events. */
export async function serviceCounts(db: Database, entity?: string): Promise<{ patients: number; events: number; version: number | null; data: Record<string, unknown> | null }> {
  const p = await db.query<{ n: string }>('SELECT count(*) AS n FROM patients');
  const e = await db.query<{ n: string }>('SELECT count(*) AS n FROM outbox');
  let version: number | null = null;
  let data: Record<string, unknown> | null = null;
  if (entity) {
    const r = await db.query<{ version: number; data: Record<string, unknown> }>('SELECT version, data FROM patients WHERE id = $1', [entity]);
    version = r.rows[0] ? Number(r.rows[0].version) : null;
    data = r.rows[0]?.data ?? null;
  }
  return { patients: Number(p.rows[0]!.n), events: Number(e.rows[0]!.n), version, data };
}

/**
 * One environment on PostgreSQL shared by a suite: registers its `before` (skips locally and
 * fails in CI without PostgreSQL) and `after` hooks. Read `.env` inside tests.
 */
export function sharedEnv(opts: EnvOptions): { readonly env: Env } {
  let env: Env | undefined;
  before(async function () {
    this.timeout(120_000);
    await requirePostgres(this);
    env = await startEnv(opts);
  });
  after(async () => {
    await env?.close();
  });
  return {
    get env(): Env {
      if (!env) throw new Error('the shared environment is not started');
      return env;
    },
  };
}
