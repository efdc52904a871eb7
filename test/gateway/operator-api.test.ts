import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { readConfig } from '../../scripts/config.ts';
import { startStack } from '../../scripts/stack.ts';
import { callOperatorApi, startOperatorApi } from '../../gateway/tenant/operator-api.ts';
import type { AdminDeps } from '../../gateway/tenant/admin.ts';
import { requireNats, tempDir, TEST_NATS_URL } from '../support/services.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';

// Operations without downtime (issue 10): while the server runs on an embedded data dir, every
// `ferry` command goes through the authenticated local operator API (FERRY_DATA_DIR/operator.sock),
// and `tenant license` makes a new tenant able to register patients.

interface Run {
  code: number | null;
  out: string;
  err: string;
}

/** The CLI as an operator runs it, on the stack's data dir. Async: the server answers in this process. */
function ferry(dataDir: string, ...args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, FERRY_DATA_DIR: dataDir };
  delete env.COUCHDB_URL;
  delete env.DATABASE_URL;
  delete env.FERRY_OPERATOR_API;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/ferry.ts', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += String(c)));
    child.stderr.on('data', (c: Buffer) => (err += String(c)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 110_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** A raw request on the operator socket, with whatever token the caller chooses. */
function rawCall(socketPath: string, token: string | null, body: unknown): Promise<{ status: number; body: { code?: string } }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = request(
      { socketPath, path: '/admin', method: 'POST', headers: { 'content-type': 'application/json', ...(token === null ? {} : { authorization: `Bearer ${token}` }) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as { code?: string } }));
      },
    );
    req.once('error', reject);
    req.end(payload);
  });
}

async function registerPatient(stack: TestStack, token: string, key: string): Promise<{ status: number; code?: string }> {
  const res = await fetch(`${stack.url}/v1/patients`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ givenName: 'Ilvero', familyName: 'Tansuma', birthDate: '1979-06-21', sex: 'male', facility: 'west-hc-1' }),
  });
  const body = (await res.json()) as { code?: string };
  return { status: res.status, ...(body.code ? { code: body.code } : {}) };
}

