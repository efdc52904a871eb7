import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireDataDirLock, holderIsLive, readDataDirLock, DataDirLockedError, LOCK_FILE } from '../../scripts/data-dir-lock.ts';
import { listenFailure, StartupError } from '../../scripts/startup-error.ts';
import { freePort, tempDir, TEST_NATS_URL, type TempDir } from '../support/services.ts';

// Safe starts, through `npm start`'s own entry point (scripts/start.ts) as an operator runs it:
// two stacks side by side with nothing but FERRY_PORT and FERRY_DATA_DIR apart; a second process
// on a data dir in use refused; a bad value and a port in use each named with the setting to change.

const START = fileURLToPath(new URL('../../scripts/start.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** scripts/start.ts with only `env` set (no FERRY_* from the test's own environment). */
function startFerry(env: Record<string, string>): Started {
  const child = spawn(process.execPath, ['--import', TSX, START], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', NODE_OPTIONS: '', FERRY_LOG_LEVEL: 'warn', NATS_URL: TEST_NATS_URL, ...env },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

/** Resolves once the process says it is up; rejects with its output if it exits first. */
async function up(s: Started, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!/Ferry is up on /.test(s.output())) {
    if (s.child.exitCode !== null) throw new Error(`ferry exited ${s.child.exitCode}: ${s.output()}`);
    if (Date.now() > deadline) throw new Error(`ferry did not come up: ${s.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function failed(s: Started, timeoutMs = 90_000): Promise<{ code: number | null; output: string }> {
  const code = await Promise.race([s.exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still running: ${s.output()}`)), timeoutMs))]);
  return { code, output: s.output() };
}

async function stop(s: Started): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 15_000);
  await s.exited;
  clearTimeout(timer);
}

