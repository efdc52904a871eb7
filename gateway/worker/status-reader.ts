import type { CouchDb } from '../../couchdb/client.ts';
import { statusDocId, type StatusState } from '../../validators/mutation.ts';
import { pickStatusWinner, type WorkerStatusDoc } from './status.ts';
import type { StatusWriter } from './status-writer.ts';

// Reads status docs with their conflicts and resolves them, terminal first (DESIGN §4 "Writes").

export interface CurrentStatus {
  rev: string;
  state: StatusState;
  attempts: number;
}

type Stored = WorkerStatusDoc & { _rev: string; _conflicts?: string[] };

export interface StatusReader {
  read(owner: string, mid: string): Promise<CurrentStatus | null>;
  /** One round trip for a page of mutations; ids whose status is conflicted are resolved one by one. */
  readMany(refs: ReadonlyArray<{ owner: string; mid: string }>): Promise<Map<string, CurrentStatus | null>>;
}

const current = (doc: Stored): CurrentStatus => ({ rev: doc._rev, state: doc.state, attempts: doc.attempts ?? 0 });

export function createStatusReader(db: CouchDb, fence: number, writer: () => StatusWriter): StatusReader {
  const resolve = async (doc: Stored): Promise<CurrentStatus> => {
    const revs: Stored[] = [doc];
    for (const rev of doc._conflicts ?? []) {
      const other = await db.get<Stored>(doc._id, { rev });
      if (other) revs.push(other);
    }
    const winner = revs[pickStatusWinner(revs.map((r) => ({ rev: r._rev, state: r.state, fence: r.fence, updatedAt: r.updatedAt })))]!;
    // Losing branches are closed; the winning content ends up on the current winning revision.
    const losers = revs.filter((r) => r._rev !== doc._rev);
    if (losers.length) {
      const { _conflicts: _c, ...body } = winner;
      await db.bulkDocs(losers.map((l) => ({ ...body, _id: l._id, _rev: l._rev, fence, _deleted: true })));
    }
    if (winner._rev === doc._rev) return current(doc);
    const { _conflicts: _c, counter: _n, fence: _f, ...content } = winner;
    const rev = await writer().write({ ...content, _rev: doc._rev });
    return { rev, state: winner.state, attempts: winner.attempts ?? 0 };
  };

  return {
    async read(owner, mid) {
      const doc = await db.get<Stored>(statusDocId(owner, mid), { conflicts: true });
      if (!doc) return null;
      return doc._conflicts?.length ? resolve(doc) : current(doc);
    },
    async readMany(refs) {
      const out = new Map<string, CurrentStatus | null>();
      if (refs.length === 0) return out;
      const keys = refs.map((r) => statusDocId(r.owner, r.mid));
      const res = await db.request('POST', '/_all_docs', { keys }, { include_docs: 'true', conflicts: 'true' });
      if (!res.ok) throw new Error(`status read failed: ${res.status}`);
      const body = (await res.json()) as { rows: Array<{ key: string; doc?: Stored | null; value?: { deleted?: boolean }; error?: string }> };
      for (const row of body.rows) {
        const doc = row.doc;
        if (!doc || row.value?.deleted) out.set(row.key, null);
        else out.set(row.key, doc._conflicts?.length ? await resolve(doc) : current(doc));
      }
      return out;
    },
  };
}
