import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Database, Queryable } from '../../sql/database.ts';

// Refresh sessions with rotation and reuse detection (DESIGN §3): every refresh token works once;
// presenting a rotated one revokes the whole session, since it means the token leaked.

export interface StoredRefresh {
  sid: string;
  userId: string;
  tenantId: string;
  rotated: boolean;
  sessionRevoked: boolean;
  sessionExpired: boolean;
}

export type RefreshDecision =
  | { kind: 'rotate'; sid: string; userId: string; tenantId: string }
  | { kind: 'reject' }
  | { kind: 'revoke-session'; sid: string };

/** What happens to a presented refresh token, given what is stored for it. */
export function decideRefresh(stored: StoredRefresh | null): RefreshDecision {
  if (!stored) return { kind: 'reject' };
  if (stored.sessionRevoked || stored.sessionExpired) return { kind: 'reject' };
  if (stored.rotated) return { kind: 'revoke-session', sid: stored.sid };
  return { kind: 'rotate', sid: stored.sid, userId: stored.userId, tenantId: stored.tenantId };
}

export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

function newRefreshToken(): string {
  return randomBytes(32).toString('base64url');
}

export interface SessionStore {
  open(userId: string, tenantId: string): Promise<{ sid: string; refreshToken: string }>;
  /** Rotates the token; the callback may refuse (e.g. membership gone) by throwing, which rolls back. */
  refresh<T>(token: string, onRotate: (s: { sid: string; userId: string; tenantId: string; refreshToken: string }) => Promise<T>): Promise<
    { kind: 'rotated'; value: T } | { kind: 'rejected' } | { kind: 'revoked' }
  >;
  isActive(sid: string): Promise<boolean>;
  revoke(sid: string): Promise<void>;
}

export function createSessionStore(db: Database, opts: { ttlSeconds?: number } = {}): SessionStore {
  const ttl = opts.ttlSeconds ?? 14 * 24 * 3600;
  const insertToken = async (tx: Queryable, sid: string) => {
    const token = newRefreshToken();
    await tx.query('INSERT INTO refresh_tokens (token_hash, sid) VALUES ($1, $2)', [hashRefreshToken(token), sid]);
    return token;
  };
  return {
    async open(userId, tenantId) {
      const sid = randomUUID();
      return db.transaction(async (tx) => {
        await tx.query(
          `INSERT INTO refresh_sessions (sid, user_id, tenant_id, expires_at) VALUES ($1, $2, $3, now() + make_interval(secs => $4))`,
          [sid, userId, tenantId, ttl],
        );
        return { sid, refreshToken: await insertToken(tx, sid) };
      });
    },
    async refresh(token, onRotate) {
      // Revocation must survive even when the caller's work throws, so it commits on its own.
      const outcome = await db.transaction(async (tx) => {
        const { rows } = await tx.query<{ sid: string; user_id: string; tenant_id: string; rotated_at: unknown; revoked_at: unknown; expired: boolean }>(
          `SELECT t.sid, s.user_id, s.tenant_id, t.rotated_at, s.revoked_at, (s.expires_at < now()) AS expired
             FROM refresh_tokens t JOIN refresh_sessions s ON s.sid = t.sid
            WHERE t.token_hash = $1 FOR UPDATE OF t, s`,
          [hashRefreshToken(token)],
        );
        const row = rows[0];
        const decision = decideRefresh(
          row
            ? { sid: row.sid, userId: row.user_id, tenantId: row.tenant_id, rotated: row.rotated_at !== null, sessionRevoked: row.revoked_at !== null, sessionExpired: row.expired }
            : null,
        );
        if (decision.kind === 'reject') return { kind: 'rejected' as const };
        if (decision.kind === 'revoke-session') {
          await tx.query('UPDATE refresh_sessions SET revoked_at = now() WHERE sid = $1 AND revoked_at IS NULL', [decision.sid]);
          return { kind: 'revoked' as const };
        }
        await tx.query('UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1', [hashRefreshToken(token)]);
        const refreshToken = await insertToken(tx, decision.sid);
        return { kind: 'rotate' as const, s: { sid: decision.sid, userId: decision.userId, tenantId: decision.tenantId, refreshToken } };
      });
      if (outcome.kind !== 'rotate') return outcome;
      return { kind: 'rotated', value: await onRotate(outcome.s) };
    },
    async isActive(sid) {
      const { rows } = await db.query('SELECT 1 FROM refresh_sessions WHERE sid = $1 AND revoked_at IS NULL AND expires_at > now()', [sid]);
      return rows.length > 0;
    },
    async revoke(sid) {
      await db.query('UPDATE refresh_sessions SET revoked_at = now() WHERE sid = $1 AND revoked_at IS NULL', [sid]);
    },
  };
}
