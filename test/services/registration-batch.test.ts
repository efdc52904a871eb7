import { expect } from 'chai';
import pg from 'pg';
import { createRegistrationApp } from '../../services/registration/app.ts';
import { createLicensing } from '../../services/registration/licensing.ts';
import { cachingVerifier, createTokenIssuer, createTokenVerifier } from '../../identity/tokens.ts';
import { generateSigningKey, jwksOf } from '../../identity/keys.ts';
import type { Database, Queryable } from '../../sql/database.ts';
import { listen, type Listening } from '../support/http.ts';
import { requirePostgres, TEST_DATABASE_URL } from '../support/services.ts';
import {
  BACKENDS,
  callBatch,
  LICENSED,
  makeIdentity,
  newKey,
  newPatientId,
  openBackend,
  seededRandom,
  syntheticPatient,
  USERS,
  type Backend,
  type BatchItem,
  type BatchItemReply,
  type Identity,
  type OpenedDb,
  type User,
} from './registration-fixture.ts';

// POST /v1/batch against PGlite and PostgreSQL: per-item idempotency, callers and dependencies,
// one transaction per batch, and answers equal to the same items sent one by one.

const FIXED_NOW = new Date('2026-06-01T08:00:00.000Z');

interface Harness {
  opened: OpenedDb;
  db: Database;
  server: Listening;
  close(): Promise<void>;
}

/** A service on a fresh database; `failOn` makes the mutation transaction throw on a matching statement. */
async function harness(backend: Backend, identity: Identity, opts: { now?: () => Date; failOn?: () => RegExp | null; onStatement?: () => void } = {}): Promise<Harness> {
  const opened = await openBackend(backend, 'reg_batch');
  const licensing = createLicensing(opened.db);
  for (const t of LICENSED) await licensing.license(t);
  const wrapTransaction = (tx: Queryable): Queryable => ({
    exec: (sql) => tx.exec(sql),
    async query(sql, params) {
      opts.onStatement?.();
      const fail = opts.failOn?.();
      if (fail && fail.test(sql)) throw new Error('injected failure inside the transaction');
      return tx.query(sql, params);
    },
  });
  const app = createRegistrationApp({ db: opened.db, verifier: identity.verifier, licensing, wrapTransaction, ...(opts.now ? { now: opts.now } : {}) });
  const server = await listen(app);
  return {
    opened,
    db: opened.db,
    server,
    async close() {
      await server.close();
      await opened.close();
    },
  };
}

