import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CouchCredentials } from '../client.ts';
import { couchDir as couchDirOf, ensurePrivateDir } from '../secrets.ts';
import { embeddedServerBundle } from './bundle.ts';
import { loadEmbeddedAdmin } from './files.ts';

// Starts the embedded server in a child process and keeps it running: an unexpected exit (for
// example express-pouchdb's crash on a bad `_changes` filter, STACK-NOTES trap 17) is followed by
// a restart on the same port, with exponential backoff between failed attempts.

type LogFn = (obj: Record<string, unknown>, msg: string) => void;
/** The part of a pino logger used here. */
export interface SupervisorLogger {
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}

const silent: SupervisorLogger = { info: () => {}, warn: () => {}, error: () => {} };

export interface EmbeddedCouchOptions {
  dataDir: string;
  /** Loopback port; 0 (the default) picks a free one, kept across restarts. */
  port?: number;
  logger?: SupervisorLogger;
  /** How long a (re)start may take before it counts as failed. Default 30 s. */
  startTimeoutMs?: number;
  /** Restart backoff: first delay and cap. Defaults 250 ms and 10 s. */
  backoff?: { baseMs: number; maxMs: number };
}

export interface EmbeddedCouch {
  /** e.g. http://127.0.0.1:41233 — no credentials in it. */
  readonly url: string;
  readonly port: number;
  readonly admin: CouchCredentials;
  /** The current child's pid; undefined while it is being restarted. */
  pid(): number | undefined;
  /** How many times the child was restarted after an unexpected exit. */
  restarts(): number;
  /** Stops supervising, terminates the child and waits for it to exit. */
  stop(): Promise<void>;
}

/** Delay before restart attempt `attempt` (0-based): exponential, capped. */
export function restartDelay(attempt: number, backoff: { baseMs: number; maxMs: number }): number {
  return Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(attempt, 30));
}

const SERVER_ENTRY = fileURLToPath(new URL('./server.ts', import.meta.url));
const TSX_LOADER = import.meta.resolve('tsx');

// ---------------------------------------------------------------------------------------------
// The child's own output. PouchDB prints the whole doc when a view map throws, and express-pouchdb
// may print request bodies, so a line of the child's is never logged as it is: it becomes a
// structured event that says what kind of output it was and how much, with none of its text.

export type ChildOutputKind = 'view_map_error' | 'start_failure' | 'other';

/** One burst of the child's output, PHI-free: counts, a kind, and at most an errno-style code. */
export type ChildOutputEvent = {
  component: 'couchdb';
  event: 'child_stderr' | 'child_stdout';
  pid: number | undefined;
  kind: ChildOutputKind;
  lines: number;
  bytes: number;
  /** e.g. `EADDRINUSE`, from a start failure: a fixed vocabulary, never free text. */
  errno?: string;
};

const VIEW_MAP_BANNER = /map\/reduce function threw|double-check your map\/reduce function/;
const START_FAILURE = /^embedded CouchDB failed to start/;
const ERRNO = /\b(E[A-Z]{2,15})\b/;
const RANK: Record<ChildOutputKind, number> = { other: 0, start_failure: 1, view_map_error: 2 };

/** What one line of the child's output is, from fixed markers only. */
export function classifyChildLine(line: string): ChildOutputKind {
  if (VIEW_MAP_BANNER.test(line)) return 'view_map_error';
  if (START_FAILURE.test(line)) return 'start_failure';
  return 'other';
}

/**
 * Gathers the child's lines into bursts (a view-map error is a banner and then the doc, over many
 * lines) and emits one event per burst: when the child has been quiet for `idleMs`, when a new
 * view-map error starts, every `maxLines` lines of a flood, and on `flush()`.
 */
export function childOutputRelay(opts: {
  stream: 'stderr' | 'stdout';
  pid: number | undefined;
  emit: (event: ChildOutputEvent) => void;
  idleMs?: number;
  maxLines?: number;
}): { line(text: string): void; flush(): void } {
  const idleMs = opts.idleMs ?? 100;
  const maxLines = opts.maxLines ?? 10_000;
  let burst: { kind: ChildOutputKind; lines: number; bytes: number; errno?: string } | null = null;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (!burst) return;
    const b = burst;
    burst = null;
    opts.emit({
      component: 'couchdb',
      event: opts.stream === 'stderr' ? 'child_stderr' : 'child_stdout',
      pid: opts.pid,
      kind: b.kind,
      lines: b.lines,
      bytes: b.bytes,
      ...(b.errno ? { errno: b.errno } : {}),
    });
  };
  return {
    line(text) {
      const kind = classifyChildLine(text);
      if (kind === 'view_map_error' && burst && burst.kind === 'view_map_error') flush();
      burst ??= { kind, lines: 0, bytes: 0 };
      if (RANK[kind] > RANK[burst.kind]) burst.kind = kind;
      if (kind === 'start_failure') {
        const errno = ERRNO.exec(text)?.[1];
        if (errno) burst.errno = errno;
      }
      burst.lines += 1;
      burst.bytes += Buffer.byteLength(text) + 1;
      if (burst.lines >= maxLines) return flush();
      if (timer) clearTimeout(timer);
      timer = setTimeout(flush, idleMs);
      timer.unref();
    },
    flush,
  };
}

interface Running {
  child: ChildProcess;
  port: number;
}

