import { isTerminal, statusDocId, type StatusDoc, type StatusOutcome, type StatusState } from '../../validators/mutation.ts';

// Status docs (DESIGN §4): what to write, whether to write, and which revision wins. Pure.

/** A status doc as the worker writes it: with the lease's fencing token and the feed counter. */
export type WorkerStatusDoc = StatusDoc & { fence: number };

export interface StatusIdentity {
  tenant: string;
  owner: string;
  mid: string;
}

export function statusDocFor(who: StatusIdentity, outcome: StatusOutcome, attempts: number, now: number): Omit<WorkerStatusDoc, 'fence' | 'counter'> {
  const doc: Omit<WorkerStatusDoc, 'fence' | 'counter'> = {
    _id: statusDocId(who.owner, who.mid),
    type: 'status',
    v: 1,
    tenant: who.tenant,
    owner: who.owner,
    mutation: who.mid,
    state: outcome.state,
    code: outcome.code,
    attempts,
    updatedAt: new Date(now).toISOString(),
  };
  if (outcome.errors?.length) doc.errors = outcome.errors;
  if (outcome.response) doc.response = outcome.response;
  if (outcome.current !== undefined) doc.current = outcome.current;
  if (outcome.candidates) doc.candidates = outcome.candidates;
  return doc;
}

/**
 * Whether a new outcome is written over the existing status: only when the state changes, and
 * never over a terminal status (no resubmission, no downgrade).
 */
export function shouldWrite(existing: StatusState | null, next: StatusState): boolean {
  if (existing === null) return true;
  if (isTerminal(existing)) return false;
  return existing !== next;
}

export interface StatusRevision {
  rev: string;
  state: StatusState;
  fence?: number | undefined;
  updatedAt?: string | undefined;
}

/**
 * Picks the revision that stands among conflicting ones: terminal first; among terminal ones the
 * earliest written (a terminal outcome is the first answer); otherwise the highest fence, then
 * the latest written. Returns the winner's index.
 */
export function pickStatusWinner(revs: readonly StatusRevision[]): number {
  if (revs.length === 0) throw new Error('no revisions');
  let best = 0;
  const better = (a: StatusRevision, b: StatusRevision): boolean => {
    const ta = isTerminal(a.state);
    const tb = isTerminal(b.state);
    if (ta !== tb) return ta;
    if (ta) {
      if ((a.updatedAt ?? '') !== (b.updatedAt ?? '')) return (a.updatedAt ?? '\uffff') < (b.updatedAt ?? '\uffff');
      return a.rev < b.rev;
    }
    if ((a.fence ?? 0) !== (b.fence ?? 0)) return (a.fence ?? 0) > (b.fence ?? 0);
    if ((a.updatedAt ?? '') !== (b.updatedAt ?? '')) return (a.updatedAt ?? '') > (b.updatedAt ?? '');
    return a.rev > b.rev;
  };
  for (let i = 1; i < revs.length; i++) if (better(revs[i]!, revs[best]!)) best = i;
  return best;
}
