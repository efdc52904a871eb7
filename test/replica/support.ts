import { v7 as uuidv7 } from 'uuid';
import { recordsName } from '../../couchdb/provision.ts';
import type { TestStack } from '../support/stack.ts';

// Helpers of the replica suites: synthetic patients registered through the gateway's /v1, and
// waiting for the projection to list them.

let n = 0;

export function newPatientId(): string {
  return `pat_${uuidv7()}`;
}

/** A synthetic patient at `facility`; names are made up and unique per call. */
export function syntheticPatient(facility: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  n++;
  return { givenName: `Test${n}`, familyName: `Synthetic${n}x${process.pid}`, birthDate: '1990-01-01', sex: 'female', facility, ...extra };
}

export async function register(stack: TestStack, token: string, facility: string, id = newPatientId()): Promise<{ id: string; version: number; body: Record<string, unknown> }> {
  const body = { id, ...syntheticPatient(facility), confirmNotDuplicate: { reason: 'synthetic test patient' } };
  const res = await fetch(`${stack.url}/v1/patients`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': uuidv7() },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`register answered ${res.status}: ${await res.text()}`);
  const record = (await res.json()) as Record<string, unknown> & { id: string; version: number };
  return { id: record.id, version: record.version, body: record };
}

/** Updates a patient (full representation) from its current version; returns the new version. */
export async function update(stack: TestStack, token: string, current: Record<string, unknown>, changes: Record<string, unknown>): Promise<Record<string, unknown> & { version: number }> {
  const { id, version, tenant: _t, createdAt: _c, updatedAt: _u, ...fields } = current as Record<string, unknown> & { id: string; version: number };
  const res = await fetch(`${stack.url}/v1/patients/${id}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': uuidv7(), 'if-match': `"${version}"` },
    body: JSON.stringify({ ...fields, ...changes }),
  });
  if (res.status !== 200) throw new Error(`update answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as Record<string, unknown> & { version: number };
}

/** The record doc in `records_{tenant}` (admin read), or null. */
export async function recordDoc(stack: TestStack, tenant: string, id: string): Promise<(Record<string, unknown> & { version: number; _rev: string }) | null> {
  return stack.couch.server.db(recordsName(tenant)).get(`r:patient:${id}`);
}

export async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function projectedAt(stack: TestStack, tenant: string, id: string, version: number, timeoutMs?: number) {
  return until(`record ${version} projected`, async () => {
    const doc = await recordDoc(stack, tenant, id);
    return doc && doc.version >= version ? doc : null;
  }, timeoutMs);
}

/** A request to /replica with a Bearer token; the JSON body parsed. */
export async function replica(stack: TestStack, token: string | null, path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${stack.url}/replica${path}`, {
    method: init.method ?? 'GET',
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });
  const text = (await res.text()).trim();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

export type ChangeRow = { seq: string; id: string; changes: Array<{ rev: string }>; deleted?: boolean };

/** Every row of a caller's feed since `since`, paged as PouchDB pages, and the last seq. */
export async function pull(stack: TestStack, token: string, tenant: string, since: string | number = 0, limit = 100): Promise<{ rows: ChangeRow[]; lastSeq: string }> {
  const rows: ChangeRow[] = [];
  let at = String(since);
  for (;;) {
    const page = await replica(stack, token, `/${tenant}/_changes?style=all_docs&since=${encodeURIComponent(at)}&limit=${limit}`);
    if (page.status !== 200) throw new Error(`_changes answered ${page.status}`);
    const results = page.body.results as ChangeRow[];
    rows.push(...results);
    at = String(page.body.last_seq);
    if (results.length < limit) return { rows, lastSeq: at };
  }
}

/**
 * A nats-server of the suite's own that can be killed (SIGKILL: an outage) and started again on
 * the same port and JetStream store, as a real server coming back.
 */
export interface RestartableNats {
  url: string;
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRestartableNats(): Promise<RestartableNats> {
  const { spawn } = await import('node:child_process');
  const { writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const net = await import('node:net');
  const { natsAuthConfig, NATS_SERVER_BIN } = await import('../support/nats-server.ts');
  const { freePort, tempDir } = await import('../support/services.ts');
  const dir = tempDir('ferry-replica-nats-');
  const port = await freePort();
  const ferry = { user: 'ferry', password: 'p'.repeat(16) };
  const conf = join(dir.path, 'nats.conf');
  writeFileSync(conf, natsAuthConfig(port, join(dir.path, 'js'), ferry, { user: 'reader', password: 'r'.repeat(16) }), { mode: 0o600 });
  let child: ReturnType<typeof spawn> | null = null;
  const up = () =>
    new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 10_000;
      const attempt = () => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.once('connect', () => (s.destroy(), resolve()));
        s.once('error', () => {
          s.destroy();
          if (Date.now() > deadline) reject(new Error('nats-server did not start'));
          else setTimeout(attempt, 100);
        });
      };
      attempt();
    });
  const exited = (c: ReturnType<typeof spawn>) => new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));
  const nats: RestartableNats = {
    url: `nats://${ferry.user}:${ferry.password}@127.0.0.1:${port}`,
    async start() {
      child = spawn(NATS_SERVER_BIN, ['-c', conf], { stdio: 'ignore' });
      await up();
    },
    async kill() {
      if (!child) return;
      const c = child;
      child = null;
      c.kill('SIGKILL');
      await exited(c);
    },
    async stop() {
      await nats.kill();
      dir.remove();
    },
  };
  await nats.start();
  return nats;
}
