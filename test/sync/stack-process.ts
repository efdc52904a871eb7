import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { SyncLimitsInput } from '../../gateway/sync/bounds.ts';
import { mid, startSyncStack, status, type SyncStack } from './support.ts';

// The /sync test stack in a child process of its own (gateway + platform DB in the child, the
// embedded CouchDB in a grandchild), so that a benchmark's PouchDB client does not share an event
// loop with the gateway: device, gateway and CouchDB run apart, as in production.
//
// Parent side: `startStackProcess(opts)`; child side: this file run with an IPC channel.

type Request =
  | { id: number; op: 'token'; owner: string; tenant?: string }
  | { id: number; op: 'statuses'; tenant: string; owner: string; count: number }
  | { id: number; op: 'close' };

type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };
/** `Omit` over each member of a union. */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

export interface StackInfo {
  url: string;
  couchUrl: string;
  gatewayAuth: { username: string; password: string };
}

export interface StackProcess extends StackInfo {
  /** The stack child's pid (the embedded CouchDB is its child), for CPU accounting in benchmarks. */
  pid: number;
  token(owner: string, tenant?: string): Promise<string>;
  /** Has the worker stand-in write `count` status docs for `owner`. */
  writeStatuses(tenant: string, owner: string, count: number): Promise<void>;
  close(): Promise<void>;
}

const ENTRY = fileURLToPath(import.meta.url);

/** What the child's stack is started with (plain JSON: it crosses the process boundary). */
export interface StackProcessOptions {
  quotas?: Record<string, number>;
  limits?: SyncLimitsInput;
}

export async function startStackProcess(opts: StackProcessOptions = {}): Promise<StackProcess> {
  const child: ChildProcess = fork(ENTRY, [JSON.stringify(opts)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let next = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const info = await new Promise<StackInfo>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`stack process exited (${code})`)));
    child.once('message', (m) => resolve(m as StackInfo));
  });
  child.on('message', (m) => {
    const reply = m as Reply;
    const w = waiting.get(reply.id);
    if (!w) return;
    waiting.delete(reply.id);
    if (reply.ok) w.resolve(reply.value);
    else w.reject(new Error(reply.error));
  });
  const ask = <T>(req: WithoutId<Request>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...req, id });
    });
  return {
    ...info,
    pid: child.pid!,
    token: (owner, tenant) => ask<string>({ op: 'token', owner, ...(tenant ? { tenant } : {}) }),
    writeStatuses: async (tenant, owner, count) => {
      await ask({ op: 'statuses', tenant, owner, count });
    },
    async close() {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      await ask({ op: 'close' }).catch(() => undefined);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

async function childMain(): Promise<void> {
  const opts = JSON.parse(process.argv[2] ?? '{}') as StackProcessOptions;
  const stack: SyncStack = await startSyncStack({
    ...(opts.quotas ? { quotas: opts.quotas } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    // Served as the gateway is, with its server timeouts.
    serverTimeouts: {},
  });
  process.send?.({ url: stack.url, couchUrl: stack.couchUrl, gatewayAuth: stack.gatewayAuth } satisfies StackInfo);
  process.on('message', (m) => {
    const req = m as Request;
    const reply = (r: WithoutId<Reply>) => process.send?.({ ...r, id: req.id });
    const run = async (): Promise<unknown> => {
      if (req.op === 'token') return stack.token(req.owner, req.tenant);
      if (req.op === 'statuses') {
        return stack.writeStatuses(req.tenant, Array.from({ length: req.count }, () => status(req.owner, mid(), req.tenant)));
      }
      await stack.close();
      setImmediate(() => process.exit(0));
      return null;
    };
    run().then(
      (value) => reply({ ok: true, value }),
      (err: unknown) => reply({ ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
  });
  process.on('disconnect', () => {
    void stack.close().finally(() => process.exit(0));
  });
}

if (process.argv[1] === ENTRY && process.send) {
  childMain().catch((err: unknown) => {
    console.error('stack process failed:', err instanceof Error ? err.message : String(err));
    process.exit(1);
  });
}
