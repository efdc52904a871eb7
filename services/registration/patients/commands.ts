import { v7 as uuidv7 } from 'uuid';
import type { Queryable } from '../../../sql/database.ts';
import { FerryError, type ErrorCode, type FieldError } from '../../../validators/codes.ts';
import { parseWith } from '../../../validators/issues.ts';
import { createPatientRequestSchema, PATIENT_ID, updatePatientRequestSchema, type Patient } from '../../../validators/patient.ts';
import { decideAccess, type Caller } from '../access.ts';
import { appendEventAndAudit, newPatientEvent, type AuditRecord } from '../events/outbox.ts';
import type { Answer } from '../idempotency/store.ts';
import { duplicateCandidates, identifierKey, nameKey } from './matching.ts';
import { idTaken, identifierHolders, insertPatient, loadPatient, possibleDuplicates, recordOf, updatePatientRow, writeIdentifiers } from './store.ts';
import { checkVersion, readPrecondition } from './versions.ts';

// The business logic of the two mutating routes. Each runs inside the idempotency transaction:
// answers it returns (2xx, 403, 404, 409, 422) are stored under the key; FerryErrors it throws
// (428, malformed If-Match) are answers given before the request runs and are not.

export interface CommandContext {
  tx: Queryable;
  caller: Caller;
  licensed: boolean;
  correlationId: string | null;
  now: Date;
  /** True on PGlite, which runs one transaction at a time: no concurrent writer can race us. */
  serialised: boolean;
}

/**
 * A concurrent writer took the id or an identifier between our checks and our writes. The whole
 * transaction is rolled back and the request run again; the second run sees the winner in its
 * checks and stores the matching 409 under the key.
 */
export class RaceLost extends Error {
  override name = 'RaceLost';
}

function errorAnswer(code: ErrorCode, ctx: CommandContext, opts: { errors?: FieldError[]; details?: Record<string, unknown> } = {}): Answer {
  const err = new FerryError(code, opts);
  return { status: err.status, body: err.toBody(ctx.correlationId ?? undefined) };
}

/** A request naming the same identifier twice would clash with itself. */
function repeatedIdentifiers(p: Patient): FieldError[] {
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

function event(ctx: CommandContext, type: 'patient.created' | 'patient.updated', patientId: string, version: number) {
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

export async function createPatient(ctx: CommandContext, body: unknown): Promise<Answer> {
  const { tx, caller } = ctx;
  const access = decideAccess(caller, 'write', ctx.licensed);
  if (access.kind === 'deny') return errorAnswer(access.code, ctx);
  const parsed = parseWith(createPatientRequestSchema, body);
  if (!parsed.ok) return errorAnswer('VALIDATION_FAILED', ctx, { errors: parsed.errors });
  const { id: requestedId, confirmNotDuplicate, ...patient } = parsed.value;
  const repeated = repeatedIdentifiers(patient);
  if (repeated.length > 0) return errorAnswer('VALIDATION_FAILED', ctx, { errors: repeated });
  const id = requestedId ?? `pat_${uuidv7()}`;

  if (!ctx.serialised) {
    // Two registrations of the same person racing on different keys must not both pass detection.
    const lock = `dup:${caller.tenant}:${nameKey(patient.givenName, patient.familyName)}|${patient.birthDate}|${patient.sex}`;
    await tx.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [lock]);
  }
  if (await idTaken(tx, id)) return errorAnswer('ID_CONFLICT', ctx);
  const candidates = duplicateCandidates(patient, await possibleDuplicates(tx, caller.tenant, patient));
  if (candidates.length > 0 && !confirmNotDuplicate) return errorAnswer('DUPLICATE_DETECTED', ctx, { details: { candidates } });
  // A confirmed "not a duplicate" still cannot share an identifier: uniqueness is not overridable.
  // (Without the confirmation a shared identifier has already made it a candidate above.)
  if (confirmNotDuplicate && (await identifierHolders(tx, caller.tenant, patient.identifiers, null)).length > 0) return errorAnswer('IDENTIFIER_CONFLICT', ctx);

  const inserted = await insertPatient(tx, { id, tenant: caller.tenant, patient, by: caller.owner, at: ctx.now, overrideReason: confirmNotDuplicate?.reason ?? null });
  if (!inserted || !(await writeIdentifiers(tx, caller.tenant, id, patient.identifiers, false))) throw new RaceLost();

  const created = event(ctx, 'patient.created', id, 1);
  const override = confirmNotDuplicate ? { duplicateOverride: true as const, candidates } : {};
  await appendEventAndAudit(tx, created, audit(ctx, 'patient.create', id, 1, { eventId: created.eventId, ...override }));
  return { status: 201, body: { ...recordOf({ id, tenant: caller.tenant, version: 1, patient, createdAt: ctx.now, updatedAt: ctx.now }) } };
}

export async function updatePatient(ctx: CommandContext, id: string, ifMatch: string | undefined, body: unknown): Promise<Answer> {
  const { tx, caller } = ctx;
  const access = decideAccess(caller, 'write', ctx.licensed);
  if (access.kind === 'deny') return errorAnswer(access.code, ctx);
  const precondition = readPrecondition(ifMatch, body);
  if (precondition.kind === 'missing') throw new FerryError('PRECONDITION_REQUIRED');
  if (precondition.kind === 'malformed') throw new FerryError('MALFORMED_REQUEST', { errors: [{ path: 'If-Match', message: 'has an invalid format' }] });
  if (precondition.kind === 'mismatch') return errorAnswer('VALIDATION_FAILED', ctx, { errors: [{ path: 'baseVersion', message: 'does not match If-Match' }] });
  const parsed = parseWith(updatePatientRequestSchema, body);
  if (!parsed.ok) return errorAnswer('VALIDATION_FAILED', ctx, { errors: parsed.errors });
  if (precondition.kind !== 'expects') return errorAnswer('VALIDATION_FAILED', ctx, { errors: [{ path: 'baseVersion', message: 'is invalid' }] });
  const { baseVersion: _base, ...patient } = parsed.value;
  const repeated = repeatedIdentifiers(patient);
  if (repeated.length > 0) return errorAnswer('VALIDATION_FAILED', ctx, { errors: repeated });

  const current = PATIENT_ID.test(id) ? await loadPatient(tx, caller.tenant, id, { forUpdate: true }) : null;
  if (!current) return errorAnswer('NOT_FOUND', ctx);
  if (checkVersion(current.version, precondition.version).kind === 'stale') return errorAnswer('VERSION_CONFLICT', ctx, { details: { current } });
  if ((await identifierHolders(tx, caller.tenant, patient.identifiers, id)).length > 0) return errorAnswer('IDENTIFIER_CONFLICT', ctx);

  const version = current.version + 1;
  await updatePatientRow(tx, { id, tenant: caller.tenant, version, patient, by: caller.owner, at: ctx.now });
  if (!(await writeIdentifiers(tx, caller.tenant, id, patient.identifiers, true))) throw new RaceLost();

  const updated = event(ctx, 'patient.updated', id, version);
  await appendEventAndAudit(tx, updated, audit(ctx, 'patient.update', id, version, { eventId: updated.eventId }));
  return { status: 200, body: { ...recordOf({ id, tenant: caller.tenant, version, patient, createdAt: current.createdAt, updatedAt: ctx.now }) } };
}
