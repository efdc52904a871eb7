// Live sync: a connection loop (when to connect, how long to back off, when to stop for good)
// kept apart from what one connection does (PouchDB push of `m:` docs + pull of statuses).

import { nextDelay, type BackoffOptions } from './backoff.ts';
import type { TenantMismatchSource } from './auth-fetch.ts';
import type { Db } from './store.ts';

export interface Scheduler {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realScheduler: Scheduler = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof globalThis.setTimeout>),
};

export type SyncState =
  | { kind: 'stopped' }
  | { kind: 'connecting' }
  /** Documents are moving. */
  | { kind: 'active' }
  /** Caught up both ways; live. */
  | { kind: 'idle' }
  /** The last connection failed; the next one starts after `delayMs`. `reachable: false` means the network failed. */
  | { kind: 'backoff'; attempt: number; delayMs: number; reachable: boolean }
  /** The platform says there is no network; waiting for it to come back. */
  | { kind: 'offline' }
  /** Stopped for good on a token or gateway answer for another tenant/user; the queue waits. */
  | { kind: 'tenant-mismatch'; source: TenantMismatchSource };

export type ConnectionEnd = { kind: 'stopped' } | { kind: 'failed'; reachable: boolean; message: string } | { kind: 'halted'; source: TenantMismatchSource };

export interface Connection {
  ended: Promise<ConnectionEnd>;
  stop(): Promise<void>;
}

export interface ConnectHooks {
  active(): void;
  idle(): void;
  /** Documents moved (a batch pushed or pulled): the connection works, so the backoff starts over. */
  progress(): void;
}

export type Connect = (hooks: ConnectHooks) => Connection;

/** Browser `online`/`offline` events. Null where there are none (Node): failures tell instead. */
export interface OnlineSource {
  online(): boolean;
  subscribe(listener: (online: boolean) => void): () => void;
}

interface EventTargetLike {
  addEventListener(type: string, fn: () => void): void;
  removeEventListener(type: string, fn: () => void): void;
  navigator?: { onLine?: unknown };
}

export function browserOnlineSource(target: unknown = globalThis): OnlineSource | null {
  const g = target as Partial<EventTargetLike>;
  if (typeof g.addEventListener !== 'function' || typeof g.removeEventListener !== 'function' || typeof g.navigator?.onLine !== 'boolean') return null;
  const t = g as EventTargetLike;
  return {
    online: () => t.navigator?.onLine !== false,
    subscribe(listener) {
      const on = (): void => listener(true);
      const off = (): void => listener(false);
      t.addEventListener('online', on);
      t.addEventListener('offline', off);
      return () => {
        t.removeEventListener('online', on);
        t.removeEventListener('offline', off);
      };
    },
  };
}

export interface LoopOptions {
  connect: Connect;
  backoff: BackoffOptions;
  scheduler: Scheduler;
  online: OnlineSource | null;
  onState(state: SyncState): void;
}

/**
 * Keeps one connection up while started. A failed connection is retried after `nextDelay(attempt)`;
 * the attempt count resets when a connection moves documents or catches up (idle), and when the platform reports the
 * network back. A halt (tenant mismatch) stops the loop until `start()` is called again.
 */
export class ConnectionLoop {
  private running = false;
  private attempt = 0;
  private generation = 0;
  private current: Connection | null = null;
  private timer: unknown = null;
  private unsubscribe: (() => void) | null = null;
  private stateValue: SyncState = { kind: 'stopped' };

  constructor(private readonly opts: LoopOptions) {}

  get state(): SyncState {
    return this.stateValue;
  }

  get isRunning(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.unsubscribe = this.opts.online?.subscribe((online) => this.onPlatform(online)) ?? null;
    if (this.opts.online && !this.opts.online.online()) this.set({ kind: 'offline' });
    else this.connectNow();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.clearTimer();
    this.generation++;
    const conn = this.current;
    this.current = null;
    if (conn) await conn.stop();
    if (this.stateValue.kind !== 'tenant-mismatch') this.set({ kind: 'stopped' });
  }

  /** Retry now (e.g. the app knows the network is back). */
  kick(): void {
    if (!this.running || this.current) return;
    this.attempt = 0;
    this.connectNow();
  }

  private set(state: SyncState): void {
    this.stateValue = state;
    this.opts.onState(state);
  }

  private clearTimer(): void {
    if (this.timer !== null) this.opts.scheduler.clearTimeout(this.timer);
    this.timer = null;
  }

