import { isTerminal, type StatusState } from '../../validators/mutation.ts';

// When a mutation doc and its status doc may leave the inbox (docs/SYNC.md "Retention"). Pure;
// `retention.ts` gathers the inputs and carries the purge out. Tested from a case table
// (`test/worker/retention-rule.test.ts`).

export interface RetentionPolicy {
  /** Kept at least this long after the status became terminal (FERRY_RETENTION_DAYS, default 7 days). */
  windowMs: number;
  /**
   * Past this age a terminal status goes even unacknowledged (a device that never comes back);
   * null (the default) never purges an unacknowledged status (FERRY_RETENTION_MAX_DAYS).
   */
  maxMs: number | null;
  /**
   * The re-purge guard's horizon: how long after a purge its ids are looked up again and purged
   * again if back (FERRY_RETENTION_RECHECK_MS; default `DEFAULT_REPURGE_HORIZON_MS`, 0 turns it off).
   */
  recheckMs?: number;
}

export interface RetentionCandidate {
  /** The state in the status doc as read now; null when the doc is gone or unreadable. */
  state: StatusState | null;
  /** When the platform recorded the status as terminal (ms). */
  terminalAt: number;
  /** The status's feed counter (its `feed_index` row). */
  counter: number;
  /** The counter the owning device (the mutation doc's `device`) has acknowledged; null when none. */
  acked: number | null;
  /** A pending mutation of the worker still waits on this one (`after`), so its state is read. */
  awaited: boolean;
  /** The mutation doc has conflicting revisions or the status doc does: left to the worker and operators. */
  conflicted: boolean;
}

export type RetentionVerdict =
  | { kind: 'purge'; because: 'acknowledged' | 'past-maximum' }
  | { kind: 'keep'; reason: 'not-terminal' | 'conflicted' | 'awaited' | 'in-window' | 'unacknowledged' };

export function decideRetention(c: RetentionCandidate, policy: RetentionPolicy, now: number): RetentionVerdict {
  if (c.state === null || !isTerminal(c.state)) return { kind: 'keep', reason: 'not-terminal' };
  if (c.conflicted) return { kind: 'keep', reason: 'conflicted' };
  if (c.awaited) return { kind: 'keep', reason: 'awaited' };
  const age = now - c.terminalAt;
  if (age < policy.windowMs) return { kind: 'keep', reason: 'in-window' };
  if (c.acked !== null && c.acked >= c.counter) return { kind: 'purge', because: 'acknowledged' };
  if (policy.maxMs !== null && age >= policy.maxMs) return { kind: 'purge', because: 'past-maximum' };
  return { kind: 'keep', reason: 'unacknowledged' };
}

export const DEFAULT_RETENTION_WINDOW_MS = 7 * 24 * 3600_000;

// ---- the re-purge guard ---------------------------------------------------------------------
// On a 3-node CouchDB 3.5.0 cluster, docs purged about a second after they were written came
// back once, with the purged revisions, re-inserted by one shard copy and carried to the others by
// internal replication (docs/DEPLOY.md "Purge and compaction"). So each pass also asks, for the
// ids it purged within `DEFAULT_REPURGE_HORIZON_MS`, whether they are there again
// (`_all_docs?keys`, no docs), and purges again the ones that are.

/** What `POST /{db}/_all_docs` with `keys` and no docs answers for one key. */
export interface KeyLookupRow {
  key: string;
  value?: { rev: string; deleted?: boolean };
  error?: string;
}

/**
 * One id retention purged, as `_all_docs` sees it now:
 * - `gone`: `not_found`, as after the purge;
 * - `back`: a revision is there again, deleted or not (a deleted leaf can hold a body: the worker
 *   closes a losing branch by deleting it with the winner's body), so it is purged again;
 * - `unknown`: no row, or another error (a shard not answering): looked at again next pass.
 */
export function purgedIdState(row: KeyLookupRow | undefined): 'gone' | 'back' | 'unknown' {
  if (row === undefined) return 'unknown';
  if (row.value && typeof row.value.rev === 'string') return 'back';
  if (row.error === 'not_found') return 'gone';
  return 'unknown';
}

export interface PurgedMutation {
  owner: string;
  mid: string;
  /** Its mutation doc's and status doc's ids. */
  ids: readonly string[];
}

/** Which purged mutations have docs back (and which of their ids), and how many ids are not known yet. */
export function decideRepurge<M extends PurgedMutation>(purged: readonly M[], rows: ReadonlyMap<string, KeyLookupRow>): { back: Array<{ mutation: M; ids: string[] }>; unknown: number } {
  const back: Array<{ mutation: M; ids: string[] }> = [];
  let unknown = 0;
  for (const m of purged) {
    const ids: string[] = [];
    for (const id of m.ids) {
      const state = purgedIdState(rows.get(id));
      if (state === 'back') ids.push(id);
      else if (state === 'unknown') unknown++;
    }
    if (ids.length > 0) back.push({ mutation: m, ids });
  }
  return { back, unknown };
}

/** How long after a purge (or a re-purge) its ids are looked at again (FERRY_RETENTION_RECHECK_MS). */
export const DEFAULT_REPURGE_HORIZON_MS = 24 * 3600_000;
