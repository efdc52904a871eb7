import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import { v7 as uuidv7 } from 'uuid';
import type { Report } from './run.ts';
import { readConfig } from '../scripts/config.ts';
import { startStack, type Stack } from '../scripts/stack.ts';
import { startOwnNatsServer, type OwnNatsServer } from '../test/support/nats-server.ts';
import { tempDir } from '../test/support/services.ts';
import { recordsName } from '../couchdb/provision.ts';

// The replica (DESIGN §8), on the all-in-one stack with a nats-server of its own:
// 1. A fresh device's first pull of N records in its scope (default 10,000, `BENCH_REPLICA_RECORDS`)
//    by stock PouchDB through /replica/north, against stock PouchDB pulling the same docs straight
//    from `records_north` as the gateway's CouchDB user, in the same run (batch_size 500 both).
//    Seconds and response bytes.
// 2. Freshness: a live PouchDB pull through /replica while K patients (default 50) are registered
//    one after another through /v1; commit answered → record in the device's database, p50 / p99.

PouchDB.plugin(MemoryAdapter);

const RECORDS = Number(process.env.BENCH_REPLICA_RECORDS ?? 10_000);
const FRESH = Number(process.env.BENCH_REPLICA_FRESHNESS ?? 50);
const BATCH = 500;

type Fetch = (url: string | Request, opts?: RequestInit) => Promise<Response>;

