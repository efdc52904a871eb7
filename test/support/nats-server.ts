import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { tempDir, type TempDir } from './services.ts';

// A nats-server of a test's own, with JetStream and authorisation on, on a free loopback port.
// Users, as .ci/run configures its server:
//   `ferry`  — what a Ferry service needs: publish REGISTRATION.> and the JetStream API,
//              receive replies on _INBOX.>;
//   `reader` — may read the stream through the JetStream API, never publish an event.
// Locally a missing nats-server binary skips the suite; in CI (CI=true) it fails.

export const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? 'nats-server';

export interface NatsUser {
  user: string;
  password: string;
}

export interface OwnNatsServer {
  /** nats://127.0.0.1:port, no credentials. */
  url: string;
  port: number;
  ferry: NatsUser;
  reader: NatsUser;
  /** `url` with a user's credentials in it. */
  urlAs(who: NatsUser): string;
  stop(): Promise<void>;
}

/** Call in a `before` hook: skips locally, fails in CI, when there is no nats-server binary. */
export function requireNatsServerBinary(ctx: Mocha.Context): void {
  const probe = spawnSync(NATS_SERVER_BIN, ['--version'], { encoding: 'utf8' });
  if (probe.status === 0) return;
  if (process.env.CI === 'true') throw new Error(`nats-server is required in CI but ${NATS_SERVER_BIN} cannot be run`);
  ctx.skip();
}

function freePortFrom(start: number): Promise<number> {
  const tryPort = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      if (port > 65535) return reject(new Error('no free port'));
      const server = net.createServer();
      server.once('error', () => resolve(tryPort(port + 1)));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(port)));
    });
  return tryPort(start);
}

function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null) return reject(new Error(`nats-server exited with code ${child.exitCode}`));
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nats-server did not open port ${port} within ${timeoutMs} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

const secret = () => randomBytes(16).toString('hex');

/** The server's config: listen address, JetStream store and the two users with their permissions. */
export function natsAuthConfig(port: number, storeDir: string, ferry: NatsUser, reader: NatsUser): string {
  return `listen: "127.0.0.1:${port}"
jetstream { store_dir: ${JSON.stringify(storeDir)} }
authorization {
  users = [
    { user: ${JSON.stringify(ferry.user)}, password: ${JSON.stringify(ferry.password)},
      permissions: { publish: ["REGISTRATION.>", "$JS.API.>"], subscribe: ["_INBOX.>"] } }
    { user: ${JSON.stringify(reader.user)}, password: ${JSON.stringify(reader.password)},
      permissions: { publish: ["$JS.API.>"], subscribe: ["_INBOX.>"] } }
  ]
}
`;
}

export async function startOwnNatsServer(opts: { firstPort?: number } = {}): Promise<OwnNatsServer> {
  const dir: TempDir = tempDir('ferry-nats-');
  const ferry = { user: 'ferry', password: secret() };
  const reader = { user: 'reader', password: secret() };
  const port = await freePortFrom(opts.firstPort ?? 4223);
  const conf = join(dir.path, 'nats.conf');
  writeFileSync(conf, natsAuthConfig(port, join(dir.path, 'js'), ferry, reader), { mode: 0o600 });
  const child = spawn(NATS_SERVER_BIN, ['-c', conf], { stdio: ['ignore', 'ignore', 'ignore'] });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        child.kill('SIGTERM');
      });
    }
    dir.remove();
  };
  try {
    await waitForPort(port, child, 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  const url = `nats://127.0.0.1:${port}`;
  return {
    url,
    port,
    ferry,
    reader,
    urlAs: (who) => `nats://${encodeURIComponent(who.user)}:${encodeURIComponent(who.password)}@127.0.0.1:${port}`,
    stop,
  };
}
