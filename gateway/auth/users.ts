import type { Queryable } from '../../sql/database.ts';
import { OWNER_ID } from '../../validators/identity.ts';
import { hashPassword } from '../../identity/password.ts';

export interface DevUser {
  id: string;
  username: string;
  passwordHash: string | null;
}

/** Users of the built-in dev identity provider. A user's id is its `owner`, so it must hold no PII. */
export interface UserStore {
  byUsername(username: string): Promise<DevUser | null>;
  upsert(user: { id: string; username: string; password: string }): Promise<void>;
  /** A user of the external IdP: the row the memberships need, keyed by the derived owner, with no password. */
  ensureExternal(owner: string): Promise<void>;
}

export function createUserStore(db: Queryable): UserStore {
  return {
    async byUsername(username) {
      const { rows } = await db.query<{ id: string; username: string; password_hash: string | null }>(
        'SELECT id, username, password_hash FROM users WHERE username = $1',
        [username],
      );
      const row = rows[0];
      return row ? { id: row.id, username: row.username, passwordHash: row.password_hash } : null;
    },
    async upsert(user) {
      if (!OWNER_ID.test(user.id)) throw new Error('invalid user id');
      const hash = await hashPassword(user.password);
      await db.query(
        `INSERT INTO users (id, username, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, password_hash = EXCLUDED.password_hash`,
        [user.id, user.username, hash],
      );
    },
    async ensureExternal(owner) {
      if (!OWNER_ID.test(owner)) throw new Error('invalid owner id');
      // The username is the owner too: an external user has no other name here, and no PII.
      await db.query('INSERT INTO users (id, username, password_hash) VALUES ($1, $1, NULL) ON CONFLICT (id) DO NOTHING', [owner]);
    },
  };
}
