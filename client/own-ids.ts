// The id prefixes of this owner's docs in the local store, built from the id functions of
// validators/ (`m:`/`s:`) and reconcile (`l:` local notes), and the one parser for them. Nothing
// else in the library takes a doc id apart.

import { MUTATION_ID, mutationDocId, parseInboxDocId, statusDocId } from '../validators/mutation.ts';
import { localNoteId } from './reconcile.ts';

export interface OwnPrefixes {
  mutations: string;
  statuses: string;
  notes: string;
}

export function ownPrefixes(owner: string): OwnPrefixes {
  return { mutations: mutationDocId(owner, ''), statuses: statusDocId(owner, ''), notes: localNoteId(owner, '') };
}

export type OwnDocRef = { kind: 'mutation' | 'status' | 'note'; mid: string };

/** What an id of this owner's store names; null for anything else (drafts, other owners, junk). */
export function parseOwnDocId(id: string, owner: string): OwnDocRef | null {
  const inbox = parseInboxDocId(id);
  if (inbox) return inbox.owner === owner ? { kind: inbox.kind, mid: inbox.mid } : null;
  const notes = localNoteId(owner, '');
  if (!id.startsWith(notes)) return null;
  const mid = id.slice(notes.length);
  return MUTATION_ID.test(mid) ? { kind: 'note', mid } : null;
}

/**
 * Mutations with neither a status nor a local note, from ids alone (ids are stored in clear), so
 * this works while the store is locked.
 */
export function unansweredFromIds(ids: readonly string[], owner: string): number {
  const answered = new Set<string>();
  const mutations: string[] = [];
  for (const id of ids) {
    const ref = parseOwnDocId(id, owner);
    if (!ref) continue;
    if (ref.kind === 'mutation') mutations.push(ref.mid);
    else answered.add(ref.mid);
  }
  return mutations.filter((mid) => !answered.has(mid)).length;
}
