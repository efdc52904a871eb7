import { v7 as uuidv7 } from 'uuid';
import type { Queryable } from '../../../sql/database.ts';

// Domain events and audit records are written in the same transaction as the patient row
// (DESIGN §6). They carry ids, tenant, version, who acted and the correlation id: never
// demographics, so the stream and the audit trail hold no PHI.

export const STREAM_NAME = 'REGISTRATION';
export type PatientEventType = 'patient.created' | 'patient.updated';

export interface PatientEvent {
  v: 1;
  eventId: string;
  type: PatientEventType;
  tenant: string;
  patientId: string;
  version: number;
  /** The end user the change was made for (`owner`). */
  actingUser: string;
  /** Who called: `ferry-worker` for delegated calls, else the user. */
  actor: string;
  correlationId: string | null;
  occurredAt: string;
}

export function subjectOf(type: PatientEventType): string {
  return `${STREAM_NAME}.${type}`;
}

export function newPatientEvent(fields: Omit<PatientEvent, 'v' | 'eventId'>): PatientEvent {
  return { v: 1, eventId: uuidv7(), ...fields };
}

export interface AuditRecord {
  tenant: string;
  action: 'patient.create' | 'patient.update';
  patientId: string;
  version: number;
  actingUser: string;
  actor: string;
  correlationId: string | null;
  /** Ids and flags only, e.g. the duplicate candidates a registrar overrode. */
  details?: { duplicateOverride?: true; candidates?: string[]; eventId?: string };
  at: Date;
}

/**
 * Events and their audit records for a whole batch in one statement. Outbox `seq` follows the
 * order given (the batch's item order), so an entity's events are published in the order its
 * changes were made.
 */
export async function appendEventsAndAudits(tx: Queryable, entries: readonly { event: PatientEvent; audit: AuditRecord }[]): Promise<void> {
  if (entries.length === 0) return;
  const rows = entries.map(({ event, audit }) => ({
    event_id: event.eventId,
    subject: subjectOf(event.type),
    payload: event,
    audit_id: uuidv7(),
    tenant: audit.tenant,
    action: audit.action,
    patient_id: audit.patientId,
    version: audit.version,
    acting_user: audit.actingUser,
    actor: audit.actor,
    correlation_id: audit.correlationId,
    details: audit.details ?? {},
    at: audit.at.toISOString(),
  }));
  await tx.query(
    `WITH r AS (
       SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
         event_id uuid, subject text, payload jsonb, audit_id uuid, tenant text, action text, patient_id text, version integer,
         acting_user text, actor text, correlation_id text, details jsonb, at timestamptz)) WITH ORDINALITY AS r (
         event_id, subject, payload, audit_id, tenant, action, patient_id, version, acting_user, actor, correlation_id, details, at, n)
     ), event AS (
       INSERT INTO outbox (event_id, subject, payload) SELECT event_id, subject, payload FROM r ORDER BY n
     )
     INSERT INTO audit_log (id, tenant, action, patient_id, version, acting_user, actor, correlation_id, details, at)
     SELECT audit_id, tenant, action, patient_id, version, acting_user, actor, correlation_id, details, at FROM r`,
    [JSON.stringify(rows)],
  );
}
