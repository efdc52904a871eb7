import type { OpDefinition } from '../../validators/manifest.ts';
import { isTerminal, type MutationDoc, type StatusOutcome, type StatusState } from '../../validators/mutation.ts';
import { backoffDelay, type BackoffPolicy } from '../../retry/backoff.ts';
import { decideOrder, visiblePredecessor, type Predecessor } from './order.ts';
import { outcomeOf, type ServiceAnswer } from './outcome.ts';
import type { PendingRow } from './pending.ts';
import { screen } from './screen.ts';
import type { CurrentStatus } from './status-reader.ts';

// The worker's decisions for one round, as pure functions (DESIGN §4 "Exactly once"): given the
// mutations of a round, what stands for each of them and who their predecessors are, `planRound`
// says what to do; given the service's answers to the commits it asked for, `settleCommits` says
// what each answer means. The executor (`tenant-runner.ts`) only gathers inputs and carries the
// effects out, so every rule here is tested from case tables (`test/worker/plan.test.ts`).

export type MutationDocRaw = Record<string, unknown> & { _id: string; _rev?: string; _conflicts?: string[]; _deleted?: boolean };

/** One mutation to look at in this round. */
export interface RoundJob {
  /** `owner:mid`: a mid is only unique within its owner's ids. */
  key: string;
  owner: string;
  mid: string;
  /** The mutation doc, or null when it is missing or deleted. */
  doc: MutationDocRaw | null;
  deleted: boolean;
  /** The status doc as read at the start of the round. */
  status: CurrentStatus | null;
  /** A terminal state this worker already decided (its status doc may still be on its way). */
  decided: StatusState | null;
  /** The mutation's row in the pending table, if it has one. */
  pending: PendingRow | null;
  /** Came from the inbox feed (a retry whose time has not come stays put) or from the pending table. */
  source: 'feed' | 'pending';
}

export interface RoundInput {
  tenant: string;
  /** Within an entity in chain order (the executor keeps each entity's queue in feed + `after` order). */
  jobs: readonly RoundJob[];
  /** Predecessors named by `after` that are not jobs of this round, keyed `owner:mid`. */
  predecessors: ReadonlyMap<string, Predecessor>;
  /** Each owner's roles in the tenant now, null when no longer a member (read once per round, at commit time). */
  roles: ReadonlyMap<string, readonly string[] | null>;
  now: number;
  waitingTimeoutMs: number;
}

/** A service call for one mutation; `requires` is the index of an earlier commit that must answer 2xx. */
export interface CommitPlan {
  key: string;
  owner: string;
  mid: string;
  mutation: MutationDoc;
  op: OpDefinition;
  roles: readonly string[];
  /** This call's attempt number (stored in the status doc). */
  attempts: number;
  firstSeenAt: number;
  requires: number | null;
}

export type JobDecision =
  /** Terminal already: nothing to write; drop the pending row if there is one. */
  | { kind: 'finish'; state: StatusState }
  /** Write this outcome; record `pending` (non-terminal) or drop the pending row (terminal). */
  | { kind: 'settle'; outcome: StatusOutcome; attempts: number; pending: PendingRow | null }
  | { kind: 'commit'; index: number }
  /** A retry whose time has not come: the pending row already says when. */
  | { kind: 'hold' }
  /** Its predecessor is committed in this round with an outcome not known yet: look again after it. */
  | { kind: 'defer' };

export interface RoundPlan {
  decisions: Map<string, JobDecision>;
  commits: CommitPlan[];
}

const notMember: StatusOutcome = { state: 'rejected', code: 'TENANT_MISMATCH', errors: [{ path: 'owner', message: 'is not a member of the tenant' }] };

function entityOf(doc: unknown): string | null {
  const e = doc !== null && typeof doc === 'object' ? (doc as Record<string, unknown>).entity : undefined;
  return typeof e === 'string' ? e : null;
}

/** What a round already knows of a mutation planned before: a state, or "being committed now". */
type Planned = { owner: string; entity: string | null } & ({ kind: 'state'; state: StatusState | null } | { kind: 'commit'; index: number });

