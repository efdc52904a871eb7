import type { Database } from './database.ts';

/**
 * Applies a component's migrations in order, each once, each in its own transaction.
 * On Postgres an advisory lock keeps two processes starting together from racing.
 */
export async function migrate(db: Database, component: string, migrations: readonly string[]): Promise<void> {
  await db.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
    component text NOT NULL, version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version))`);
  await db.transaction(async (tx) => {
    if (db.kind === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`migrate:${component}`]);
    const { rows } = await tx.query<{ version: number }>('SELECT version FROM schema_migrations WHERE component = $1', [component]);
    const applied = new Set(rows.map((r) => Number(r.version)));
    for (let i = 0; i < migrations.length; i++) {
      if (applied.has(i + 1)) continue;
      await tx.exec(migrations[i]!);
      await tx.query('INSERT INTO schema_migrations (component, version) VALUES ($1, $2)', [component, i + 1]);
    }
  });
}