  private connectNow(): void {
    this.clearTimer();
    if (!this.running) return;
    const gen = ++this.generation;
    this.set({ kind: 'connecting' });
    const conn = this.opts.connect({
      active: () => {
        if (gen === this.generation) this.set({ kind: 'active' });
      },
      idle: () => {
        if (gen !== this.generation) return;
        this.attempt = 0;
        this.set({ kind: 'idle' });
      },
      progress: () => {
        // A busy device may never be idle between two faults; its successes still count (DESIGN §7).
        if (gen === this.generation) this.attempt = 0;
      },
    });
    this.current = conn;
    conn.ended.then(
      (end) => this.onEnded(gen, end),
      (err: unknown) => this.onEnded(gen, { kind: 'failed', reachable: true, message: err instanceof Error ? err.message : 'connection failed' }),
    );
  }

  private onEnded(gen: number, end: ConnectionEnd): void {
    if (gen !== this.generation || !this.running) return;
    this.current = null;
    if (end.kind === 'halted') {
      this.running = false;
      this.unsubscribe?.();
      this.unsubscribe = null;
      this.set({ kind: 'tenant-mismatch', source: end.source });
      return;
    }
    if (end.kind === 'stopped') {
      // The connection ended by itself without an error: reconnect straight away.
      this.connectNow();
      return;
    }
    this.attempt++;
    const delayMs = nextDelay(this.attempt, this.opts.backoff);
    this.set({ kind: 'backoff', attempt: this.attempt, delayMs, reachable: end.reachable });
    this.timer = this.opts.scheduler.setTimeout(() => {
      this.timer = null;
      this.connectNow();
    }, delayMs);
  }

  private onPlatform(online: boolean): void {
    if (!this.running) return;
    if (online) {
      if (this.current) return;
      this.attempt = 0;
      this.connectNow();
      return;
    }
    this.clearTimer();
    this.generation++;
    const conn = this.current;
    this.current = null;
    void conn?.stop();
    this.set({ kind: 'offline' });
  }
}

// ---- one connection: PouchDB live push + pull ----

/**
 * Docs per replication batch (PouchDB's default is 100). 500 both ways, because:
 * - Each pushed batch costs two of the user's rate-limited gateway writes (`_bulk_docs` and the
 *   `_local` checkpoint; 20/s, burst 100, `gateway/sync/quotas.ts`), each pulled batch one. At
 *   500, the largest backlog the gateway accepts (10,000 pending mutations) goes up in 40 writes,
 *   inside the burst; at 100 it takes 200 and a fast link runs into 429s.
 * - It stays far inside the gateway's body limit (16 MiB): the op schemas bound a mutation doc to
 *   ~22 KB even with every field at its maximum in escaped characters, so ~11 MiB for 500
 *   (~10 KB / ~5 MiB for ordinary text), and `_bulk_docs` has no count limit of its own.
 * - Measured through the gateway on this 2-core machine (one-shot, 2,000 pushed / 1,500 pulled,
 *   load 9-21): push 468 / 548 / 744 docs/s at 100 / 200 / 500, pull ~1,400 / ~2,200 / ~2,850
 *   (STACK-NOTES: ~2x on loopback direct to the server). Live sync sends what is there, up to
 *   the batch size, so a larger one never delays a single write.
 */
export const DEFAULT_BATCH_SIZE = 500;

export interface ReplicationOptions {
  db: Db;
  remote: Db;
  owner: string;
  /** Docs per push and per pull batch (`DEFAULT_BATCH_SIZE` unless the app sets its own). */
  batchSize: number;
  /** A per-doc refusal from the gateway on push (PouchDB `denied`). */
  onDenied(docId: string, reason: string): void;
  /** Set when the transport saw a tenant mismatch; the connection then ends as halted. */
  halted(): TenantMismatchSource | null;
  /** Whether the last request reached the server. */
  reachable(): boolean;
  /** A connection (or a one-shot sync) starts: what the last one remembered of the remote is forgotten. */
  newConnection(): void;
  /** A pulled batch has been stored; the pull's feed position is now `lastSeq`. */
  onPulled(lastSeq: unknown): void;
  /** One side restarts alone: the checkpoints remembered are read from the gateway again. */
  sideRestart(): void;
  /** How long a failed side waits before it restarts alone (`afterSideFailure`). */
  backoff: BackoffOptions;
  scheduler: Scheduler;
}

/** Push sends only this owner's live `m:` docs (a selector on `_id`, which is stored in clear). */
export function pushSelector(owner: string): PouchDB.Find.Selector {
  // Live docs only: the device drops acknowledged mutation docs by deleting them locally
  // (`acknowledgement.ts`), and a tombstone must never reach the gateway (it refuses it, which
  // PouchDB reports as `denied`).
  return { _id: { $gt: `m:${owner}:`, $lt: `m:${owner}:\uffff` }, _deleted: { $exists: false } };
}

