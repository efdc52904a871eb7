// Leaving the scope when the feed cannot say so. `/replica` answers a record that left the caller's
// scope as deleted only to a pull that continues from a position the device held (DESIGN §8). A
// pull that starts from scratch (a checkpoint that was never written because the app stopped in
// the middle of one, or was lost) sends no deletions for records the device still holds from an
// earlier scope. So after such a pull has caught up, the device asks the endpoint about every
// record it holds (`_all_docs` by key, which `/replica` answers within the caller's scope only)
// and removes those it no longer serves.

import type { Db } from '../store.ts';

/** Keys per `_all_docs` request: well under the gateway's id limit per request. */
export const SWEEP_PAGE = 200;

/** Whether a request of the pull is a `_changes` from the beginning (no `since`, or `since=0`). */
export function startsFromScratch(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url, 'http://device.invalid');
  } catch {
    return false;
  }
  if (!parsed.pathname.endsWith('/_changes')) return false;
  const since = parsed.searchParams.get('since');
  return since === null || since === '0';
}

export type AllDocsAnswer = { key: string; error?: string; value?: { deleted?: boolean } };

/** The held docs the endpoint no longer serves: unknown to the caller (out of scope or gone), or deleted. */
export function noLongerServed(rows: readonly AllDocsAnswer[]): string[] {
  return rows.filter((row) => row.error !== undefined || row.value?.deleted === true).map((row) => row.key);
}

/**
 * Asks the endpoint about `held` (record doc ids) page by page and deletes locally those it no
 * longer serves; returns their doc ids. A local deletion is what a pulled scope-leave would have
 * written, and a later version of the record pulled back wins over it.
 */
export async function sweepHeld(db: Db, remote: Db, held: readonly string[]): Promise<string[]> {
  const removed: string[] = [];
  for (let i = 0; i < held.length; i += SWEEP_PAGE) {
    const keys = held.slice(i, i + SWEEP_PAGE);
    const answer = await remote.allDocs({ keys });
    const stale = noLongerServed(answer.rows as unknown as AllDocsAnswer[]);
    if (stale.length === 0) continue;
    const mine = await db.allDocs({ keys: stale });
    for (const row of mine.rows) {
      if (!('value' in row) || !row.value || (row.value as { deleted?: boolean }).deleted) continue;
      await db.remove(row.id, row.value.rev);
      removed.push(row.id);
    }
  }
  return removed;
}
