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

/**
 * The predecessor as this mutation's owner may know it. Another user's mutation is one that does
 * not exist: answering it any other way (at once, or with another message) would confirm to the
 * caller that some user of the tenant holds that id. It ends as a missing one does, after the timeout.
 */
export function visiblePredecessor(owner: string, pred: Predecessor): Predecessor {
  return pred.kind === 'found' && pred.owner !== owner ? { kind: 'missing' } : pred;
}

export function decideOrder(input: OrderInput): OrderDecision {
  if (input.after === null || input.predecessor === null) return { kind: 'proceed' };
  const pred = visiblePredecessor(input.owner, input.predecessor);
  if (pred.kind === 'missing') {
    return input.now - input.firstSeenAt >= input.waitingTimeoutMs ? dependencyFailed('the preceding mutation never arrived') : { kind: 'wait' };
  }
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