describe('operator API: ferry commands while the server runs', function () {
  this.timeout(300_000);
  let stack: TestStack;
  let dataDir: string;
  let socketPath: string;

  before(async function () {
    await requireNats(this);
    stack = await startTestStack({ webApp: false });
    dataDir = stack.dir.path;
    socketPath = join(dataDir, 'operator.sock');
  });
  after(async () => {
    await stack?.stop();
  });

  it('listens on a private socket and keeps its token in a private file', function () {
    const sock = statSync(socketPath);
    expect(sock.isSocket()).to.equal(true);
    expect((sock.mode & 0o777).toString(8)).to.equal('600');
    const token = statSync(join(dataDir, 'operator.token'));
    expect((token.mode & 0o777).toString(8)).to.equal('600');
  });

  it('refuses a request with a wrong token or none', async function () {
    expect(await rawCall(socketPath, null, { command: 'tenant.list' })).to.deep.include({ status: 401, body: { code: 'UNAUTHENTICATED', message: 'A valid access token is required.' } });
    const wrong = await rawCall(socketPath, 'not-the-token', { command: 'tenant.list' });
    expect(wrong.status).to.equal(401);
    expect(wrong.body.code).to.equal('UNAUTHENTICATED');
  });

  it('creates a tenant, adds a member and licenses a module through the CLI; the tenant can then register', async function () {
    const created = await ferry(dataDir, 'tenant', 'create', 'west');
    expect(created, created.err).to.include({ code: 0 });
    expect(created.out).to.contain('tenant west: inbox_west database created');
    const list = await ferry(dataDir, 'tenant', 'list');
    expect(list.out.trim().split('\n')).to.deep.equal(['east', 'north', 'south', 'west']);

    expect(await ferry(dataDir, 'member', 'add', 'west', 'ada', 'registrar', '--facility', 'west-hc-1')).to.include({ code: 0, out: 'member ada of west: registrar; facilities west-hc-1\n' });
    expect(await ferry(dataDir, 'member', 'list', 'west')).to.include({ code: 0, out: 'ada\tregistrar\twest-hc-1\n' });

    const token = await stack.login('ada', 'west');
    // A new tenant licenses nothing: registration refuses until the module is licensed.
    expect(await registerPatient(stack, token, 'op-api-1')).to.deep.equal({ status: 403, code: 'MODULE_NOT_LICENSED' });
    expect(await ferry(dataDir, 'tenant', 'license', 'west', 'registration')).to.include({ code: 0, out: 'tenant west: registration licensed\n' });
    expect((await registerPatient(stack, token, 'op-api-2')).status).to.equal(201);

    expect(await ferry(dataDir, 'tenant', 'unlicense', 'west', 'registration')).to.include({ code: 0, out: 'tenant west: registration not licensed\n' });
    expect(await registerPatient(stack, token, 'op-api-3')).to.deep.equal({ status: 403, code: 'MODULE_NOT_LICENSED' });

    expect(await ferry(dataDir, 'member', 'remove', 'west', 'ada')).to.include({ code: 0, out: 'member ada removed from west\n' });
    expect(await ferry(dataDir, 'member', 'list', 'west')).to.include({ code: 0, out: '' });
  });

  it('carries facilities through the operator API: set, listed, replaced, read by the server at once; bad ones refused by the server too', async function () {
    const added = await ferry(dataDir, 'member', 'add', 'north', 'eve', '--role', 'registrar', '--facility', 'north-hc-2', '--facility', 'north-hc-1');
    expect(added, added.err).to.include({ code: 0, out: 'member eve of north: registrar; facilities north-hc-1,north-hc-2\n' });
    // The server's own directory (what a replica pull reads) has it at once: nothing caches facilities.
    expect(await stack.platform.memberships.facilitiesOf('north', 'eve')).to.deep.equal(['north-hc-1', 'north-hc-2']);
    const listed = await ferry(dataDir, 'member', 'list', 'north');
    expect(listed.out.trim().split('\n')).to.deep.equal([
      'ada\tregistrar\tnorth-hc-1',
      'admin\tadmin,platform-admin\t(all facilities)',
      'ben\tregistrar\tnorth-hc-1',
      'cy\tregistrar\tnorth-hc-2',
      'dee\tviewer\tnorth-hc-1',
      'eve\tregistrar\tnorth-hc-1,north-hc-2',
    ]);
    expect(await ferry(dataDir, 'member', 'add', 'north', 'eve', '--role', 'viewer', '--facility', 'north-hc-3')).to.include({ code: 0 });
    expect(await stack.platform.memberships.membershipOf('north', 'eve')).to.deep.equal({ roles: ['viewer'], facilities: ['north-hc-3'] });

    const bad = await ferry(dataDir, 'member', 'add', 'north', 'eve', '--role', 'viewer', '--facility', 'y'.repeat(65));
    expect(bad.code).to.equal(2);
    expect(bad.err).to.contain('error: VALIDATION_FAILED').and.contain('facilities.0 is too long or too large');
    // The server checks (and trims) them itself, whoever calls it.
    const token = readFileSync(join(dataDir, 'operator.token'), 'utf8').trim();
    const raw = await rawCall(socketPath, token, { command: 'member.add', tenant: 'north', owner: 'eve', roles: ['viewer'], facilities: ['north-hc-4', ''] });
    expect(raw.status).to.equal(422);
    expect(raw.body).to.deep.include({ code: 'VALIDATION_FAILED', errors: [{ path: 'facilities.1', message: 'is too short or too small' }] });
    const trimmed = await rawCall(socketPath, token, { command: 'member.add', tenant: 'north', owner: 'eve', roles: ['viewer'], facilities: [' north-hc-4 '] });
    expect(trimmed).to.deep.include({ status: 200, body: { result: { command: 'member.add', tenant: 'north', owner: 'eve', roles: ['viewer'], facilities: ['north-hc-4'] } } });
    expect(await stack.platform.memberships.facilitiesOf('north', 'eve')).to.deep.equal(['north-hc-4']);

    expect(await ferry(dataDir, 'member', 'remove', 'north', 'eve')).to.include({ code: 0 });
    expect(await stack.platform.memberships.facilitiesOf('north', 'eve')).to.equal(null);
  });

  it('answers an unknown tenant or module with a typed code', async function () {
    const tenant = await ferry(dataDir, 'tenant', 'license', 'nowhere', 'registration');
    expect(tenant.code).to.equal(2);
    expect(tenant.err).to.contain('error: UNKNOWN_TENANT').and.contain('tenant=nowhere');
    const module = await ferry(dataDir, 'tenant', 'license', 'north', 'pharmacy');
    expect(module.code).to.equal(2);
    expect(module.err).to.contain('error: UNKNOWN_MODULE').and.contain('modules=registration');
    const member = await ferry(dataDir, 'member', 'add', 'nowhere', 'ada', 'viewer');
    expect(member.err).to.contain('error: UNKNOWN_TENANT');
    // The server checks requests too, not only the CLI.
    const token = readFileSync(join(dataDir, 'operator.token'), 'utf8').trim();
    const bad = await rawCall(socketPath, token, { command: 'member.add', tenant: 'north', owner: 'ada', roles: ['root'] });
    expect(bad.status).to.equal(422);
    expect(bad.body.code).to.equal('VALIDATION_FAILED');
  });
});

