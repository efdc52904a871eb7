import { FerryError } from '../../../validators/codes.ts';
import type { PatientRecord } from '../../../validators/patient.ts';
import type { AuditRecord, PatientEvent } from '../events/outbox.ts';
import { decideIdempotency, type StoredAnswer } from '../idempotency/decision.ts';
import type { AnswerToStore } from '../idempotency/store.ts';
import { decideCreate, decideUpdate, type CommandOutcome } from '../patients/commands.ts';
import type { PatientWrite } from '../patients/store.ts';
import type { BatchPatientView } from '../patients/view.ts';
import type { PreparedMutation } from './items.ts';

// Decides every item of a batch in array order, in memory, from what the set-based reads
// returned: the answer each would get had the items been sent one after another, and the writes
// that make it so. Pure: the transaction around it only loads and writes.

export interface ItemAnswer {
  status: number;
  /** JSON text; a replay is the stored text byte for byte. */
  body: string;
  replayed: boolean;
  skipped: boolean;
}

export interface PlanState {
  /** Stored answers of the batch's keys (live or expired). */
  stored: ReadonlyMap<string, StoredAnswer>;
  /** Whether this transaction holds the key's in-flight marker. */
  holdsKey: (key: string) => boolean;
  licensed: boolean;
  view: BatchPatientView;
  now: Date;
  retentionMs: number;
}

export interface BatchPlan {
  answers: ItemAnswer[];
  /** New patients, as the batch leaves them. */
  inserts: PatientWrite[];
  /** Existing patients the batch changed, as it leaves them. */
  updates: PatientWrite[];
  /** Events and audit records in item order. */
  entries: { event: PatientEvent; audit: AuditRecord }[];
  /** Answers to store under their keys, each key at most once. */
  store: AnswerToStore[];
}

const is2xx = (a: ItemAnswer) => a.status >= 200 && a.status < 300;

function unstored(error: FerryError, correlationId: string, extra: Partial<ItemAnswer> = {}): ItemAnswer {
  return { status: error.status, body: JSON.stringify(error.toBody(correlationId)), replayed: false, skipped: false, ...extra };
}

export function planBatch(items: readonly PreparedMutation[], state: PlanState): BatchPlan {
  const stored = new Map(state.stored);
  const answers: ItemAnswer[] = [];
  const inserts = new Map<string, PatientWrite>();
  const updates = new Map<string, PatientWrite>();
  const entries: BatchPlan['entries'] = [];
  const store: AnswerToStore[] = [];

  const write = (outcome: Extract<CommandOutcome, { kind: 'created' | 'updated' }>, record: PatientRecord) => {
    const { row } = outcome;
    if (outcome.kind === 'created') {
      const r = outcome.row;
      inserts.set(r.id, { id: r.id, tenant: r.tenant, version: 1, patient: r.patient, createdBy: r.by, updatedBy: r.by, createdAt: r.at, updatedAt: r.at, overrideReason: r.overrideReason });
    } else {
      const earlier = inserts.get(row.id) ?? updates.get(row.id);
      const next: PatientWrite = {
        id: row.id,
        tenant: row.tenant,
        version: outcome.row.version,
        patient: row.patient,
        createdBy: earlier?.createdBy ?? row.by,
        updatedBy: row.by,
        createdAt: earlier?.createdAt ?? new Date(record.createdAt),
        updatedAt: row.at,
        overrideReason: earlier?.overrideReason ?? null,
      };
      (inserts.has(row.id) ? inserts : updates).set(row.id, next);
    }
    entries.push({ event: outcome.event, audit: outcome.audit });
    state.view.apply(record, outcome.kind);
  };

  for (const item of items) {
    const dependency = item.requires === null ? null : answers[item.requires];
    if (dependency && !is2xx(dependency)) {
      answers.push(unstored(new FerryError('DEPENDENCY_FAILED'), item.correlationId, { skipped: true }));
      continue;
    }
    if (item.kind === 'refused') {
      answers.push(unstored(item.error, item.correlationId));
      continue;
    }
    if (item.key !== null) {
      const decision = decideIdempotency(stored.get(item.key) ?? null, item.fingerprint, state.now);
      if (decision.kind === 'replay') {
        answers.push({ status: decision.status, body: decision.body, replayed: true, skipped: false });
        continue;
      }
      if (decision.kind === 'reused') {
        answers.push(unstored(new FerryError('IDEMPOTENCY_KEY_REUSED'), item.correlationId));
        continue;
      }
      if (!state.holdsKey(item.key)) {
        answers.push(unstored(new FerryError('IDEMPOTENCY_IN_PROGRESS'), item.correlationId));
        continue;
      }
    }
    const ctx = { caller: item.caller, licensed: state.licensed, correlationId: item.correlationId, now: state.now };
    const outcome = item.command.kind === 'create' ? decideCreate(ctx, state.view, item.command.input) : decideUpdate(ctx, state.view, item.command.id, item.command.input);
    if (outcome.kind === 'refused') {
      answers.push(unstored(outcome.error, item.correlationId));
      continue;
    }
    if (outcome.kind !== 'answered') write(outcome, outcome.record);
    const body = JSON.stringify(outcome.answer.body);
    answers.push({ status: outcome.answer.status, body, replayed: false, skipped: false });
    if (item.key !== null) {
      store.push({ key: item.key, fingerprint: item.fingerprint, status: outcome.answer.status, body });
      // A later item with the same key sees this answer, as a later single call would.
      stored.set(item.key, { fingerprint: item.fingerprint, status: outcome.answer.status, body, expiresAt: new Date(state.now.getTime() + state.retentionMs) });
    }
  }
  return { answers, inserts: [...inserts.values()], updates: [...updates.values()], entries, store };
}

/** True when every item is answered without the database: refused, or a live stored answer. */
export function answeredWithoutWork(items: readonly PreparedMutation[], stored: ReadonlyMap<string, StoredAnswer>, now: Date): boolean {
  return items.every((i) => {
    if (i.kind === 'refused') return true;
    if (i.key === null) return false;
    const s = stored.get(i.key);
    return s !== undefined && s.expiresAt.getTime() > now.getTime();
  });
}
