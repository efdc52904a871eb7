import { expect } from 'chai';
import { v7 as uuidv7 } from 'uuid';
import { recordsName } from '../../couchdb/provision.ts';
import { jwksOf } from '../../identity/keys.ts';
import { createTokenVerifier } from '../../identity/tokens.ts';
import { startRegistrationService, type RegistrationService } from '../../services/registration/index.ts';
import { FEED_HEAD_ID } from '../../gateway/worker/status-writer.ts';
import { headBehind } from '../../gateway/replica/decide.ts';
import { createProjection } from '../../gateway/replica/projection.ts';
import { requireNatsServerBinary } from '../support/nats-server.ts';
import { requirePostgres } from '../support/services.ts';
import { ISSUER, newEntity, patientPayload, startEnv, waitUntil, type Env } from '../worker/fixture.ts';
import { killAllWorkers, spawnWorker } from '../worker/processes.ts';
import { startRestartableNats, type RestartableNats } from './support.ts';

// Issue 11, "the projection survives kill -9", with a real kill: the projection runs in the worker
// process (scripts/worker.ts, on PostgreSQL), is SIGKILLed while it works through a few hundred
// events, and is started again. Every committed patient must end at its latest version in its
// record doc and exactly once in the index, at its current facility, with no older revision winning.

const PATIENTS = 120;

interface Committed {
  id: string;
  version: number;
  facility: string;
}

/** A registration service on the environment's database that does publish (the fixture's does not). */
async function publishingService(env: Env, nats: RestartableNats): Promise<RegistrationService> {
  const verifier = createTokenVerifier({ jwks: jwksOf([env.key]), issuer: ISSUER });
  return startRegistrationService({ db: env.serviceDb, verifier, natsUrl: nats.url, licensedTenants: ['north'] });
}

