// Outcomes the device decides itself, kept as local notes (`l:{owner}:{mid}`, encrypted, never
// pushed): a gateway refusal on push, the user's membership gone, a discarded problem. Also the
// way out of a conflict: `resolve` turns a plan from `conflicts.ts` into a mutation or a note.

import { isErrorCode, type ErrorCode } from '../validators/codes.ts';
import { localNoteId, isPending, type LocalNoteDoc } from './reconcile.ts';
import { planResolution, toConflict, type Conflict, type RecordLookup, type Resolution } from './conflicts.ts';
import { parseOwnDocId } from './own-ids.ts';
import { fieldError, requireOpen, type MutateResult, type NoteInput, type SessionCore, type Unlocked } from './session-core.ts';
import type { Mutate } from './outbox-writer.ts';
import type { FieldError } from '../validators/codes.ts';

export type ResolveResult = MutateResult | { ok: true; discarded: string } | { ok: false; code: 'CANNOT_RESOLVE'; reason: string; errors: FieldError[] };

/** Writes (or rewrites) the note of `mid` and reports the new state. Call inside `core.exclusive`. */
async function writeNote(core: SessionCore, open: Unlocked, mid: string, note: NoteInput): Promise<void> {
  if (core.open !== open) return;
  const existing = open.index.note(mid);
  const doc: LocalNoteDoc = { _id: localNoteId(core.owner, mid), type: 'local-status', mutation: mid, kind: note.kind, code: note.code, at: core.now().toISOString() };
  if (note.errors) doc.errors = note.errors;
  if (existing?._rev) doc._rev = existing._rev;
  const res = await open.db.put(doc);
  open.index.setNote({ ...doc, _rev: res.rev });
  const info = open.index.info(mid);
  if (info) core.events.emit('status', info);
}

export interface DeviceDecisions {
  /** PouchDB `denied` on push: the gateway refused this doc. */
  onDenied(docId: string, reason: string): Promise<void>;
  /** Every queued mutation becomes local `rejected` / TENANT_MISMATCH. Stop sync first. */
  rejectQueued(): Promise<number>;
  conflicts(): Conflict[];
  resolve(mid: string, resolution: Resolution): Promise<ResolveResult>;
}

/** `records` looks duplicate candidates up in the replica. */
export function createDeviceDecisions(core: SessionCore, mutate: Mutate, records: RecordLookup): DeviceDecisions {
  return {
    async onDenied(docId, reason) {
      const ref = parseOwnDocId(docId, core.owner);
      const open = core.open;
      if (ref?.kind !== 'mutation' || !open || !open.index.has(ref.mid)) return;
      const code: ErrorCode = isErrorCode(reason) ? reason : 'FORBIDDEN';
      await core.exclusive(() => writeNote(core, open, ref.mid, { kind: 'rejected', code, errors: fieldError('(mutation)', 'was refused by the gateway') }));
    },
    async rejectQueued() {
      const open = requireOpen(core);
      const queued = open.index.all().filter((m) => isPending(m.state));
      await core.exclusive(async () => {
        for (const m of queued) await writeNote(core, open, m.mid, { kind: 'rejected', code: 'TENANT_MISMATCH', errors: fieldError('(mutation)', 'the user is no longer a member of this tenant') });
      });
      return queued.length;
    },
    conflicts: () =>
      requireOpen(core)
        .index.all()
        .filter((m) => m.resolvedBy === null)
        .flatMap((m) => toConflict(m, records) ?? []),
    async resolve(mid, resolution) {
      const open = requireOpen(core);
      const info = open.index.info(mid);
      if (!info) return { ok: false, code: 'CANNOT_RESOLVE', reason: 'NO_SUCH_MUTATION', errors: fieldError('mid', 'does not name a mutation of this device') };
      const plan = planResolution(info, resolution);
      switch (plan.kind) {
        case 'invalid':
          return { ok: false, code: 'CANNOT_RESOLVE', reason: plan.reason, errors: fieldError('resolution', 'does not apply to this mutation') };
        case 'discard':
          await core.exclusive(() => writeNote(core, open, mid, { kind: 'discarded', code: null }));
          return { ok: true, discarded: mid };
        case 'mutate':
          return mutate(plan.op, plan.payload, { entity: plan.entity, resolves: plan.resolves, ...(plan.baseVersion === null ? {} : { baseVersion: plan.baseVersion }) });
      }
    },
  };
}
