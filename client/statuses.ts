// What the device knows about its own mutations: the index is loaded from the store on unlock,
// and status docs that a pull has just stored are read back into it, batch after batch, and
// reported (`status`, `conflict`).

import { mutationDocId, statusDocId, statusDocSchema, type MutationDoc, type StatusDoc } from '../validators/mutation.ts';
import { readPrefix, stripRevisions, type Db } from './store.ts';
import { localNoteId, type LocalIndex, type LocalNoteDoc } from './reconcile.ts';
import { toConflict } from './conflicts.ts';
import { ownPrefixes, parseOwnDocId } from './own-ids.ts';
import type { SessionCore, Unlocked } from './session-core.ts';
import { dropDocs, dropPlan, heldFrom, readAcked } from './acknowledgement.ts';

interface OwnDocs {
  mutations: Array<{ mid: string; doc: MutationDoc }>;
  statuses: StatusDoc[];
  notes: LocalNoteDoc[];
  invalid: number;
}

async function readOwnDocs(core: SessionCore, db: Db): Promise<OwnDocs> {
  const prefixes = ownPrefixes(core.owner);
  const mutations: OwnDocs['mutations'] = [];
  for (const doc of await readPrefix<MutationDoc>(db, prefixes.mutations)) {
    const ref = parseOwnDocId(doc._id, core.owner);
    if (ref?.kind === 'mutation') mutations.push({ mid: ref.mid, doc });
  }
  const statuses: StatusDoc[] = [];
  let invalid = 0;
  for (const raw of await readPrefix<unknown>(db, prefixes.statuses)) {
    const parsed = statusDocSchema.safeParse(raw);
    if (parsed.success) statuses.push(parsed.data);
    else invalid++;
  }
  return { mutations, statuses, notes: await readPrefix<LocalNoteDoc>(db, prefixes.notes), invalid };
}

/**
 * Drops, from the store, what the gateway has been told this device holds and nothing needs any
 * more (`dropPlan`): the mutation doc, its status doc and its local note. Returns the dropped mids.
 */
async function dropHeld(core: SessionCore, db: Db, docs: OwnDocs, acked: number | null): Promise<Set<string>> {
  if (acked === null) return new Set();
  const plan = dropPlan(heldFrom(docs.mutations, docs.statuses, docs.notes), acked);
  const mids = new Set(plan.filter((p) => p.verdict.kind === 'drop').map((p) => p.mid));
  if (mids.size === 0) return mids;
  const ids = [...mids].flatMap((mid) => [mutationDocId(core.owner, mid), statusDocId(core.owner, mid), localNoteId(core.owner, mid)]);
  await dropDocs(db, ids);
  return mids;
}

/** After the gateway took an acknowledgement: drop what it frees (run as a store write). */
export async function dropAcknowledged(core: SessionCore, db: Db, acked: number): Promise<number> {
  return (await dropHeld(core, db, await readOwnDocs(core, db), acked)).size;
}

/** On unlock: drops what an earlier session's acknowledgements freed, then indexes the rest. */
export async function loadIndex(core: SessionCore, db: Db, index: LocalIndex): Promise<void> {
  const docs = await readOwnDocs(core, db);
  const dropped = await dropHeld(core, db, docs, await readAcked(db));
  for (const m of docs.mutations) if (!dropped.has(m.mid)) index.addMutation(m.doc, m.mid);
  for (const s of docs.statuses) if (!dropped.has(s.mutation)) index.setStatus(s);
  if (docs.invalid) core.events.emit('warning', { code: 'STATUS_INVALID', count: docs.invalid });
  for (const note of docs.notes) if (!dropped.has(note.mutation)) index.setNote(note);
}

/**
 * Status docs arrive only by pull; the pull guard names the ones it has just stored. Each batch
 * is read back once (decrypted once, the winning revision), in the order the batches landed.
 */
export function readPulled(core: SessionCore, open: Unlocked, ids: string[]): void {
  const { db, index } = open;
  open.pulled = open.pulled
    .then(async () => {
      if (core.open !== open) return;
      const res = await db.allDocs({ keys: ids, include_docs: true });
      if (core.open !== open) return;
      let invalid = 0;
      for (const row of res.rows) {
        if (!('doc' in row) || !row.doc) continue;
        const parsed = statusDocSchema.safeParse(stripRevisions(row.doc));
        if (!parsed.success) {
          invalid++;
          continue;
        }
        if (!index.setStatus(parsed.data)) continue;
        const info = index.info(parsed.data.mutation);
        if (!info) continue;
        core.events.emit('status', info);
        const conflict = toConflict(info);
        if (conflict) core.events.emit('conflict', conflict);
      }
      if (invalid) core.events.emit('warning', { code: 'STATUS_INVALID', count: invalid });
    })
    .catch(() => undefined);
}
