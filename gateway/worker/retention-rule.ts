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
