// What the device knows about its own mutations: the index is loaded from the store on unlock,
// and status docs that a pull has just stored are read back into it, batch after batch, and
// reported (`status`, `conflict`).

import { statusDocSchema, type MutationDoc } from '../validators/mutation.ts';
import { readPrefix, stripRevisions, type Db } from './store.ts';
import type { LocalIndex, LocalNoteDoc } from './reconcile.ts';
import { toConflict } from './conflicts.ts';
import { ownPrefixes, parseOwnDocId } from './own-ids.ts';
import type { SessionCore, Unlocked } from './session-core.ts';

export async function loadIndex(core: SessionCore, db: Db, index: LocalIndex): Promise<void> {
  const prefixes = ownPrefixes(core.owner);
  for (const doc of await readPrefix<MutationDoc>(db, prefixes.mutations)) {
    const ref = parseOwnDocId(doc._id, core.owner);
    if (ref?.kind === 'mutation') index.addMutation(doc, ref.mid);
  }
  let invalid = 0;
  for (const raw of await readPrefix<unknown>(db, prefixes.statuses)) {
    const parsed = statusDocSchema.safeParse(raw);
    if (parsed.success) index.setStatus(parsed.data);
    else invalid++;
  }
  if (invalid) core.events.emit('warning', { code: 'STATUS_INVALID', count: invalid });
  for (const note of await readPrefix<LocalNoteDoc>(db, prefixes.notes)) index.setNote(note);
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
