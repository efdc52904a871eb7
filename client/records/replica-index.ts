// The in-memory index of the replica: every record held, with its search terms, built from the
// decrypted store after unlock and dropped on lock. Nothing of it is ever written anywhere.

import type { ReplicaRecord } from './record-doc.ts';
import { byName, searchTerms, type SearchTerms } from './patient-search.ts';

export interface ReplicaEntry {
  record: ReplicaRecord;
  terms: SearchTerms;
  sortKey: string;
}

export class ReplicaIndex {
  private readonly entries = new Map<string, ReplicaEntry>();
  private sorted: ReplicaEntry[] | null = null;

  get size(): number {
    return this.entries.size;
  }

  get(id: string): ReplicaRecord | null {
    return this.entries.get(id)?.record ?? null;
  }

  /** The store's winning revision of a record: it replaces whatever was held. */
  set(record: ReplicaRecord): void {
    const terms = searchTerms(record.data);
    this.entries.set(record.id, { record, terms, sortKey: terms.sortKey });
    this.sorted = null;
  }

  /** The record left the caller's scope (a pulled deletion). */
  remove(id: string): boolean {
    const had = this.entries.delete(id);
    if (had) this.sorted = null;
    return had;
  }

  values(): IterableIterator<ReplicaEntry> {
    return this.entries.values();
  }

  /** Every entry by family name, given name, id (kept until the next change). */
  inOrder(): readonly ReplicaEntry[] {
    this.sorted ??= [...this.entries.values()].sort(byName);
    return this.sorted;
  }

  clear(): void {
    this.entries.clear();
    this.sorted = null;
  }
}
