import { FerryError } from '../../validators/codes.ts';
import { badRequest, couchError, isRecord, missing, sendJson, type SyncContext } from './context.ts';
import type { LocalStore } from './local-store.ts';
import { WRITE_REASONS, WRITE_REASON_CODES, decideLocalWrite, decideMutationWrite, ownDocId, type Existing, type WriteDecision } from './policy.ts';
import type { PendingEstimate, PendingLedger, SyncQuotas } from './quotas.ts';
import type { PushGuard } from './push-guard.ts';

// The push side (trap 15: `_revs_diff`, then `_bulk_docs` with `new_edits:false`) and `_local`.

export interface WriteDeps {
  local: LocalStore;
  quotas: SyncQuotas;
  pending: PendingEstimate;
  ledger: PendingLedger;
  absent: AbsentIds;
  /** One push at a time per user, across gateway processes on PostgreSQL (push-guard.ts). */
  guard: PushGuard;
}

/**
 * Ids that `_revs_diff` just found absent from the inbox. Replication pushes them in the very next
 * `_bulk_docs`, which then need not look them up again (one upstream round trip less per batch).
 * Each entry is used once and is short-lived; a later push of the same id is looked up afresh, so
 * a second root is still refused.
 *
 * Only sound when no other process writes the user's docs: with several gateways (PostgreSQL),
 * gateway B may write the id between A's `_revs_diff` and A's `_bulk_docs`, and A would trust
 * "absent" and write a second root. There the router uses `noAbsentIds` and every `_bulk_docs`
 * looks its ids up under the cross-process push lock (cost: docs/ARCHITECTURE.md).
 */
export interface AbsentIds {
  remember(tenant: string, id: string): void;
  /** True (and forgotten) if `id` was found absent within the TTL. */
  consume(tenant: string, id: string): boolean;
}

export function createAbsentIds(opts: { ttlMs?: number; max?: number; now?: () => number } = {}): AbsentIds {
  const ttl = opts.ttlMs ?? 30_000;
  const max = opts.max ?? 200_000;
  const now = opts.now ?? (() => Date.now());
  const seen = new Map<string, number>();
  return {
    remember(tenant, id) {
      if (seen.size >= max) seen.clear();
      seen.set(`${tenant}\u0000${id}`, now() + ttl);
    },
    consume(tenant, id) {
      const key = `${tenant}\u0000${id}`;
      const until = seen.get(key);
      if (until === undefined) return false;
      seen.delete(key);
      return until >= now();
    },
  };
}

/** Remembers nothing: every `_bulk_docs` looks its ids up (several gateway processes). */
export const noAbsentIds: AbsentIds = { remember: () => undefined, consume: () => false };

type AllDocsRow = { key: string; id?: string; value?: { rev: string; deleted?: boolean }; doc?: Record<string, unknown> | null; error?: string };

/**
 * `_revs_diff`: own ids are looked up in the inbox (`_all_docs?keys`, the revs CouchDB would
 * compare); any other id is simply `missing`, without asking (trap 15). Absent ids are remembered
 * for the `_bulk_docs` that follows.
 */
export function revsDiff(deps: Pick<WriteDeps, 'absent'>) {
  return async function revsDiffHandler(ctx: SyncContext): Promise<void> {
    const body: unknown = ctx.req.body;
    if (!isRecord(body)) throw badRequest();
    const own = new Map<string, string[]>();
    const answer: Record<string, { missing: string[] }> = {};
    for (const [id, revs] of Object.entries(body)) {
      if (!Array.isArray(revs) || !revs.every((r) => typeof r === 'string')) throw badRequest();
      const canonical = ownDocId(id, ctx.caller.owner);
      if (canonical) own.set(canonical, revs as string[]);
      else answer[id] = { missing: revs as string[] };
    }
    if (own.size > 0) {
      const { rows } = await ctx.inbox.json<{ rows: AllDocsRow[] }>({ method: 'POST', path: ['_all_docs'], body: { keys: [...own.keys()] }, signal: ctx.signal });
      for (const row of rows) {
        const revs = own.get(row.key);
        if (!revs) continue;
        const current = row.value && typeof row.value.rev === 'string' ? row.value.rev : null;
        if (current === null) deps.absent.remember(ctx.caller.tenant, row.key);
        const missing = revs.filter((r) => r !== current);
        if (missing.length > 0) answer[row.key] = { missing };
      }
    }
    sendJson(ctx.res, 200, answer);
  };
}

