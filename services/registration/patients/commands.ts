import { v7 as uuidv7 } from 'uuid';
import { FerryError, type ErrorCode, type FieldError } from '../../../validators/codes.ts';
import { parseWith, type Parsed } from '../../../validators/issues.ts';
import {
  createPatientRequestSchema,
  PATIENT_ID,
  updatePatientRequestSchema,
  type CreatePatientRequest,
  type Patient,
  type PatientRecord,
  type UpdatePatientRequest,
} from '../../../validators/patient.ts';
import { decideAccess, type Caller } from '../access.ts';
import { newPatientEvent, type AuditRecord, type PatientEvent } from '../events/outbox.ts';
import type { Answer } from '../idempotency/store.ts';
import { duplicateCandidates, identifierKey, type ExistingPatient } from './matching.ts';
import { recordOf } from './store.ts';
import { checkVersion, readPrecondition, type Precondition } from './versions.ts';

// The business logic of the two mutating routes, as pure decisions over what the set-based reads
// of the batch returned plus the effects of earlier items (a PatientView). Outcomes are a tagged
// union: answers that are stored under the key (2xx, 403, 404, 409, 422), and refusals given
// before the request runs (428, malformed If-Match), which are not.

export interface CommandContext {
  caller: Caller;
  licensed: boolean;
  correlationId: string | null;
  now: Date;
}

/** What a command may ask about the database, as it stands after the batch's earlier items. */
export interface PatientView {
  /** Taken in the caller's tenant; ids are unique per tenant, so another tenant's patients never show here. */
  idTaken(id: string): boolean;
  /** The caller's tenant's patient, as GET would show it; null when absent or another tenant's. */
  current(id: string): PatientRecord | null;
  /** Same name key + birth date + sex, and holders of the same identifiers (DESIGN §6). */
  possibleDuplicates(p: Patient): ExistingPatient[];
  /** Ids of other patients of the tenant holding any of these identifiers, sorted. */
  identifierHolders(identifiers: Patient['identifiers'], exceptId: string | null): string[];
}

/** The row a create writes; `version` 1. */
export interface NewPatient {
  id: string;
  tenant: string;
  patient: Patient;
  by: string;
  at: Date;
  overrideReason: string | null;
}

/** The row an update writes. */
export interface UpdatedPatient {
  id: string;
  tenant: string;
  version: number;
  patient: Patient;
  by: string;
  at: Date;
}

export type CommandOutcome =
  | { kind: 'answered'; answer: Answer }
  | { kind: 'refused'; error: FerryError }
  | { kind: 'created'; answer: Answer; record: PatientRecord; row: NewPatient; event: PatientEvent; audit: AuditRecord }
  | { kind: 'updated'; answer: Answer; record: PatientRecord; row: UpdatedPatient; event: PatientEvent; audit: AuditRecord };

/** A create's body, read once: the batch needs its id, name key and identifiers before deciding. */
export type CreateInput = Parsed<CreatePatientRequest>;
export type UpdateInput = { precondition: Precondition; parsed: Parsed<UpdatePatientRequest> };

export function readCreate(body: unknown): CreateInput {
  return parseWith(createPatientRequestSchema, body);
}

export function readUpdate(ifMatch: string | undefined, body: unknown): UpdateInput {
  return { precondition: readPrecondition(ifMatch, body), parsed: parseWith(updatePatientRequestSchema, body) };
}

function errorAnswer(code: ErrorCode, ctx: CommandContext, opts: { errors?: FieldError[]; details?: Record<string, unknown> } = {}): CommandOutcome {
  const err = new FerryError(code, opts);
  return { kind: 'answered', answer: { status: err.status, body: err.toBody(ctx.correlationId ?? undefined) } };
}

/** A request naming the same identifier twice would clash with itself. */
export function repeatedIdentifiers(p: Patient): FieldError[] {
  const seen = new Set<string>();
  const errors: FieldError[] = [];
  (p.identifiers ?? []).forEach((i, n) => {
    const k = `${i.system}|${identifierKey(i.value)}`;
    if (seen.has(k)) errors.push({ path: `identifiers.${n}`, message: 'repeats an earlier identifier' });
    seen.add(k);
  });
  return errors;
}

function audit(ctx: CommandContext, action: AuditRecord['action'], patientId: string, version: number, details: AuditRecord['details']): AuditRecord {
  return { tenant: ctx.caller.tenant, action, patientId, version, actingUser: ctx.caller.owner, actor: ctx.caller.actor, correlationId: ctx.correlationId, details, at: ctx.now };
}

