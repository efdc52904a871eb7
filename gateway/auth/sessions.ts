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

/** What a rotation hands the caller, read in the same statement that locked the token. */
export interface RotatedSession {
  sid: string;
  userId: string;
  tenantId: string;
  /** The new refresh token. */
  refreshToken: string;
  /** The user's roles in the tenant now; null when no longer a member. */
  roles: string[] | null;
}

export interface SessionStore {
  open(userId: string, tenantId: string): Promise<{ sid: string; refreshToken: string }>;
  /**
   * Rotates the token and runs `onRotate` in the same transaction: if it throws (membership gone,
   * signing failed, …) the rotation rolls back, so the client's retry with the same token is a
   * plain refresh, not a reuse. `onRotate` must not query the database itself (PGlite holds its one
   * connection for the transaction); what it needs comes in `RotatedSession`.
   */
  refresh<T>(token: string, onRotate: (s: RotatedSession) => Promise<T>): Promise<
    { kind: 'rotated'; value: T } | { kind: 'rejected' } | { kind: 'revoked' }
  >;
  isActive(sid: string): Promise<boolean>;
  revoke(sid: string): Promise<void>;
  /** Revokes the session a refresh token belongs to (rotated or not); null when the token is unknown. */
  revokeByRefreshToken(token: string): Promise<string | null>;
}

export interface SessionStoreOptions {
  ttlSeconds?: number;
  /** Called after a revocation has committed (reuse, sign-out), so caches in this process drop the session. */
  onRevoke?: (sid: string) => void;
}

export function createSessionStore(db: Database, opts: SessionStoreOptions = {}): SessionStore {
  const ttl = opts.ttlSeconds ?? 14 * 24 * 3600;
  const revoked = (sid: string) => opts.onRevoke?.(sid);
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
      const outcome = await db.transaction(async (tx) => {
        const { rows } = await tx.query<{ sid: string; user_id: string; tenant_id: string; rotated_at: unknown; revoked_at: unknown; expired: boolean; roles: string[] | null }>(
          `SELECT t.sid, s.user_id, s.tenant_id, t.rotated_at, s.revoked_at, (s.expires_at < now()) AS expired, m.roles
             FROM refresh_tokens t JOIN refresh_sessions s ON s.sid = t.sid
             LEFT JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
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
          // Returned, not thrown, so the revocation commits: the reuse means the token leaked.
          await tx.query('UPDATE refresh_sessions SET revoked_at = now() WHERE sid = $1 AND revoked_at IS NULL', [decision.sid]);
          return { kind: 'revoked' as const, sid: decision.sid };
        }
        await tx.query('UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = $1', [hashRefreshToken(token)]);
        const refreshToken = await insertToken(tx, decision.sid);
        // Inside the transaction: a throw here un-rotates the token.
        const value = await onRotate({ sid: decision.sid, userId: decision.userId, tenantId: decision.tenantId, refreshToken, roles: row?.roles ?? null });
        return { kind: 'rotated' as const, value };
      });
      if (outcome.kind === 'revoked') {
        revoked(outcome.sid);
        return { kind: 'revoked' };
      }
      return outcome;
    },
    async isActive(sid) {
      const { rows } = await db.query('SELECT 1 FROM refresh_sessions WHERE sid = $1 AND revoked_at IS NULL AND expires_at > now()', [sid]);
      return rows.length > 0;
    },
    async revoke(sid) {
      await db.query('UPDATE refresh_sessions SET revoked_at = now() WHERE sid = $1 AND revoked_at IS NULL', [sid]);
      revoked(sid);
    },
    async revokeByRefreshToken(token) {
      const { rows } = await db.query<{ sid: string }>(
        `UPDATE refresh_sessions s SET revoked_at = COALESCE(s.revoked_at, now())
           FROM refresh_tokens t WHERE t.token_hash = $1 AND s.sid = t.sid RETURNING s.sid`,
        [hashRefreshToken(token)],
      );
      const sid = rows[0]?.sid ?? null;
      if (sid) revoked(sid);
      return sid;
    },
  };
}