/** Loads what the inbox holds for the caller's ids: revs for all, bodies only for those that exist. */
async function loadExisting(ctx: SyncContext, all: string[], absent: AbsentIds): Promise<Map<string, Existing>> {
  const out = new Map<string, Existing>();
  const ids: string[] = [];
  for (const id of all) {
    if (absent.consume(ctx.caller.tenant, id)) out.set(id, { kind: 'absent' });
    else ids.push(id);
  }
  if (ids.length === 0) return out;
  const { rows } = await ctx.inbox.json<{ rows: AllDocsRow[] }>({ method: 'POST', path: ['_all_docs'], body: { keys: ids }, signal: ctx.signal });
  const present: string[] = [];
  for (const row of rows) {
    if (row.value && typeof row.value.rev === 'string') {
      out.set(row.key, { kind: 'present', rev: row.value.rev, deleted: row.value.deleted === true, doc: null });
      if (row.value.deleted !== true) present.push(row.key);
    } else out.set(row.key, { kind: 'absent' });
  }
  if (present.length > 0) {
    const full = await ctx.inbox.json<{ rows: AllDocsRow[] }>({
      method: 'POST',
      path: ['_all_docs'],
      query: { include_docs: true },
      body: { keys: present },
      signal: ctx.signal,
    });
    for (const row of full.rows) {
      const e = out.get(row.key);
      if (e?.kind === 'present' && isRecord(row.doc)) out.set(row.key, { ...e, doc: row.doc });
    }
  }
  return out;
}

type BulkResult = { id?: string; rev?: string; ok?: boolean; error?: string; reason?: string; code?: string };

/**
 * `_bulk_docs`: every doc is decided on its own (load-then-decide); forbidden docs get a per-doc
 * `{"id","error":"forbidden","reason"}` as CouchDB answers a `validate_doc_update` refusal, and
 * only the accepted ones are written to the tenant inbox.
 */
export function bulkDocs(deps: WriteDeps) {
  // Load-then-decide-then-write is only sound one push at a time per user (push-guard.ts).
  return function bulkDocsHandler(ctx: SyncContext): Promise<void> {
    return deps.guard.hold(ctx.caller.tenant, ctx.caller.owner, () => bulkDocsOnce(ctx));
  };

  async function bulkDocsOnce(ctx: SyncContext): Promise<void> {
    const body: unknown = ctx.req.body;
    if (!isRecord(body) || !Array.isArray(body.docs)) throw badRequest();
    if (body.new_edits !== undefined && typeof body.new_edits !== 'boolean') throw badRequest();
    const newEdits = body.new_edits !== false;
    const docs: unknown[] = body.docs;
    const owner = ctx.caller.owner;

    const ids = new Set<string>();
    for (const d of docs) {
      const id = isRecord(d) ? ownDocId(d._id, owner) : null;
      if (id?.startsWith('m:')) ids.add(id);
    }
    const existing = await loadExisting(ctx, [...ids], deps.absent);

    const seen = new Set<string>();
    const decisions: WriteDecision[] = docs.map((d) => {
      const id = isRecord(d) ? ownDocId(d._id, owner) : null;
      const e: Existing = (id && existing.get(id)) || { kind: 'absent' };
      const decision = decideMutationWrite(d, ctx.caller, e, newEdits);
      // Two docs for one id in one request would be two roots: only the first may be written.
      if (decision.kind === 'write' && id) {
        if (seen.has(id)) return { kind: 'forbidden', id, reason: 'immutable' };
        seen.add(id);
      }
      return decision;
    });
    const toWrite = decisions.flatMap((d) => (d.kind === 'write' ? [d.doc] : []));

    let written: BulkResult[] = [];
    if (toWrite.length > 0) {
      const key = `${ctx.caller.tenant}\u0000${owner}`;
      const room = await deps.pending.reserve(key, toWrite.length, () => deps.ledger.count(ctx.caller.tenant, owner));
      if (!room) throw couchError('QUOTA_EXCEEDED', { retryAfterSeconds: deps.quotas.pendingRetryAfterSeconds });
      let accepted: string[];
      try {
        written = await ctx.inbox.json<BulkResult[]>({
          method: 'POST',
          path: ['_bulk_docs'],
          body: newEdits ? { docs: toWrite } : { docs: toWrite, new_edits: false },
          signal: ctx.signal,
        });
        accepted = acceptedMids(toWrite, written, owner);
      } catch (err) {
        // Nothing (or nothing we know of) went in: hand the room back rather than keep a phantom.
        room.release();
        throw err;
      }
      room.commit(accepted.length);
      // Counted once the inbox took them: a doc its VDU refused is not pending (a crash right here
      // leaves a batch uncounted, never a phantom that would hold the user's quota forever).
      await deps.ledger.accepted(ctx.caller.tenant, owner, accepted);
    }

    // `forbidden` is what PouchDB's replicator turns into a `denied` event (any other per-doc
    // error fails the whole batch, and it would retry the same doc forever).
    const forbidden = (d: Extract<WriteDecision, { kind: 'forbidden' }>): BulkResult => {
      const code = WRITE_REASON_CODES[d.reason];
      return { ...(d.id !== null ? { id: d.id } : {}), error: 'forbidden', reason: WRITE_REASONS[d.reason], ...(code ? { code } : {}) };
    };
    if (!newEdits) {
      // Replication answers only the failures (`[]` when all went in).
      const errors = decisions.flatMap((d) => (d.kind === 'forbidden' ? [forbidden(d)] : []));
      sendJson(ctx.res, 201, [...errors, ...written.filter((r) => r.error !== undefined)]);
      return;
    }
    let i = 0;
    const answer = decisions.map((d): BulkResult => {
      if (d.kind === 'forbidden') return forbidden(d);
      if (d.kind === 'noop') return { ok: true, id: d.id, rev: d.rev };
      return written[i++] ?? { id: String(d.doc._id), error: 'unknown_error', reason: 'No answer from the database.' };
    });
    sendJson(ctx.res, 201, answer);
  }
}

