// What to do with a request that carries an Idempotency-Key, given what is stored under it.
// Pure, so every branch is a row in a table test.

export interface StoredAnswer {
  fingerprint: string;
  status: number;
  /** The body exactly as first sent (JSON text), so a replay is byte-identical. */
  body: string;
  expiresAt: Date;
}

export type IdempotencyDecision =
  | { kind: 'proceed'; discardExpired: boolean }
  | { kind: 'replay'; status: number; body: string }
  | { kind: 'reused' };

export function decideIdempotency(stored: StoredAnswer | null, fingerprint: string, now: Date): IdempotencyDecision {
  if (!stored) return { kind: 'proceed', discardExpired: false };
  // Past the replay horizon the key is free again; the old answer is dropped in the same transaction.
  if (stored.expiresAt.getTime() <= now.getTime()) return { kind: 'proceed', discardExpired: true };
  if (stored.fingerprint !== fingerprint) return { kind: 'reused' };
  return { kind: 'replay', status: stored.status, body: stored.body };
}

/** A key as clients send it: mutation ids are UUIDs; allow the usual token characters, bounded. */
export const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:~+/=-]{1,200}$/;

export const DEFAULT_RETENTION_MS = 30 * 24 * 3600_000;
