import type { Database } from '../../sql/database.ts';
import { migrate } from '../../sql/migrate.ts';

// `_local/{id}` docs of /sync, stored per (tenant, owner) in the platform database (DESIGN §5):
// replication checkpoints never reach the shared inbox, so one user can neither read nor clobber
// another's, and they survive gateway restarts and fail-over between gateway processes.

export const SYNC_MIGRATIONS: readonly string[] = [
  `CREATE TABLE sync_local_docs (
     tenant_id text NOT NULL,
     owner text NOT NULL,
     doc_id text NOT NULL,
     rev integer NOT NULL,
     body text NOT NULL,
     updated_at timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (tenant_id, owner, doc_id)
   );`,
];

export async function migrateSync(db: Database): Promise<void> {
  await migrate(db, 'sync', SYNC_MIGRATIONS);
}

export interface LocalDoc {
  rev: number;
  body: Record<string, unknown>;
}

export interface LocalKey {
  tenant: string;
  owner: string;
  id: string;
}

export interface LocalStore {
  get(key: LocalKey): Promise<LocalDoc | null>;
  count(tenant: string, owner: string): Promise<number>;
  /** Writes revision `rev` if the stored one is still `rev - 1` (or absent for rev 1); false on a lost race. */
  put(key: LocalKey, rev: number, body: Record<string, unknown>): Promise<boolean>;
  /** Deletes revision `rev`; false when it is not the stored one. */
  remove(key: LocalKey, rev: number): Promise<boolean>;
}

export function createLocalStore(db: Database): LocalStore {
  return {
    async get({ tenant, owner, id }) {
      const { rows } = await db.query<{ rev: number; body: string }>(
        'SELECT rev, body FROM sync_local_docs WHERE tenant_id = $1 AND owner = $2 AND doc_id = $3',
        [tenant, owner, id],
      );
      const row = rows[0];
      return row ? { rev: Number(row.rev), body: JSON.parse(row.body) as Record<string, unknown> } : null;
    },
    async count(tenant, owner) {
      const { rows } = await db.query<{ n: string | number }>('SELECT count(*) AS n FROM sync_local_docs WHERE tenant_id = $1 AND owner = $2', [
        tenant,
        owner,
      ]);
      return Number(rows[0]?.n ?? 0);
    },
    async put({ tenant, owner, id }, rev, body) {
      const json = JSON.stringify(body);
      if (rev === 1) {
        const res = await db.query(
          `INSERT INTO sync_local_docs (tenant_id, owner, doc_id, rev, body) VALUES ($1, $2, $3, 1, $4)
           ON CONFLICT (tenant_id, owner, doc_id) DO NOTHING`,
          [tenant, owner, id, json],
        );
        return res.rowCount === 1;
      }
      const res = await db.query(
        `UPDATE sync_local_docs SET rev = $4, body = $5, updated_at = now()
         WHERE tenant_id = $1 AND owner = $2 AND doc_id = $3 AND rev = $6`,
        [tenant, owner, id, rev, json, rev - 1],
      );
      return res.rowCount === 1;
    },
    async remove({ tenant, owner, id }, rev) {
      const res = await db.query('DELETE FROM sync_local_docs WHERE tenant_id = $1 AND owner = $2 AND doc_id = $3 AND rev = $4', [
        tenant,
        owner,
        id,
        rev,
      ]);
      return res.rowCount === 1;
    },
  };
}
