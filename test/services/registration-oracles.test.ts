import { expect } from 'chai';
import { createRegistrationApp } from '../../services/registration/app.ts';
import { createLicensing } from '../../services/registration/licensing.ts';
import { migrateRegistration, REGISTRATION_MIGRATIONS } from '../../services/registration/schema.ts';
import { openDatabase, type Database } from '../../sql/database.ts';
import { migrate } from '../../sql/migrate.ts';
import { listen, type Listening } from '../support/http.ts';
import { dropSchema, requirePostgres, TEST_DATABASE_URL, uniqueSchema } from '../support/services.ts';
import { BACKENDS, call, LICENSED, makeIdentity, newKey, newPatientId, openBackend, syntheticPatient, USERS, type OpenedDb, type User } from './registration-fixture.ts';

// Existence oracles and correlation ids on the registration service (issue 10). An answer that
// depends on another tenant's data must be the answer for data that does not exist, byte for
// byte apart from the correlation id; and only an opaque id reaches audit rows and events.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The answer with its correlation id (body and header) and date blanked: what may not differ. */
function comparable(r: { status: number; text: string; headers: Headers }): string {
  const id = r.headers.get('x-correlation-id') ?? '';
  const headers = [...r.headers].filter(([name]) => name !== 'date' && name !== 'x-correlation-id' && name !== 'keep-alive');
  return JSON.stringify({ status: r.status, headers, body: id ? r.text.replaceAll(id, '<correlation>') : r.text });
}

