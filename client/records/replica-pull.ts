// One connection of the replica: a live PouchDB pull of `/replica/{tenant}` into the replica
// store, shaped as a `Connect` for the same `ConnectionLoop` (backoff, online/offline, halts) that
// drives `/sync`. It only ever pulls: the endpoint is read-only.

import type { TenantMismatchSource } from '../auth-fetch.ts';
import type { Connect, ConnectionEnd } from '../sync.ts';
import type { Db } from '../store.ts';

export interface ReplicaPullOptions {
  /** The replica store (its pull guard in front). */
  db: Db;
  /** `/replica/{tenant}` behind the session's token transport. */
  remote: Db;
  batchSize: number;
  /** Set when the transport saw a tenant mismatch; the connection then ends as halted. */
  halted(): TenantMismatchSource | null;
  reachable(): boolean;
  /** A pull caught up (live: paused without an error; one-shot: complete). */
  caughtUp(): void;
}

type Replication = PouchDB.Replication.Replication<object>;

const pullOptions = (o: ReplicaPullOptions, live: boolean): PouchDB.Replication.ReplicateOptions => ({ live, retry: false, batch_size: o.batchSize });

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String((err as { message?: unknown })?.message ?? 'replica pull failed');
}

export function replicaPullConnector(o: ReplicaPullOptions): Connect {
  return (hooks) => {
    const pull = o.db.replicate.from(o.remote, pullOptions(o, true)) as Replication;
    let stopping = false;
    let settled = false;
    const waiters: (() => void)[] = [];
    let settle!: (end: ConnectionEnd) => void;
    const ended = new Promise<ConnectionEnd>((resolve) => (settle = resolve));
    let done = false;
    const finish = (end: ConnectionEnd): void => {
      if (done) return;
      done = true;
      pull.cancel();
      settle(end);
    };
    const markSettled = (): void => {
      settled = true;
      for (const w of waiters.splice(0)) w();
    };
    pull.on('active', () => hooks.active());
    pull.on('change', () => hooks.progress());
    pull.on('paused', (err: unknown) => {
      if (err) return;
      o.caughtUp();
      hooks.idle();
    });
    pull.on('error', (err: unknown) => {
      markSettled();
      const halt = o.halted();
      if (stopping) finish({ kind: 'stopped' });
      else if (halt) finish({ kind: 'halted', source: halt });
      else finish({ kind: 'failed', reachable: o.reachable(), message: messageOf(err) });
    });
    pull.on('complete', () => {
      markSettled();
      const halt = o.halted();
      if (halt && !stopping) finish({ kind: 'halted', source: halt });
      else finish({ kind: 'stopped' });
    });
    // The replication is also a promise; its rejection is reported through 'error' above.
    (pull as unknown as Promise<unknown>).then(undefined, () => undefined);
    return {
      ended,
      stop: async () => {
        stopping = true;
        finish({ kind: 'stopped' });
        if (settled) return;
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

export type ReplicaPullResult = { kind: 'ok'; pulled: number } | { kind: 'failed'; reachable: boolean; message: string } | { kind: 'halted'; source: TenantMismatchSource };

/** One pull, not live: for "refresh now", tests and benchmarks. */
export async function pullReplicaOnce(o: ReplicaPullOptions): Promise<ReplicaPullResult> {
  try {
    const res = await (o.db.replicate.from(o.remote, pullOptions(o, false)) as Replication);
    o.caughtUp();
    return { kind: 'ok', pulled: res.docs_written };
  } catch (err) {
    const halt = o.halted();
    if (halt) return { kind: 'halted', source: halt };
    return { kind: 'failed', reachable: o.reachable(), message: messageOf(err) };
  }
}