export function planRound(input: RoundInput): RoundPlan {
  const { tenant, now, waitingTimeoutMs } = input;
  const decisions = new Map<string, JobDecision>();
  const commits: CommitPlan[] = [];
  const planned = new Map<string, Planned>();
  const inRound = new Set(input.jobs.map((j) => j.key));

  const waitRow = (job: RoundJob, m: MutationDoc, firstSeenAt: number, missing: boolean, attempts: number): PendingRow => ({
    mid: job.mid,
    owner: job.owner,
    entity: m.entity,
    state: 'waiting',
    after: m.after,
    attempts,
    // A missing predecessor is looked at again when its timeout passes; a present one wakes us.
    nextAttemptAt: missing ? firstSeenAt + waitingTimeoutMs : now + waitingTimeoutMs,
    firstSeenAt,
  });

  for (const job of input.jobs) {
    if (decisions.has(job.key)) continue; // the same mutation twice in a round: the first look decides
    const entity = entityOf(job.doc);
    const stands = job.decided ?? job.status?.state ?? null;
    if (stands !== null && isTerminal(stands)) {
      decisions.set(job.key, { kind: 'finish', state: stands });
      planned.set(job.key, { kind: 'state', state: stands, owner: job.owner, entity });
      continue;
    }
    const attemptsSoFar = job.pending?.attempts ?? job.status?.attempts ?? 0;
    const firstSeenAt = job.pending?.firstSeenAt ?? now;
    const settle = (outcome: StatusOutcome, attempts: number, pending: PendingRow | null) => {
      decisions.set(job.key, { kind: 'settle', outcome, attempts, pending });
      planned.set(job.key, { kind: 'state', state: outcome.state, owner: job.owner, entity });
    };

    const screened = screen({ inboxTenant: tenant, owner: job.owner, mid: job.mid, doc: job.doc, conflicted: (job.doc?._conflicts?.length ?? 0) > 0, deleted: job.deleted || job.doc === null });
    if (screened.kind === 'reject') {
      settle(screened.outcome, attemptsSoFar, null);
      continue;
    }
    const m = screened.mutation;
    let predecessor: Predecessor | null = null;
    let chainedTo: number | null = null;
    if (m.after !== null) {
      const predKey = `${job.owner}:${m.after}`;
      const p = planned.get(predKey);
      if (p?.kind === 'commit') {
        // Its outcome comes back with this round's answers. A mutation that resolves its
        // predecessor runs whatever that outcome is, so it waits for the outcome first; a chain
        // into another module's batch cannot be expressed, so it waits too.
        if (m.resolves === m.after || commits[p.index]!.op.module !== screened.op.module) {
          decisions.set(job.key, { kind: 'defer' });
          planned.set(job.key, { kind: 'state', state: null, owner: job.owner, entity });
          continue;
        }
        predecessor = { kind: 'found', owner: p.owner, entity: p.entity, state: 'committed' };
        chainedTo = p.index;
      } else if (p) {
        predecessor = { kind: 'found', owner: p.owner, entity: p.entity, state: p.state };
      } else if (inRound.has(predKey)) {
        // Planned later in this round (it sits in another entity's queue): look again after it.
        decisions.set(job.key, { kind: 'defer' });
        planned.set(job.key, { kind: 'state', state: null, owner: job.owner, entity });
        continue;
      } else {
        // Another user's mutation counts as missing, also for when the wait ends (visiblePredecessor).
        predecessor = visiblePredecessor(job.owner, input.predecessors.get(predKey) ?? { kind: 'missing' });
      }
    }
    const order = decideOrder({ owner: job.owner, entity: m.entity, after: m.after, resolves: m.resolves, predecessor, firstSeenAt, now, waitingTimeoutMs });
    if (order.kind === 'reject') {
      settle(order.outcome, attemptsSoFar, null);
      continue;
    }
    if (order.kind === 'wait') {
      settle({ state: 'waiting', code: null }, attemptsSoFar, waitRow(job, m, firstSeenAt, predecessor?.kind === 'missing', attemptsSoFar));
      continue;
    }
    if (job.source === 'feed' && job.pending?.state === 'retrying' && job.pending.nextAttemptAt > now) {
      decisions.set(job.key, { kind: 'hold' });
      planned.set(job.key, { kind: 'state', state: 'retrying', owner: job.owner, entity });
      continue;
    }
    const roles = input.roles.get(job.owner) ?? null;
    if (roles === null) {
      settle(notMember, attemptsSoFar + 1, null);
      continue;
    }
    const index = commits.length;
    commits.push({ key: job.key, owner: job.owner, mid: job.mid, mutation: m, op: screened.op, roles, attempts: attemptsSoFar + 1, firstSeenAt, requires: chainedTo });
    decisions.set(job.key, { kind: 'commit', index });
    planned.set(job.key, { kind: 'commit', index, owner: job.owner, entity });
  }
  return { decisions, commits };
}

