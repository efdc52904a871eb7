import type { Database } from '../../sql/database.ts';
import { couchError } from './context.ts';

// One `_bulk_docs` at a time per user (tenant, owner), across every gateway process that shares
// the platform database. Load-then-decide-then-write is only sound that way: two concurrent
// pushes of one id with different roots would both find it absent and write two roots (a real
// CouchDB's VDU sees no oldDoc for a new root, so nothing upstream stops the second).
//
// Where it decides: PGlite is embedded, so it only ever has one process (the data-dir lock, scripts/
// data-dir-lock.ts, refuses a second): the in-process serialiser is the whole guard. On PostgreSQL
// several gateways may run, so the push also holds a transaction-scoped advisory lock keyed by
// (schema, tenant, owner) across its load and write. The lock is released by COMMIT/ROLLBACK, or by
// PostgreSQL when the holder's connection dies (a gateway killed with -9 holds nothing).

export interface PushGuard {
  /** Runs `fn` with the user's push lock held. */
  hold<T>(tenant: string, owner: string, fn: () => Promise<T>): Promise<T>;
  /**
   * True when another process may write the user's inbox docs between two of this process's
   * requests: then "absent a moment ago" (revs_diff) proves nothing to the next `_bulk_docs`.
   */
  readonly crossProcess: boolean;
}

export interface PushGuardOptions {
  /**
   * Pushes holding a pool connection at once in this process. Each holds one connection for its
   * load+write, and needs another for its pending-ledger queries, so this must stay under half the
   * pool (10 by default): the rest is left to every other query (liveness, feeds, `_local`).
   */
  maxHolders?: number;
  /** How long a push waits for a slot here and then for the lock in PostgreSQL before it is refused (503, retry). */
  waitMs?: number;
  /** PostgreSQL ends a session idle in its transaction this long, so a hung holder cannot keep the lock. */
  idleMs?: number;
}

export const PUSH_GUARD_DEFAULTS = { maxHolders: 4, waitMs: 10_000, idleMs: 60_000 } as const;

/** What a push refused for want of the lock is told: about one push of another device. */
const BUSY_RETRY_SECONDS = 1;

/** The advisory-lock key text of a user; hashed with `hashtextextended` in SQL, namespaced by schema. */
export function pushLockName(tenant: string, owner: string): string {
  return `push:${JSON.stringify([tenant, owner])}`;
}

export function createPushGuard(db: Pick<Database, 'kind' | 'transaction'>, opts: PushGuardOptions = {}): PushGuard {
  const serial = perKeySerializer();
  const key = (tenant: string, owner: string) => `${tenant}\u0000${owner}`;
  if (db.kind === 'pglite') {
    return { crossProcess: false, hold: (tenant, owner, fn) => serial(key(tenant, owner), fn) };
  }
  const { maxHolders, waitMs, idleMs } = { ...PUSH_GUARD_DEFAULTS, ...opts };
  const slots = createSlots(maxHolders);
  return {
    crossProcess: true,
    // The in-process serialiser first: this process never has two connections waiting on one user's lock.
    hold: (tenant, owner, fn) =>
      serial(key(tenant, owner), async () => {
        const release = await slots.acquire(waitMs);
        if (!release) throw couchError('UNAVAILABLE', { retryAfterSeconds: BUSY_RETRY_SECONDS });
        try {
          return await db.transaction(async (tx) => {
            await tx.query(`SELECT set_config('lock_timeout', $1, true), set_config('idle_in_transaction_session_timeout', $2, true)`, [`${waitMs}ms`, `${idleMs}ms`]);
            try {
              await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':' || $1, 0))`, [pushLockName(tenant, owner)]);
            } catch (err) {
              // 55P03 lock_not_available: another gateway held the user's lock past the wait.
              if ((err as { code?: string }).code === '55P03') throw couchError('UNAVAILABLE', { retryAfterSeconds: BUSY_RETRY_SECONDS });
              throw err;
            }
            return fn();
          });
        } finally {
          release();
        }
      }),
  };
}

/** Runs the `fn`s of one key one after another (within this process); other keys are not held up. */
function perKeySerializer() {
  const tails = new Map<string, Promise<void>>();
  return async function serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (tails.get(key) === tail) tails.delete(key);
    }
  };
}

/** At most `max` holders at once; a waiter gives up (null) after `waitMs`. FIFO. */
export function createSlots(max: number) {
  let held = 0;
  const waiting: Array<(release: (() => void) | null) => void> = [];
  const releaser = () => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = waiting.shift();
      if (next) next(releaser());
      else held--;
    };
  };
  return {
    acquire(waitMs: number): Promise<(() => void) | null> {
      if (held < max) {
        held++;
        return Promise.resolve(releaser());
      }
      return new Promise((resolve) => {
        const entry = (r: (() => void) | null) => {
          clearTimeout(timer);
          resolve(r);
        };
        const timer = setTimeout(() => {
          const i = waiting.indexOf(entry);
          if (i !== -1) waiting.splice(i, 1);
          resolve(null);
        }, waitMs);
        waiting.push(entry);
      });
    },
    get held() {
      return held;
    },
  };
}
