// Queueing the user's changes: `mutate` calls are collected while a write is under way and then
// written together, in call order, with one device-doc write (the last `seq`) and one `bulkDocs`.
// What goes into each doc is decided by `planMutation` (checks) and `outbox.ts` (the chain maths).

import { v7 as uuidv7 } from 'uuid';
import { findOp } from '../validators/manifest.ts';
import { parseWith } from '../validators/issues.ts';
import { ENTITY_ID, MUTATION_ID, type MutationDoc } from '../validators/mutation.ts';
import { ClientError } from './errors.ts';
import { chain, mutationDoc } from './outbox.ts';
import { mutationInfo, type MutationInfo } from './reconcile.ts';
import { fieldError, requireOpen, type MutateOptions, type MutateResult, type PendingWrite, type SessionCore, type Unlocked } from './session-core.ts';

export type Mutate = (op: string, payload: unknown, target?: string | MutateOptions) => Promise<MutateResult>;

interface PlannedWrite {
  write: PendingWrite;
  doc: MutationDoc;
  mid: string;
}

type Plan = { ok: true; doc: MutationDoc; mid: string } | Extract<MutateResult, { ok: false }>;

/**
 * Checks one call and builds its doc (nothing is written here). The payload is parsed once, with
 * the op's schema from the manifest (the one the worker runs); the other fields are checked
 * where they come from, so the doc is not parsed again. `queued` are earlier calls of the same
 * flush on the same entity.
 */
function planMutation(core: SessionCore, open: Unlocked, w: PendingWrite, seq: number, queued: readonly MutationInfo[]): Plan {
  const { op, payload, opts } = w;
  const def = findOp(op);
  if (!def) return { ok: false, code: 'UNKNOWN_OP', errors: fieldError('op', 'is not in any module manifest') };
  const parsed = parseWith(def.schema, payload);
  if (!parsed.ok) return { ok: false, code: 'VALIDATION_FAILED', errors: parsed.errors };
  let entity = opts.entity;
  if (entity === undefined) {
    if (def.kind !== 'create') return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('entity', 'is required for an update') };
    entity = `${def.entityPrefix}_${uuidv7()}`;
  } else if (!ENTITY_ID.test(entity) || !entity.startsWith(`${def.entityPrefix}_`)) {
    return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('entity', 'has an invalid format') };
  }
  if (opts.resolves !== undefined && (!MUTATION_ID.test(opts.resolves) || !open.index.has(opts.resolves))) {
    return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('resolves', 'does not name a mutation of this device') };
  }
  if (opts.baseVersion !== undefined && (!Number.isInteger(opts.baseVersion) || opts.baseVersion < 1)) {
    return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('baseVersion', 'is too short or too small') };
  }
  const earlier = queued.length ? [...open.index.forEntity(entity), ...queued] : open.index.forEntity(entity);
  const chained = chain({ kind: def.kind, earlier, baseVersion: opts.baseVersion, recordVersion: open.replica.index.get(entity)?.version ?? null });
  if (!chained.ok) return { ok: false, code: 'BASE_VERSION_UNKNOWN', errors: fieldError('baseVersion', 'is unknown: read the record first or pass baseVersion') };
  const mid = uuidv7();
  const doc = mutationDoc({
    tenant: core.tenant,
    owner: core.owner,
    device: open.device.device,
    seq,
    mid,
    op,
    entity,
    after: chained.after,
    resolves: opts.resolves ?? null,
    baseVersion: chained.baseVersion,
    payload: parsed.value,
    createdAt: core.now().toISOString(),
  });
  return { ok: true, doc, mid };
}

/**
 * Writes every mutation that is waiting, in call order: `seq` and `after` are planned one after
 * another (a later call sees the earlier ones of the same flush), the device doc takes the last
 * `seq`, then one `bulkDocs` stores the mutation docs. Each call resolves only after its doc is
 * stored. A failed device-doc write stores nothing and uses up no `seq`.
 */
async function flushWrites(core: SessionCore, open: Unlocked): Promise<void> {
  const batch = open.writes.splice(0);
  if (core.open !== open) {
    for (const w of batch) w.reject(new ClientError(core.closed ? 'CLOSED' : 'LOCKED'));
    return;
  }
  const planned: PlannedWrite[] = [];
  const queuedByEntity = new Map<string, MutationInfo[]>();
  let seq = open.device.seq;
  for (const w of batch) {
    const earlier = queuedByEntity.get(w.opts.entity ?? '') ?? [];
    let plan: Plan;
    try {
      plan = planMutation(core, open, w, seq + 1, earlier);
    } catch (err) {
      // E.g. an injected clock that throws: that call fails, the others go on.
      w.reject(err);
      continue;
    }
    if (!plan.ok) {
      w.resolve(plan);
      continue;
    }
    seq = plan.doc.seq;
    planned.push({ write: w, doc: plan.doc, mid: plan.mid });
    const list = queuedByEntity.get(plan.doc.entity) ?? [];
    list.push(mutationInfo(plan.doc, plan.mid, { kind: 'queued' }, null));
    queuedByEntity.set(plan.doc.entity, list);
  }
  if (planned.length === 0) return;
  let results: (PouchDB.Core.Response | PouchDB.Core.Error)[];
  try {
    const nextDevice = { ...open.device, seq };
    const saved = await open.db.put(nextDevice as unknown as PouchDB.Core.PutDocument<object>);
    open.device = { ...nextDevice, _rev: saved.rev };
    results = await open.db.bulkDocs(planned.map((p) => p.doc));
  } catch (err) {
    for (const p of planned) p.write.reject(err);
    return;
  }
  planned.forEach((p, i) => {
    const res = results[i];
    // A per-doc refusal of a new doc with a fresh UUIDv7 id (409, bad id, reserved field) cannot
    // come from docs built here; were one to happen, that call alone fails.
    if (!res || 'error' in res) {
      p.write.reject(res ?? new ClientError('INVALID_ARGUMENT', 'The mutation was not stored.'));
      return;
    }
    open.index.addMutation(p.doc, p.mid);
    core.events.emit('status', open.index.info(p.mid)!);
    p.write.resolve({ ok: true, mid: p.mid, entity: p.doc.entity, seq: p.doc.seq });
  });
}

export function createMutate(core: SessionCore): Mutate {
  return (op, payload, target) => {
    let open: Unlocked;
    try {
      open = requireOpen(core);
    } catch (err) {
      return Promise.reject(err);
    }
    const opts: MutateOptions = typeof target === 'string' ? { entity: target } : (target ?? {});
    return new Promise<MutateResult>((resolve, reject) => {
      open.writes.push({ op, payload, opts, resolve, reject });
      // The first call waiting starts a flush; calls made before it runs join the same write.
      if (open.writes.length === 1) void core.exclusive(() => flushWrites(core, open));
    });
  };
}
