import type { StatusOutcome, StatusState } from '../../validators/mutation.ts';

// Per-entity order by the `after` chain (DESIGN §4): may this mutation go to its service now?
// Pure; the predecessor is looked up elsewhere.

export type Predecessor =
  | { kind: 'missing' }
  /** `entity` is null when the predecessor doc did not validate; `state` null when it has no status yet. */
  | { kind: 'found'; owner: string; entity: string | null; state: StatusState | null };

export interface OrderInput {
  owner: string;
  entity: string;
  after: string | null;
  resolves: string | null;
  /** Null exactly when `after` is null. */
  predecessor: Predecessor | null;
  /** When the worker first saw this mutation (ms). */
  firstSeenAt: number;
  now: number;
  waitingTimeoutMs: number;
}

export type OrderDecision = { kind: 'proceed' } | { kind: 'wait' } | { kind: 'reject'; outcome: StatusOutcome };

const dependencyFailed = (message: string): OrderDecision => ({
  kind: 'reject',
  outcome: { state: 'rejected', code: 'DEPENDENCY_FAILED', errors: [{ path: 'after', message }] },
});

export function decideOrder(input: OrderInput): OrderDecision {
  const pred = input.predecessor;
  if (input.after === null || pred === null) return { kind: 'proceed' };
  if (pred.kind === 'missing') {
    return input.now - input.firstSeenAt >= input.waitingTimeoutMs ? dependencyFailed('the preceding mutation never arrived') : { kind: 'wait' };
  }
  if (pred.owner !== input.owner) return dependencyFailed('names another user\'s mutation');
  if (pred.entity !== null && pred.entity !== input.entity) return dependencyFailed('names a mutation on another entity');
  switch (pred.state) {
    case 'committed':
      return { kind: 'proceed' };
    case 'rejected':
    case 'conflict':
      // Never blocked by the failure of the mutation it resolves.
      return input.resolves === input.after ? { kind: 'proceed' } : dependencyFailed('the preceding mutation did not commit');
    default:
      return { kind: 'wait' };
  }
}