/** How the child is run: the bundled plain-JS entry, or under tsx when bundling is impossible (read-only checkout). */
async function serverCommand(logger: SupervisorLogger): Promise<string[]> {
  try {
    return [await embeddedServerBundle()];
  } catch (err) {
    logger.warn({ component: 'couchdb', err: { name: (err as Error).name } }, 'embedded CouchDB bundle failed; running it under tsx');
    return ['--import', TSX_LOADER, SERVER_ENTRY];
  }
}

async function spawnServer(couchDir: string, port: number, timeoutMs: number, logger: SupervisorLogger): Promise<Running> {
  const command = await serverCommand(logger);
  const child = spawn(process.execPath, [...command, JSON.stringify({ couchDir, port })], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const stderr = childOutputRelay({ stream: 'stderr', pid: child.pid, emit: (e) => logger.warn(e, 'embedded CouchDB wrote to stderr') });
  const stdout = childOutputRelay({ stream: 'stdout', pid: child.pid, emit: (e) => logger.info(e, 'embedded CouchDB wrote to stdout') });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.line(line));
  child.once('exit', () => {
    stderr.flush();
    stdout.flush();
  });
  return new Promise<Running>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`embedded CouchDB did not start within ${timeoutMs} ms`)), timeoutMs);
    child.once('error', fail);
    child.once('exit', (code, signal) => fail(new Error(`embedded CouchDB exited before it was ready (code ${code}, signal ${signal})`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let msg: { event?: string; port?: number } = {};
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        stdout.line(line);
        return;
      }
      if (msg.event !== 'ready' || typeof msg.port !== 'number' || settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ child, port: msg.port });
    });
  });
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export interface RunningEmbedded {
  /** The supervising process. */
  pid: number;
  port: number;
}

const runningFile = (couchDir: string) => join(couchDir, 'running.json');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The embedded server another Ferry process is supervising on this data dir, if any. */
export function findRunningEmbedded(dataDir: string): RunningEmbedded | null {
  try {
    const value = JSON.parse(readFileSync(runningFile(couchDirOf(dataDir)), 'utf8')) as Partial<RunningEmbedded>;
    if (typeof value.pid !== 'number' || typeof value.port !== 'number') return null;
    return alive(value.pid) ? { pid: value.pid, port: value.port } : null;
  } catch {
    return null;
  }
}

/** Starts the embedded server and supervises it. Resolves once it accepts authenticated requests. */
export async function startEmbeddedCouch(opts: EmbeddedCouchOptions): Promise<EmbeddedCouch> {
  const logger = opts.logger ?? silent;
  const couchDir = couchDirOf(opts.dataDir);
  ensurePrivateDir(couchDir);
  const other = findRunningEmbedded(opts.dataDir);
  if (other && other.pid !== process.pid) {
    throw new Error(`the embedded CouchDB of ${couchDir} is already run by process ${other.pid} (port ${other.port})`);
  }
  const admin = loadEmbeddedAdmin(couchDir);
  const timeoutMs = opts.startTimeoutMs ?? 30_000;
  const backoff = opts.backoff ?? { baseMs: 250, maxMs: 10_000 };

  const first = await spawnServer(couchDir, opts.port ?? 0, timeoutMs, logger);
  const port = first.port;
  let current: ChildProcess | undefined = first.child;
  let stopping = false;
  let restarts = 0;
  let attempt = 0;
  let timer: NodeJS.Timeout | undefined;
  let pending: Promise<Running> | undefined;
  let stopped: Promise<void> | undefined;

  const supervise = (child: ChildProcess) => {
    child.once('exit', (code, signal) => {
      if (current === child) current = undefined;
      if (stopping) return;
      logger.warn({ component: 'couchdb', code, signal }, 'embedded CouchDB exited unexpectedly; restarting');
      schedule();
    });
  };

  const schedule = () => {
    const delay = restartDelay(attempt, backoff);
    timer = setTimeout(() => {
      timer = undefined;
      if (stopping) return;
      pending = spawnServer(couchDir, port, timeoutMs, logger);
      pending.then(
        (running) => {
          pending = undefined;
          if (stopping) {
            running.child.kill('SIGTERM');
            return;
          }
          attempt = 0;
          restarts += 1;
          current = running.child;
          supervise(running.child);
          logger.info({ component: 'couchdb', port, restarts }, 'embedded CouchDB restarted');
        },
        (err: unknown) => {
          pending = undefined;
          attempt += 1;
          logger.error({ component: 'couchdb', attempt, err: String(err) }, 'embedded CouchDB restart failed');
          if (!stopping) schedule();
        },
      );
    }, delay);
  };

  supervise(first.child);
  writeFileSync(runningFile(couchDir), `${JSON.stringify({ pid: process.pid, port })}\n`, { mode: 0o600 });
  logger.info({ component: 'couchdb', port, dataDir: couchDir }, 'embedded CouchDB started (loopback only)');

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    admin,
    pid: () => current?.pid,
    restarts: () => restarts,
    stop() {
      stopped ??= shutdown();
      return stopped;
    },
  };

  async function shutdown(): Promise<void> {
    stopping = true;
    if (timer) clearTimeout(timer);
    if (findRunningEmbedded(opts.dataDir)?.pid === process.pid) rmSync(runningFile(couchDir), { force: true });
    if (pending) await pending.then((r) => waitForExit(r.child, 5000), () => undefined);
    const child = current;
    if (!child) return;
    child.kill('SIGTERM');
    await waitForExit(child, 5000);
  }
}
