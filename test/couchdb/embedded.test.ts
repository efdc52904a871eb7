import { expect } from 'chai';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startEmbeddedCouch, findRunningEmbedded, restartDelay, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { createCouchServer } from '../../couchdb/client.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw, waitFor } from './http.ts';

describe('couchdb/embedded: the supervised express-pouchdb server', function () {
  this.timeout(60_000);
  let dir: TempDir;
  let couch: EmbeddedCouch | undefined;

  before(async () => {
    dir = tempDir('ferry-couch-');
    couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort(), backoff: { baseMs: 50, maxMs: 500 } });
  });

  after(async () => {
    await couch?.stop();
    dir?.remove();
  });

  const server = () => couch!;

  it('listens on loopback, answers the admin and keeps its secrets 0600', async () => {
    expect(server().url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const root = await raw(server().url, 'GET', '/', { auth: server().admin });
    expect(root.status).to.equal(200);
    for (const f of ['admin.json', 'server.json']) {
      expect(statSync(join(dir.path, 'couch', f)).mode & 0o777).to.equal(0o600);
    }
    expect(findRunningEmbedded(dir.path)).to.deep.equal({ pid: process.pid, port: server().port });
  });

  it('refuses anonymous requests everywhere with 401, and does not crash on anonymous PUT /db (trap 4)', async () => {
    const probes: Array<[string, string, unknown?]> = [
      ['GET', '/'],
      ['GET', '/_all_dbs'],
      ['PUT', '/anondb'],
      ['DELETE', '/_users'],
      ['GET', '/_users/_all_docs'],
      ['PUT', '/_users/org.couchdb.user:eve', { name: 'eve', password: 'x', roles: [], type: 'user' }],
      ['GET', '/_config'],
      ['PUT', '/_config/admins/eve', 'x'],
      ['GET', '/_session'],
      ['GET', '/_utils/'],
      ['GET', '/_utils/index.html'],
      ['POST', '/anondb/_bulk_docs', { docs: [{ _id: 'x' }] }],
      ['GET', '/anondb/_changes?filter=nosuch/f'],
      ['OPTIONS', '/_all_dbs'],
    ];
    for (const [method, path, body] of probes) {
      const res = await raw(server().url, method, path, body === undefined ? {} : { body });
      expect(res.status, `${method} ${path}`).to.equal(401);
    }
    // A bogus session cookie or a non-Basic scheme is still anonymous.
    for (const headers of [{ cookie: 'AuthSession=Zm9vOjA6YmFy' }, { authorization: 'Bearer abc' }] as Array<Record<string, string>>) {
      expect((await raw(server().url, 'PUT', '/anondb', { headers })).status).to.equal(401);
    }
    const dbs = await raw(server().url, 'GET', '/_all_dbs', { auth: server().admin });
    expect(dbs.body).to.be.an('array').that.does.not.include('anondb');
    expect(server().restarts()).to.equal(0);
  });

  it('refuses a wrong password', async () => {
    const res = await raw(server().url, 'GET', '/', { auth: { username: server().admin.username, password: 'wrong' } });
    expect(res.status).to.equal(401);
  });

  it('never sends CORS headers, whatever the Origin', async () => {
    const answers = [
      await raw(server().url, 'GET', '/_all_dbs', { auth: server().admin, headers: { origin: 'http://evil.example' } }),
      await raw(server().url, 'OPTIONS', '/_all_dbs', {
        auth: server().admin,
        headers: { origin: 'http://evil.example', 'access-control-request-method': 'PUT' },
      }),
      await raw(server().url, 'GET', '/', { headers: { origin: 'http://evil.example' } }),
    ];
    for (const res of answers) {
      const cors = [...res.headers.keys()].filter((k) => k.startsWith('access-control-'));
      expect(cors).to.deep.equal([]);
    }
  });

  it('runs the child as plain JavaScript (a bundle), without a TypeScript loader', () => {
    const cmdline = readFileSync(`/proc/${server().pid()}/cmdline`, 'utf8').split('\0');
    expect(cmdline.some((a) => /embedded-couch\/server-[0-9a-f]{16}\.bundle\.js$/.test(a))).to.equal(true);
    expect(cmdline.join(' ')).not.to.match(/tsx/);
  });

  it('keeps idle keep-alive connections for a minute, longer than its clients\' stalls', async () => {
    // A client whose event loop is busy (PGlite opening, a large sync) reuses an idle socket it
    // could not see the server close: "other side closed". With Node's server default of 5 s,
    // the worker bench's set-up failed that way on every run on a loaded machine.
    const res = await fetch(`${server().url}/`, { headers: { authorization: `Basic ${Buffer.from(`${server().admin.username}:${server().admin.password}`).toString('base64')}` } });
    await res.body?.cancel();
    const timeout = Number(/timeout=(\d+)/.exec(res.headers.get('keep-alive') ?? '')?.[1] ?? 0);
    expect(timeout).to.be.at.least(60);
  });

  it('db info carries a disk_size measured off the request, not a directory walk per GET', async () => {
    expect((await raw(server().url, 'PUT', '/sizes', { auth: server().admin })).status).to.equal(201);
    const first = await raw(server().url, 'GET', '/sizes', { auth: server().admin });
    expect(first.status).to.equal(200);
    // Measured in the background after the first request, then served from memory.
    await waitFor(async () => {
      const info = (await raw(server().url, 'GET', '/sizes', { auth: server().admin })).body as { disk_size?: unknown };
      return typeof info.disk_size === 'number' && info.disk_size > 0;
    });
    expect((await raw(server().url, 'DELETE', '/sizes', { auth: server().admin })).status).to.equal(200);
  });

  it('serves Fauxton at /_utils/ to the admin', async () => {
    const res = await raw(server().url, 'GET', '/_utils/', { auth: server().admin });
    expect(res.status).to.equal(200);
    expect(String(res.body)).to.match(/<html/i);
  });

  it('refuses _users, _config and _all_dbs to a non-admin user', async () => {
    const admin = createCouchServer({ url: server().url, auth: server().admin });
    await admin.db('_users').put({ _id: 'org.couchdb.user:nurse', name: 'nurse', type: 'user', roles: [], password: 'pw-nurse' });
    const nurse = { username: 'nurse', password: 'pw-nurse' };
    expect((await raw(server().url, 'GET', '/_session', { auth: nurse })).status).to.equal(200);
    for (const [method, path] of [
      ['GET', '/_users/org.couchdb.user:nurse'],
      ['GET', '/_users/_all_docs'],
      ['GET', '/_config'],
      ['PUT', '/_config/admins/nurse'],
      ['GET', '/_all_dbs'],
      ['PUT', '/nursedb'],
      ['GET', '/_utils/'],
    ] as const) {
      const res = await raw(server().url, method, path, { auth: nurse, ...(method === 'PUT' ? { body: 'x' } : {}) });
      expect([401, 403], `${method} ${path}`).to.include(res.status);
    }
  });

  it('restarts the child after it crashes on a bad _changes filter (trap 17)', async () => {
    const admin = createCouchServer({ url: server().url, auth: server().admin });
    await admin.createDb('crashdb');
    await admin.db('crashdb').put({ _id: 'kept', n: 1 });
    const before = server().pid();
    const res = await raw(server().url, 'GET', '/crashdb/_changes?filter=nosuch/f', { auth: server().admin }).catch(() => null);
    if (res) expect(res.status).to.be.oneOf([400, 404]);
    await waitFor(async () => server().restarts() >= 1 && server().pid() !== undefined && server().pid() !== before);
    await waitFor(() => admin.up());
    expect(await admin.db('crashdb').get('kept')).to.include({ n: 1 });
  });

  it('restarts a killed child on the same port, with the admin working again', async () => {
    const pid = server().pid()!;
    const restarts = server().restarts();
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => server().restarts() === restarts + 1 && server().pid() !== undefined);
    expect(server().pid()).not.to.equal(pid);
    const admin = createCouchServer({ url: server().url, auth: server().admin });
    await waitFor(() => admin.up());
    expect(await admin.db('crashdb').get('kept')).to.include({ n: 1 });
    expect((await raw(server().url, 'GET', '/')).status).to.equal(401);
  });

  it('keeps data and the same admin across a full stop and start', async () => {
    const admin = server().admin;
    await server().stop();
    expect(findRunningEmbedded(dir.path)).to.equal(null);
    couch = await startEmbeddedCouch({ dataDir: dir.path });
    expect(server().admin).to.deep.equal(admin);
    const db = createCouchServer({ url: server().url, auth: server().admin }).db('crashdb');
    expect(await db.get('kept')).to.include({ n: 1 });
    expect((await raw(server().url, 'PUT', '/x')).status).to.equal(401);
  });

  it('refuses to start a second server on a data dir in use', async () => {
    // The running file names this process; pretend another live process (our parent) owns it.
    const { writeFileSync } = await import('node:fs');
    const file = join(dir.path, 'couch', 'running.json');
    writeFileSync(file, JSON.stringify({ pid: process.ppid, port: 1 }));
    try {
      let error: unknown;
      await startEmbeddedCouch({ dataDir: dir.path }).catch((err: unknown) => (error = err));
      expect(String(error)).to.contain('already run by process');
    } finally {
      writeFileSync(file, JSON.stringify({ pid: process.pid, port: server().port }));
    }
  });

  it('backs off exponentially up to a cap', () => {
    const b = { baseMs: 100, maxMs: 1000 };
    expect([0, 1, 2, 3, 4, 50].map((a) => restartDelay(a, b))).to.deep.equal([100, 200, 400, 800, 1000, 1000]);
  });
});