function counting(auth: () => Promise<string>, counter: { bytes: number; requests: number }): Fetch {
  return async (url, opts) => {
    const headers = new Headers(opts?.headers);
    headers.set('Authorization', await auth());
    const res = await PouchDB.fetch(url, { ...opts, headers });
    counter.requests++;
    const body = await res.arrayBuffer();
    counter.bytes += body.byteLength;
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

function patient(facility: string, i: number) {
  return { givenName: `Bench${i}`, familyName: `Replica${i}`, birthDate: '1980-01-01', sex: 'female', facility, confirmNotDuplicate: { reason: 'synthetic bench patient' } };
}

async function login(url: string, username: string): Promise<string> {
  const res = await fetch(`${url}/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: 'ferry-dev', tenant: 'north' }) });
  return ((await res.json()) as { access_token: string }).access_token;
}

async function until(fn: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]!;

export default async function bench(report: Report): Promise<void> {
  let nats: OwnNatsServer;
  try {
    nats = await startOwnNatsServer();
  } catch {
    report.note('skipped: no nats-server binary to run a NATS of its own');
    return;
  }
  const dir = tempDir('ferry-bench-replica-');
  let stack: Stack | null = null;
  try {
    stack = await startStack(readConfig({ FERRY_DATA_DIR: dir.path, FERRY_PORT: '0', FERRY_REGISTRATION_PORT: '0', NATS_URL: nats.urlAs(nats.ferry) }), { webApp: false });
    const url = stack.url!;
    const ada = await login(url, 'ada');
    // Seed: N patients at ada's facility, straight into the service in batches of 200.
    const seeded = Date.now();
    for (let i = 0; i < RECORDS; i += 200) {
      const items = Array.from({ length: Math.min(200, RECORDS - i) }, (_, k) => ({
        method: 'POST',
        path: '/v1/patients',
        idempotencyKey: uuidv7(),
        body: { id: `pat_${uuidv7()}`, ...patient('north-hc-1', i + k) },
      }));
      const res = await fetch(`${stack.registrationUrl}/v1/batch`, { method: 'POST', headers: { authorization: `Bearer ${ada}`, 'content-type': 'application/json' }, body: JSON.stringify({ items }) });
      if (res.status !== 200) throw new Error(`seed batch answered ${res.status}`);
      await res.body?.cancel();
    }
    const db = stack.platform.db;
    const indexed = async () => Number((await db.query<{ n: string }>("SELECT count(*) AS n FROM record_index WHERE tenant = 'north' AND facility = 'north-hc-1'")).rows[0]!.n);
    await until(async () => (await indexed()) >= RECORDS, 15 * 60_000, 'the projection to list every seeded record');
    report.figure('projection of the seed (commit of the first batch → last record listed)', (Date.now() - seeded) / 1000, 's', { note: `${RECORDS} records` });
    report.figure('projection rate', RECORDS / ((Date.now() - seeded) / 1000), 'records/s');

    // 1. First pull: straight from records_north (baseline), then through /replica.
    const gateway = stack.couch.identities.gateway;
    const basic = `Basic ${Buffer.from(`${gateway.username}:${gateway.password}`).toString('base64')}`;
    const direct = { bytes: 0, requests: 0 };
    const directDb = new PouchDB(`direct-${uuidv7()}`, { adapter: 'memory' });
    let t = Date.now();
    await directDb.replicate.from(
      new PouchDB(`${stack.couch.identities.url}/${recordsName('north')}`, { skip_setup: true, fetch: counting(async () => basic, direct) } as PouchDB.Configuration.RemoteDatabaseConfiguration),
      { batch_size: BATCH },
    );
    const directS = (Date.now() - t) / 1000;
    const directDocs = (await directDb.info()).doc_count;
    await directDb.destroy();
    report.figure('first pull straight from records_north', directS, 's', { note: `${directDocs} docs, ${direct.requests} requests` });
    report.figure('first pull straight from records_north, bytes', direct.bytes, 'B');

    const via = { bytes: 0, requests: 0 };
    const deviceDb = new PouchDB(`device-${uuidv7()}`, { adapter: 'memory' });
    t = Date.now();
    await deviceDb.replicate.from(new PouchDB(`${url}/replica/north`, { skip_setup: true, fetch: counting(async () => `Bearer ${ada}`, via) } as PouchDB.Configuration.RemoteDatabaseConfiguration), {
      batch_size: BATCH,
    });
    const viaS = (Date.now() - t) / 1000;
    const viaDocs = (await deviceDb.info()).doc_count;
    report.figure('first pull through /replica', viaS, 's', { baseline: 'first pull straight from records_north', note: `${viaDocs} docs, ${via.requests} requests` });
    report.figure('first pull through /replica, bytes', via.bytes, 'B', { baseline: 'first pull straight from records_north, bytes' });
    if (viaDocs < RECORDS) report.note(`the pull through /replica brought ${viaDocs} docs, fewer than ${RECORDS}`);

    // 2. Freshness on a live pull.
    const live = deviceDb.replicate.from(new PouchDB(`${url}/replica/north`, { skip_setup: true, fetch: counting(async () => `Bearer ${ada}`, { bytes: 0, requests: 0 }) } as PouchDB.Configuration.RemoteDatabaseConfiguration), {
      live: true,
      retry: true,
      batch_size: BATCH,
    });
    const waiting = new Map<string, (at: number) => void>();
    const feed = deviceDb.changes({ live: true, since: 'now' }).on('change', (c) => waiting.get(c.id)?.(Date.now()));
    const lags: number[] = [];
    try {
      for (let i = 0; i < FRESH; i++) {
        const id = `pat_${uuidv7()}`;
        const arrived = new Promise<number>((resolve) => waiting.set(`r:patient:${id}`, resolve));
        const res = await fetch(`${url}/v1/patients`, { method: 'POST', headers: { authorization: `Bearer ${ada}`, 'content-type': 'application/json', 'idempotency-key': uuidv7() }, body: JSON.stringify({ id, ...patient('north-hc-1', RECORDS + i) }) });
        const committed = Date.now();
        if (res.status !== 201) throw new Error(`register answered ${res.status}`);
        await res.body?.cancel();
        const at = await Promise.race([arrived, new Promise<number>((r) => setTimeout(() => r(NaN), 30_000))]);
        lags.push(at - committed);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      feed.cancel();
      live.cancel();
      await Promise.allSettled([live]);
      await deviceDb.destroy();
    }
    const arrived = lags.filter((x) => Number.isFinite(x));
    if (arrived.length < lags.length) report.note(`${lags.length - arrived.length} of ${lags.length} records did not arrive within 30 s`);
    if (arrived.length > 0) {
      report.figure('freshness commit → record on a live device, p50', pct(arrived, 50), 'ms', { note: `${arrived.length} commits, one every ~200 ms` });
      report.figure('freshness commit → record on a live device, p99', pct(arrived, 99), 'ms', { note: 'goal < 2,000 ms' });
    }
  } finally {
    await stack?.close();
    dir.remove();
    await nats.stop();
  }
}
