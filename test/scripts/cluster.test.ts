import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ConfigError } from '../../scripts/config.ts';
import { parseClusterArgs, planCluster } from '../../scripts/cluster.ts';
import { TEST_DATABASE_URL, dropSchema, freePort, requirePostgres, tempDir, uniqueSchema, type TempDir } from '../support/services.ts';

// `npm run start:cluster`: the argument parser and the plan from case tables, then one real cluster
// (2 gateways, 2 workers, the registration service, one embedded CouchDB) on PostgreSQL, with a
// gateway and the lease-holding worker killed -9.

const CLUSTER = fileURLToPath(new URL('../../scripts/cluster.ts', import.meta.url));

describe('scripts: cluster', function () {
  it('parses --gateways and --workers, and refuses anything else', function () {
    const ok: Array<[string[], { gateways: number; workers: number }]> = [
      [[], { gateways: 2, workers: 2 }],
      [['--gateways', '3'], { gateways: 3, workers: 2 }],
      [['--gateways=1', '--workers=0'], { gateways: 1, workers: 0 }],
      [['--workers', '4', '--gateways', '5'], { gateways: 5, workers: 4 }],
    ];
    for (const [argv, want] of ok) expect(parseClusterArgs(argv), argv.join(' ')).to.deep.equal(want);
    for (const argv of [['--gateways', '0'], ['--gateways'], ['--workers', '-1'], ['--workers', 'x'], ['--gateways', '33'], ['--nodes', '2'], ['2']]) {
      expect(() => parseClusterArgs(argv), argv.join(' ')).to.throw(ConfigError);
    }
  });

  it('plans one registration service, gateways on consecutive ports, and workers with their own ids', function () {
    const couch = { url: 'http://127.0.0.1:5984', workerPassword: 'w' };
    const plans = planCluster({ port: 9000, registrationUrl: undefined, registrationPort: 0 }, { gateways: 2, workers: 2 }, couch);
    expect(plans.map((p) => p.name)).to.deep.equal(['registration', 'gateway-1', 'gateway-2', 'worker-1', 'worker-2']);
    expect(plans.map((p) => p.env.FERRY_PORT ?? p.env.FERRY_REGISTRATION_PORT)).to.deep.equal(['9100', '9000', '9001', undefined, undefined]);
    for (const p of plans.slice(1)) expect(p.env.FERRY_REGISTRATION_URL).to.equal('http://127.0.0.1:9100');
    expect(plans.slice(3).map((p) => [p.env.FERRY_WORKER_ID, p.env.COUCHDB_URL, p.env.FERRY_COUCH_WORKER_PASSWORD])).to.deep.equal([
      ['worker-1', couch.url, 'w'],
      ['worker-2', couch.url, 'w'],
    ]);
    // A registration service elsewhere is used, not started; the gateways get no CouchDB password of their own here.
    const apart = planCluster({ port: 9000, registrationUrl: 'http://svc:1', registrationPort: 0 }, { gateways: 1, workers: 0 }, couch);
    expect(apart.map((p) => [p.name, p.env.FERRY_REGISTRATION_URL, p.env.COUCHDB_URL])).to.deep.equal([['gateway-1', 'http://svc:1', undefined]]);
    // FERRY_PORT=0: ephemeral gateway ports, and the registration service needs a port named.
    const ephemeral = planCluster({ port: 0, registrationUrl: undefined, registrationPort: 9500 }, { gateways: 2, workers: 0 }, couch);
    expect(ephemeral.map((p) => p.env.FERRY_PORT ?? p.env.FERRY_REGISTRATION_PORT)).to.deep.equal(['9500', '0', '0']);
    expect(() => planCluster({ port: 0, registrationUrl: undefined, registrationPort: 0 }, { gateways: 1, workers: 0 }, couch)).to.throw(ConfigError, /FERRY_REGISTRATION_PORT/);
  });

  describe('a real cluster on PostgreSQL and the embedded CouchDB', function () {
    this.timeout(240_000);
    let dir: TempDir | null = null;
    const platformSchema = uniqueSchema('cluster_p');
    const registrationSchema = uniqueSchema('cluster_r');
    let child: ChildProcess | null = null;
    let ready: { gateways: string[]; workers: string[]; processes: Array<{ name: string; pid: number }> };
    let db: pg.Client;

    before(async function () {
      await requirePostgres(this);
      dir = tempDir('ferry-cluster-');
      const port = await freePort();
      child = spawn(process.execPath, ['--import', 'tsx', CLUSTER, '--gateways', '2', '--workers', '2'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          NODE_ENV: 'test',
          DATABASE_URL: TEST_DATABASE_URL,
          FERRY_PLATFORM_SCHEMA: platformSchema,
          FERRY_REGISTRATION_SCHEMA: registrationSchema,
          FERRY_DATA_DIR: dir.path,
          FERRY_PORT: String(port),
          FERRY_REGISTRATION_PORT: String(await freePort()),
          FERRY_LOG_LEVEL: 'warn',
          FERRY_WORKER_LEASE_TTL_MS: '2000',
          FERRY_WORKER_TICK_MS: '200',
        },
      });
      child.stderr!.resume();
      ready = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('cluster not ready in time')), 200_000);
        child!.once('exit', (code) => reject(new Error(`cluster exited (${code})`)));
        createInterface({ input: child!.stdout! }).on('line', (line) => {
          if (line.startsWith('{"event":"ready"')) {
            clearTimeout(timer);
            resolve(JSON.parse(line) as typeof ready);
          }
        });
      });
      db = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${platformSchema}` });
      await db.connect();
    });
    after(async function () {
      await db?.end();
      if (child && child.exitCode === null) {
        const gone = new Promise((r) => child!.once('exit', r));
        child.kill('SIGTERM');
        await gone;
      }
      const left = (ready?.processes ?? []).filter((p) => alive(p.pid)).map((p) => p.name);
      if (dir) {
        await dropSchema(platformSchema);
        await dropSchema(registrationSchema);
        dir.remove();
      }
      // Every process it started is gone with it.
      expect(left).to.deep.equal([]);
    });

    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    const healthy = async (url: string) => (await fetch(`${url}/healthz`).catch(() => null))?.status === 200;
    const until = async (what: string, ok: () => Promise<boolean>, ms: number) => {
      const t0 = Date.now();
      while (!(await ok())) {
        if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return Date.now() - t0;
    };
    const holders = async () => (await db.query<{ tenant: string; holder: string }>('SELECT tenant, holder FROM worker_leases WHERE expires_at > now() ORDER BY tenant')).rows;

    it('starts two gateways on their own ports and two workers that share the demo tenants by lease', async function () {
      expect(ready.gateways).to.have.length(2);
      expect(new Set(ready.gateways).size).to.equal(2);
      for (const g of ready.gateways) expect(await healthy(g), g).to.equal(true);
      await until('every demo tenant leased', async () => (await holders()).length === 3, 30_000);
      for (const h of await holders()) expect(ready.workers).to.include(h.holder);
    });

    it('a gateway killed -9 is restarted while the other keeps answering', async function () {
      const g1 = ready.processes.find((p) => p.name === 'gateway-1')!;
      process.kill(g1.pid, 'SIGKILL');
      await until('gateway-1 down', async () => !(await healthy(ready.gateways[0]!)), 10_000);
      expect(await healthy(ready.gateways[1]!)).to.equal(true);
      await until('gateway-1 back', () => healthy(ready.gateways[0]!), 60_000);
    });

    it('the worker holding a tenant’s lease killed -9: the tenant is leased again, with a higher fence, within the lease TTL', async function () {
      const fenceOf = async () => (await db.query<{ holder: string; fence: string; live: boolean }>(`SELECT holder, fence, expires_at > now() AS live FROM worker_leases WHERE tenant = 'north'`)).rows[0]!;
      const before = await fenceOf();
      const victim = ready.processes.find((p) => p.name === before.holder)!;
      process.kill(victim.pid, 'SIGKILL');
      // The dead holder's lease lapses after its TTL (2 s); the standby's next tick (0.2 s), or the
      // victim restarted under its stable id, takes it with the next fence. 3 s of slack for a loaded machine.
      await until('north leased again', async () => {
        const now = await fenceOf();
        return now.live && Number(now.fence) > Number(before.fence);
      }, 2_000 + 3_000);
    });
  });
});
