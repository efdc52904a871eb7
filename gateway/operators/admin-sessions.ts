import { createHash, randomBytes } from 'node:crypto';
import type { Queryable } from '../../sql/database.ts';

/** Browser sessions for platform operators (Fauxton cannot send a Bearer token on page loads). */
export interface AdminSessionStore {
  open(userId: string): Promise<string>;
  userOf(sessionId: string): Promise<string | null>;
  close(sessionId: string): Promise<void>;
}

const hash = (id: string) => createHash('sha256').update(id).digest('base64url');

export function createAdminSessionStore(db: Queryable, opts: { ttlSeconds?: number } = {}): AdminSessionStore {
  const ttl = opts.ttlSeconds ?? 8 * 3600;
  return {
    async open(userId) {
      const id = randomBytes(32).toString('base64url');
      await db.query(`INSERT INTO admin_sessions (id_hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))`, [hash(id), userId, ttl]);
      return id;
    },
    async userOf(sessionId) {
      if (!/^[A-Za-z0-9_-]{43}$/.test(sessionId)) return null;
      const { rows } = await db.query<{ user_id: string }>('SELECT user_id FROM admin_sessions WHERE id_hash = $1 AND expires_at > now()', [hash(sessionId)]);
      return rows[0]?.user_id ?? null;
    },
    async close(sessionId) {
      await db.query('DELETE FROM admin_sessions WHERE id_hash = $1', [hash(sessionId)]);
    },
  };
}
