// Drafts: work in progress that stays on this device. They live in ordinary (so encrypted) docs
// under `d:` — not `_local/`, which crypto-pouch leaves in clear — and push only ever selects
// `m:{owner}:`, so they are never replicated. Submitting one goes through the outbox.

import { v7 as uuidv7 } from 'uuid';
import type { FieldError } from '../validators/codes.ts';
import type { Db } from './store.ts';
import { stripRevisions } from './store.ts';
import { fieldError, requireOpen, type MutateOptions, type MutateResult, type SessionCore } from './session-core.ts';
import type { Mutate } from './outbox-writer.ts';

export interface Draft {
  id: string;
  op: string;
  entity: string | null;
  /** Unvalidated, possibly partial. */
  payload: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

interface DraftDoc extends Omit<Draft, 'id'> {
  _id: string;
  _rev?: string;
  type: 'draft';
}

export const DRAFT_PREFIX = 'd:';

const toDraft = (doc: DraftDoc): Draft => ({ id: doc._id.slice(DRAFT_PREFIX.length), op: doc.op, entity: doc.entity, payload: doc.payload, createdAt: doc.createdAt, updatedAt: doc.updatedAt });

export interface DraftInput {
  /** Omit to create a new draft; pass to overwrite one. */
  id?: string;
  op: string;
  entity?: string | null;
  payload: Record<string, unknown>;
}

export async function saveDraft(db: Db, input: DraftInput, now: Date): Promise<Draft> {
  const id = input.id ?? uuidv7();
  if (!/^[0-9a-f-]{36}$/.test(id)) throw new Error('draft ids are UUIDs');
  const existing = await getDraftDoc(db, id);
  const at = now.toISOString();
  const doc: DraftDoc = {
    _id: `${DRAFT_PREFIX}${id}`,
    type: 'draft',
    op: input.op,
    entity: input.entity ?? null,
    payload: input.payload,
    createdAt: existing?.createdAt ?? at,
    updatedAt: at,
  };
  if (existing?._rev) doc._rev = existing._rev;
  await db.put(doc);
  return toDraft(doc);
}

async function getDraftDoc(db: Db, id: string): Promise<DraftDoc | null> {
  try {
    return stripRevisions((await db.get(`${DRAFT_PREFIX}${id}`)) as unknown as DraftDoc);
  } catch (err) {
    if ((err as { status?: number }).status === 404) return null;
    throw err;
  }
}

export async function getDraft(db: Db, id: string): Promise<Draft | null> {
  const doc = await getDraftDoc(db, id);
  return doc ? toDraft(doc) : null;
}

export async function listDrafts(db: Db): Promise<Draft[]> {
  const res = await db.allDocs({ include_docs: true, startkey: DRAFT_PREFIX, endkey: `${DRAFT_PREFIX}\uffff` });
  return res.rows.flatMap((row) => ('doc' in row && row.doc ? [toDraft(row.doc as unknown as DraftDoc)] : []));
}

export async function removeDraft(db: Db, id: string): Promise<boolean> {
  const doc = await getDraftDoc(db, id);
  if (!doc?._rev) return false;
  await db.remove(doc._id, doc._rev);
  return true;
}

// ---- the session's `drafts` member ----

export interface DraftControls {
  save(input: DraftInput): Promise<Draft>;
  get(id: string): Promise<Draft | null>;
  list(): Promise<Draft[]>;
  remove(id: string): Promise<boolean>;
  /** Validates and queues the draft as a mutation; the draft is removed when that works. */
  submit(id: string, options?: Omit<MutateOptions, 'entity'>): Promise<MutateResult | { ok: false; code: 'NO_SUCH_DRAFT'; errors: FieldError[] }>;
}

export function createDrafts(core: SessionCore, mutate: Mutate): DraftControls {
  return {
    save: async (input) => {
      const open = requireOpen(core);
      return core.exclusive(() => saveDraft(open.db, input, core.now()));
    },
    get: async (id) => getDraft(requireOpen(core).db, id),
    list: async () => listDrafts(requireOpen(core).db),
    remove: async (id) => {
      const open = requireOpen(core);
      return core.exclusive(() => removeDraft(open.db, id));
    },
    submit: async (id, options = {}) => {
      const open = requireOpen(core);
      const draft = await getDraft(open.db, id);
      if (!draft) return { ok: false, code: 'NO_SUCH_DRAFT', errors: fieldError('id', 'does not name a draft') };
      const result = await mutate(draft.op, draft.payload, { ...options, ...(draft.entity ? { entity: draft.entity } : {}) });
      if (result.ok) await core.exclusive(() => removeDraft(open.db, id));
      return result;
    },
  };
}
