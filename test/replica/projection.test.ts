import { expect } from 'chai';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { v7 as uuidv7 } from 'uuid';
import { startTestStack, type TestStack } from '../support/stack.ts';
import { requireNatsServerBinary } from '../support/nats-server.ts';
import { createProjection } from '../../gateway/replica/projection.ts';
import { couchServerAs } from '../../couchdb/identities.ts';
import { projectedAt, recordDoc, register, startRestartableNats, until, update, type RestartableNats } from './support.ts';

// The projection on the full stack, against a nats-server of this suite's own (so the stream holds
// only this suite's events, and the server can be killed): duplicates and old events change
// nothing, a crash between the doc write and the index converges when the batch is read again, a NATS outage is
// ridden out, and replaying the stream from its start (rebuild) writes the very same docs.

const TUNING = { fetchExpiresMs: 1000, backoff: { baseMs: 50, maxMs: 500 } };

async function counterOf(stack: TestStack, tenant: string): Promise<number> {
  const { rows } = await stack.platform.db.query<{ counter: string | number }>('SELECT counter FROM record_counters WHERE tenant = $1', [tenant]);
  return rows[0] ? Number(rows[0].counter) : 0;
}

async function publish(nats: RestartableNats, subject: string, payload: unknown): Promise<void> {
  const u = new URL(nats.url);
  const nc = await connect({ servers: `${u.hostname}:${u.port}`, user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) });
  try {
    await jetstream(nc).publish(subject, JSON.stringify(payload), { msgID: uuidv7() });
  } finally {
    await nc.close();
  }
}

