import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats } from '../../nats/connection.ts';

// Real services for tests: PostgreSQL on 127.0.0.1:5432 and NATS JetStream on 127.0.0.1:4222.
// Locally a suite whose service is missing skips; in CI (CI=true) it fails.
// TEST_NATS_URL may carry credentials (`nats://user:pass@127.0.0.1:4223`): .ci/run starts a
// nats-server with authorisation on and sets it, so every suite runs against an auth-on NATS.

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const TEST_NATS_URL = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

/** A connection to the tests' NATS, with the credentials TEST_NATS_URL carries. */
export function connectTestNats(opts: { timeout?: number } = {}): Promise<NatsConnection> {
  return connectNats(TEST_NATS_URL, {}, { timeout: opts.timeout ?? 5_000 });
}

function reachable(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function requireReachable(ctx: Mocha.Context, name: string, url: string): Promise<void> {
  const u = new URL(url);
  const ok = await reachable(u.hostname, Number(u.port));
  if (ok) return;
  if (process.env.CI === 'true') throw new Error(`${name} is required in CI but ${u.hostname}:${u.port} is unreachable`);
  ctx.skip();
}

/** Call in a `before` hook: skips the suite locally, fails it in CI, when PostgreSQL is absent. */
export function requirePostgres(ctx: Mocha.Context): Promise<void> {
  return requireReachable(ctx, 'PostgreSQL', TEST_DATABASE_URL);
}

/** Call in a `before` hook: skips the suite locally, fails it in CI, when NATS is absent. */
export function requireNats(ctx: Mocha.Context): Promise<void> {
  return requireReachable(ctx, 'NATS', TEST_NATS_URL);
}

/** A fresh schema name, so suites running at once never see each other's rows. */
export function uniqueSchema(prefix: string): string {
  return `t_${prefix.replace(/[^a-z0-9_]/g, '_')}_${randomBytes(5).toString('hex')}`;
}

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

export interface TempDir {
  path: string;
  remove(): void;
}

export function tempDir(prefix = 'ferry-test-'): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A free loopback port (for processes that must be told their port up front). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}
