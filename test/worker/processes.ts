import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { WORKER_PASSWORD_ENV } from '../../couchdb/identities.ts';
import { TEST_DATABASE_URL } from '../support/services.ts';
import { ISSUER, type Env } from './fixture.ts';

// Worker processes for the crash and handover tests: scripts/worker.ts, as production runs it.

const ENTRY = fileURLToPath(new URL('../../scripts/worker.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

export interface WorkerProcess {
  id: string;
  child: ChildProcess;
  /** kill -9 */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

const running = new Set<WorkerProcess>();

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function spawnWorker(env: Env, id: string, extra: Record<string, string> = {}): Promise<WorkerProcess> {
  if (!env.platformSchema) throw new Error('worker processes need the postgres backend');
  const child = spawn(process.execPath, ['--import', TSX, ENTRY], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      NODE_OPTIONS: '',
      NODE_ENV: 'test',
      DATABASE_URL: TEST_DATABASE_URL,
      FERRY_PLATFORM_SCHEMA: env.platformSchema,
      COUCHDB_URL: env.couch.url,
      [WORKER_PASSWORD_ENV]: env.identities.worker.password,
      FERRY_DATA_DIR: env.dir.path,
      FERRY_ISSUER: ISSUER,
      FERRY_REGISTRATION_URL: env.service.url,
      FERRY_WORKER_ID: id,
      FERRY_WORKER_LEASE_TTL_MS: '2000',
      FERRY_WORKER_RETRY_BASE_MS: '100',
      FERRY_WORKER_RETRY_MAX_MS: '1000',
      FERRY_WORKER_TICK_MS: '100',
      FERRY_LOG_LEVEL: process.env.FERRY_TEST_WORKER_LOG ?? 'warn',
      ...extra,
    },
  });
  child.stderr!.on('data', (d: Buffer) => process.stderr.write(`[${id}] ${d.toString()}`));
  const proc: WorkerProcess = {
    id,
    child,
    async kill() {
      child.kill('SIGKILL');
      await exited(child);
      running.delete(proc);
    },
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited(child);
      clearTimeout(t);
      running.delete(proc);
    },
  };
  running.add(proc);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker ${id} did not start`)), 60_000);
    child.once('exit', (code) => reject(new Error(`worker ${id} exited with ${code}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"event":"ready"')) {
        clearTimeout(timer);
        resolve();
      } else if (process.env.FERRY_TEST_WORKER_LOG) process.stdout.write(`[${id}] ${line}\n`);
    });
  });
  return proc;
}

/** Kills every worker process a test left behind. */
export async function killAllWorkers(): Promise<void> {
  await Promise.all([...running].map((p) => p.kill()));
}