type Replication = PouchDB.Replication.Replication<object>;

// Checkpoints stay on both sides (PouchDB's default). Keeping them on the device only saves a
// `_local` GET and PUT per batch (measured: harness p50 10.5 s → 9.1 s), but then a server restored
// from a backup (feed counters or inbox rolled back) is never caught up: the device trusts its own
// checkpoint. PouchDB compares both sides and starts over when they disagree. What is saved instead:
// within a connection the GET before each checkpoint PUT is answered from what the connection last
// wrote (`checkpoint-memory.ts`); each connection's first read still goes to the gateway.
function pushOptions(o: ReplicationOptions, live: boolean): PouchDB.Replication.ReplicateOptions {
  return { live, retry: false, batch_size: o.batchSize, selector: pushSelector(o.owner) };
}
function pullOptions(o: ReplicationOptions, live: boolean): PouchDB.Replication.ReplicateOptions {
  return { live, retry: false, batch_size: o.batchSize };
}

interface DeniedError {
  id?: string;
  reason?: string;
  message?: string;
}

export type Side = 'push' | 'pull';

/** What a connection knows when one of its sides (push or pull) fails. */
export interface SideFailure {
  /** The transport saw a tenant mismatch. */
  halted: TenantMismatchSource | null;
  /** The connection is being stopped (the failure is the cancel). */
  stopping: boolean;
  /**
   * The other side works: since it last started it has caught up or moved documents, and it has not
   * failed. A side that is still starting proves nothing (when the network is down both sides fail
   * in turn, and neither may count the other as healthy).
   */
  otherHealthy: boolean;
  /** This side's failures in a row, this one included (reset when the side moves documents or catches up). */
  attempt: number;
  /** The failed request got an HTTP answer (false: the network failed, even after the transient retry). */
  reachable: boolean;
}

export type SideFailureAction =
  | { kind: 'stop' }
  | { kind: 'halt'; source: TenantMismatchSource }
  /** End the whole connection as failed: the connection loop backs off and reconnects both sides. */
  | { kind: 'end' }
  /** Restart this side alone after `attempt`'s backoff; the other side goes on. */
  | { kind: 'restart-side'; attempt: number };

/**
 * After a side fails: a network fault on one request (a reset, a lost answer) fails one side
 * while the other works. Restarting both would cost the healthy side its live longpoll and both
 * their start-up requests (checkpoint reads, db info), and make it wait out a backoff for nothing.
 * So when the gateway answered with an error (a 5xx, a 429, a refused checkpoint) and the other side
 * works, only the failed side restarts, after its own backoff. When the network itself failed (a
 * connection lost twice, past `transient-retry.ts`), or the other side has failed too, the
 * connection ends and the loop's backoff (which the app sees as `backoff`) takes over. Pure.
 */
export function afterSideFailure(f: SideFailure): SideFailureAction {
  if (f.stopping) return { kind: 'stop' };
  if (f.halted) return { kind: 'halt', source: f.halted };
  // The network failed: the other side's health is old news (an idle push makes no request that
  // could fail), so the app is told (`backoff`, reachable false) and both sides start over.
  if (!f.reachable || !f.otherHealthy) return { kind: 'end' };
  return { kind: 'restart-side', attempt: f.attempt };
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String((err as { message?: unknown })?.message ?? 'replication failed');
}

interface SideRun {
  rep: Replication | null;
  paused: boolean;
  /** Failed, waiting for its restart (or for the connection to end). */
  down: boolean;
  /** Caught up or moved documents since it last started. */
  proven: boolean;
  attempt: number;
  timer: unknown;
  /** The replication has ended (complete or error) since it was cancelled or failed. */
  settled: boolean;
}