async function send(service: RegistrationService, token: string, method: 'POST' | 'PUT', path: string, body: unknown, ifMatch?: number): Promise<Record<string, unknown> & { id: string; version: number; facility: string }> {
  const res = await fetch(`${service.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': uuidv7(), ...(ifMatch !== undefined ? { 'if-match': `"${ifMatch}"` } : {}) },
    body: JSON.stringify(body),
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`service answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as Record<string, unknown> & { id: string; version: number; facility: string };
}

/** Applies `round` updates to each patient: a phone change, and every third patient moves facility. */
async function updateAll(service: RegistrationService, token: string, state: Map<string, Record<string, unknown> & { id: string; version: number; facility: string }>, round: number): Promise<void> {
  const ids = [...state.keys()];
  for (let i = 0; i < ids.length; i += 8) {
    await Promise.all(
      ids.slice(i, i + 8).map(async (id, k) => {
        const cur = state.get(id)!;
        const { id: _id, version, tenant: _t, createdAt: _c, updatedAt: _u, ...fields } = cur;
        const move = (i + k) % 3 === round % 3;
        const next = await send(service, token, 'PUT', `/v1/patients/${id}`, { ...fields, phone: `+23480000${String(round).padStart(2, '0')}${String(i + k).padStart(3, '0')}`, ...(move ? { facility: cur.facility === 'north-hc-1' ? 'north-hc-2' : 'north-hc-1' } : {}) }, version);
        state.set(id, next);
      }),
    );
  }
}

async function indexRows(env: Env): Promise<number> {
  const { rows } = await env.platform.db.query<{ n: string }>('SELECT count(*) AS n FROM record_index WHERE tenant = $1', ['north']);
  return Number(rows[0]!.n);
}

async function position(env: Env): Promise<number> {
  const { rows } = await env.platform.db.query<{ value: string }>("SELECT value FROM replica_settings WHERE key = 'stream-position'");
  return rows[0] ? Number(rows[0].value) : 0;
}

describe('replica: the projection survives kill -9 of its worker process', function () {
  this.timeout(120_000);
  let nats: RestartableNats;
  let env: Env;
  let service: RegistrationService;

  before(async function () {
    this.timeout(120_000);
    requireNatsServerBinary(this);
    await requirePostgres(this);
    nats = await startRestartableNats();
    env = await startEnv({ tenants: ['north'], licensed: ['north'] });
    service = await publishingService(env, nats);
  });
  afterEach(async () => {
    await killAllWorkers();
  });
  after(async () => {
    await killAllWorkers();
    await service?.close();
    await env?.close();
    await nats?.stop();
  });

  it('SIGKILL mid-stream, commits while it is down, restart: every record at its latest version, once, current facility', async function () {
    this.timeout(60_000);
    const token = await env.issuer.mintAccess({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['registrar'], sid: `kill-${uuidv7()}` });
    const state = new Map<string, Record<string, unknown> & { id: string; version: number; facility: string }>();
    for (let i = 0; i < PATIENTS; i += 8) {
      const made = await Promise.all(
        Array.from({ length: Math.min(8, PATIENTS - i) }, () =>
          send(service, token, 'POST', '/v1/patients', { id: newEntity(), ...patientPayload({ facility: 'north-hc-1' }), confirmNotDuplicate: { reason: 'synthetic test patient' } }),
        ),
      );
      for (const p of made) state.set(p.id, p);
    }
    await updateAll(service, token, state, 1);
    // 240 events wait in the stream. The first process dies as soon as it has listed anything; the
    // second, started at once, dies once half the patients are listed; more commits (with moves)
    // land throughout and while nothing runs; a third process finishes.
    const a = await spawnWorker(env, 'replica-kill-a', { NATS_URL: nats.url });
    const updating = updateAll(service, token, state, 2);
    await waitUntil(async () => (await indexRows(env)) > 0, 30_000, 5);
    await a.kill();
    const positionAtFirstKill = await position(env);
    expect(positionAtFirstKill, 'killed before the events waiting at its start were projected').to.be.below(PATIENTS * 2);
    const b = await spawnWorker(env, 'replica-kill-b', { NATS_URL: nats.url });
    await waitUntil(async () => (await indexRows(env)) >= PATIENTS / 2, 30_000, 5);
    await b.kill();
    const { rows: atKill } = await env.platform.db.query<{ record_id: string; facility: string }>('SELECT record_id, facility FROM record_index WHERE tenant = $1', ['north']);
    const listedAtKill = atKill.length;
    const positionAtKill = await position(env);
    await updating;
    await updateAll(service, token, state, 3);
    expect(positionAtKill, 'the second kill left events unprojected').to.be.below(PATIENTS * 4);

    await spawnWorker(env, 'replica-kill-c', { NATS_URL: nats.url });
    const latest: Committed[] = [...state.values()].map((p) => ({ id: p.id, version: p.version, facility: p.facility }));
    const expected = new Map(latest.map((p) => [p.id, p]));
    await waitUntil(async () => {
      const { rows } = await env.platform.db.query<{ record_id: string; version: number }>('SELECT record_id, version FROM record_index WHERE tenant = $1', ['north']);
      return rows.length === PATIENTS && rows.every((r) => Number(r.version) === expected.get(r.record_id)?.version);
    }, 40_000, 100);

    // The index: one row per committed patient, at its latest version and current facility, and
    // counters unique (each listing got its own place in the feed).
    const { rows: index } = await env.platform.db.query<{ record_id: string; facility: string; version: number; counter: string }>(
      'SELECT record_id, facility, version, counter FROM record_index WHERE tenant = $1 ORDER BY record_id',
      ['north'],
    );
    expect(index.map((r) => ({ id: r.record_id, version: Number(r.version), facility: r.facility }))).to.deep.equal([...latest].sort((x, y) => (x.id < y.id ? -1 : 1)));
    expect(new Set(index.map((r) => r.counter)).size).to.equal(PATIENTS);
    const { rows: counterRow } = await env.platform.db.query<{ counter: string }>('SELECT counter FROM record_counters WHERE tenant = $1', ['north']);
    const top = Number(counterRow[0]!.counter);
    expect(Math.max(...index.map((r) => Number(r.counter)))).to.be.at.most(top);

    // The docs: the latest version wins, its generation is its version, no conflicting branch.
    const records = env.admin.db(recordsName('north'));
    for (const want of latest) {
      const doc = await records.get<{ version: number; facility: string; data: { phone?: string }; _conflicts?: string[] }>(`r:patient:${want.id}`, { conflicts: true });
      expect(doc, want.id).to.not.equal(null);
      expect({ version: doc!.version, generation: Number(doc!._rev!.split('-')[0]), facility: doc!.facility, conflicts: doc!._conflicts ?? [] }, want.id).to.deep.equal({ version: want.version, generation: want.version, facility: want.facility, conflicts: [] });
      expect(doc!.data.phone, want.id).to.equal(state.get(want.id)!.phone);
    }

    // Moves left a departure in the facility the record left, and none where it is now.
    const { rows: departures } = await env.platform.db.query<{ record_id: string; facility: string }>('SELECT record_id, facility FROM record_departures WHERE tenant = $1', ['north']);
    for (const d of departures) expect(expected.get(d.record_id)!.facility, d.record_id).to.not.equal(d.facility);
    // A record listed at one facility when the process died and now at the other has left the first:
    // its departure was written with the move, in the same transaction.
    const departed = new Set(departures.map((d) => `${d.record_id}@${d.facility}`));
    const movedSinceKill = atKill.filter((r) => expected.get(r.record_id)!.facility !== r.facility);
    expect(movedSinceKill.filter((r) => !departed.has(`${r.record_id}@${r.facility}`)), 'moved since the kill without a departure').to.deep.equal([]);
    if (process.env.FERRY_TEST_WORKER_LOG) console.log({ positionAtFirstKill, listedAtKill, positionAtKill, movedSinceKill: movedSinceKill.length, departures: departures.length });

    // feed:head wakes longpolls: it must reach the index's top counter after the restart too.
    await waitUntil(async () => ((await records.get<{ counter: number }>(FEED_HEAD_ID))?.counter ?? 0) >= top, 10_000, 100);
  });
  it('a crash between the index and feed:head (injected): the batch read again finds every record listed and still raises the head', async function () {
    this.timeout(60_000);
    const token = await env.issuer.mintAccess({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['registrar'], sid: `kill-${uuidv7()}` });
    let crashes = 0;
    const projection = createProjection({
      db: env.platform.db,
      couch: env.workerCouch,
      issuer: env.issuer,
      registrationUrl: service.url,
      natsUrl: nats.url,
      tenants: () => env.platform.tenants.list(),
      fetchExpiresMs: 1000,
      backoff: { baseMs: 50, maxMs: 200 },
      afterIndexed: () => {
        if (crashes++ === 0) throw new Error('killed here');
      },
    });
    projection.start();
    try {
      const p = await send(service, token, 'POST', '/v1/patients', { id: newEntity(), ...patientPayload({ facility: 'north-hc-1' }), confirmNotDuplicate: { reason: 'synthetic test patient' } });
      await waitUntil(async () => (await env.platform.db.query('SELECT 1 FROM record_index WHERE tenant = $1 AND record_id = $2', ['north', p.id])).rows.length === 1, 30_000, 50);
      const { rows } = await env.platform.db.query<{ counter: string }>('SELECT counter FROM record_counters WHERE tenant = $1', ['north']);
      const top = Number(rows[0]!.counter);
      await waitUntil(async () => ((await env.admin.db(recordsName('north')).get<{ counter: number }>(FEED_HEAD_ID))?.counter ?? 0) >= top, 10_000, 50);
      expect(crashes).to.be.at.least(1);
    } finally {
      await projection.stop();
    }
  });

  describe('headBehind (whether feed:head is raised to the index)', () => {
    const cases: Array<[number | null, number, boolean]> = [
      [null, 0, false],
      [null, 5, true],
      [4, 5, true],
      [5, 5, false],
      [6, 5, false],
      [0, 0, false],
    ];
    for (const [head, counter, want] of cases) it(`head ${String(head)}, index ${counter}: ${want ? 'raise' : 'leave'}`, () => expect(headBehind(head, counter)).to.equal(want));
  });
});