/** Mutation ids of `docs` the inbox did not refuse (`new_edits:false` answers only the failures). */
export function acceptedMids(docs: ReadonlyArray<Record<string, unknown>>, results: readonly BulkResult[], owner: string): string[] {
  const failed = new Set(results.flatMap((r) => (r.error !== undefined && typeof r.id === 'string' ? [r.id] : [])));
  const prefix = `m:${owner}:`;
  return docs.flatMap((d) => (typeof d._id === 'string' && d._id.startsWith(prefix) && !failed.has(d._id) ? [d._id.slice(prefix.length)] : []));
}

// ---------------------------------------------------------------------------------------------
// _local/{id}, kept per (tenant, owner) in the platform database

function localKey(ctx: SyncContext, id: string) {
  return { tenant: ctx.caller.tenant, owner: ctx.caller.owner, id };
}

/** What the `_local` handlers need (also used by /replica, with its own store). */
export type LocalDeps = Pick<WriteDeps, 'local' | 'quotas'>;

export function getLocal(deps: LocalDeps) {
  return async function getLocalHandler(ctx: SyncContext, id: string): Promise<void> {
    const doc = await deps.local.get(localKey(ctx, id));
    if (!doc) throw missing();
    sendJson(ctx.res, 200, { ...doc.body, _id: `_local/${id}`, _rev: `0-${doc.rev}` });
  };
}

export function putLocal(deps: LocalDeps) {
  return async function putLocalHandler(ctx: SyncContext, id: string): Promise<void> {
    const key = localKey(ctx, id);
    const limits = { maxDocs: deps.quotas.maxLocalDocs, maxBytes: deps.quotas.maxLocalBytes };
    // A checkpoint update names the revision it replaces. Decided as if that were the stored one, a
    // write goes straight to the conditional UPDATE, which only succeeds if it is: one query, not a
    // read and a write. Anything else (a lost race, a refusal) takes the path below and answers
    // from what is stored.
    const claimed = claimedLocalRev(ctx.req.body);
    if (claimed !== null) {
      const assumed = decideLocalWrite(id, ctx.req.body, claimed, 0, limits);
      if (assumed.kind === 'write' && (await deps.local.put(key, assumed.nextRev, assumed.body))) {
        sendJson(ctx.res, 201, { ok: true, id: `_local/${id}`, rev: `0-${assumed.nextRev}` });
        return;
      }
    }
    const current = await deps.local.get(key);
    const count = current ? 0 : await deps.local.count(key.tenant, key.owner);
    const decision = decideLocalWrite(id, ctx.req.body, current?.rev ?? null, count, limits);
    if (decision.kind === 'bad-request') throw badRequest();
    if (decision.kind === 'too-complex') throw new FerryError('DOC_TOO_COMPLEX');
    if (decision.kind === 'conflict') throw new FerryError('VERSION_CONFLICT', { message: 'Document update conflict.' });
    if (decision.kind === 'quota') throw couchError('QUOTA_EXCEEDED', { retryAfterSeconds: 60 });
    const ok = await deps.local.put(key, decision.nextRev, decision.body);
    if (!ok) throw new FerryError('VERSION_CONFLICT', { message: 'Document update conflict.' });
    sendJson(ctx.res, 201, { ok: true, id: `_local/${id}`, rev: `0-${decision.nextRev}` });
  };
}

/** A `_local` revision as /sync writes them (`0-N`), as its number; null for anything else. */
function localRevOf(raw: unknown): number | null {
  const m = typeof raw === 'string' ? /^0-(\d{1,9})$/.exec(raw) : null;
  return m ? Number(m[1]) : null;
}

/** The stored revision a `_local` PUT says it replaces (`_rev: "0-N"`, N ≥ 1), or null. */
function claimedLocalRev(body: unknown): number | null {
  const rev = localRevOf(isRecord(body) ? body._rev : undefined);
  return rev !== null && rev >= 1 ? rev : null;
}

export function deleteLocal(deps: LocalDeps) {
  return async function deleteLocalHandler(ctx: SyncContext, id: string): Promise<void> {
    const raw = typeof ctx.req.query.rev === 'string' ? ctx.req.query.rev : ctx.req.get('if-match')?.replace(/"/g, '');
    const rev = localRevOf(raw);
    if (rev === null) throw new FerryError('VERSION_CONFLICT', { message: 'Document update conflict.' });
    const ok = await deps.local.remove(localKey(ctx, id), rev);
    if (!ok) {
      if (!(await deps.local.get(localKey(ctx, id)))) throw missing();
      throw new FerryError('VERSION_CONFLICT', { message: 'Document update conflict.' });
    }
    sendJson(ctx.res, 200, { ok: true, id: `_local/${id}`, rev: '0-0' });
  };
}
