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

/** The event and its audit record in one statement (one round trip fewer on the commit path). */
export async function appendEventAndAudit(tx: Queryable, event: PatientEvent, record: AuditRecord): Promise<void> {
  await tx.query(
    `WITH event AS (INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3))
     INSERT INTO audit_log (id, tenant, action, patient_id, version, acting_user, actor, correlation_id, details, at)
     VALUES ($4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
    [
      event.eventId,
      subjectOf(event.type),
      JSON.stringify(event),
      uuidv7(),
      record.tenant,
      record.action,
      record.patientId,
      record.version,
      record.actingUser,
      record.actor,
      record.correlationId,
      JSON.stringify(record.details ?? {}),
      record.at,
    ],
  );
}