function event(ctx: CommandContext, type: 'patient.created' | 'patient.updated', patientId: string, version: number): PatientEvent {
  return newPatientEvent({
    type,
    tenant: ctx.caller.tenant,
    patientId,
    version,
    actingUser: ctx.caller.owner,
    actor: ctx.caller.actor,
    correlationId: ctx.correlationId,
    occurredAt: ctx.now.toISOString(),
  });
}

export function decideCreate(ctx: CommandContext, view: PatientView, input: CreateInput): CommandOutcome {
  const { caller } = ctx;
  const access = decideAccess(caller, 'write', ctx.licensed);
  if (access.kind === 'deny') return errorAnswer(access.code, ctx);
  if (!input.ok) return errorAnswer('VALIDATION_FAILED', ctx, { errors: input.errors });
  const { id: requestedId, confirmNotDuplicate, ...patient } = input.value;
  const repeated = repeatedIdentifiers(patient);
  if (repeated.length > 0) return errorAnswer('VALIDATION_FAILED', ctx, { errors: repeated });
  const id = requestedId ?? `pat_${uuidv7()}`;

  if (view.idTaken(id)) return errorAnswer('ID_CONFLICT', ctx);
  const candidates = duplicateCandidates(patient, view.possibleDuplicates(patient));
  if (candidates.length > 0 && !confirmNotDuplicate) return errorAnswer('DUPLICATE_DETECTED', ctx, { details: { candidates } });
  // A confirmed "not a duplicate" still cannot share an identifier: uniqueness is not overridable.
  // (Without the confirmation a shared identifier has already made it a candidate above.)
  if (confirmNotDuplicate && view.identifierHolders(patient.identifiers, null).length > 0) return errorAnswer('IDENTIFIER_CONFLICT', ctx);

  const created = event(ctx, 'patient.created', id, 1);
  const override = confirmNotDuplicate ? { duplicateOverride: true as const, candidates } : {};
  const record = recordOf({ id, tenant: caller.tenant, version: 1, patient, createdAt: ctx.now, updatedAt: ctx.now });
  return {
    kind: 'created',
    answer: { status: 201, body: { ...record } },
    record,
    row: { id, tenant: caller.tenant, patient, by: caller.owner, at: ctx.now, overrideReason: confirmNotDuplicate?.reason ?? null },
    event: created,
    audit: audit(ctx, 'patient.create', id, 1, { eventId: created.eventId, ...override }),
  };
}

export function decideUpdate(ctx: CommandContext, view: PatientView, id: string, input: UpdateInput): CommandOutcome {
  const { caller } = ctx;
  const access = decideAccess(caller, 'write', ctx.licensed);
  if (access.kind === 'deny') return errorAnswer(access.code, ctx);
  const { precondition, parsed } = input;
  if (precondition.kind === 'missing') return { kind: 'refused', error: new FerryError('PRECONDITION_REQUIRED') };
  if (precondition.kind === 'malformed') return { kind: 'refused', error: new FerryError('MALFORMED_REQUEST', { errors: [{ path: 'If-Match', message: 'has an invalid format' }] }) };
  if (precondition.kind === 'mismatch') return errorAnswer('VALIDATION_FAILED', ctx, { errors: [{ path: 'baseVersion', message: 'does not match If-Match' }] });
  if (!parsed.ok) return errorAnswer('VALIDATION_FAILED', ctx, { errors: parsed.errors });
  if (precondition.kind !== 'expects') return errorAnswer('VALIDATION_FAILED', ctx, { errors: [{ path: 'baseVersion', message: 'is invalid' }] });
  const { baseVersion: _base, ...patient } = parsed.value;
  const repeated = repeatedIdentifiers(patient);
  if (repeated.length > 0) return errorAnswer('VALIDATION_FAILED', ctx, { errors: repeated });

  const current = PATIENT_ID.test(id) ? view.current(id) : null;
  if (!current) return errorAnswer('NOT_FOUND', ctx);
  if (checkVersion(current.version, precondition.version).kind === 'stale') return errorAnswer('VERSION_CONFLICT', ctx, { details: { current } });
  if (view.identifierHolders(patient.identifiers, id).length > 0) return errorAnswer('IDENTIFIER_CONFLICT', ctx);

  const version = current.version + 1;
  const updated = event(ctx, 'patient.updated', id, version);
  const record = recordOf({ id, tenant: caller.tenant, version, patient, createdAt: current.createdAt, updatedAt: ctx.now });
  return {
    kind: 'updated',
    answer: { status: 200, body: { ...record } },
    record,
    row: { id, tenant: caller.tenant, version, patient, by: caller.owner, at: ctx.now },
    event: updated,
    audit: audit(ctx, 'patient.update', id, version, { eventId: updated.eventId }),
  };
}