const count = async (db: Database, sql: string, params: unknown[]) => Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${sql}`, params)).rows[0]!.n);

for (const backend of BACKENDS) {
  describe(`registration batch route (${backend})`, function () {
    this.timeout(120_000);
    let identity: Identity;
    let h: Harness;
    let failOn: RegExp | null = null;
    let statements = 0;
    const tokens = new Map<User, string>();
    const as = (u: User) => tokens.get(u)!;
    const bearer = (u: User) => `Bearer ${as(u)}`;
    const create = (body: Record<string, unknown>, extra: Partial<BatchItem> = {}): BatchItem => ({ method: 'POST', path: '/v1/patients', idempotencyKey: newKey(), body, ...extra });
    const update = (id: string, version: number, body: Record<string, unknown>, extra: Partial<BatchItem> = {}): BatchItem => ({
      method: 'PUT',
      path: `/v1/patients/${id}`,
      idempotencyKey: newKey(),
      ifMatch: `"${version}"`,
      body,
      ...extra,
    });
    const batch = (items: readonly BatchItem[] | unknown, token: string | undefined = as(USERS.ada)) => callBatch(h.server.url, token, items);

    before(async function () {
      if (backend === 'postgres') await requirePostgres(this);
      identity = await makeIdentity();
      h = await harness(backend, identity, { failOn: () => failOn, onStatement: () => statements++ });
      for (const u of Object.values(USERS)) tokens.set(u, await identity.token(u));
    });
    after(async () => {
      await h?.close();
    });
    afterEach(() => {
      failOn = null;
    });

    describe('envelope', () => {
      it('401 for a bad outer token, 400 for a malformed envelope, 413 above 500 items; nothing is run', async () => {
        expect((await batch([create(syntheticPatient())], 'not-a-jwt')).status).to.equal(401);
        for (const items of [null, 'x', [null], [{ method: 'GET', path: '/v1/patients' }], [{ method: 'POST', path: '/v1/patients', body: {}, extra: 1 }], [create(syntheticPatient(), { requires: 0 })]]) {
          const r = await batch(items);
          expect(r.status, JSON.stringify(items)).to.equal(400);
          expect(r.body.code).to.equal('MALFORMED_REQUEST');
        }
        const tooMany = await batch(Array.from({ length: 501 }, () => create({})));
        expect(tooMany.status).to.equal(413);
        expect(tooMany.body.code).to.equal('PAYLOAD_TOO_LARGE');
        expect((await batch([])).body).to.deep.equal({ items: [] });
      });

      it('per item: a path that is not a mutating route is 404, a body over 64 KB is 413, a missing body 400; neighbours commit', async () => {
        const key = newKey();
        const r = await batch([
          { method: 'POST', path: '/v1/patients/pat_x', idempotencyKey: key, body: syntheticPatient() },
          { method: 'PUT', path: '/v1/patients', body: syntheticPatient() },
          create(syntheticPatient({ givenName: 'x'.repeat(70_000) })),
          { method: 'POST', path: '/v1/patients', idempotencyKey: newKey() },
          create(syntheticPatient()),
        ]);
        expect(r.status).to.equal(200);
        expect(r.items.map((i) => i.status)).to.deep.equal([404, 404, 413, 400, 201]);
        expect(r.items.map((i) => i.body.code)).to.deep.equal(['NOT_FOUND', 'NOT_FOUND', 'PAYLOAD_TOO_LARGE', 'MALFORMED_REQUEST', undefined]);
        expect(await count(h.db, 'idempotency_keys WHERE key = $1', [key])).to.equal(0);
      });
    });

    describe('one transaction, set-based', () => {
      it('the number of statements in the transaction does not grow with the batch', async () => {
        const counted = async (n: number) => {
          const made = await batch(Array.from({ length: n }, () => create(syntheticPatient())));
          const ids = made.items.map((i) => String(i.body.id));
          statements = 0;
          const r = await batch([...ids.map((id) => update(id, 1, syntheticPatient())), ...Array.from({ length: n }, () => create(syntheticPatient({ confirmNotDuplicate: { reason: 'checked' } })))]);
          expect(r.items.every((i) => i.status < 300)).to.equal(true);
          return statements;
        };
        const small = await counted(2);
        expect(small).to.be.within(1, 14);
        expect(await counted(60)).to.equal(small);
      });
    });

    describe('idempotency per item', () => {
      it('one key twice in a batch: same body → the second replays the first; different body → 422 reused', async () => {
        const key = newKey();
        const body = syntheticPatient({ id: newPatientId() });
        const r = await batch([create(body, { idempotencyKey: key }), create(body, { idempotencyKey: key }), create(syntheticPatient(), { idempotencyKey: key })]);
        expect(r.items.map((i) => i.status)).to.deep.equal([201, 201, 422]);
        expect(r.items[1]!.text).to.equal(r.items[0]!.text);
        expect(r.items[0]!.headers).to.deep.equal({ etag: '"1"', location: `/v1/patients/${body.id}` });
        expect(r.items[1]!.headers).to.deep.equal({ etag: '"1"', location: `/v1/patients/${body.id}`, 'idempotent-replayed': 'true' });
        expect(r.items[2]!.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
        expect(await count(h.db, 'patients WHERE id = $1', [body.id])).to.equal(1);
        expect(await count(h.db, `outbox WHERE payload->>'patientId' = $1`, [body.id])).to.equal(1);
      });

      it('a whole batch replayed after commit answers each item its first answer, byte for byte, idempotent-replayed', async () => {
        const id = newPatientId();
        const items = [
          create(syntheticPatient({ id })),
          update(id, 1, syntheticPatient()),
          update(id, 1, syntheticPatient()), // stale now: a stored 409
          create(syntheticPatient(), { authorization: bearer(USERS.dee) }), // forbidden: a stored 403
        ];
        const first = await batch(items);
        expect(first.items.map((i) => i.status)).to.deep.equal([201, 200, 409, 403]);
        const again = await batch(items);
        for (const [n, a] of again.items.entries()) {
          expect(a.status).to.equal(first.items[n]!.status);
          expect(a.text).to.equal(first.items[n]!.text);
          expect(a.headers['idempotent-replayed']).to.equal('true');
        }
        expect(again.items[1]!.headers.etag).to.equal('"2"');
        expect(await count(h.db, `outbox WHERE payload->>'patientId' = $1`, [id])).to.equal(2);
      });

      it('a batch that fails mid-transaction leaves nothing; its replay commits once, one event per item', async () => {
        const ids = [newPatientId(), newPatientId(), newPatientId()];
        const items = [...ids.map((id) => create(syntheticPatient({ id }))), update(ids[0]!, 1, syntheticPatient(), { requires: 0 })];
        for (const statement of [/INSERT INTO patient_identifiers/, /INSERT INTO idempotency_keys/]) {
          failOn = statement;
          const crashed = await batch(items);
          expect(crashed.status).to.equal(500);
          expect(crashed.body.code).to.equal('INTERNAL');
          failOn = null;
          expect(await count(h.db, 'patients WHERE id = ANY($1)', [ids])).to.equal(0);
          expect(await count(h.db, `outbox WHERE payload->>'patientId' = ANY($1)`, [ids])).to.equal(0);
          expect(await count(h.db, 'audit_log WHERE patient_id = ANY($1)', [ids])).to.equal(0);
          expect(await count(h.db, 'idempotency_keys WHERE key = ANY($1)', [items.map((i) => i.idempotencyKey)])).to.equal(0);
        }
        const replay = await batch(items);
        expect(replay.items.map((i) => [i.status, i.headers['idempotent-replayed']])).to.deep.equal([
          [201, undefined],
          [201, undefined],
          [201, undefined],
          [200, undefined],
        ]);
        const again = await batch(items);
        expect(again.items.every((i) => i.headers['idempotent-replayed'] === 'true')).to.equal(true);
        const events = await h.db.query<{ id: string; version: number; subject: string }>(
          `SELECT payload->>'patientId' AS id, (payload->>'version')::int AS version, subject FROM outbox WHERE payload->>'patientId' = ANY($1) ORDER BY seq`,
          [ids],
        );
        expect(events.rows).to.deep.equal([
          { id: ids[0], version: 1, subject: 'REGISTRATION.patient.created' },
          { id: ids[1], version: 1, subject: 'REGISTRATION.patient.created' },
          { id: ids[2], version: 1, subject: 'REGISTRATION.patient.created' },
          { id: ids[0], version: 2, subject: 'REGISTRATION.patient.updated' },
        ]);
        expect(await count(h.db, 'patients WHERE id = ANY($1)', [ids])).to.equal(3);
      });

      if (backend === 'postgres') {
        it('an item whose key is in flight elsewhere is 409 IDEMPOTENCY_IN_PROGRESS, not stored; its neighbours commit', async () => {
          const held = newKey();
          const schema = (await h.db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]!.s;
          const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
          await client.connect();
          try {
            await client.query('BEGIN');
            await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`idem:north:${held}`]);
            const body = syntheticPatient();
            const r = await batch([create(syntheticPatient()), create(body, { idempotencyKey: held }), create(syntheticPatient())]);
            expect(r.items.map((i) => i.status)).to.deep.equal([201, 409, 201]);
            expect(r.items[1]!.body.code).to.equal('IDEMPOTENCY_IN_PROGRESS');
            expect(await count(h.db, 'idempotency_keys WHERE key = $1', [held])).to.equal(0);
            await client.query('COMMIT');
            const later = await batch([create(body, { idempotencyKey: held })]);
            expect(later.items[0]!.status).to.equal(201);
          } finally {
            await client.end();
          }
        });

        it('concurrent batches creating the same people under different keys: each person once, the rest DUPLICATE_DETECTED', async () => {
          const people = Array.from({ length: 8 }, () => syntheticPatient({ identifiers: [] }));
          const replies = await Promise.all(Array.from({ length: 4 }, () => batch(people.map((p) => create(p)))));
          for (let n = 0; n < people.length; n++) {
            const statuses = replies.map((r) => r.items[n]!.status).sort();
            expect(statuses).to.deep.equal([201, 409, 409, 409]);
          }
          for (const r of replies) for (const i of r.items.filter((x) => x.status === 409)) expect(i.body.code).to.equal('DUPLICATE_DETECTED');
        });

        it('concurrent batches racing on one id or one identifier: one 201 each, the rest a stored 409 (the loser reruns)', async () => {
          const ids = Array.from({ length: 5 }, () => newPatientId());
          const identifiers = ids.map(() => [{ system: 'national-id', value: `RACE-${newKey().slice(-12)}` }]);
          const confirmNotDuplicate = { reason: 'checked in person' };
          const replies = await Promise.all(
            Array.from({ length: 4 }, () =>
              batch([...ids.map((id) => create(syntheticPatient({ id }))), ...identifiers.map((i) => create(syntheticPatient({ identifiers: i, confirmNotDuplicate })))]),
            ),
          );
          for (let n = 0; n < 10; n++) {
            expect(replies.map((r) => r.items[n]!.status).sort()).to.deep.equal([201, 409, 409, 409]);
            for (const r of replies) if (r.items[n]!.status === 409) expect(r.items[n]!.body.code).to.equal(n < 5 ? 'ID_CONFLICT' : 'IDENTIFIER_CONFLICT');
          }
        });

        it('concurrent batches updating the same patients in different orders: one 200 per patient, the rest VERSION_CONFLICT, no deadlock', async () => {
          const made = await batch(Array.from({ length: 10 }, () => create(syntheticPatient())));
          const ids = made.items.map((i) => String(i.body.id));
          const orders = [ids, [...ids].reverse(), [...ids.slice(5), ...ids.slice(0, 5)], [...ids].sort()];
          const replies = await Promise.all(orders.map((order) => batch(order.map((id) => update(id, 1, syntheticPatient())))));
          for (const id of ids) {
            const answers = replies.map((r, b) => r.items[orders[b]!.indexOf(id)]!);
            expect(answers.map((a) => a.status).sort()).to.deep.equal([200, 409, 409, 409]);
          }
          expect(await count(h.db, `outbox WHERE payload->>'patientId' = ANY($1) AND subject = 'REGISTRATION.patient.updated'`, [ids])).to.equal(10);
        });
      }
    });

    describe('callers and dependencies', () => {
      it('each item acts as its own caller: bad token 401, other tenant 403 TENANT_MISMATCH, neither stored; viewer 403 stored', async () => {
        const keys = [newKey(), newKey(), newKey()];
        const bodies = [syntheticPatient(), syntheticPatient(), syntheticPatient()];
        const r = await batch([
          create(bodies[0]!, { idempotencyKey: keys[0]!, authorization: `Bearer ${await identity.foreignToken(USERS.ben)}` }),
          create(bodies[1]!, { idempotencyKey: keys[1]!, authorization: bearer(USERS.cySouth) }),
          create(bodies[2]!, { idempotencyKey: keys[2]!, authorization: `Bearer ${await identity.delegated(USERS.dee)}` }),
          create(syntheticPatient(), { authorization: 'Basic abc' }),
          create(syntheticPatient(), { authorization: `Bearer ${await identity.delegated(USERS.ben)}` }),
        ]);
        expect(r.items.map((i) => [i.status, i.body.code])).to.deep.equal([
          [401, 'UNAUTHENTICATED'],
          [403, 'TENANT_MISMATCH'],
          [403, 'FORBIDDEN'],
          [401, 'UNAUTHENTICATED'],
          [201, undefined],
        ]);
        const audit = await h.db.query<{ acting_user: string; actor: string }>('SELECT acting_user, actor FROM audit_log WHERE patient_id = $1', [r.items[4]!.body.id]);
        expect(audit.rows).to.deep.equal([{ acting_user: 'ben', actor: 'ferry-worker' }]);
        expect(await count(h.db, 'idempotency_keys WHERE key = ANY($1)', [keys])).to.equal(1);
        const fixed = await batch([create(bodies[0]!, { idempotencyKey: keys[0]!, authorization: bearer(USERS.ben) }), create(bodies[1]!, { idempotencyKey: keys[1]! })]);
        expect(fixed.items.map((i) => i.status)).to.deep.equal([201, 201]);
        expect(await count(h.db, `patients WHERE tenant = 'south' AND given_key = lower($1)`, [bodies[1]!.givenName])).to.equal(0);
      });

      it('requires: an update after a failed create is skipped and not stored; the same key later runs normally', async () => {
        const id = newPatientId();
        const updateKey = newKey();
        const r = await batch([create(syntheticPatient({ id, birthDate: 'not-a-date' })), update(id, 1, syntheticPatient(), { idempotencyKey: updateKey, requires: 0, correlationId: '0190a0b0-5a1e-7000-8000-00000000c0de' })]);
        expect(r.items[0]!.status).to.equal(422);
        expect(r.items[1]).to.deep.include({ status: 422, skipped: true, headers: {} });
        expect(r.items[1]!.body).to.deep.equal({ code: 'DEPENDENCY_FAILED', message: 'An earlier mutation on this entity did not commit.', correlationId: '0190a0b0-5a1e-7000-8000-00000000c0de' });
        expect(await count(h.db, 'idempotency_keys WHERE key = $1', [updateKey])).to.equal(0);
        const later = await batch([create(syntheticPatient({ id })), update(id, 1, syntheticPatient(), { idempotencyKey: updateKey, requires: 0 })]);
        expect(later.items.map((i) => i.status)).to.deep.equal([201, 200]);
        expect(later.items[1]!.body.version).to.equal(2);
        expect(later.items[1]!.skipped).to.equal(undefined);
      });

      it('in-batch effects: a duplicate of an earlier create, an identifier an earlier item took, an update freeing one', async () => {
        const a = syntheticPatient({ id: newPatientId() });
        const ident = [{ system: 'national-id', value: `NI-${newKey().slice(-10)}` }];
        const withIdent = syntheticPatient({ id: newPatientId(), identifiers: ident });
        const r = await batch([
          create(a),
          create({ ...a, id: newPatientId(), identifiers: [] }), // same name, birth date, sex
          create(withIdent),
          create(syntheticPatient({ identifiers: ident, confirmNotDuplicate: { reason: 'seen in person' } })),
          update(String(withIdent.id), 1, { ...withIdent, id: undefined, identifiers: [] }),
          create(syntheticPatient({ id: newPatientId(), identifiers: ident, confirmNotDuplicate: { reason: 'seen in person' } })),
          create(syntheticPatient({ id: a.id })),
        ]);
        expect(r.items.map((i) => [i.status, i.body.code])).to.deep.equal([
          [201, undefined],
          [409, 'DUPLICATE_DETECTED'],
          [201, undefined],
          [409, 'IDENTIFIER_CONFLICT'],
          [200, undefined],
          [201, undefined],
          [409, 'ID_CONFLICT'],
        ]);
        expect(r.items[1]!.body.candidates).to.deep.equal([a.id]);
      });
    });

    describe('the same answers as sequential single calls', () => {
      for (const seed of [7, 2026]) {
        it(`generated sequence (seed ${seed}): every answer and the final database equal the items sent one by one`, async () => {
          const users: User[] = [USERS.ada, USERS.ada, USERS.ada, USERS.ben, USERS.dee];
          const items = generate(seed, 90, (u) => bearer(u), users);
          const split = 1 + Math.floor(seededRandom(seed + 1)() * (items.length - 2));
          // A dependency is only expressible inside one batch.
          for (const [n, item] of items.entries()) if (item.requires !== undefined && n >= split && item.requires < split) delete item.requires;

          const sequential = await harness(backend, identity, { now: () => FIXED_NOW });
          const batched = await harness(backend, identity, { now: () => FIXED_NOW });
          try {
            const one = await sendOneByOne(sequential.server.url, items);
            const first = await callBatch(batched.server.url, as(USERS.ada), items.slice(0, split));
            const rest = await callBatch(batched.server.url, as(USERS.ada), items.slice(split).map((i) => (i.requires === undefined ? i : { ...i, requires: i.requires - split })));
            const many = [...first.items, ...rest.items];
            expect(many).to.have.length(items.length);
            const statuses = new Set(one.map((a) => `${a.status}:${String(a.body.code ?? '')}`));
            // The sequence exercises the interesting outcomes, not just 201s.
            for (const want of ['201:', '200:', '409:DUPLICATE_DETECTED', '409:VERSION_CONFLICT', '403:FORBIDDEN', '422:IDEMPOTENCY_KEY_REUSED', '404:NOT_FOUND']) expect([...statuses]).to.include(want);
            for (const [n, a] of one.entries()) {
              const b = many[n]!;
              const what = `item ${n}: ${JSON.stringify(items[n]).slice(0, 200)}`;
              expect(b.status, what).to.equal(a.status);
              expect(b.text, what).to.equal(a.text);
              expect(b.headers, what).to.deep.equal(a.headers);
              expect(b.skipped, what).to.equal(a.skipped);
            }
            expect(await snapshot(batched.db)).to.deep.equal(await snapshot(sequential.db));
          } finally {
            await sequential.close();
            await batched.close();
          }
        });
      }
    });

    describe('token verification', () => {
      it('a batch of one user\'s items verifies their token once; an expired cached token is still refused', async () => {
        const key = await generateSigningKey();
        const issuer = 'ferry-cache-test';
        const base = createTokenVerifier({ jwks: jwksOf([key]), issuer, clockToleranceSeconds: 0 });
        let verified = 0;
        const verify = cachingVerifier(async (t) => {
          verified++;
          return base(t);
        });
        const token = await createTokenIssuer({ key, issuer, accessTtlSeconds: 1 }).mintAccess({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['registrar'], sid: 's' });
        const claims = await Promise.all(Array.from({ length: 50 }, () => verify(token)));
        expect(verified).to.equal(1);
        expect(claims.every((c) => c.owner === 'ada')).to.equal(true);
        await new Promise((r) => setTimeout(r, (claims[0]!.exp * 1000 - Date.now()) + 50));
        const refused = await verify(token).then(
          () => false,
          () => true,
        );
        expect(refused).to.equal(true);
        expect(verified).to.equal(2);
        // A failure is not remembered either: every bad token is verified and refused.
        for (let i = 0; i < 2; i++) expect(await verify('not-a-jwt').then(() => false, () => true)).to.equal(true);
        expect(verified).to.equal(4);
      });
    });
  });
}

/** Items sent one after another to the single routes, answered as the batch answers them. */
async function sendOneByOne(base: string, items: readonly BatchItem[]): Promise<BatchItemReply[]> {
  const answers: BatchItemReply[] = [];
  for (const item of items) {
    const dependency = item.requires === undefined ? null : answers[item.requires]!;
    if (dependency && !(dependency.status >= 200 && dependency.status < 300)) {
      const body = { code: 'DEPENDENCY_FAILED', message: 'An earlier mutation on this entity did not commit.', correlationId: item.correlationId };
      answers.push({ status: 422, headers: {}, body, skipped: true, text: JSON.stringify(body) });
      continue;
    }
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (item.authorization) headers.authorization = item.authorization;
    if (item.idempotencyKey) headers['idempotency-key'] = item.idempotencyKey;
    if (item.ifMatch) headers['if-match'] = item.ifMatch;
    if (item.correlationId) headers['x-correlation-id'] = item.correlationId;
    const res = await fetch(`${base}${item.path}`, { method: item.method, headers, body: JSON.stringify(item.body) });
    const text = await res.text();
    const got: Record<string, string> = {};
    for (const name of ['etag', 'location', 'idempotent-replayed']) {
      const v = res.headers.get(name);
      if (v !== null) got[name] = v;
    }
    answers.push({ status: res.status, headers: got, body: JSON.parse(text) as Record<string, unknown>, text });
  }
  return answers;
}

/** Everything a mutation leaves behind, minus what is random per run (event and audit ids). */
async function snapshot(db: Database) {
  const q = async (sql: string) => (await db.query(sql)).rows;
  return {
    patients: await q('SELECT id, tenant, version, data::text AS data, name_key, birth_date, sex, duplicate_override_reason, created_by, updated_by, created_at, updated_at FROM patients ORDER BY id'),
    identifiers: await q('SELECT tenant, system, value_key, patient_id FROM patient_identifiers ORDER BY tenant, system, value_key'),
    keys: await q('SELECT tenant, key, fingerprint, status, body, expires_at FROM idempotency_keys ORDER BY tenant, key'),
    events: await q(`SELECT subject, payload - 'eventId' AS payload FROM outbox ORDER BY seq`),
    audit: await q(`SELECT tenant, action, patient_id, version, acting_user, actor, correlation_id, details - 'eventId' AS details, at FROM audit_log ORDER BY patient_id, version, action`),
  };
}

/**
 * A fixed-seed sequence over a small world: few names and identifiers, so duplicates, identifier
 * clashes, stale versions, reused keys, forbidden callers and skipped dependencies all occur.
 */
function generate(seed: number, n: number, bearerOf: (u: User) => string, users: User[]): BatchItem[] {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const hex = (len: number) => Array.from({ length: len }, () => '0123456789abcdef'[Math.floor(rnd() * 16)]).join('');
  const patientId = () => `pat_${hex(8)}-${hex(4)}-7${hex(3)}-8${hex(3)}-${hex(12)}`;
  const names = [
    ['Abena', 'Kora'],
    ['Kora', 'Abena'],
    ['Lemi', 'Tsadu'],
    ['Nuri', 'Ojo'],
    ['Pavo', 'Quil'],
  ] as const;
  const identifierValues = ['NI-A1', 'NI-B2', 'ni b2', 'NI-C3', 'NI-D4'];
  const body = () => {
    const [givenName, familyName] = pick(names);
    const p: Record<string, unknown> = { givenName, familyName, birthDate: pick(['1990-04-12', '1985-01-30']), sex: pick(['female', 'male']), facility: 'north-hc-1' };
    if (rnd() < 0.5) p.identifiers = [{ system: 'national-id', value: pick(identifierValues) }];
    if (rnd() < 0.3) p.address = { country: 'NG', city: 'Testville', line: `${Math.floor(rnd() * 9)} Test Rd` };
    if (rnd() < 0.04) p.birthDate = 'not-a-date';
    return p;
  };
  const ids: string[] = [];
  const items: BatchItem[] = [];
  for (let i = 0; i < n; i++) {
    const user = pick(users);
    const base = { correlationId: `00000000-${String(seed % 10000).padStart(4, '0')}-4000-8000-${String(i).padStart(12, '0')}`, authorization: bearerOf(user) };
    const r = rnd();
    let item: BatchItem;
    if (r < 0.12 && items.length > 0) {
      // An earlier key again: the same request (a replay) or another body (reused).
      const earlier = pick(items);
      item = rnd() < 0.5 ? { ...earlier, correlationId: base.correlationId } : { ...earlier, body: body(), correlationId: base.correlationId };
      delete item.requires;
    } else if (r < 0.5 || ids.length === 0) {
      const id = rnd() < 0.1 && ids.length > 0 ? pick(ids) : patientId();
      const b = body();
      b.id = id;
      if (rnd() < 0.2) b.confirmNotDuplicate = { reason: 'checked in person' };
      ids.push(id);
      item = { method: 'POST', path: '/v1/patients', body: b, ...base };
    } else {
      const id = rnd() < 0.1 ? patientId() : pick(ids);
      const b = body();
      item = { method: 'PUT', path: `/v1/patients/${id}`, body: b, ...base };
      const v = rnd();
      if (v < 0.05) {
        // no precondition: 428, answered but not stored
      } else if (v < 0.2) b.baseVersion = 1 + Math.floor(rnd() * 3);
      else item.ifMatch = `"${1 + Math.floor(rnd() * 3)}"`;
      if (rnd() < 0.3) {
        const creator = items.findIndex((x) => x.method === 'POST' && (x.body as { id?: string }).id === id);
        if (creator >= 0) item.requires = creator;
      }
    }
    if (item.idempotencyKey === undefined && rnd() < 0.9) item.idempotencyKey = `key-${seed}-${i}`;
    items.push(item);
  }
  return items;
}
