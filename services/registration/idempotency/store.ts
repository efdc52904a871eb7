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
 * Runs `work` under one key (the batch route does the same for many keys at once). Answers it
 * returns are stored; FerryErrors it throws (428, 400) roll back and are not, so the same request
 * can be retried once fixed.
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
    const early = decideIdempotency((await loadAnswers(db, scope.tenant, [scope.key])).get(scope.key) ?? null, scope.fingerprint, opts.now());
    if (early.kind === 'replay') return { status: early.status, body: early.body, replayed: true };
    if (early.kind === 'reused') throw new FerryError('IDEMPOTENCY_KEY_REUSED');
  }
  return db.transaction(async (tx) => {
    const now = opts.now();
    if (scope.key !== null) {
      if (!(await tryLockKeys(tx, scope.tenant, [scope.key])).has(scope.key)) throw new FerryError('IDEMPOTENCY_IN_PROGRESS');
      const decision = decideIdempotency((await loadAnswers(tx, scope.tenant, [scope.key])).get(scope.key) ?? null, scope.fingerprint, now);
      if (decision.kind === 'replay') return { status: decision.status, body: decision.body, replayed: true };
      if (decision.kind === 'reused') throw new FerryError('IDEMPOTENCY_KEY_REUSED');
    }
    const answer = await work(tx);
    const body = JSON.stringify(answer.body);
    if (scope.key !== null) await storeAnswers(tx, scope.tenant, [{ key: scope.key, fingerprint: scope.fingerprint, status: answer.status, body }], now, opts.retentionMs);
    return { status: answer.status, body, replayed: false };
  });
}

/**
 * Takes the in-flight markers of these keys without waiting, all in one statement; returns the
 * keys it got. A transaction-scoped lock goes with its connection if the process dies.
 */
export async function tryLockKeys(tx: Queryable, tenant: string, keys: readonly string[]): Promise<Set<string>> {
  if (keys.length === 0) return new Set();
  const { rows } = await tx.query<{ key: string; locked: boolean }>(
    `SELECT k AS key, pg_try_advisory_xact_lock(hashtextextended('idem:' || $1 || ':' || k, 0)) AS locked FROM unnest($2::text[]) AS k`,
    [tenant, [...new Set(keys)]],
  );
  return new Set(rows.filter((r) => r.locked).map((r) => r.key));
}

export async function loadAnswers(q: Queryable, tenant: string, keys: readonly string[]): Promise<Map<string, StoredAnswer>> {
  if (keys.length === 0) return new Map();
  const { rows } = await q.query<{ key: string; fingerprint: string; status: number; body: string; expires_at: Date | string }>(
    'SELECT key, fingerprint, status, body, expires_at FROM idempotency_keys WHERE tenant = $1 AND key = ANY($2::text[])',
    [tenant, [...new Set(keys)]],
  );
  return new Map(rows.map((r) => [r.key, { fingerprint: r.fingerprint, status: Number(r.status), body: r.body, expiresAt: new Date(r.expires_at) }]));
}

export interface AnswerToStore {
  key: string;
  fingerprint: string;
  status: number;
  body: string;
}

/**
 * Stores answers under their keys in one statement. A key whose old answer has expired is taken
 * over in place (the caller holds its lock and saw it expired); a live one is never overwritten.
 */
export async function storeAnswers(tx: Queryable, tenant: string, answers: readonly AnswerToStore[], now: Date, retentionMs: number): Promise<void> {
  if (answers.length === 0) return;
  const { rows } = await tx.query(
    `INSERT INTO idempotency_keys (tenant, key, fingerprint, status, body, created_at, expires_at)
     SELECT $1, key, fingerprint, status, body, $3, $4 FROM jsonb_to_recordset($2::jsonb) AS r (key text, fingerprint text, status integer, body text)
     ON CONFLICT (tenant, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = EXCLUDED.status, body = EXCLUDED.body,
       created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
     WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
     RETURNING key`,
    [tenant, JSON.stringify(answers), now, new Date(now.getTime() + retentionMs)],
  );
  // Only a writer that ignored the key's lock could have stored a live answer meanwhile.
  if (rows.length !== answers.length) throw new Error('an idempotency key was stored by another transaction');
}

/** Drops answers past the replay horizon; returns how many. Run it periodically. */
export async function purgeExpiredIdempotencyKeys(db: Queryable, now: Date = new Date()): Promise<number> {
  const { rowCount } = await db.query('DELETE FROM idempotency_keys WHERE expires_at <= $1', [now]);
  return rowCount;
}
