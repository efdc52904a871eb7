import type { Database, Queryable } from '../../../sql/database.ts';
import { FerryError } from '../../../validators/codes.ts';
import { decideIdempotency, type StoredAnswer } from './decision.ts';

// The key check, the business effect and the stored answer share one transaction (DESIGN §6).
// The in-flight marker is a transaction-scoped advisory lock, not a row flag: if the process
// dies mid-request the lock goes with its connection and the key is free again.

/** An answer the business logic produced; every one of these is stored under the key. */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
}

export interface IdempotentResult {
  status: number;
  /** JSON text, byte-identical between the first answer and its replays. */
  body: string;
  replayed: boolean;
}

export interface IdempotencyScope {
  tenant: string;
  /** Null when the request carries no Idempotency-Key: the work runs unguarded. */
  key: string | null;
  fingerprint: string;
}

export interface IdempotencyOptions {
  retentionMs: number;
  now: () => Date;
}

/**
 * Runs `work` under the key. Answers it returns are stored; FerryErrors it throws (428, 400)
 * roll back and are not, so the same request can be retried once fixed.
 */
export async function runIdempotent(
  db: Database,
  scope: IdempotencyScope,
  opts: IdempotencyOptions,
  work: (tx: Queryable) => Promise<Answer>,
): Promise<IdempotentResult> {
  if (scope.key !== null) {
    // Fast path for retries: a stored answer never changes until it expires, so a replay needs
    // neither the lock nor a transaction.
    const early = decideIdempotency(await loadAnswer(db, scope.tenant, scope.key), scope.fingerprint, opts.now());
    if (early.kind === 'replay') return { status: early.status, body: early.body, replayed: true };
    if (early.kind === 'reused') throw new FerryError('IDEMPOTENCY_KEY_REUSED');
  }
  return db.transaction(async (tx) => {
    const now = opts.now();
    if (scope.key !== null) {
      const { rows } = await tx.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked', [
        `idem:${scope.tenant}:${scope.key}`,
      ]);
      if (!rows[0]?.locked) throw new FerryError('IDEMPOTENCY_IN_PROGRESS');
      const decision = decideIdempotency(await loadAnswer(tx, scope.tenant, scope.key), scope.fingerprint, now);
      if (decision.kind === 'replay') return { status: decision.status, body: decision.body, replayed: true };
      if (decision.kind === 'reused') throw new FerryError('IDEMPOTENCY_KEY_REUSED');
      if (decision.discardExpired) await tx.query('DELETE FROM idempotency_keys WHERE tenant = $1 AND key = $2', [scope.tenant, scope.key]);
    }
    const answer = await work(tx);
    const body = JSON.stringify(answer.body);
    if (scope.key !== null) {
      await tx.query(
        `INSERT INTO idempotency_keys (tenant, key, fingerprint, status, body, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [scope.tenant, scope.key, scope.fingerprint, answer.status, body, now, new Date(now.getTime() + opts.retentionMs)],
      );
    }
    return { status: answer.status, body, replayed: false };
  });
}

async function loadAnswer(tx: Queryable, tenant: string, key: string): Promise<StoredAnswer | null> {
  const { rows } = await tx.query<{ fingerprint: string; status: number; body: string; expires_at: Date | string }>(
    'SELECT fingerprint, status, body, expires_at FROM idempotency_keys WHERE tenant = $1 AND key = $2',
    [tenant, key],
  );
  const row = rows[0];
  if (!row) return null;
  return { fingerprint: row.fingerprint, status: Number(row.status), body: row.body, expiresAt: new Date(row.expires_at) };
}

/** Drops answers past the replay horizon; returns how many. Run it periodically. */
export async function purgeExpiredIdempotencyKeys(db: Queryable, now: Date = new Date()): Promise<number> {
  const { rowCount } = await db.query('DELETE FROM idempotency_keys WHERE expires_at <= $1', [now]);
  return rowCount;
}