/** The service's answer to one commit; `skipped` when its `requires` did not answer 2xx, so it never ran. */
export type CommitAnswer = ServiceAnswer | { kind: 'skipped' };

export interface SettledCommit {
  key: string;
  outcome: StatusOutcome;
  attempts: number;
  /** Non-terminal outcomes go into the pending table; terminal ones leave it. */
  pending: PendingRow | null;
  /** The service answered (not skipped, not waiting): counts toward latency and retry metrics. */
  called: boolean;
}

/**
 * What each answer means, in commit order (a chained commit is decided after the one it requires).
 * A skipped commit never reached the service: it waits while its predecessor is retrying, and fails
 * with DEPENDENCY_FAILED when the predecessor ended rejected or in conflict.
 */
export function settleCommits(
  commits: readonly CommitPlan[],
  answers: readonly CommitAnswer[],
  ctx: { now: number; waitingTimeoutMs: number; retry: BackoffPolicy; random: () => number },
): SettledCommit[] {
  const out: SettledCommit[] = [];
  commits.forEach((c, i) => {
    const answer = answers[i] ?? { kind: 'network-error' };
    const required = c.requires !== null ? out[c.requires] : undefined;
    const requiredFailed = required !== undefined && required.outcome.state !== 'committed';
    if (answer.kind === 'skipped' && !requiredFailed) {
      // A skip the contract does not allow (nothing it required failed): it never ran, so try again later.
      out.push({ key: c.key, outcome: { state: 'retrying', code: null }, attempts: c.attempts, pending: { mid: c.mid, owner: c.owner, entity: c.mutation.entity, state: 'retrying', after: c.mutation.after, attempts: c.attempts, nextAttemptAt: ctx.now + backoffDelay(c.attempts, ctx.retry, ctx.random), firstSeenAt: c.firstSeenAt }, called: true });
      return;
    }
    if (requiredFailed || answer.kind === 'skipped') {
      const predState: StatusState = required?.outcome.state ?? 'retrying';
      const order = decideOrder({
        owner: c.owner,
        entity: c.mutation.entity,
        after: c.mutation.after,
        resolves: c.mutation.resolves,
        predecessor: { kind: 'found', owner: c.owner, entity: c.mutation.entity, state: predState },
        firstSeenAt: c.firstSeenAt,
        now: ctx.now,
        waitingTimeoutMs: ctx.waitingTimeoutMs,
      });
      const attempts = c.attempts - 1; // it was never called
      if (order.kind === 'reject') out.push({ key: c.key, outcome: order.outcome, attempts, pending: null, called: false });
      else
        out.push({
          key: c.key,
          outcome: { state: 'waiting', code: null },
          attempts,
          pending: { mid: c.mid, owner: c.owner, entity: c.mutation.entity, state: 'waiting', after: c.mutation.after, attempts, nextAttemptAt: ctx.now + ctx.waitingTimeoutMs, firstSeenAt: c.firstSeenAt },
          called: false,
        });
      return;
    }
    const outcome = outcomeOf(answer as ServiceAnswer);
    const pending: PendingRow | null =
      outcome.state === 'retrying'
        ? { mid: c.mid, owner: c.owner, entity: c.mutation.entity, state: 'retrying', after: c.mutation.after, attempts: c.attempts, nextAttemptAt: ctx.now + backoffDelay(c.attempts, ctx.retry, ctx.random), firstSeenAt: c.firstSeenAt }
        : null;
    out.push({ key: c.key, outcome, attempts: c.attempts, pending, called: true });
  });
  return out;
}
