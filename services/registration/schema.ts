import type { Database, DatabaseOptions } from '../../sql/database.ts';
import { openDatabase } from '../../sql/database.ts';
import { migrate } from '../../sql/migrate.ts';

// The registration service's own database (DESIGN §2: apart from the platform's in production).
// Append new migrations; never edit one that has shipped.
export const REGISTRATION_MIGRATIONS: readonly string[] = [
  `CREATE TABLE licensed_tenants (
     tenant text PRIMARY KEY,
     licensed_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE patients (
     id text PRIMARY KEY,
     tenant text NOT NULL,
     version integer NOT NULL,
     data jsonb NOT NULL,
     name_key text NOT NULL,
     given_key text NOT NULL,
     family_key text NOT NULL,
     birth_date text NOT NULL,
     sex text NOT NULL,
     -- Free text a clinician gave when overriding duplicate detection; kept with the record, not in audit or events.
     duplicate_override_reason text,
     created_by text NOT NULL,
     updated_by text NOT NULL,
     created_at timestamptz NOT NULL,
     updated_at timestamptz NOT NULL
   );
   CREATE INDEX patients_duplicates ON patients (tenant, name_key, birth_date, sex);
   CREATE INDEX patients_given ON patients (tenant, given_key text_pattern_ops);
   CREATE INDEX patients_family ON patients (tenant, family_key text_pattern_ops);
   CREATE TABLE patient_identifiers (
     tenant text NOT NULL,
     system text NOT NULL,
     value_key text NOT NULL,
     patient_id text NOT NULL REFERENCES patients (id) ON DELETE CASCADE,
     CONSTRAINT patient_identifiers_unique PRIMARY KEY (tenant, system, value_key)
   );
   CREATE INDEX patient_identifiers_patient ON patient_identifiers (patient_id);
   CREATE TABLE idempotency_keys (
     tenant text NOT NULL,
     key text NOT NULL,
     fingerprint text NOT NULL,
     status integer NOT NULL,
     body text NOT NULL,
     created_at timestamptz NOT NULL,
     expires_at timestamptz NOT NULL,
     PRIMARY KEY (tenant, key)
   );
   CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
   CREATE TABLE outbox (
     seq bigserial PRIMARY KEY,
     event_id uuid NOT NULL UNIQUE,
     subject text NOT NULL,
     payload jsonb NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now(),
     published_at timestamptz
   );
   CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
   CREATE TABLE audit_log (
     id uuid PRIMARY KEY,
     tenant text NOT NULL,
     action text NOT NULL,
     patient_id text,
     version integer,
     acting_user text NOT NULL,
     actor text NOT NULL,
     correlation_id text,
     details jsonb NOT NULL DEFAULT '{}'::jsonb,
     at timestamptz NOT NULL DEFAULT now()
   );
   CREATE INDEX audit_log_patient ON audit_log (tenant, patient_id);`,
  // A patient id is unique within its tenant only. Globally unique ids let a create with another
  // tenant's id answer ID_CONFLICT, which confirmed that tenant's patient; now it is just a new id.
  `ALTER TABLE patient_identifiers DROP CONSTRAINT patient_identifiers_patient_id_fkey;
   ALTER TABLE patients DROP CONSTRAINT patients_pkey;
   ALTER TABLE patients ADD CONSTRAINT patients_pkey PRIMARY KEY (tenant, id);
   ALTER TABLE patient_identifiers ADD CONSTRAINT patient_identifiers_patient_fkey
     FOREIGN KEY (tenant, patient_id) REFERENCES patients (tenant, id) ON DELETE CASCADE;
   DROP INDEX patient_identifiers_patient;
   CREATE INDEX patient_identifiers_patient ON patient_identifiers (tenant, patient_id);`,
];

export async function migrateRegistration(db: Database): Promise<void> {
  await migrate(db, 'registration', REGISTRATION_MIGRATIONS);
}

/** Opens the service database (Postgres for a URL, else PGlite in `dataDir`, else in memory) and migrates it. */
export async function openRegistrationDatabase(opts: DatabaseOptions): Promise<Database> {
  const db = await openDatabase(opts);
  try {
    await migrateRegistration(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}