describe('operator API: switched off, and after the server stops', function () {
  this.timeout(300_000);

  it('with FERRY_OPERATOR_API=off there is no socket and the CLI says to stop the server first', async function () {
    await requireNats(this);
    const stack = await startTestStack({ webApp: false, worker: false, env: { FERRY_OPERATOR_API: 'off' } });
    try {
      expect(existsSync(join(stack.dir.path, 'operator.sock'))).to.equal(false);
      const res = await ferry(stack.dir.path, 'tenant', 'list');
      expect(res.code).to.equal(2);
      expect(res.err).to.contain('stop it first');
    } finally {
      await stack.stop();
    }
  });

  it('replaces a stale socket at start, removes socket and token at stop, and the CLI then opens the databases itself', async function () {
    await requireNats(this);
    const stack = await startTestStack({ webApp: false, worker: false });
    const dir = stack.dir.path;
    await stack.close();
    // A crash leaves a socket file nobody listens on.
    writeFileSync(join(dir, 'operator.sock'), '');
    try {
      const again = await startStack(readConfig({ FERRY_DATA_DIR: dir, FERRY_PORT: '0', FERRY_HOST: '127.0.0.1', FERRY_REGISTRATION_PORT: '0', NATS_URL: TEST_NATS_URL }), { webApp: false, worker: false });
      expect(statSync(join(dir, 'operator.sock')).isSocket()).to.equal(true);
      await again.close();
      expect(existsSync(join(dir, 'operator.sock'))).to.equal(false);
      expect(existsSync(join(dir, 'operator.token'))).to.equal(false);
      const licensed = await ferry(dir, 'tenant', 'license', 'east', 'registration');
      expect(licensed, licensed.err).to.include({ code: 0, out: 'tenant east: registration licensed\n' });
    } finally {
      stack.dir.remove();
    }
  });
});

describe('operator API: a stop lets a command under way answer', function () {
  this.timeout(30_000);

  it('answers a command that was running when the server began to stop, then closes', async function () {
    const dir = tempDir('ferry-opapi-');
    let began!: () => void;
    let finish!: (tenants: string[]) => void;
    const running = new Promise<void>((r) => (began = r));
    // Only tenant.list runs here, so the directory needs nothing else (a test double at the boundary).
    const admin = {
      tenants: {
        list: () =>
          new Promise<string[]>((r) => {
            finish = r;
            began();
          }),
      },
    } as unknown as AdminDeps;
    const api = await startOperatorApi({ dataDir: dir.path, admin });
    try {
      const answer = callOperatorApi(dir.path, { command: 'tenant.list' });
      await running;
      const closing = api.close();
      // The stop is under way; only now does the command finish.
      await new Promise((r) => setTimeout(r, 100));
      finish(['north']);
      expect(await answer).to.deep.equal({ command: 'tenant.list', tenants: ['north'] });
      await closing;
      expect(existsSync(join(dir.path, 'operator.sock'))).to.equal(false);
    } finally {
      dir.remove();
    }
  });
});
