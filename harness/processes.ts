// The gateway, the worker and the registration service as child processes (scripts/gateway.ts,
// scripts/worker.ts, scripts/registration.ts), so that kill -9 is real and none of them shares an
// event loop with the simulated devices. Every line a child writes goes to a log file the PHI check reads afterwards.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const TSX = import.meta.resolve('tsx');
export const GATEWAY_ENTRY = fileURLToPath(new URL('../scripts/gateway.ts', import.meta.url));
export const WORKER_ENTRY = fileURLToPath(new URL('../scripts/worker.ts', import.meta.url));
export const REGISTRATION_ENTRY = fileURLToPath(new URL('../scripts/registration.ts', import.meta.url));

export interface ChildSpec {
  name: string;
  entry: string;
  /** Called at every (re)start, so each incarnation can get its own id. */
  env: (incarnation: number) => Record<string, string>;
  logFile: string;
  readyTimeoutMs?: number;
}

export interface ManagedProcess {
  readonly name: string;
  pid(): number | undefined;
  /** How many times it was started. */
  incarnations(): number;
  start(): Promise<void>;
  /** kill -9, then wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
/** Children must not outlive the harness, whatever way it ends. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export function managedProcess(spec: ChildSpec): ManagedProcess {
  installExitHook();
  let child: ChildProcess | null = null;
  let count = 0;
  let log: WriteStream | null = null;
  const logStream = () => (log ??= createWriteStream(spec.logFile, { flags: 'a' }));

  return {
    name: spec.name,
    pid: () => child?.pid,
    incarnations: () => count,
    async start() {
      if (child && child.exitCode === null && child.signalCode === null) throw new Error(`${spec.name} is already running`);
      count++;
      const out = logStream();
      out.write(`--- ${spec.name} incarnation ${count} ---\n`);
      const c = spawn(process.execPath, ['--import', TSX, spec.entry], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, NODE_OPTIONS: '', ...spec.env(count) },
      });
      child = c;
      live.add(c);
      c.once('exit', () => live.delete(c));
      let stderrTail = '';
      c.stderr!.on('data', (d: Buffer) => {
        out.write(d);
        stderrTail = (stderrTail + d.toString()).slice(-600);
      });
      await new Promise<void>((resolve, reject) => {
        let ready = false;
        const timer = setTimeout(() => reject(new Error(`${spec.name} did not become ready within ${spec.readyTimeoutMs ?? 90_000} ms`)), spec.readyTimeoutMs ?? 90_000);
        c.once('exit', (code, signal) => {
          if (!ready) {
            clearTimeout(timer);
            // Start-up errors name their cause (config, ports, schemas); nothing with PHI runs before ready.
            reject(new Error(`${spec.name} exited before it was ready (code ${code}, signal ${signal}): ${stderrTail.trim().split('\n').slice(-3).join(' | ')}`));
          }
        });
        createInterface({ input: c.stdout! }).on('line', (line) => {
          out.write(`${line}\n`);
          if (!ready && line.includes('"event":"ready"')) {
            ready = true;
            clearTimeout(timer);
            resolve();
          }
        });
      });
    },
    async kill9() {
      const c = child;
      if (!c) return;
      c.kill('SIGKILL');
      await exited(c);
    },
    async stop(graceMs = 5_000) {
      const c = child;
      if (c && c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
        await exited(c);
        clearTimeout(t);
      }
      if (log) await new Promise<void>((r) => log!.end(() => r()));
      log = null;
    },
  };
}
