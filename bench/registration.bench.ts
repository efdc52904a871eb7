import net from 'node:net';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import { generateSigningKey, jwksOf } from '../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier } from '../identity/tokens.ts';
import type { Database } from '../sql/database.ts';
import { openRegistrationDatabase, startRegistrationService } from '../services/registration/index.ts';
import type { Report } from './run.ts';

// Committed registrations/s over HTTP with Idempotency-Key (concurrency 16, 5,000 requests) and
// replayed-key responses/s, each beside the raw single-row insert rate of the same database in
// the same run. PGlite and PostgreSQL when reachable (BENCH_DATABASE_URL or 127.0.0.1:5432;
// BENCH_BACKENDS picks). The relay is off: this measures the commit path, events wait in the
// outbox. Batched commits (POST /v1/batch, 200 items per request, each with its key and delegated
// token, 8 requests in flight or BENCH_BATCH_CONCURRENCY) are the worker's path.

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 5000);
const BACKENDS = (process.env.BENCH_BACKENDS ?? 'pglite,postgres').split(',');
const CONCURRENCY = 16;
const BATCH_SIZE = 200;
const BATCH_CONCURRENCY = Number(process.env.BENCH_BATCH_CONCURRENCY ?? 8);
const POSTGRES_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

async function pool(n: number, concurrency: number, work: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) await work(next++);
    }),
  );
  return Number(process.hrtime.bigint() - started) / 1e9;
}

function reachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect({ host: u.hostname, port: Number(u.port || 5432) });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true)).once('error', () => done(false));
  });
}

/** Synthetic patients, unique by name and identifier so none is a duplicate of another. */
function patient(i: number, run: string): Record<string, unknown> {
  return {
    id: `pat_${uuidv7()}`,
    givenName: `Bench${run}`,
    familyName: `N${i}`,
    birthDate: '1990-01-01',
    sex: 'unknown',
    identifiers: [{ system: 'bench', value: `${run}-${i}` }],
    facility: 'bench-hc',
  };
}

async function rawInsertRate(db: Database): Promise<number> {
  await db.exec('CREATE TABLE IF NOT EXISTS bench_raw (id text PRIMARY KEY, tenant text NOT NULL, data jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())');
  const run = randomBytes(4).toString('hex');
  const payload = JSON.stringify(patient(0, run));
  const seconds = await pool(REQUESTS, CONCURRENCY, async (i) => {
    await db.query('INSERT INTO bench_raw (id, tenant, data) VALUES ($1, $2, $3)', [`${run}-${i}`, 'north', payload]);
  });
  return REQUESTS / seconds;
}

async function measure(report: Report, label: string, db: Database): Promise<void> {
  const key = await generateSigningKey();
  const issuer = 'ferry-bench';
  const tokens = createTokenIssuer({ key, issuer });
  const token = await tokens.mintAccess({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['registrar'], sid: 'bench' });
  const service = await startRegistrationService({ db, verifier: createTokenVerifier({ jwks: jwksOf([key]), issuer }), natsUrl: null, licensedTenants: ['north'] });
  try {
    const run = randomBytes(4).toString('hex');
    const post = async (body: Record<string, unknown>, idempotencyKey: string, expected: number) => {
      const res = await fetch(`${service.url}/v1/patients`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': idempotencyKey },
        body: JSON.stringify(body),
      });
      await res.arrayBuffer();
      if (res.status !== expected) throw new Error(`expected ${expected}, got ${res.status}`);
    };
    // Warm-up: JIT, token verification, the connection pool.
    for (let i = 0; i < 50; i++) await post(patient(i, `${run}w`), uuidv7(), 201);

    const raw = await rawInsertRate(db);
    const rawName = `${label}: raw single-row INSERT, autocommit`;
    report.figure(rawName, raw, 'rows/s', { note: `c=${CONCURRENCY}, n=${REQUESTS}` });

    const bodies = Array.from({ length: REQUESTS }, (_, i) => patient(i, run));
    const keys = bodies.map(() => uuidv7());
    const committed = await pool(REQUESTS, CONCURRENCY, (i) => post(bodies[i]!, keys[i]!, 201));
    report.figure(`${label}: registrations committed over HTTP (Idempotency-Key)`, REQUESTS / committed, 'req/s', { baseline: rawName });

    const replayed = await pool(REQUESTS, CONCURRENCY, (i) => post(bodies[i]!, keys[i]!, 201));
    report.figure(`${label}: replayed-key responses over HTTP`, REQUESTS / replayed, 'req/s', { baseline: rawName });

    // As the worker sends them: items of BATCH_SIZE, each with its key and its user's delegated token.
    const itemToken = `Bearer ${await tokens.mintDelegated({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['registrar'] })}`;
    const batchBodies = Array.from({ length: REQUESTS }, (_, i) => patient(i, `${run}b`));
    const batches = Array.from({ length: Math.ceil(REQUESTS / BATCH_SIZE) }, (_, b) =>
      JSON.stringify({
        items: batchBodies.slice(b * BATCH_SIZE, (b + 1) * BATCH_SIZE).map((body) => ({ method: 'POST', path: '/v1/patients', idempotencyKey: uuidv7(), authorization: itemToken, body })),
      }),
    );
    const postBatch = async (b: number, expected: number) => {
      const res = await fetch(`${service.url}/v1/batch`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: batches[b]! });
      const answer = (await res.json()) as { items: { status: number }[] };
      if (res.status !== 200 || answer.items.some((a) => a.status !== expected)) throw new Error(`batch: expected every item ${expected}`);
    };
    const batched = await pool(batches.length, BATCH_CONCURRENCY, (b) => postBatch(b, 201));
    report.figure(`${label}: registrations committed over HTTP in batches of ${BATCH_SIZE} (POST /v1/batch)`, REQUESTS / batched, 'commits/s', {
      baseline: rawName,
      note: `${BATCH_CONCURRENCY} batches in flight`,
    });
    const batchReplayed = await pool(batches.length, BATCH_CONCURRENCY, (b) => postBatch(b, 201));
    report.figure(`${label}: replayed items over HTTP in batches of ${BATCH_SIZE}`, REQUESTS / batchReplayed, 'items/s', { baseline: rawName });
  } finally {
    await service.close();
  }
}

export default async function registrationBench(report: Report): Promise<void> {
  report.note(`concurrency ${CONCURRENCY}, ${REQUESTS} requests per figure; each registration is one transaction (row, identifiers, idempotency record, outbox, audit)`);
  if (BACKENDS.includes('pglite')) {
    const lite = await openRegistrationDatabase({});
    try {
      await measure(report, 'PGlite', lite);
    } finally {
      await lite.close();
    }
  }
  if (!BACKENDS.includes('postgres')) return;
  if (!(await reachable(POSTGRES_URL))) {
    report.note('PostgreSQL not reachable: its figures were skipped');
    return;
  }
  const schema = `bench_${randomBytes(5).toString('hex')}`;
  const db = await openRegistrationDatabase({ url: POSTGRES_URL, schema, max: CONCURRENCY });
  try {
    await measure(report, 'PostgreSQL', db);
  } finally {
    await db.close();
    const admin = new pg.Client({ connectionString: POSTGRES_URL });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
}
