import { expect } from 'chai';
import { jetstreamManager } from '@nats-io/jetstream';
import { startRegistrationService, type RegistrationService } from '../../services/registration/index.ts';
import { createOutboxRelay, type OutboxRelay } from '../../services/registration/events/relay.ts';
import { createLicensing } from '../../services/registration/licensing.ts';
import { createRegistrationApp } from '../../services/registration/app.ts';
import { ensureStream } from '../../services/registration/events/stream.ts';
import type { Database } from '../../sql/database.ts';
import { listen, type Listening } from '../support/http.ts';
import { connectTestNats, requireNats, requirePostgres, TEST_NATS_URL } from '../support/services.ts';
import {
  BACKENDS,
  call,
  callBatch,
  callUntilSettled,
  LICENSED,
  makeIdentity,
  natsProxy,
  newKey,
  newPatientId,
  openBackend,
  streamEventsFor,
  streamLastSeq,
  syntheticPatient,
  USERS,
  waitFor,
  type Identity,
  type NatsProxy,
  type OpenedDb,
} from './registration-fixture.ts';

// Events reach the REGISTRATION stream exactly once and in order, through a real NATS JetStream.
// The stream is shared with other suites, so every assertion is about this suite's own patient ids.

const FAST = { pollMs: 50, backoff: { baseMs: 50, maxMs: 300 }, publishTimeoutMs: 2000, connectTimeoutMs: 1000 };

// No database involved: run once, not per backend.
describe('registration events: the REGISTRATION stream\'s duplicate window', function () {
  this.timeout(30_000);
  before(async function () {
    await requireNats(this);
  });

  it('raises an existing stream\'s 2-minute default window with streams.update (on a stream of its own)', async function () {
    const name = `FERRY_TEST_${newKey().replace(/-/g, '').slice(-12).toUpperCase()}`;
    const nc = await connectTestNats();
    const jsm = await jetstreamManager(nc);
    try {
      await jsm.streams.add({ name, subjects: [`${name}.a`], duplicate_window: 120 * 1e9 });
      await ensureStream(jsm, { name, subjects: [`${name}.>`], duplicateWindowMs: 2 * 3600_000 });
      const config = (await jsm.streams.info(name)).config;
      expect(config.duplicate_window).to.equal(7.2e12);
      expect(config.subjects).to.deep.equal([`${name}.>`]);
      await ensureStream(jsm, { name, subjects: [`${name}.>`], duplicateWindowMs: 60_000 });
      expect((await jsm.streams.info(name)).config.duplicate_window).to.equal(7.2e12);
    } finally {
      await jsm.streams.delete(name).catch(() => undefined);
      await nc.close();
    }
  });
});