for (const backend of BACKENDS) {
  describe(`registration: existence oracles and correlation ids (${backend})`, function () {
    this.timeout(60_000);
    let opened: OpenedDb;
    let db: Database;
    let server: Listening;
    let base: string;
    const tokens = new Map<User, string>();
    const as = (u: User) => tokens.get(u)!;

    before(async function () {
      if (backend === 'postgres') await requirePostgres(this);
      opened = await openBackend(backend, 'reg_oracles');
      db = opened.db;
      const identity = await makeIdentity();
      const licensing = createLicensing(db);
      for (const t of LICENSED) await licensing.license(t);
      server = await listen(createRegistrationApp({ db, verifier: identity.verifier, licensing }));
      base = server.url;
      for (const u of Object.values(USERS)) tokens.set(u, await identity.token(u));
    });
    after(async () => {
      await server?.close();
      await opened?.close();
    });

    const create = (u: User, body: Record<string, unknown>) => call(base, 'POST', '/v1/patients', { token: as(u), key: newKey(), body });
    const rows = async (sql: string, params: unknown[]) => (await db.query<Record<string, unknown>>(sql, params)).rows;

    describe('a create with an id another tenant holds', () => {
      it('is answered as a create with a fresh id: 201, its own patient, the other tenant’s untouched', async () => {
        const id = newPatientId();
        const southBody = syntheticPatient({ id, facility: 'south-hc-1' });
        const south = await create(USERS.cySouth, southBody);
        expect(south.status).to.equal(201);

        const northBody = syntheticPatient({ id });
        const clash = await create(USERS.ada, northBody);
        const fresh = await create(USERS.ada, syntheticPatient({ id: newPatientId() }));
        expect(clash.status).to.equal(201);
        expect(clash.body).to.deep.include({ id, tenant: 'north', version: 1, givenName: northBody.givenName });
        // Same status and headers as a create no one else's data touches (ids and names differ by design).
        expect([...clash.headers.keys()].sort()).to.deep.equal([...fresh.headers.keys()].sort());
        expect(Object.keys(clash.body)).to.deep.equal(Object.keys(fresh.body));
        expect(clash.text).to.not.include(String(southBody.givenName));

        // Each tenant reads its own patient under the one id.
        const readNorth = await call(base, 'GET', `/v1/patients/${id}`, { token: as(USERS.ada) });
        const readSouth = await call(base, 'GET', `/v1/patients/${id}`, { token: as(USERS.cySouth) });
        expect(readNorth.body).to.deep.include({ tenant: 'north', givenName: northBody.givenName });
        expect(readSouth.body).to.deep.include({ tenant: 'south', givenName: southBody.givenName, version: 1 });
      });

      it('an update in one tenant changes neither the other tenant’s row nor its identifiers', async () => {
        const id = newPatientId();
        const southBody = syntheticPatient({ id, facility: 'south-hc-1' });
        expect((await create(USERS.cySouth, southBody)).status).to.equal(201);
        expect((await create(USERS.ada, syntheticPatient({ id }))).status).to.equal(201);
        const put = await call(base, 'PUT', `/v1/patients/${id}`, { token: as(USERS.ada), key: newKey(), ifMatch: '"1"', body: syntheticPatient() });
        expect(put.status).to.equal(200);
        expect(put.body).to.include({ version: 2, tenant: 'north' });

        const south = await rows('SELECT version FROM patients WHERE tenant = $1 AND id = $2', ['south', id]);
        expect(south).to.deep.equal([{ version: 1 }]);
        const southIds = await rows('SELECT system, value_key FROM patient_identifiers WHERE tenant = $1 AND patient_id = $2', ['south', id]);
        expect(southIds).to.have.length(1);
        // Still held in south: a confirmed create there with the same identifier is refused.
        const again = await create(USERS.cySouth, syntheticPatient({ identifiers: southBody.identifiers, facility: 'south-hc-1', confirmNotDuplicate: { reason: 'checked in person' } }));
        expect(again.body.code).to.equal('IDENTIFIER_CONFLICT');
      });

      it('the migration keeps a database made with globally unique ids, rows and identifiers included', async function () {
        const schema = uniqueSchema('reg_oracles_mig');
        const old = await openDatabase(backend === 'postgres' ? { url: TEST_DATABASE_URL, schema } : {});
        try {
          await migrate(old, 'registration', REGISTRATION_MIGRATIONS.slice(0, 1));
          const id = newPatientId();
          await old.query(
            `INSERT INTO patients (id, tenant, version, data, name_key, given_key, family_key, birth_date, sex, created_by, updated_by, created_at, updated_at)
             VALUES ($1, 'north', 1, '{}'::jsonb, 'a b', 'a', 'b', '1990-04-12', 'female', 'ada', 'ada', now(), now())`,
            [id],
          );
          await old.query(`INSERT INTO patient_identifiers (tenant, system, value_key, patient_id) VALUES ('north', 'national-id', 'ni1', $1)`, [id]);
          await migrateRegistration(old);
          await old.query(
            `INSERT INTO patients (id, tenant, version, data, name_key, given_key, family_key, birth_date, sex, created_by, updated_by, created_at, updated_at)
             VALUES ($1, 'south', 1, '{}'::jsonb, 'c d', 'c', 'd', '1990-04-12', 'female', 'cy', 'cy', now(), now())`,
            [id],
          );
          const kept = await old.query<{ tenant: string; n: string }>(`SELECT p.tenant, count(i.*) AS n FROM patients p LEFT JOIN patient_identifiers i ON i.tenant = p.tenant AND i.patient_id = p.id WHERE p.id = $1 GROUP BY p.tenant ORDER BY p.tenant`, [id]);
          expect(kept.rows.map((r) => [r.tenant, Number(r.n)])).to.deep.equal([['north', 1], ['south', 0]]);
          // The identifier follows its own tenant's row only.
          await old.query(`DELETE FROM patients WHERE tenant = 'north' AND id = $1`, [id]);
          expect(Number((await old.query<{ n: string }>('SELECT count(*) AS n FROM patient_identifiers WHERE patient_id = $1', [id])).rows[0]!.n)).to.equal(0);
        } finally {
          await old.close();
          if (backend === 'postgres') await dropSchema(schema);
        }
      });
    });

    describe('another tenant’s patient looks exactly like no patient', () => {
      let southId: string;
      before(async () => {
        const made = await create(USERS.cySouth, syntheticPatient({ facility: 'south-hc-1' }));
        southId = made.body.id as string;
      });

      it('GET /v1/patients/{id}', async () => {
        const foreign = await call(base, 'GET', `/v1/patients/${southId}`, { token: as(USERS.ada) });
        const unknown = await call(base, 'GET', `/v1/patients/${newPatientId()}`, { token: as(USERS.ada) });
        expect(foreign.status).to.equal(404);
        expect(comparable(foreign)).to.equal(comparable(unknown));
      });

      it('PUT /v1/patients/{id}, with a current and with a stale version', async () => {
        for (const ifMatch of ['"1"', '"7"']) {
          const foreign = await call(base, 'PUT', `/v1/patients/${southId}`, { token: as(USERS.ada), key: newKey(), ifMatch, body: syntheticPatient() });
          const unknown = await call(base, 'PUT', `/v1/patients/${newPatientId()}`, { token: as(USERS.ada), key: newKey(), ifMatch, body: syntheticPatient() });
          expect(foreign.status, ifMatch).to.equal(404);
          expect(comparable(foreign), ifMatch).to.equal(comparable(unknown));
        }
      });

      it('the search by identifier', async () => {
        const [held] = (await call(base, 'GET', `/v1/patients/${southId}`, { token: as(USERS.cySouth) })).body.identifiers as Array<{ system: string; value: string }>;
        const q = (v: string) => `/v1/patients?identifier=${encodeURIComponent(`${held!.system}|${v}`)}`;
        expect((await call(base, 'GET', q(held!.value), { token: as(USERS.cySouth) })).body.results).to.have.length(1);
        const foreign = await call(base, 'GET', q(held!.value), { token: as(USERS.ada) });
        const unknown = await call(base, 'GET', q(`NI-${newKey().slice(-10)}`), { token: as(USERS.ada) });
        expect(foreign.status).to.equal(200);
        expect(comparable(foreign)).to.equal(comparable(unknown));
      });
    });

    describe('correlation ids', () => {
      const audited = async (id: string) => ({
        audit: await rows('SELECT correlation_id FROM audit_log WHERE patient_id = $1', [id]),
        events: await rows(`SELECT payload->>'correlationId' AS correlation_id FROM outbox WHERE payload->>'patientId' = $1`, [id]),
      });
      const send = (correlation: string) =>
        fetch(`${base}/v1/patients`, {
          method: 'POST',
          headers: { authorization: `Bearer ${as(USERS.ada)}`, 'content-type': 'application/json', 'idempotency-key': newKey(), 'x-correlation-id': correlation },
          body: JSON.stringify(syntheticPatient()),
        });

      for (const [what, inbound] of [
        ['free text', 'Amina Okafor 1990-04-12'],
        ['an id with a forged log line', '9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5e {"level":50}'],
        ['a non-UUID token', 'corr-123'],
      ] as const) {
        it(`${what} never reaches the audit row or the event: a fresh UUID does`, async () => {
          const res = await send(inbound);
          const body = (await res.json()) as { id: string };
          expect(res.status).to.equal(201);
          const minted = res.headers.get('x-correlation-id')!;
          expect(minted).to.match(UUID);
          expect(await audited(body.id)).to.deep.equal({ audit: [{ correlation_id: minted }], events: [{ correlation_id: minted }] });
        });
      }

      it('a UUID is kept, in lower case, in the answer, the audit row and the event', async () => {
        const inbound = '9B2F4C1E-3D5A-4B6C-8D7E-0F1A2B3C4D5E';
        const res = await send(inbound);
        const body = (await res.json()) as { id: string };
        expect(res.headers.get('x-correlation-id')).to.equal(inbound.toLowerCase());
        expect(await audited(body.id)).to.deep.equal({ audit: [{ correlation_id: inbound.toLowerCase() }], events: [{ correlation_id: inbound.toLowerCase() }] });
      });
    });
  });
}