function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(2_000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** An address of this machine that is not loopback, if it has one. */
function externalAddress(): string | null {
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

describe('safe starts (npm start)', function () {
  this.timeout(180_000);
  const dirs: TempDir[] = [];
  const procs: Started[] = [];
  const dir = () => {
    const d = tempDir('ferry-safe-');
    dirs.push(d);
    return d;
  };
  const run = (env: Record<string, string>) => {
    const s = startFerry(env);
    procs.push(s);
    return s;
  };
  after(async () => {
    for (const p of procs) await stop(p);
    for (const d of dirs) d.remove();
  });

  let a: { s: Started; port: number; dir: TempDir };

  it('runs two stacks on one machine with only FERRY_PORT and FERRY_DATA_DIR apart, each on loopback only', async () => {
    const first = { port: await freePort(), dir: dir() };
    const second = { port: await freePort(), dir: dir() };
    // One after the other: both bundle the web app into the same web/dist.
    a = { s: run({ FERRY_PORT: String(first.port), FERRY_DATA_DIR: first.dir.path }), ...first };
    await up(a.s);
    const b = run({ FERRY_PORT: String(second.port), FERRY_DATA_DIR: second.dir.path });
    await up(b);
    for (const port of [first.port, second.port]) {
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(res.status, `healthz on ${port}`).to.equal(200);
      await res.body?.cancel();
    }
    // Dev mode: the dev IdP's shared password must not be reachable from the network.
    const external = externalAddress();
    if (external) expect(await connects(external, first.port), `gateway reachable on ${external}`).to.equal(false);
    expect(JSON.parse(readFileSync(join(first.dir.path, LOCK_FILE), 'utf8'))).to.include({ pid: a.s.child.pid, component: 'server' });
    await stop(b);
  });

  it('refuses a second process on the same data dir, naming the holder, and the first keeps running', async () => {
    const second = run({ FERRY_PORT: String(await freePort()), FERRY_DATA_DIR: a.dir.path });
    const { code, output } = await failed(second);
    expect(code).to.equal(1);
    expect(output).to.contain(`FERRY_DATA_DIR ${a.dir.path} is in use by another Ferry process (server, pid ${a.s.child.pid}`);
    const res = await fetch(`http://127.0.0.1:${a.port}/healthz`);
    expect(res.status).to.equal(200);
    await res.body?.cancel();
  });

  it('refuses a bad value at start, naming the variable (FERRY_WAITING_TIMEOUT_MS=7d)', async () => {
    const s = run({ FERRY_PORT: String(await freePort()), FERRY_DATA_DIR: dir().path, FERRY_WAITING_TIMEOUT_MS: '7d' });
    const { code, output } = await failed(s);
    expect(code).to.equal(2);
    expect(output).to.match(/^ferry: FERRY_WAITING_TIMEOUT_MS must be a whole number of milliseconds/m);
  });

  it('names the component and the setting when a port is taken: registration service, then gateway', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
    const taken = (blocker.address() as net.AddressInfo).port;
    try {
      const reg = run({ FERRY_PORT: String(await freePort()), FERRY_DATA_DIR: dir().path, FERRY_REGISTRATION_PORT: String(taken) });
      const r = await failed(reg);
      expect(r.code).to.equal(1);
      expect(r.output).to.contain(`registration service could not listen on 127.0.0.1:${taken}: port in use; set FERRY_REGISTRATION_PORT`);

      const gwDir = dir();
      const gw = run({ FERRY_PORT: String(taken), FERRY_DATA_DIR: gwDir.path });
      const g = await failed(gw);
      expect(g.code).to.equal(1);
      expect(g.output).to.contain(`gateway could not listen on 127.0.0.1:${taken}: port in use; set FERRY_PORT`);
      // A failed start leaves no lock behind.
      expect(existsSync(join(gwDir.path, LOCK_FILE))).to.equal(false);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});

describe('the data dir lock (scripts/data-dir-lock.ts)', function () {
  let d: TempDir;
  beforeEach(() => {
    d = tempDir('ferry-lock-');
  });
  afterEach(() => d.remove());

  it('is held by one taker at a time, also within one process, and released for the next', () => {
    const lock = acquireDataDirLock(d.path, 'server');
    expect(readDataDirLock(d.path)).to.include({ pid: process.pid, component: 'server' });
    expect(() => acquireDataDirLock(d.path, 'cli')).to.throw(DataDirLockedError, /in use by another Ferry process \(server, pid/);
    lock.release();
    lock.release();
    expect(readDataDirLock(d.path)).to.equal(null);
    acquireDataDirLock(d.path, 'cli').release();
  });

  it('takes over a stale lock: a dead pid, a recycled pid (other start time), an unreadable file', async () => {
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.once('exit', r));
    const stale = [
      { pid: dead.pid, component: 'server', since: 'x', started: null, token: 'a' },
      { pid: process.pid, component: 'server', since: 'x', started: 'not-my-start-time', token: 'b' },
    ];
    for (const record of stale) {
      writeFileSync(join(d.path, LOCK_FILE), JSON.stringify(record));
      const lock = acquireDataDirLock(d.path, 'server');
      expect(JSON.parse(readFileSync(join(d.path, LOCK_FILE), 'utf8'))).to.include({ pid: process.pid }).and.not.include({ token: record.token });
      lock.release();
    }
    writeFileSync(join(d.path, LOCK_FILE), '{"pid":');
    acquireDataDirLock(d.path, 'server').release();
  });

  it('takes over a stale lock only under the takeover guard: a live guard holder keeps it, a crashed one does not', async () => {
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.once('exit', r));
    const lockPath = join(d.path, LOCK_FILE);
    const guardPath = `${lockPath}.takeover`;
    const stale = { pid: dead.pid, component: 'server', since: 'x', started: null, token: 'stale' };
    // Another process is in the middle of taking the same stale lock over: this one leaves it be.
    const busy = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']);
    try {
      writeFileSync(lockPath, JSON.stringify(stale));
      writeFileSync(guardPath, JSON.stringify({ pid: busy.pid, component: 'server', since: 'x', started: null, token: 'guard' }));
      expect(() => acquireDataDirLock(d.path, 'server')).to.throw(DataDirLockedError);
      expect(JSON.parse(readFileSync(lockPath, 'utf8'))).to.include({ token: 'stale' });
    } finally {
      busy.kill('SIGKILL');
      await new Promise((r) => busy.once('exit', r));
    }
    // Its holder is gone now (a crash mid-takeover): the guard is cleared and the lock taken.
    const lock = acquireDataDirLock(d.path, 'server');
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).to.include({ pid: process.pid });
    expect(() => readFileSync(guardPath)).to.throw(/ENOENT/);
    lock.release();
  });

  it('does not remove a lock another process took over after its own was judged stale', () => {
    const lock = acquireDataDirLock(d.path, 'server');
    const other = { pid: process.pid, component: 'cli', since: 'x', started: null, token: 'someone-else' };
    writeFileSync(join(d.path, LOCK_FILE), JSON.stringify(other));
    lock.release();
    expect(JSON.parse(readFileSync(join(d.path, LOCK_FILE), 'utf8'))).to.include({ token: 'someone-else' });
  });

  it('decides liveness from pid and start time (pure)', () => {
    const alive = () => true;
    expect(holderIsLive({ pid: 7, started: '100' }, alive, () => '100')).to.equal(true);
    expect(holderIsLive({ pid: 7, started: '100' }, alive, () => '200')).to.equal(false);
    expect(holderIsLive({ pid: 7, started: null }, alive, () => '200')).to.equal(true);
    expect(holderIsLive({ pid: 7, started: '100' }, () => false, () => '100')).to.equal(false);
    expect(holderIsLive({ pid: 0, started: null }, alive, () => null)).to.equal(false);
  });

  it('creates the data dir privately if it does not exist yet', () => {
    const inner = join(d.path, 'new', 'data');
    const lock = acquireDataDirLock(inner, 'server');
    expect(existsSync(join(inner, LOCK_FILE))).to.equal(true);
    lock.release();
  });
});

describe('listen failures name the component and the setting (pure)', function () {
  const err = (code: string) => Object.assign(new Error('listen'), { code });
  const settings = { port: 'FERRY_PORT', host: 'FERRY_HOST' };
  it('maps EADDRINUSE, EACCES and EADDRNOTAVAIL to the setting that fixes each', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['EADDRINUSE', 'FERRY_PORT', /^gateway could not listen on 127\.0\.0\.1:8080: port in use; set FERRY_PORT/],
      ['EACCES', 'FERRY_PORT', /permission denied .* set FERRY_PORT/],
      ['EADDRNOTAVAIL', 'FERRY_HOST', /no such address on this machine; set FERRY_HOST/],
    ];
    for (const [code, setting, message] of cases) {
      const e = listenFailure(err(code), 'gateway', '127.0.0.1', 8080, settings);
      expect(e).to.be.instanceOf(StartupError);
      expect(e.message).to.match(message);
      expect((e as StartupError).setting).to.equal(setting);
    }
    const other = err('EMFILE');
    expect(listenFailure(other, 'gateway', '127.0.0.1', 8080, settings)).to.equal(other);
  });
});
