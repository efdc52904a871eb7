import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WORKER_PASSWORD_ENV } from '../../couchdb/identities.ts';
import { createLocalStore } from '../../gateway/sync/local-store.ts';
import { planCluster } from '../../scripts/cluster.ts';
import { ConfigError, readConfig } from '../../scripts/config.ts';
import { readWorkerRetention, RETENTION_URL_ENV } from '../../scripts/worker-retention.ts';
import { ackDocId } from '../../validators/acknowledgement.ts';
import { requirePostgres, TEST_DATABASE_URL } from '../support/services.ts';
import { ISSUER, mutationDoc, newEntity, patientPayload, startEnv, waitUntil, type Env, type MutationFixture } from '../worker/fixture.ts';

// Retention in the multi-process topology (docs/SYNC.md "Retention", docs/DEPLOY.md): a worker
// process purges only when FERRY_COUCH_RETENTION_URL hands it a CouchDB server admin, says so in
// one start-up line either way, and only the worker holding a tenant's lease purges that tenant.

const ENTRY = fileURLToPath(new URL('../../scripts/worker.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');
const DEVICE = 'dev-test';

describe('scripts/worker: retention settings', function () {
  const config = readConfig({});
  const cases: Array<[string, string | undefined, { url: string; username: string } | null | 'refused']> = [
    ['unset: no retention in this process', undefined, null],
    ['with an admin credential', 'http://admin:s%40cret@couch.internal:5984/', { url: 'http://couch.internal:5984', username: 'admin' }],
    ['without credentials: refused', 'http://couch.internal:5984', 'refused'],
    ['a password but no user: refused', 'https://:pw@couch.internal', 'refused'],
  ];
  for (const [name, raw, want] of cases) {
    it(name, function () {
      if (want === 'refused') {
        expect(() => readWorkerRetention(config, raw)).to.throw(ConfigError, /FERRY_COUCH_RETENTION_URL/);
        return;
      }
      const got = readWorkerRetention(config, raw);
      if (want === null) return void expect(got).to.equal(null);
      expect({ url: got!.url, username: got!.admin.username }).to.deep.equal(want);
      expect(got!.admin.password).to.equal('s@cret');
      expect(got!.policy).to.deep.equal({ windowMs: config.retention.windowMs, maxMs: null, recheckMs: 24 * 3600_000 });
    });
  }

  it('the error names the variable and never echoes the credential', function () {
    let message = '';
    try {
      readConfig({ [RETENTION_URL_ENV]: 'ftp://admin:Zq9secret@x' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).to.include(RETENTION_URL_ENV);
    expect(message).to.not.include('Zq9secret');
  });

  it('start:cluster hands the retention credential to the workers only, when it has one', function () {
    const couch = { url: 'http://127.0.0.1:5984', workerPassword: 'w', retentionUrl: 'http://admin:a@127.0.0.1:5984' };
    const plans = planCluster({ port: 9000, registrationUrl: undefined, registrationPort: 0 }, { gateways: 2, workers: 2 }, couch);
    expect(plans.map((p) => [p.name, p.env[RETENTION_URL_ENV]])).to.deep.equal([
      ['registration', undefined],
      ['gateway-1', undefined],
      ['gateway-2', undefined],
      ['worker-1', couch.retentionUrl],
      ['worker-2', couch.retentionUrl],
    ]);
    const without = planCluster({ port: 9000, registrationUrl: undefined, registrationPort: 0 }, { gateways: 1, workers: 1 }, { url: couch.url, workerPassword: 'w' });
    expect(without.every((p) => !(RETENTION_URL_ENV in p.env))).to.equal(true);
  });
});

interface Proc {
  id: string;
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

describe('scripts/worker: two worker processes with retention on PostgreSQL', function () {
  this.timeout(240_000);
  let env: Env;
  const procs: Proc[] = [];

  /** scripts/worker.ts as production runs it, every stdout line kept (JSON logs and the ready line). */
  const start = async (id: string, extra: Record<string, string>): Promise<Proc> => {
    const child = spawn(process.execPath, ['--import', TSX, ENTRY], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        NODE_OPTIONS: '',
        NODE_ENV: 'test',
        DATABASE_URL: TEST_DATABASE_URL,
        FERRY_PLATFORM_SCHEMA: env.platformSchema!,
        COUCHDB_URL: env.couch.url,
        [WORKER_PASSWORD_ENV]: env.identities.worker.password,
        FERRY_DATA_DIR: env.dir.path,
        FERRY_ISSUER: ISSUER,
        FERRY_REGISTRATION_URL: env.service.url,
        FERRY_WORKER_ID: id,
        FERRY_WORKER_LEASE_TTL_MS: '2000',
        FERRY_WORKER_TICK_MS: '100',
        FERRY_LOG_LEVEL: 'info',
        FERRY_RETENTION_WINDOW_MS: '1',
        FERRY_RETENTION_INTERVAL_MS: '300',
        ...extra,
      },
    });
    child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[${id}] ${d.toString()}`));
    const proc: Proc = {
      id,
      child,
      lines: [],
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(t);
      },
    };
    procs.push(proc);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`worker ${id} did not start`)), 60_000);
      child.once('exit', (code) => reject(new Error(`worker ${id} exited with ${code}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        try {
          proc.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          return;
        }
        if (line.includes('"event":"ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return proc;
  };
  const said = (p: Proc, msg: string) => p.lines.filter((l) => l.msg === msg);
  const holder = async () => (await env.platform.db.query<{ holder: string }>(`SELECT holder FROM worker_leases WHERE tenant = 'north' AND expires_at > now()`)).rows[0]?.holder ?? null;
  const adminUrl = () => {
    const u = new URL(env.couch.url);
    u.username = env.identities.admin.username;
    u.password = env.identities.admin.password;
    return u.toString();
  };
  const inboxDocs = async () => {
    const res = await env.admin.db('inbox_north').request('GET', '/_all_docs', undefined, { startkey: 'm:', endkey: 's:\ufff0' });
    return ((await res.json()) as { rows: unknown[] }).rows.length;
  };

  before(async function () {
    await requirePostgres(this);
    env = await startEnv({ tenants: ['north'], backend: 'postgres' });
  });
  after(async () => {
    for (const p of procs) await p.stop();
    await env?.close();
  });

  it('without FERRY_COUCH_RETENTION_URL, start-up says in one line that retention is off, with no secret in it', async () => {
    const p = await start('no-retention', {});
    const off = p.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('retention is off in this process'));
    expect(off).to.have.length(1);
    expect(JSON.stringify(p.lines)).to.not.include(env.identities.worker.password);
    await p.stop();
    procs.splice(procs.indexOf(p), 1);
  });

  it('a credential that is not a server admin refuses to start (exit 2)', async () => {
    const u = new URL(env.couch.url);
    u.username = env.identities.worker.username;
    u.password = env.identities.worker.password;
    const err = await start('not-admin', { [RETENTION_URL_ENV]: u.toString() }).catch((e: Error) => e);
    expect(err).to.be.an('error');
    expect(String(err)).to.match(/exited with 2/);
    procs.pop();
  });

  it('two privileged workers: only the lease holder purges, and the inbox goes back to its base docs', async () => {
    const a = await start('ret-a', { [RETENTION_URL_ENV]: adminUrl() });
    const b = await start('ret-b', { [RETENTION_URL_ENV]: adminUrl() });
    for (const p of [a, b]) {
      const on = p.lines.filter((l) => l.msg === 'retention is on in this process, for the tenants whose lease it holds');
      expect(on, p.id).to.have.length(1);
      expect(JSON.stringify(p.lines), 'no admin password in the logs').to.not.include(env.identities.admin.password);
    }
    await waitUntil(async () => (await holder()) !== null, 15_000);
    const leader = (await holder())!;

    const local = createLocalStore(env.platform.db);
    let rev = 0;
    for (let round = 0; round < 2; round++) {
      const docs: MutationFixture[] = Array.from({ length: 5 }, () => {
        const m = mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload() });
        m.device = DEVICE;
        return m;
      });
      await env.push('north', docs);
      let top = 0;
      for (const m of docs) top = Math.max(top, (await env.waitStatus('north', 'ada', m.mid, (x) => x.state === 'committed', 60_000)).counter!);
      expect(await inboxDocs()).to.equal(10);
      // The device acknowledges everything it pulled (what client/acknowledgement.ts writes).
      expect(await local.put({ tenant: 'north', owner: 'ada', id: ackDocId(DEVICE) }, ++rev, { type: 'ferry-ack', v: 1, device: DEVICE, counter: top })).to.equal(true);
      await waitUntil(async () => (await inboxDocs()) === 0, 30_000, 100);
    }
    const purgedRows = await env.platform.db.query<{ n: string }>(`SELECT count(*) AS n FROM pending_mutations WHERE tenant = 'north' AND purged_at IS NOT NULL`);
    expect(Number(purgedRows.rows[0]!.n)).to.equal(10);
    // Only the lease holder ran passes that purged; the standby logged none for north.
    const leaderProc = [a, b].find((p) => p.id === leader)!;
    const standby = [a, b].find((p) => p.id !== leader)!;
    const purgedBy = (p: Proc) => said(p, 'retention pass').reduce((n, l) => n + Number(l.purged ?? 0), 0);
    // The database says 10 are purged; the pass lines reach us on stdout a little later.
    await waitUntil(async () => purgedBy(leaderProc) + purgedBy(standby) >= 10, 5_000);
    expect(await holder(), 'the lease did not move during the test').to.equal(leader);
    expect(purgedBy(leaderProc)).to.equal(10);
    expect(purgedBy(standby)).to.equal(0);
    // The pass logs carry counts and the tenant, never a doc id or a mutation id.
    for (const l of said(leaderProc, 'retention pass')) expect(Object.keys(l)).to.not.include.members(['id', 'mid', 'ids']);
    // Back to its base docs: the design doc and `feed:head`.
    const info = (await (await env.admin.db('inbox_north').request('GET', '')).json()) as { doc_count: number };
    expect(info.doc_count).to.be.at.most(2);

    // The holder stops: the standby takes the lease, and retention with it.
    await leaderProc.stop();
    await waitUntil(async () => (await holder()) === standby.id, 15_000, 100);
    const m = mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload() });
    m.device = DEVICE;
    await env.push('north', [m]);
    const counter = (await env.waitStatus('north', 'ada', m.mid, (x) => x.state === 'committed', 60_000)).counter!;
    expect(await local.put({ tenant: 'north', owner: 'ada', id: ackDocId(DEVICE) }, rev + 1, { type: 'ferry-ack', v: 1, device: DEVICE, counter })).to.equal(true);
    await waitUntil(async () => (await inboxDocs()) === 0, 30_000, 100);
    await waitUntil(async () => purgedBy(standby) === 1, 5_000);
  });
});