describe('replica: the projection', function () {
  this.timeout(180_000);
  let nats: RestartableNats;
  let stack: TestStack;
  let ada: string;

  before(async function () {
    requireNatsServerBinary(this);
    nats = await startRestartableNats();
    stack = await startTestStack({ webApp: false, env: { NATS_URL: nats.url }, replicaTuning: TUNING });
    ada = await stack.login('ada', 'north');
  });
  after(async () => {
    await stack?.stop();
    await nats?.stop();
  });

  /** A second projection process on the same deployment (the stack's own is stopped around it). */
  const anotherProjection = (extra: Partial<Parameters<typeof createProjection>[0]>) =>
    createProjection({
      db: stack.platform.db,
      couch: couchServerAs(stack.couch.identities, 'worker'),
      issuer: stack.issuer,
      registrationUrl: stack.registrationUrl,
      natsUrl: nats.url,
      tenants: () => stack.platform.tenants.list(),
      ...TUNING,
      ...extra,
    });

  it('projects a committed create and update as `r:patient:{id}` docs shaped as DESIGN §8 says', async () => {
    const p = await register(stack, ada, 'north-hc-1');
    const doc = await projectedAt(stack, 'north', p.id, 1);
    expect(doc).to.include({ _id: `r:patient:${p.id}`, type: 'record', v: 1, tenant: 'north', resource: 'patient', id: p.id, version: 1, facility: 'north-hc-1' });
    const got = await fetch(`${stack.url}/v1/patients/${p.id}`, { headers: { authorization: `Bearer ${ada}` } });
    expect((doc as unknown as { data: unknown }).data).to.deep.equal(await got.json());
    const v2 = await update(stack, ada, p.body, { phone: '+2348000000001' });
    const doc2 = await projectedAt(stack, 'north', p.id, 2);
    expect(doc2._rev.startsWith('2-')).to.equal(true);
    expect((doc2 as unknown as { data: { phone: string } }).data.phone).to.equal('+2348000000001');
    expect(v2.version).to.equal(2);
  });

  it('duplicate and older events change nothing: same revision, no new counter', async () => {
    const p = await register(stack, ada, 'north-hc-1');
    const v2 = await update(stack, ada, p.body, { phone: '+2348000000002' });
    const doc = await projectedAt(stack, 'north', p.id, v2.version);
    await until('the projection idle', async () => stack.projection!.status().pending === 0);
    const counter = await counterOf(stack, 'north');
    const acked = stack.projection!.status().acked;
    const event = (version: number, type: string) => ({ v: 1, eventId: uuidv7(), type, tenant: 'north', patientId: p.id, version, actingUser: 'ada', actor: 'ada', correlationId: null, occurredAt: new Date().toISOString() });
    await publish(nats, 'REGISTRATION.patient.updated', event(2, 'patient.updated'));
    await publish(nats, 'REGISTRATION.patient.created', event(1, 'patient.created'));
    await until('both delivered and acked', async () => stack.projection!.status().acked >= acked + 2);
    expect((await recordDoc(stack, 'north', p.id))!._rev).to.equal(doc._rev);
    expect(await counterOf(stack, 'north')).to.equal(counter);
  });

  it('a crash between the doc write and the index (injected) converges: the batch is read again from the stored position', async () => {
    // A second projection process on the same deployment, which "dies" at the worst moment once.
    await stack.projection!.stop();
    let crashes = 0;
    const crashing = anotherProjection({
      afterDocsWritten: () => {
        if (crashes++ === 0) throw new Error('killed here');
      },
    });
    crashing.start();
    try {
      const p = await register(stack, ada, 'north-hc-1');
      await until('listed in the index', async () => (await stack.platform.db.query('SELECT 1 FROM record_index WHERE tenant = $1 AND record_id = $2', ['north', p.id])).rows.length === 1);
      expect(crashes).to.be.at.least(2);
      expect((await recordDoc(stack, 'north', p.id))!.version).to.equal(1);
    } finally {
      await crashing.stop();
      stack.projection!.start();
    }
  });

  for (const service of ['with POST /v1/patients/lookup', 'without it (an older service: one GET per record)'] as const) {
    it(`reads a batch's records from the service ${service}`, async () => {
      await stack.projection!.stop();
      const calls: string[] = [];
      const counting: typeof fetch = async (input, init) => {
        const url = new URL(String(input));
        calls.push(`${init?.method ?? 'GET'} ${url.pathname.replace(/pat_[^/]+$/, '{id}')}`);
        if (service.startsWith('without') && url.pathname === '/v1/patients/lookup') return new Response('{"code":"NOT_FOUND"}', { status: 404 });
        return fetch(input, init);
      };
      const reading = anotherProjection({ fetch: counting });
      try {
        // Committed while no projection runs, so the three are one batch when it starts.
        const made = [await register(stack, ada, 'north-hc-1'), await register(stack, ada, 'north-hc-2'), await register(stack, ada, 'north-hc-1')];
        reading.start();
        for (const p of made) expect((await projectedAt(stack, 'north', p.id, 1)).facility).to.be.oneOf(['north-hc-1', 'north-hc-2']);
        const lookups = calls.filter((c) => c === 'POST /v1/patients/lookup').length;
        const gets = calls.filter((c) => c === 'GET /v1/patients/{id}').length;
        if (service.startsWith('with ')) {
          expect(lookups).to.be.at.least(1).and.at.most(made.length);
          expect(gets).to.equal(0);
        } else {
          // Asked once, then never again: every record by its own GET.
          expect(lookups).to.equal(1);
          expect(gets).to.be.at.least(made.length);
        }
      } finally {
        await reading.stop();
        stack.projection!.start();
      }
    });
  }

  it('rides out a NATS outage: commits made while NATS is down are projected once it is back', async () => {
    await nats.kill();
    // The service commits (events wait in its outbox); nothing can be projected yet.
    const p = await register(stack, ada, 'north-hc-1');
    await new Promise((r) => setTimeout(r, 1000));
    expect(await recordDoc(stack, 'north', p.id)).to.equal(null);
    await nats.start();
    await projectedAt(stack, 'north', p.id, 1, 60_000);
  });

  it('rebuilds from the start of the stream: the index comes back and every doc keeps its revision', async () => {
    const p = await register(stack, ada, 'north-hc-1');
    await update(stack, ada, p.body, { facility: 'north-hc-2' });
    await projectedAt(stack, 'north', p.id, 2);
    await until('the projection idle', async () => stack.projection!.status().pending === 0);
    const records = couchServerAs(stack.couch.identities, 'admin').db('records_north');
    const before = (await records.allDocs({ startkey: 'r:patient:', endkey: 'r:patient:\uffff' })).rows.map((r) => [r.id, r.value.rev]);
    const indexBefore = (await stack.platform.db.query<{ record_id: string; facility: string; version: number }>('SELECT record_id, facility, version FROM record_index WHERE tenant = $1 ORDER BY record_id', ['north'])).rows;
    expect(before.length).to.be.at.least(5);
    // Lose the index entirely, then replay every event.
    await stack.projection!.stop();
    await stack.platform.db.query('DELETE FROM record_index');
    await stack.platform.db.query('DELETE FROM record_departures');
    await stack.platform.db.query('DELETE FROM record_counters');
    await stack.projection!.rebuild();
    stack.projection!.start();
    await until('index rebuilt', async () => (await stack.platform.db.query('SELECT 1 FROM record_index WHERE tenant = $1', ['north'])).rows.length === indexBefore.length, 60_000);
    const indexAfter = (await stack.platform.db.query<{ record_id: string; facility: string; version: number }>('SELECT record_id, facility, version FROM record_index WHERE tenant = $1 ORDER BY record_id', ['north'])).rows;
    expect(indexAfter).to.deep.equal(indexBefore);
    const after = (await records.allDocs({ startkey: 'r:patient:', endkey: 'r:patient:\uffff' })).rows.map((r) => [r.id, r.value.rev]);
    expect(after).to.deep.equal(before);
  });

  it('reports its lag and freshness in /metrics', async () => {
    const res = await fetch(`${stack.url}/metrics`);
    const text = await res.text();
    expect(text).to.match(/^ferry_replica_lag_events \d+/m);
    expect(text).to.match(/^ferry_replica_freshness_seconds_count [1-9]\d*/m);
    expect(text).to.match(/^ferry_replica_records_total\{outcome="projected"\} [1-9]\d*/m);
  });
});