for (const backend of BACKENDS) {
  describe(`registration events through JetStream (${backend})`, function () {
    this.timeout(60_000);
    let opened: OpenedDb;
    let db: Database;
    let identity: Identity;
    let token: string;
    let relays: OutboxRelay[] = [];
    let closers: (() => Promise<void>)[] = [];

    before(async function () {
      await requireNats(this);
      if (backend === 'postgres') await requirePostgres(this);
      opened = await openBackend(backend, 'reg_events');
      db = opened.db;
      identity = await makeIdentity();
      const licensing = createLicensing(db);
      for (const t of LICENSED) await licensing.license(t);
      token = await identity.token(USERS.ada);
    });
    afterEach(async () => {
      for (const r of relays) await r.stop();
      for (const c of closers) await c();
      relays = [];
      closers = [];
    });
    after(async () => {
      await opened?.close();
    });

    /** The bare app (no relay of its own), so each test decides which relay runs. */
    async function app(): Promise<Listening> {
      const server = await listen(createRegistrationApp({ db, verifier: identity.verifier }));
      closers.push(() => server.close());
      return server;
    }
    function relay(opts: Partial<Parameters<typeof createOutboxRelay>[0]> = {}): OutboxRelay {
      const r = createOutboxRelay({ db, natsUrl: TEST_NATS_URL, ...FAST, ...opts });
      relays.push(r);
      r.start();
      return r;
    }
    async function stop(r: OutboxRelay) {
      await r.stop();
      relays = relays.filter((x) => x !== r);
    }
    const outboxOrder = async (ids: string[]) =>
      (await db.query<{ event_id: string }>(`SELECT event_id FROM outbox WHERE payload->>'patientId' = ANY($1::text[]) ORDER BY seq`, [ids])).rows.map((r) => r.event_id);
    const pendingFor = async (ids: string[]) =>
      Number((await db.query<{ n: string }>(`SELECT count(*) AS n FROM outbox WHERE published_at IS NULL AND payload->>'patientId' = ANY($1::text[])`, [ids])).rows[0]!.n);

    it('creates the stream with an explicit duplicate window of at least 2 h (in nanoseconds)', async () => {
      const r = relay();
      await waitFor(async () => r.status().connected && r.status().consecutiveFailures === 0);
      await waitFor(async () => (await streamLastSeq()) >= 0);
      const nc = await connectTestNats();
      try {
        const info = await (await jetstreamManager(nc)).streams.info('REGISTRATION');
        expect(info.config.duplicate_window).to.be.at.least(7.2e12);
        expect(info.config.subjects).to.include('REGISTRATION.>');
      } finally {
        await nc.close();
      }
    });

    it('Idempotent offline replay: same key 3 times, then 5 at once → one patient, one 201 body, one REGISTRATION.patient.created', async () => {
      const service: RegistrationService = await startRegistrationService({ db, verifier: identity.verifier, natsUrl: TEST_NATS_URL, relay: FAST });
      closers.push(() => service.close());
      const from = await streamLastSeq();
      const id = newPatientId();
      const key = newKey();
      const body = syntheticPatient({ id });
      const answers = [];
      for (let i = 0; i < 3; i++) answers.push((await callUntilSettled(service.url, 'POST', '/v1/patients', { token, key, body })).final);
      const together = await Promise.all(Array.from({ length: 5 }, () => callUntilSettled(service.url, 'POST', '/v1/patients', { token, key, body })));
      answers.push(...together.map((t) => t.final));
      for (const a of answers) {
        expect(a.status).to.equal(201);
        expect(a.text).to.equal(answers[0]!.text);
      }
      expect(Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM patients WHERE id = $1', [id])).rows[0]!.n)).to.equal(1);
      await waitFor(async () => (await pendingFor([id])) === 0);
      const events = await streamEventsFor(new Set([id]), from);
      expect(events.map((e) => e.subject)).to.deep.equal(['REGISTRATION.patient.created']);
      const [event] = events;
      expect(event!.msgId).to.equal(event!.event.eventId);
      expect(event!.event).to.include({ patientId: id, tenant: 'north', version: 1, actingUser: 'ada', type: 'patient.created' });
      expect(JSON.stringify(event!.event)).to.not.contain(String(body.familyName));
    });

    it('a relay stopped between publish and mark-sent, then restarted, leaves one stored event', async () => {
      const server = await app();
      const from = await streamLastSeq();
      const made = await call(server.url, 'POST', '/v1/patients', { token, key: newKey(), body: syntheticPatient() });
      const id = String(made.body.id);
      let crashed!: () => void;
      const crash = new Promise<void>((r) => (crashed = r));
      const first = relay({
        afterPublish: (event) => {
          if (event.payload.patientId !== id) return;
          crashed();
          throw new Error('simulated crash between publish and mark-sent');
        },
      });
      await crash;
      await stop(first);
      expect(await pendingFor([id])).to.equal(1);
      expect(await streamEventsFor(new Set([id]), from)).to.have.length(1);

      relay();
      await waitFor(async () => (await pendingFor([id])) === 0);
      const events = await streamEventsFor(new Set([id]), from);
      expect(events).to.have.length(1);
      expect(events[0]!.event.patientId).to.equal(id);
    });

    it('a batch\'s events: one per committed item, in item order per entity, exactly once with many in flight, also after a relay crash between publish and mark', async () => {
      const server = await app();
      const from = await streamLastSeq();
      const ids = Array.from({ length: 40 }, () => newPatientId());
      const create = (id: string) => ({ method: 'POST', path: '/v1/patients', idempotencyKey: newKey(), body: syntheticPatient({ id }) });
      const update = (id: string, version: number) => ({ method: 'PUT', path: `/v1/patients/${id}`, idempotencyKey: newKey(), ifMatch: `"${version}"`, body: syntheticPatient() });
      const items = [
        ...ids.map(create),
        ...ids.map((id) => update(id, 1)),
        update(ids[0]!, 1), // stale: answered 409, no event
        ...ids.map((id) => update(id, 2)),
        { ...create(newPatientId()), authorization: `Bearer ${await identity.token(USERS.dee)}` }, // forbidden: no event
      ];
      const r = await callBatch(server.url, token, items);
      expect(r.items.filter((i) => i.status < 300)).to.have.length(120);

      let ours = 0;
      let crashed!: () => void;
      const crash = new Promise<void>((res) => (crashed = res));
      const first = relay({
        afterPublish: (event) => {
          if (!ids.includes(event.payload.patientId) || ++ours !== 57) return;
          crashed();
          throw new Error('simulated crash between publish and mark-sent');
        },
      });
      await crash;
      await stop(first);
      expect(await pendingFor(ids)).to.be.greaterThan(0);

      relay();
      await waitFor(async () => (await pendingFor(ids)) === 0);
      const events = await streamEventsFor(new Set(ids), from);
      expect(events).to.have.length(120);
      expect(new Set(events.map((e) => e.event.eventId))).to.deep.equal(new Set(await outboxOrder(ids)));
      for (const e of events) expect(e.msgId).to.equal(e.event.eventId);
      for (const id of ids) {
        const mine = events.filter((e) => e.event.patientId === id);
        expect(mine.map((e) => [e.event.version, e.subject])).to.deep.equal([
          [1, 'REGISTRATION.patient.created'],
          [2, 'REGISTRATION.patient.updated'],
          [3, 'REGISTRATION.patient.updated'],
        ]);
      }
    });

    describe('while NATS is unreachable', () => {
      let proxy: NatsProxy;
      beforeEach(async () => {
        proxy = await natsProxy();
      });
      afterEach(async () => {
        await proxy.close();
      });

      it('events wait in the outbox and are published once each, in order, when NATS comes back (also after a drop mid-connection)', async () => {
        const server = await app();
        const from = await streamLastSeq();
        const r = relay({ natsUrl: proxy.url });
        const ids: string[] = [];
        const register = async () => {
          const made = await call(server.url, 'POST', '/v1/patients', { token, key: newKey(), body: syntheticPatient() });
          expect(made.status).to.equal(201);
          ids.push(String(made.body.id));
          return made;
        };
        for (let i = 0; i < 4; i++) await register();
        const upd = await call(server.url, 'PUT', `/v1/patients/${ids[0]}`, { token, key: newKey(), ifMatch: '"1"', body: syntheticPatient() });
        expect(upd.status).to.equal(200);

        await waitFor(async () => r.status().consecutiveFailures >= 2);
        expect(await pendingFor(ids)).to.equal(5);
        expect(await streamEventsFor(new Set(ids), from)).to.have.length(0);

        await proxy.up();
        await waitFor(async () => (await pendingFor(ids)) === 0);
        expect(r.status().connected).to.equal(true);

        // Now take it away from under a live connection.
        await proxy.down();
        for (let i = 0; i < 3; i++) await register();
        await new Promise((res) => setTimeout(res, 300));
        await proxy.up();
        await waitFor(async () => (await pendingFor(ids)) === 0, 20_000);

        const events = await streamEventsFor(new Set(ids), from);
        expect(events.map((e) => e.event.eventId)).to.deep.equal(await outboxOrder(ids));
        expect(new Set(events.map((e) => e.event.eventId)).size).to.equal(8);
        expect(events.filter((e) => e.subject === 'REGISTRATION.patient.updated').map((e) => e.event)).to.have.length(1);
        for (const e of events) expect(e.msgId).to.equal(e.event.eventId);
      });
    });
  });
}
