import { expect } from 'chai';
import pg from 'pg';
import { createRegistrationApp } from '../../services/registration/app.ts';
import { createLicensing } from '../../services/registration/licensing.ts';
import { purgeExpiredIdempotencyKeys, runIdempotent } from '../../services/registration/idempotency/store.ts';
import type { Database } from '../../sql/database.ts';
import { FerryError } from '../../validators/codes.ts';
import { listen, type Listening } from '../support/http.ts';
import { requirePostgres, TEST_DATABASE_URL } from '../support/services.ts';
import {
  BACKENDS,
  call,
  callUntilSettled,
  LICENSED,
  makeIdentity,
  newKey,
  newPatientId,
  openBackend,
  syntheticPatient,
  USERS,
  type Identity,
  type OpenedDb,
  type User,
} from './registration-fixture.ts';

// The registration routes over HTTP, in-process, against both PGlite and real PostgreSQL.

for (const backend of BACKENDS) {
  describe(`registration service over HTTP (${backend})`, function () {
    this.timeout(60_000);
    let opened: OpenedDb;
    let db: Database;
    let identity: Identity;
    let server: Listening;
    let clock: Date | null = null;
    let base: string;
    const tokens = new Map<User, string>();
    const as = (u: User) => tokens.get(u)!;

    before(async function () {
      if (backend === 'postgres') await requirePostgres(this);
      opened = await openBackend(backend, 'reg_http');
      db = opened.db;
      identity = await makeIdentity();
      const licensing = createLicensing(db);
      for (const t of LICENSED) await licensing.license(t);
      const app = createRegistrationApp({ db, verifier: identity.verifier, licensing, now: () => clock ?? new Date(), idempotencyRetentionMs: 3600_000 });
      server = await listen(app);
      base = server.url;
      for (const u of Object.values(USERS)) tokens.set(u, await identity.token(u));
    });
    after(async () => {
      await server?.close();
      await opened?.close();
    });
    afterEach(() => {
      clock = null;
    });

    const create = (u: User, body: Record<string, unknown>, key: string | undefined = newKey()) =>
      call(base, 'POST', '/v1/patients', { token: as(u), body, ...(key ? { key } : {}) });
    const count = async (sql: string, params: unknown[]) => Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${sql}`, params)).rows[0]!.n);

    describe('authentication and authorisation', () => {
      it('401 without a token, with a malformed one, or with one signed by an unknown key', async () => {
        for (const token of [undefined, 'not-a-jwt', await identity.foreignToken(USERS.ada)]) {
          const r = await call(base, 'POST', '/v1/patients', { token, key: newKey(), body: syntheticPatient() });
          expect(r.status).to.equal(401);
          expect(r.body).to.include({ code: 'UNAUTHENTICATED' });
          expect(r.body.correlationId).to.be.a('string');
          expect(r.headers.get('www-authenticate')).to.match(/^Bearer/);
        }
        expect((await call(base, 'GET', `/v1/patients/${newPatientId()}`)).status).to.equal(401);
      });

      it('a 401 is not stored: the same key works once the token is fixed', async () => {
        const key = newKey();
        const body = syntheticPatient();
        expect((await call(base, 'POST', '/v1/patients', { token: 'x', key, body })).status).to.equal(401);
        expect((await create(USERS.ada, body, key)).status).to.equal(201);
      });

      it('a viewer may read but not write; FORBIDDEN is stored under the key', async () => {
        const key = newKey();
        const body = syntheticPatient();
        const first = await create(USERS.dee, body, key);
        expect(first.status).to.equal(403);
        expect(first.body.code).to.equal('FORBIDDEN');
        const again = await create(USERS.dee, body, key);
        expect(again.status).to.equal(403);
        expect(again.text).to.equal(first.text);
        expect(again.headers.get('idempotent-replayed')).to.equal('true');

        const made = await create(USERS.ada, syntheticPatient());
        for (const reader of [USERS.dee, USERS.admin, USERS.ada]) expect((await call(base, 'GET', `/v1/patients/${made.body.id}`, { token: as(reader) })).status).to.equal(200);
        expect((await call(base, 'GET', `/v1/patients/${made.body.id}`, { token: as(USERS.ops) })).status).to.equal(403);
        const put = await call(base, 'PUT', `/v1/patients/${made.body.id}`, { token: as(USERS.dee), key: newKey(), ifMatch: '"1"', body: syntheticPatient() });
        expect(put.status).to.equal(403);
      });

      it('a tenant without the module gets MODULE_NOT_LICENSED, stored under the key', async () => {
        const key = newKey();
        const body = syntheticPatient();
        const first = await create(USERS.cyEast, body, key);
        expect(first.status).to.equal(403);
        expect(first.body.code).to.equal('MODULE_NOT_LICENSED');
        const again = await create(USERS.cyEast, body, key);
        expect(again.headers.get('idempotent-replayed')).to.equal('true');
        expect((await call(base, 'GET', '/v1/patients?name=ab', { token: as(USERS.cyEast) })).body.code).to.equal('MODULE_NOT_LICENSED');
        expect(await count('patients WHERE tenant = $1', ['east'])).to.equal(0);
      });

      it('licensing is the service\'s own table: license is idempotent, revoke takes effect at once', async () => {
        const licensing = createLicensing(db);
        await licensing.license('west');
        await licensing.license('west');
        expect(await licensing.list()).to.include.members(['north', 'south', 'west']);
        expect(await licensing.isLicensed('west')).to.equal(true);
        await licensing.revoke('west');
        expect(await licensing.isLicensed('west')).to.equal(false);
        let refused = false;
        await licensing.license('Not A Tenant').catch(() => (refused = true));
        expect(refused).to.equal(true);
      });

      it('delegated tokens act as the end user: RBAC applies to the user, the audit names the worker', async () => {
        const ok = await call(base, 'POST', '/v1/patients', { token: await identity.delegated(USERS.ada), key: newKey(), body: syntheticPatient() });
        expect(ok.status).to.equal(201);
        const audit = await db.query<{ acting_user: string; actor: string }>('SELECT acting_user, actor FROM audit_log WHERE patient_id = $1', [ok.body.id]);
        expect(audit.rows).to.deep.equal([{ acting_user: 'ada', actor: 'ferry-worker' }]);
        const denied = await call(base, 'POST', '/v1/patients', { token: await identity.delegated(USERS.dee), key: newKey(), body: syntheticPatient() });
        expect(denied.status).to.equal(403);
        expect(denied.body.code).to.equal('FORBIDDEN');
      });
    });

    describe('create and read', () => {
      it('201 with the id given, version 1, ETag and Location; GET returns the same record', async () => {
        const id = newPatientId();
        const body = syntheticPatient({ id });
        const r = await create(USERS.ada, body);
        expect(r.status).to.equal(201);
        expect(r.body).to.include({ id, tenant: 'north', version: 1, givenName: body.givenName, facility: 'north-hc-1' });
        expect(r.headers.get('etag')).to.equal('"1"');
        expect(r.headers.get('location')).to.equal(`/v1/patients/${id}`);
        expect(r.headers.get('idempotent-replayed')).to.equal(null);
        const got = await call(base, 'GET', `/v1/patients/${id}`, { token: as(USERS.ada) });
        expect(got.body).to.deep.equal(r.body);
        expect(got.headers.get('etag')).to.equal('"1"');
      });

      it('mints a pat_ id when none is given; works without an Idempotency-Key too', async () => {
        const r = await create(USERS.ada, syntheticPatient(), undefined);
        expect(r.status).to.equal(201);
        expect(r.body.id).to.match(/^pat_[0-9a-f-]{36}$/);
      });

      it('422 VALIDATION_FAILED with field errors that never echo the values', async () => {
        const r = await create(USERS.ada, syntheticPatient({ id: 'pat_NOT-VALID', birthDate: '2999-01-01', sex: 'SECRETVALUE', extra: 1 }));
        expect(r.status).to.equal(422);
        expect(r.body.code).to.equal('VALIDATION_FAILED');
        const paths = (r.body.errors as { path: string }[]).map((e) => e.path);
        expect(paths).to.include.members(['id', 'birthDate', 'sex']);
        expect(r.text).to.not.contain('SECRETVALUE');
        expect(r.text).to.not.contain('NOT-VALID');
      });

      it('POST /v1/patients/lookup answers many records, each exactly as GET shows it, in the order asked', async () => {
        const a = await create(USERS.ada, syntheticPatient());
        const b = await create(USERS.ada, syntheticPatient());
        const updated = await call(base, 'PUT', `/v1/patients/${a.body.id}`, { token: as(USERS.ada), key: newKey(), ifMatch: '"1"', body: syntheticPatient() });
        expect(updated.status).to.equal(200);
        const foreign = await create(USERS.cySouth, syntheticPatient());
        const unknown = newPatientId();
        const r = await call(base, 'POST', '/v1/patients/lookup', { token: as(USERS.dee), body: { ids: [b.body.id, unknown, a.body.id, foreign.body.id, b.body.id] } });
        expect(r.status).to.equal(200);
        const gotA = await call(base, 'GET', `/v1/patients/${a.body.id}`, { token: as(USERS.ada) });
        const gotB = await call(base, 'GET', `/v1/patients/${b.body.id}`, { token: as(USERS.ada) });
        // Another tenant's patient and an unknown id are left out alike; a repeated id once.
        expect(r.body.results).to.deep.equal([gotB.body, gotA.body]);
        expect((r.body.results as Array<{ version: number }>)[1]!.version).to.equal(2);
      });

      it('POST /v1/patients/lookup: 422 for no ids, too many or a malformed one (values never echoed); read access as GET', async () => {
        for (const body of [{}, { ids: [] }, { ids: 'pat_x' }, { ids: Array.from({ length: 201 }, () => newPatientId()) }, { ids: [newPatientId(), 'SECRETVALUE'] }]) {
          const r = await call(base, 'POST', '/v1/patients/lookup', { token: as(USERS.ada), body });
          expect(r.status, JSON.stringify(body).slice(0, 40)).to.equal(422);
          expect(r.body.code).to.equal('VALIDATION_FAILED');
          expect(r.text).to.not.contain('SECRETVALUE');
        }
        const made = await create(USERS.ada, syntheticPatient());
        expect((await call(base, 'POST', '/v1/patients/lookup', { token: as(USERS.ops), body: { ids: [made.body.id] } })).status).to.equal(403);
        const unlicensed = await call(base, 'POST', '/v1/patients/lookup', { token: as(USERS.cyEast), body: { ids: [made.body.id] } });
        expect(unlicensed.body.code).to.equal('MODULE_NOT_LICENSED');
        expect((await call(base, 'POST', '/v1/patients/lookup', { body: { ids: [made.body.id] } })).status).to.equal(401);
      });

      it('a patient of another tenant is a 404, never a 403', async () => {
        const made = await create(USERS.cySouth, syntheticPatient());
        const r = await call(base, 'GET', `/v1/patients/${made.body.id}`, { token: as(USERS.ada) });
        expect(r.status).to.equal(404);
        expect(r.body.code).to.equal('NOT_FOUND');
        const put = await call(base, 'PUT', `/v1/patients/${made.body.id}`, { token: as(USERS.ada), key: newKey(), ifMatch: '"1"', body: syntheticPatient() });
        expect(put.status).to.equal(404);
      });

      it('400 MALFORMED_REQUEST for bad JSON, a missing JSON body or a bad key, and none of them is stored', async () => {
        const key = newKey();
        const bad = await call(base, 'POST', '/v1/patients', { token: as(USERS.ada), key, rawBody: '{"givenName":' });
        expect(bad.status).to.equal(400);
        expect(bad.body.code).to.equal('MALFORMED_REQUEST');
        const noType = await call(base, 'POST', '/v1/patients', { token: as(USERS.ada), key, rawBody: '{}', contentType: null });
        expect(noType.status).to.equal(400);
        const badKey = await call(base, 'POST', '/v1/patients', { token: as(USERS.ada), key: 'has space', body: syntheticPatient() });
        expect(badKey.status).to.equal(400);
        expect((await create(USERS.ada, syntheticPatient(), key)).status).to.equal(201);
      });

      it('413 for a body over the limit', async () => {
        const r = await create(USERS.ada, syntheticPatient({ givenName: 'x'.repeat(70_000) }));
        expect(r.status).to.equal(413);
        expect(r.body.code).to.equal('PAYLOAD_TOO_LARGE');
      });

      it('409 ID_CONFLICT for an id already taken in the tenant', async () => {
        const id = newPatientId();
        expect((await create(USERS.ben, syntheticPatient({ id }))).status).to.equal(201);
        const r = await create(USERS.ada, syntheticPatient({ id }));
        expect(r.status).to.equal(409);
        expect(r.body.code).to.equal('ID_CONFLICT');
      });
    });

    describe('idempotency', () => {
      it('same key and same body replays the first status and body byte for byte; key order does not matter', async () => {
        const key = newKey();
        const body = syntheticPatient({ id: newPatientId() });
        const first = await create(USERS.ada, body, key);
        const reordered = Object.fromEntries(Object.entries(body).reverse());
        const again = await create(USERS.ada, reordered, key);
        expect(again.status).to.equal(201);
        expect(again.text).to.equal(first.text);
        expect(again.headers.get('idempotent-replayed')).to.equal('true');
        expect(again.headers.get('etag')).to.equal('"1"');
      });

      it('same key, different body → 422 IDEMPOTENCY_KEY_REUSED, nothing written', async () => {
        const key = newKey();
        const first = await create(USERS.ada, syntheticPatient(), key);
        const r = await create(USERS.ada, syntheticPatient(), key);
        expect(r.status).to.equal(422);
        expect(r.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
        expect(await count('patients WHERE tenant = $1 AND id <> $2 AND created_at >= $3', ['north', first.body.id, first.body.createdAt])).to.equal(0);
      });

      it('same key from another user of the tenant is a reuse, not a replay of their answer', async () => {
        const key = newKey();
        const body = syntheticPatient();
        expect((await create(USERS.ada, body, key)).status).to.equal(201);
        const r = await create(USERS.ben, body, key);
        expect(r.status).to.equal(422);
        expect(r.body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
      });

      it('keys are scoped by tenant', async () => {
        const key = newKey();
        expect((await create(USERS.ada, syntheticPatient(), key)).status).to.equal(201);
        const south = await create(USERS.cySouth, syntheticPatient(), key);
        expect(south.status).to.equal(201);
        expect(south.headers.get('idempotent-replayed')).to.equal(null);
      });

      it('Idempotent offline replay: the same key 3 times in a row and 5 at once gives one patient and the same 201 body', async () => {
        const id = newPatientId();
        const key = newKey();
        const body = syntheticPatient({ id });
        const inRow = [];
        for (let i = 0; i < 3; i++) inRow.push(await create(USERS.ada, body, key));
        const together = await Promise.all(Array.from({ length: 5 }, () => callUntilSettled(base, 'POST', '/v1/patients', { token: as(USERS.ada), key, body })));
        const all = [...inRow, ...together.map((t) => t.final)];
        for (const r of all) {
          expect(r.status).to.equal(201);
          expect(r.text).to.equal(inRow[0]!.text);
        }
        expect(all.filter((r) => r.headers.get('idempotent-replayed') === 'true')).to.have.length(7);
        expect(await count('patients WHERE id = $1', [id])).to.equal(1);
        expect(await count(`outbox WHERE payload->>'patientId' = $1`, [id])).to.equal(1);
      });

      it('5 concurrent first attempts with one key commit once (the rest replay or see IDEMPOTENCY_IN_PROGRESS)', async () => {
        const id = newPatientId();
        const key = newKey();
        const body = syntheticPatient({ id });
        const firstTries = await Promise.all(Array.from({ length: 5 }, () => create(USERS.ada, body, key)));
        for (const r of firstTries) {
          if (r.status === 409) expect(r.body.code).to.equal('IDEMPOTENCY_IN_PROGRESS');
          else expect(r.status).to.equal(201);
        }
        const settled = await callUntilSettled(base, 'POST', '/v1/patients', { token: as(USERS.ada), key, body });
        expect(settled.final.body.id).to.equal(id);
        expect(firstTries.filter((r) => r.status === 201 && r.headers.get('idempotent-replayed') === null)).to.have.length(1);
        expect(await count('patients WHERE id = $1', [id])).to.equal(1);
      });

      it('a 422 from validation is stored and replayed', async () => {
        const key = newKey();
        const body = syntheticPatient({ birthDate: 'yesterday' });
        const first = await create(USERS.ada, body, key);
        expect(first.status).to.equal(422);
        const again = await create(USERS.ada, body, key);
        expect(again.text).to.equal(first.text);
        expect(again.headers.get('idempotent-replayed')).to.equal('true');
      });

      it('a crashed attempt never leaves its key stuck', async () => {
        const scope = { tenant: 'north', key: newKey(), fingerprint: 'fp' };
        const opts = { retentionMs: 60_000, now: () => new Date() };
        let failed = false;
        await runIdempotent(db, scope, opts, async (tx) => {
          await tx.query(`INSERT INTO licensed_tenants (tenant) VALUES ('crash-test')`);
          throw new Error('crash mid-request');
        }).catch(() => (failed = true));
        expect(failed).to.equal(true);
        expect(await count('licensed_tenants WHERE tenant = $1', ['crash-test'])).to.equal(0);
        const r = await runIdempotent(db, scope, opts, async () => ({ status: 201, body: { ok: true } }));
        expect(r).to.deep.equal({ status: 201, body: '{"ok":true}', replayed: false });
      });

      it('answers past the retention horizon are purged and the key is free again', async () => {
        const key = newKey();
        const body = syntheticPatient();
        const first = await create(USERS.ada, body, key);
        clock = new Date(Date.now() + 2 * 3600_000);
        // Past the horizon the key runs afresh: the same id is now taken.
        const later = await create(USERS.ada, { ...body, id: first.body.id }, key);
        expect(later.status).to.equal(409);
        expect(later.body.code).to.equal('ID_CONFLICT');
        expect(await purgeExpiredIdempotencyKeys(db, new Date(Date.now() + 10 * 24 * 3600_000))).to.be.greaterThan(0);
        expect(await count('idempotency_keys WHERE key = $1', [key])).to.equal(0);
      });
    });

    if (backend === 'postgres') {
      describe('in flight (PostgreSQL: many connections)', () => {
        it('409 IDEMPOTENCY_IN_PROGRESS while another attempt holds the key; not stored', async () => {
          const key = newKey();
          let release!: () => void;
          const gate = new Promise<void>((r) => (release = r));
          let entered!: () => void;
          const inside = new Promise<void>((r) => (entered = r));
          const scope = { tenant: 'north', key, fingerprint: 'fp' };
          const opts = { retentionMs: 60_000, now: () => new Date() };
          const holder = runIdempotent(db, scope, opts, async () => {
            entered();
            await gate;
            return { status: 201, body: { first: true } };
          });
          await inside;
          const err = await runIdempotent(db, scope, opts, async () => ({ status: 201, body: { second: true } })).catch((e: unknown) => e);
          expect(err).to.be.instanceOf(FerryError);
          expect((err as FerryError).code).to.equal('IDEMPOTENCY_IN_PROGRESS');
          release();
          await holder;
          const replay = await runIdempotent(db, scope, opts, async () => ({ status: 201, body: { third: true } }));
          expect(replay).to.deep.equal({ status: 201, body: '{"first":true}', replayed: true });
        });

        it('creates racing on one id or one identifier under different keys: one 201, the rest a stored 409', async () => {
          const id = newPatientId();
          const sameId = await Promise.all(Array.from({ length: 6 }, () => create(USERS.ada, syntheticPatient({ id }))));
          expect(sameId.map((r) => r.status).sort()).to.deep.equal([201, 409, 409, 409, 409, 409]);
          for (const r of sameId.filter((x) => x.status === 409)) expect(r.body.code).to.equal('ID_CONFLICT');

          const identifiers = [{ system: 'national-id', value: `RACE-${newKey().slice(-12)}` }];
          const confirmNotDuplicate = { reason: 'checked in person' };
          const sameIdentifier = await Promise.all(Array.from({ length: 6 }, () => create(USERS.ada, syntheticPatient({ identifiers, confirmNotDuplicate }))));
          expect(sameIdentifier.map((r) => r.status).sort()).to.deep.equal([201, 409, 409, 409, 409, 409]);
          for (const r of sameIdentifier.filter((x) => x.status === 409)) expect(r.body.code).to.equal('IDENTIFIER_CONFLICT');
        });

        it('a lock held by a connection that dies is released with it', async () => {
          const key = newKey();
          const schema = (await db.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]!.s;
          const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
          client.on('error', () => undefined);
          await client.connect();
          const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
          await client.query('BEGIN');
          await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`idem:north:${key}`]);
          const body = syntheticPatient();
          const busy = await create(USERS.ada, body, key);
          expect(busy.status).to.equal(409);
          expect(busy.body.code).to.equal('IDEMPOTENCY_IN_PROGRESS');
          // The "crash": that backend goes away without COMMIT or ROLLBACK.
          await db.query('SELECT pg_terminate_backend($1)', [pid]);
          await client.end().catch(() => undefined);
          const { final } = await callUntilSettled(base, 'POST', '/v1/patients', { token: as(USERS.ada), key, body });
          expect(final.status).to.equal(201);
        });
      });
    }

    describe('duplicates and identifiers', () => {
      it('409 DUPLICATE_DETECTED (ids only) for the same normalised name, birth date and sex', async () => {
        const original = await create(USERS.ada, syntheticPatient());
        const again = syntheticPatient({
          givenName: ` ${String(original.body.givenName).toUpperCase()} `,
          familyName: String(original.body.familyName).toLowerCase(),
          identifiers: [{ system: 'national-id', value: 'OTHER-1' + newKey().slice(0, 8) }],
        });
        const r = await create(USERS.ada, again);
        expect(r.status).to.equal(409);
        expect(r.body.code).to.equal('DUPLICATE_DETECTED');
        expect(r.body.candidates).to.deep.equal([original.body.id]);
        expect(r.text).to.not.contain(String(original.body.familyName));
      });

      it('a matching identifier is a likely duplicate; overriding it still cannot share the identifier', async () => {
        const value = `NI-${newKey().slice(-12)}`;
        const original = await create(USERS.ada, syntheticPatient({ identifiers: [{ system: 'national-id', value }] }));
        const clash = syntheticPatient({ identifiers: [{ system: 'national-id', value: ` ${value.toLowerCase()}` }] });
        const r = await create(USERS.ada, clash);
        expect(r.body.code).to.equal('DUPLICATE_DETECTED');
        expect(r.body.candidates).to.deep.equal([original.body.id]);
        const forced = await create(USERS.ada, { ...clash, confirmNotDuplicate: { reason: 'checked the card' } });
        expect(forced.status).to.equal(409);
        expect(forced.body.code).to.equal('IDENTIFIER_CONFLICT');
        // Same value under another system is fine.
        expect((await create(USERS.ada, syntheticPatient({ identifiers: [{ system: 'passport', value }] }))).status).to.equal(201);
      });

      it('confirmNotDuplicate with a reason creates anyway, and the override is audited without the reason', async () => {
        const original = await create(USERS.ada, syntheticPatient());
        const twin = syntheticPatient({ givenName: original.body.givenName, familyName: original.body.familyName });
        const r = await create(USERS.ada, { ...twin, confirmNotDuplicate: { reason: 'different mother, SECRETREASON' } });
        expect(r.status).to.equal(201);
        expect(r.body).to.not.have.property('confirmNotDuplicate');
        const audit = await db.query<{ details: { duplicateOverride?: boolean; candidates?: string[] } }>('SELECT details FROM audit_log WHERE patient_id = $1', [r.body.id]);
        expect(audit.rows[0]!.details).to.deep.include({ duplicateOverride: true, candidates: [original.body.id] });
        expect(JSON.stringify(audit.rows)).to.not.contain('SECRETREASON');
        const reason = await db.query<{ r: string }>('SELECT duplicate_override_reason AS r FROM patients WHERE id = $1', [r.body.id]);
        expect(reason.rows[0]!.r).to.equal('different mother, SECRETREASON');
      });

      it('patients of other tenants are never candidates', async () => {
        const south = await create(USERS.cySouth, syntheticPatient());
        const r = await create(USERS.ada, syntheticPatient({ givenName: south.body.givenName, familyName: south.body.familyName, identifiers: south.body.identifiers }));
        expect(r.status).to.equal(201);
      });
    });

    describe('updates and versions', () => {
      const put = (id: unknown, o: { key?: string; ifMatch?: string; body: unknown; as?: User }) =>
        call(base, 'PUT', `/v1/patients/${String(id)}`, { token: as(o.as ?? USERS.ada), key: o.key ?? newKey(), body: o.body, ...(o.ifMatch ? { ifMatch: o.ifMatch } : {}) });

      it('If-Match or baseVersion → 200 with the next version', async () => {
        const made = await create(USERS.ada, syntheticPatient());
        const v2 = await put(made.body.id, { ifMatch: '"1"', body: syntheticPatient({ phone: '+2348111111111' }) });
        expect(v2.status).to.equal(200);
        expect(v2.body).to.include({ id: made.body.id, version: 2, phone: '+2348111111111' });
        expect(v2.headers.get('etag')).to.equal('"2"');
        const v3 = await put(made.body.id, { body: syntheticPatient({ baseVersion: 2 }) });
        expect(v3.status).to.equal(200);
        expect(v3.body.version).to.equal(3);
        expect(v3.body).to.not.have.property('baseVersion');
        expect(v3.body.createdAt).to.equal(made.body.createdAt);
      });

      it('428 without a precondition, not stored: the same key works once If-Match is added', async () => {
        const made = await create(USERS.ada, syntheticPatient());
        const key = newKey();
        const body = syntheticPatient();
        const r = await put(made.body.id, { key, body });
        expect(r.status).to.equal(428);
        expect(r.body.code).to.equal('PRECONDITION_REQUIRED');
        expect((await put(made.body.id, { key, body, ifMatch: '"1"' })).status).to.equal(200);
      });

      it('409 VERSION_CONFLICT with the current record for a stale version', async () => {
        const made = await create(USERS.ada, syntheticPatient());
        const v2 = await put(made.body.id, { ifMatch: '"1"', body: syntheticPatient() });
        const stale = await put(made.body.id, { ifMatch: '"1"', body: syntheticPatient() });
        expect(stale.status).to.equal(409);
        expect(stale.body.code).to.equal('VERSION_CONFLICT');
        expect(stale.body.current).to.deep.equal(v2.body);
      });

      it('a replayed PUT after its commit returns the first 200, not a VERSION_CONFLICT', async () => {
        const made = await create(USERS.ada, syntheticPatient());
        const key = newKey();
        const body = syntheticPatient({ baseVersion: 1 });
        const first = await put(made.body.id, { key, body, ifMatch: '"1"' });
        expect(first.status).to.equal(200);
        const replay = await put(made.body.id, { key, body, ifMatch: '"1"' });
        expect(replay.status).to.equal(200);
        expect(replay.text).to.equal(first.text);
        expect(replay.headers.get('idempotent-replayed')).to.equal('true');
        const current = await call(base, 'GET', `/v1/patients/${made.body.id}`, { token: as(USERS.ada) });
        expect(current.body.version).to.equal(2);
        // Same key with another If-Match is another request.
        expect((await put(made.body.id, { key, body: { ...body, baseVersion: 2 }, ifMatch: '"2"' })).body.code).to.equal('IDEMPOTENCY_KEY_REUSED');
      });

      it('404 NOT_FOUND for an unknown id, stored under the key', async () => {
        const key = newKey();
        const body = syntheticPatient();
        const r = await put(newPatientId(), { key, body, ifMatch: '"1"' });
        expect(r.status).to.equal(404);
        expect(r.body.code).to.equal('NOT_FOUND');
        expect((await put('not-an-id', { body, ifMatch: '"1"' })).status).to.equal(404);
      });

      it('422 when If-Match and baseVersion disagree; 400 for a malformed If-Match', async () => {
        const made = await create(USERS.ada, syntheticPatient());
        const mismatch = await put(made.body.id, { ifMatch: '"1"', body: syntheticPatient({ baseVersion: 2 }) });
        expect(mismatch.status).to.equal(422);
        const malformed = await put(made.body.id, { ifMatch: 'one', body: syntheticPatient() });
        expect(malformed.status).to.equal(400);
      });

      it('409 IDENTIFIER_CONFLICT when an update takes another patient\'s identifier', async () => {
        const a = await create(USERS.ada, syntheticPatient());
        const b = await create(USERS.ada, syntheticPatient());
        const r = await put(b.body.id, { ifMatch: '"1"', body: syntheticPatient({ givenName: b.body.givenName, identifiers: a.body.identifiers }) });
        expect(r.status).to.equal(409);
        expect(r.body.code).to.equal('IDENTIFIER_CONFLICT');
        // Keeping its own identifier is fine.
        expect((await put(a.body.id, { ifMatch: '"1"', body: syntheticPatient({ identifiers: a.body.identifiers }) })).status).to.equal(200);
      });
    });

    describe('search (online-only)', () => {
      it('by name prefix and by identifier, tenant-scoped, minimal fields; viewers may search', async () => {
        const p = await create(USERS.ada, syntheticPatient());
        await create(USERS.cySouth, syntheticPatient({ givenName: p.body.givenName, familyName: p.body.familyName }));
        const byName = await call(base, 'GET', `/v1/patients?name=${encodeURIComponent(String(p.body.familyName).slice(0, 4).toLowerCase())}%20${String(p.body.givenName)}`, { token: as(USERS.dee) });
        expect(byName.status).to.equal(200);
        expect(byName.body.results).to.deep.equal([
          { id: p.body.id, version: 1, givenName: p.body.givenName, familyName: p.body.familyName, birthDate: p.body.birthDate, sex: p.body.sex },
        ]);
        const ident = (p.body.identifiers as { system: string; value: string }[])[0]!;
        const byId = await call(base, 'GET', `/v1/patients?identifier=${encodeURIComponent(`${ident.system}|${ident.value.toLowerCase()}`)}`, { token: as(USERS.ada) });
        expect((byId.body.results as { id: string }[]).map((x) => x.id)).to.deep.equal([p.body.id]);
        const none = await call(base, 'GET', '/v1/patients', { token: as(USERS.ada) });
        expect(none.status).to.equal(422);
      });
    });

    describe('one transaction: row, idempotency record, outbox event, audit record', () => {
      it('writes all four together, with ids and no demographics in the event or the audit', async () => {
        const key = newKey();
        const body = syntheticPatient();
        const r = await call(base, 'POST', '/v1/patients', { token: as(USERS.ada), key, body, });
        const id = String(r.body.id);
        expect(await count('idempotency_keys WHERE key = $1', [key])).to.equal(1);
        const events = await db.query<{ subject: string; payload: Record<string, unknown> }>(`SELECT subject, payload FROM outbox WHERE payload->>'patientId' = $1`, [id]);
        expect(events.rows).to.have.length(1);
        expect(events.rows[0]!.subject).to.equal('REGISTRATION.patient.created');
        expect(Object.keys(events.rows[0]!.payload).sort()).to.deep.equal(['actingUser', 'actor', 'correlationId', 'eventId', 'occurredAt', 'patientId', 'tenant', 'type', 'v', 'version']);
        expect(events.rows[0]!.payload).to.include({ tenant: 'north', version: 1, actingUser: 'ada', actor: 'ada', correlationId: r.headers.get('x-correlation-id') });
        const audit = await db.query('SELECT * FROM audit_log WHERE patient_id = $1', [id]);
        expect(audit.rows).to.have.length(1);
        for (const text of [JSON.stringify(events.rows), JSON.stringify(audit.rows)]) {
          for (const value of [body.givenName, body.familyName, body.birthDate, body.phone, 'Testville']) expect(text).to.not.contain(String(value));
        }
      });

      it('a refused request writes no row, event or audit record', async () => {
        const before = await count('outbox', []);
        const auditBefore = await count('audit_log', []);
        const r = await create(USERS.ada, syntheticPatient({ sex: 'nope' }));
        expect(r.status).to.equal(422);
        expect(await count('outbox', [])).to.equal(before);
        expect(await count('audit_log', [])).to.equal(auditBefore);
      });
    });
  });
}