export function replicationConnector(o: ReplicationOptions): Connect {
  return (hooks) => {
    o.newConnection();
    const sides: Record<Side, SideRun> = {
      push: { rep: null, paused: false, down: false, proven: false, attempt: 0, timer: null, settled: true },
      pull: { rep: null, paused: false, down: false, proven: false, attempt: 0, timer: null, settled: true },
    };
    const other = (side: Side): Side => (side === 'push' ? 'pull' : 'push');
    const waiters: (() => void)[] = [];
    const markSettled = (side: Side): void => {
      sides[side].settled = true;
      if (sides.push.settled && sides.pull.settled) for (const w of waiters.splice(0)) w();
    };
    let stopping = false;
    let settle!: (end: ConnectionEnd) => void;
    const ended = new Promise<ConnectionEnd>((resolve) => (settle = resolve));
    let done = false;
    const finish = (end: ConnectionEnd): void => {
      if (done) return;
      done = true;
      for (const run of Object.values(sides)) {
        if (run.timer !== null) o.scheduler.clearTimeout(run.timer);
        run.timer = null;
        run.rep?.cancel();
      }
      settle(end);
    };
    const start = (side: Side): void => {
      const run = sides[side];
      const rep = (side === 'push' ? o.db.replicate.to(o.remote, pushOptions(o, true)) : o.db.replicate.from(o.remote, pullOptions(o, true))) as Replication;
      Object.assign(run, { rep, paused: false, down: false, proven: false, settled: false });
      const current = () => run.rep === rep && !done;
      const caughtUp = (): void => {
        run.attempt = 0;
        run.proven = true;
        hooks.progress();
      };
      rep.on('active', () => {
        if (!current()) return;
        run.paused = false;
        hooks.active();
      });
      rep.on('change', (info: { last_seq?: unknown }) => {
        if (!current()) return;
        caughtUp();
        if (side === 'pull') o.onPulled(info.last_seq);
      });
      rep.on('paused', (err: unknown) => {
        if (err || !current()) return;
        run.paused = true;
        run.attempt = 0;
        run.proven = true;
        if (sides.push.paused && sides.pull.paused && !sides.push.down && !sides.pull.down) hooks.idle();
      });
      rep.on('error', (err: unknown) => {
        if (run.rep === rep) markSettled(side);
        if (!current()) return;
        run.down = true;
        run.attempt++;
        const reachable = o.reachable();
        const action = afterSideFailure({ halted: o.halted(), stopping, otherHealthy: !sides[other(side)].down && sides[other(side)].proven, attempt: run.attempt, reachable });
        if (action.kind === 'stop') finish({ kind: 'stopped' });
        else if (action.kind === 'halt') finish({ kind: 'halted', source: action.source });
        else if (action.kind === 'end') finish({ kind: 'failed', reachable, message: messageOf(err) });
        else {
          // The restarted side compares its checkpoint with the gateway's (as a new connection does),
          // so that comparison must see the gateway's copy, not what this connection remembers.
          o.sideRestart();
          run.timer = o.scheduler.setTimeout(() => {
            run.timer = null;
            if (!done) start(side);
          }, nextDelay(action.attempt, o.backoff));
        }
      });
      rep.on('complete', () => {
        if (run.rep === rep) markSettled(side);
        if (!current()) return;
        const halt = o.halted();
        if (halt && !stopping) finish({ kind: 'halted', source: halt });
        else finish({ kind: 'stopped' });
      });
      rep.on('denied', (err: unknown) => {
        const e = err as DeniedError;
        if (side === 'push' && typeof e.id === 'string') o.onDenied(e.id, typeof e.reason === 'string' ? e.reason : 'forbidden');
      });
      // The replication is also a promise; its rejection is reported through 'error' above.
      (rep as unknown as Promise<unknown>).then(undefined, () => undefined);
    };
    start('push');
    start('pull');
    return {
      ended,
      stop: async () => {
        stopping = true;
        finish({ kind: 'stopped' });
        if (sides.push.settled && sides.pull.settled) return;
        // A cancelled replication emits 'complete' once its current step ends; bounded wait.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1_000) as { unref?: () => void };
          timer.unref?.();
          waiters.push(resolve);
        });
      },
    };
  };
}

export type SyncOnceResult =
  | { kind: 'ok'; pushed: number; pulled: number; denied: number }
  | { kind: 'failed'; reachable: boolean; message: string }
  | { kind: 'halted'; source: TenantMismatchSource };

/** One push then one pull, not live. For "sync now" buttons, tests and benchmarks. */
export async function syncOnce(o: ReplicationOptions): Promise<SyncOnceResult> {
  let denied = 0;
  o.newConnection();
  try {
    const push = o.db.replicate.to(o.remote, pushOptions(o, false)) as Replication;
    push.on('denied', (err: unknown) => {
      const e = err as DeniedError;
      denied++;
      if (typeof e.id === 'string') o.onDenied(e.id, typeof e.reason === 'string' ? e.reason : 'forbidden');
    });
    const pushed = await push;
    const pulled = await (o.db.replicate.from(o.remote, pullOptions(o, false)) as Replication);
    o.onPulled(pulled.last_seq);
    return { kind: 'ok', pushed: pushed.docs_written, pulled: pulled.docs_written, denied };
  } catch (err) {
    const halt = o.halted();
    if (halt) return { kind: 'halted', source: halt };
    return { kind: 'failed', reachable: o.reachable(), message: err instanceof Error ? err.message : 'sync failed' };
  }
}
