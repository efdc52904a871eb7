import type { Queryable } from '../../sql/database.ts';
import { loggableError } from '../../http/log.ts';
import { CouchError, type ChangeRow, type ChangesPage, type CouchDb } from '../../couchdb/client.ts';
import type { Logger } from '../../http/log.ts';
import { isTerminal, mutationDocId, parseInboxDocId, type StatusOutcome, type StatusState } from '../../validators/mutation.ts';
import type { RetryPolicy } from './backoff.ts';
import { commitBatch, type CommitDeps } from './commit.ts';
import { LeaseLost, type Fence } from './lease.ts';
import type { WorkerMetrics } from './metrics.ts';
import type { Predecessor } from './order.ts';
import type { PendingRow, PendingStore } from './pending.ts';
import { planRound, settleCommits, type CommitAnswer, type JobDecision, type MutationDocRaw, type RoundJob } from './plan.ts';
import type { PositionStore } from './position.ts';
import { shouldWrite, statusDocFor } from './status.ts';
import { createStatusReader, type CurrentStatus } from './status-reader.ts';
import { createStatusWriter, StatusConflict } from './status-writer.ts';
import { runRetentionPass } from './retention.ts';
import type { RetentionPolicy } from './retention-rule.ts';

// One tenant's work while this worker holds its lease (DESIGN §4 "Exactly once"). The feed loop
// reads the inbox from the durable checkpoint and queues each mutation under its entity. Rounds
// take the queued chains of entities not already in a round, gather what the decision needs in a
// few bulk reads, let `planRound` (pure) decide, send the commits as one service batch, let
// `settleCommits` (pure) read the answers, and carry out the effects. An entity is released as
// soon as the service has answered, so its next link goes in the next round while the status
// docs of this one are still being written (in batches). The checkpoint moves only over pages
// whose every mutation is terminal or recorded in the pending table. Every await in a round has a
// deadline: a step that hangs fails the round, whose mutations are looked at again shortly.

export interface TenantRunnerOptions {
  pageSize: number;
  /** Feed pauses while more mutations than this are queued or in rounds (backpressure). */
  maxInFlight: number;
  /** Mutations in one round, and so in one service batch. */
  batchSize: number;
  /** Rounds under way at once. */
  rounds: number;
  waitingTimeoutMs: number;
  retry: RetryPolicy;
  /** How often pending mutations are looked at. */
  tickMs: number;
  /** Longpoll timeout sent to CouchDB. */
  pollTimeoutMs: number;
  /** Deadline of each I/O step of a round other than the service call (which has `commit.timeoutMs`). */
  stepTimeoutMs: number;
}

export interface TenantRunnerDeps {
  tenant: string;
  lease: Fence;
  /** Throws LeaseLost when the lease can no longer be trusted (checked before every effect). */
  assertLease: () => void;
  inbox: CouchDb;
  positions: PositionStore;
  pending: PendingStore;
  commit: CommitDeps;
  metrics: WorkerMetrics;
  logger: Logger;
  clock: () => number;
  random: () => number;
  options: TenantRunnerOptions;
  /** Retention (docs/SYNC.md "Retention"); absent: nothing is ever purged. */
  retention?: RetentionRunnerOptions;
}

export interface RetentionRunnerOptions {
  /** The inbox as a CouchDB admin of it (`_purge` and `_compact` are admin-only). */
  purger: CouchDb;
  /** Platform database (candidates, acknowledgements, tombstones). */
  db: Queryable;
  policy: RetentionPolicy;
  /** How often a pass runs while the lease is held. */
  intervalMs: number;
  batchSize: number;
}

export interface TenantRunner {
  /** Resolves when the runner has stopped, on its own (lease lost) or by `stop()`. */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

/** A step of a round that outlived its deadline. */
export class StepTimeout extends Error {
  override name = 'StepTimeout';
  constructor(readonly step: string) {
    super(`worker step "${step}" timed out`);
  }
}

/** `work`, or a StepTimeout once `ms` have passed; the work itself may still finish later (harmless: every effect is fenced and idempotent). */
export function within<T>(ms: number, step: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StepTimeout(step)), ms);
    timer.unref();
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** A mutation queued for a look; `done` callbacks fire once what stands for it is durable. */
interface Slot {
  key: string;
  owner: string;
  mid: string;
  entityKey: string;
  /** The doc as the feed delivered it; undefined means "read it". */
  doc?: MutationDocRaw | null;
  deleted: boolean;
  source: 'feed' | 'pending';
  done: Array<() => void>;
}

interface Known {
  owner: string;
  entity: string | null;
  state: StatusState | null;
}

const KNOWN_LIMIT = 200_000;

function entityOf(doc: unknown): string | null {
  const e = doc !== null && typeof doc === 'object' ? (doc as Record<string, unknown>).entity : undefined;
  return typeof e === 'string' ? e : null;
}
function afterOf(doc: unknown): string | null {
  const a = doc !== null && typeof doc === 'object' ? (doc as Record<string, unknown>).after : undefined;
  return typeof a === 'string' ? a : null;
}

/** Within one entity, puts each mutation after the one its `after` names when both are in the batch. */
export function orderByAfter<T extends { mid: string; after: string | null }>(items: readonly T[]): T[] {
  const byMid = new Map(items.map((i) => [i.mid, i]));
  const out: T[] = [];
  const placed = new Set<string>();
  const visiting = new Set<string>();
  const place = (item: T) => {
    if (placed.has(item.mid) || visiting.has(item.mid)) return;
    visiting.add(item.mid);
    const pred = item.after ? byMid.get(item.after) : undefined;
    if (pred) place(pred);
    visiting.delete(item.mid);
    placed.add(item.mid);
    out.push(item);
  };
  for (const item of items) place(item);
  return out;
}

export function startTenantRunner(deps: TenantRunnerDeps): TenantRunner {
  const { tenant, lease, inbox, positions, pending, metrics, logger, clock, options } = deps;
  const abort = new AbortController();
  const writer = createStatusWriter({ db: inbox, lease, positions, assertLease: deps.assertLease });
  const statuses = createStatusReader(inbox, lease.fence, () => writer);
  const step = <T>(name: string, work: Promise<T>) => within(options.stepTimeoutMs, name, work);

  const known = new Map<string, Known>();
  /** Keyed by `owner:mid`. */
  const pendingRows = new Map<string, PendingRow>();
  /** after-mid → `owner:mid` keys of the mutations waiting for it. */
  const waiters = new Map<string, Set<string>>();
  /** Entity → its queued slots in order; Map order is the order entities get their turn. */
  const queues = new Map<string, Slot[]>();
  const queued = new Map<string, Slot>();
  const activeEntities = new Set<string>();
  /** Keys in a round now, and those of them woken meanwhile (looked at again after the round). */
  const inRound = new Set<string>();
  const wokenInRound = new Set<string>();
  /** Status writes under way, so "terminal already" waits until that status is durable. */
  const durable = new Map<string, Promise<unknown>>();
  let inRoundCount = 0;
  let roundsRunning = 0;
  let roundFailures = 0;
  let stopped = false;
  let failure: unknown = null;
  let tick: NodeJS.Timeout | undefined;
  const retryTimers = new Set<NodeJS.Timeout>();
  let roomWatchers: Array<() => void> = [];
  let roundsIdle: Array<() => void> = [];

  const rowKey = (r: { owner: string; mid: string }) => `${r.owner}:${r.mid}`;
  const remember = (key: string, k: Known) => {
    known.delete(key);
    known.set(key, k);
    if (known.size > KNOWN_LIMIT) known.delete(known.keys().next().value!);
  };
  const reportDepth = () => metrics.queueDepth.set({ tenant }, pendingRows.size);

  /** Stops the runner for good (lease lost, or a failure it cannot work around). */
  const fail = (err: unknown) => {
    if (stopped) return;
    failure = err;
    stopped = true;
    abort.abort();
    notifyRoom();
  };

  // ---- the queue -------------------------------------------------------------------------

  /** Mutations queued, in a round, or whose outcome is still being made durable: the feed's backpressure. */
  let settling = 0;
  const load = () => queued.size + inRoundCount + settling;
  const notifyRoom = () => {
    if (!stopped && load() > options.maxInFlight) return;
    const w = roomWatchers;
    roomWatchers = [];
    for (const r of w) r();
  };
  const room = (): Promise<void> => (load() <= options.maxInFlight || stopped ? Promise.resolve() : new Promise((r) => roomWatchers.push(r)));

  const enqueue = (slot: Slot): void => {
    if (stopped) return;
    const there = queued.get(slot.key);
    if (there) {
      there.done.push(...slot.done);
      if (there.doc === undefined && slot.doc !== undefined) {
        there.doc = slot.doc;
        there.deleted = slot.deleted;
      }
      if (slot.source === 'pending') there.source = 'pending';
      return;
    }
    queued.set(slot.key, slot);
    const q = queues.get(slot.entityKey);
    if (q) q.push(slot);
    else queues.set(slot.entityKey, [slot]);
  };

  /** Takes the queued chains of entities not in a round, up to a batch. */
  const take = (): Slot[] => {
    const out: Slot[] = [];
    for (const [entityKey, q] of queues) {
      if (out.length >= options.batchSize) break;
      if (activeEntities.has(entityKey)) continue;
      // A key still in another round (queued again under another entity) waits for it to end.
      let n = 0;
      while (n < q.length && n < options.batchSize - out.length && !inRound.has(q[n]!.key)) n++;
      if (n === 0) continue;
      const taken = q.splice(0, n);
      if (q.length === 0) queues.delete(entityKey);
      activeEntities.add(entityKey);
      for (const s of taken) {
        queued.delete(s.key);
        out.push(s);
      }
    }
    return out;
  };

  /** Rounds waiting for their inputs or the service: at most `options.rounds`. A round whose answers are in writes its statuses without holding a place. */
  let deciding = 0;
  const pump = (): void => {
    while (!stopped && deciding < options.rounds) {
      const slots = take();
      if (slots.length === 0) break;
      roundsRunning++;
      deciding++;
      inRoundCount += slots.length;
      for (const s of slots) inRound.add(s.key);
      let placeFreed = false;
      const decided = () => {
        if (placeFreed) return;
        placeFreed = true;
        deciding--;
        pump();
      };
      void runRound(slots, decided).finally(() => {
        decided();
        roundsRunning--;
        if (roundsRunning === 0) {
          const w = roundsIdle;
          roundsIdle = [];
          for (const r of w) r();
        }
        pump();
      });
    }
  };

  /** Ends a slot's part in a round: its entity may go again, and it is looked at again if woken meanwhile. */
  const leaveRound = (slots: readonly Slot[]) => {
    for (const s of slots) {
      if (!inRound.delete(s.key)) continue;
      inRoundCount--;
      activeEntities.delete(s.entityKey);
      if (wokenInRound.delete(s.key)) lookAgain(s.key);
    }
    notifyRoom();
  };

  // ---- pending rows and waking ----------------------------------------------------------

  const trackPending = (row: PendingRow) => {
    const key = rowKey(row);
    const old = pendingRows.get(key);
    if (old?.after) waiters.get(old.after)?.delete(key);
    pendingRows.set(key, row);
    if (row.state === 'waiting' && row.after) {
      let set = waiters.get(row.after);
      if (!set) waiters.set(row.after, (set = new Set()));
      set.add(key);
    }
    reportDepth();
  };
  const untrackPending = (key: string) => {
    const old = pendingRows.get(key);
    if (!old) return;
    if (old.after) {
      const set = waiters.get(old.after);
      set?.delete(key);
      if (set?.size === 0) waiters.delete(old.after);
    }
    pendingRows.delete(key);
    reportDepth();
  };

  /** Queues a pending mutation for a look now (or after its round, if it is in one). */
  const lookAgain = (key: string) => {
    const row = pendingRows.get(key);
    if (!row) return;
    if (inRound.has(key)) {
      wokenInRound.add(key);
      return;
    }
    enqueue({ key, owner: row.owner, mid: row.mid, entityKey: row.entity, deleted: false, source: 'pending', done: [] });
  };

  /** Waiting mutations whose predecessor just settled (or arrived) are looked at again. */
  const wake = (mid: string) => {
    const set = waiters.get(mid);
    if (!set || set.size === 0) return;
    for (const w of [...set]) lookAgain(w);
  };

  // ---- effects ---------------------------------------------------------------------------

  /** Writes `outcome` unless the standing status forbids it; returns the state that stands. */
  const writeStatus = async (owner: string, mid: string, status: CurrentStatus | null, outcome: StatusOutcome, attempts: number, inFlight?: { write: Promise<string> | null }): Promise<StatusState> => {
    let cur = status;
    for (let i = 0; i < 5; i++) {
      if (!shouldWrite(cur?.state ?? null, outcome.state)) return cur!.state;
      deps.assertLease();
      try {
        const doc = statusDocFor({ tenant, owner, mid }, outcome, attempts, clock());
        const write = writer.write(cur ? { ...doc, _rev: cur.rev } : doc);
        if (inFlight) inFlight.write = write;
        await step('status write', write);
        metrics.outcomes.inc({ tenant, state: outcome.state, code: outcome.code ?? 'none' });
        return outcome.state;
      } catch (err) {
        if (!(err instanceof StatusConflict)) throw err;
        cur = await step('status read', statuses.read(owner, mid));
      }
    }
    throw new Error('status doc kept changing');
  };

  const leavePending = async (key: string) => {
    const row = pendingRows.get(key);
    if (!row) return;
    deps.assertLease();
    await step('pending remove', pending.remove(lease, row.owner, row.mid));
    untrackPending(key);
  };

  const recordPending = async (row: PendingRow) => {
    const old = pendingRows.get(rowKey(row));
    if (old && old.state === row.state && old.attempts === row.attempts && old.nextAttemptAt === row.nextAttemptAt && old.after === row.after) return;
    deps.assertLease();
    await step('pending put', pending.put(lease, row));
    trackPending(row);
    // The predecessor may have settled while this row was being written, and its wake-up found no row.
    if (row.state === 'waiting' && row.after) {
      const pred = known.get(`${row.owner}:${row.after}`)?.state;
      if (pred && isTerminal(pred)) lookAgain(rowKey(row));
    }
  };

  /** Makes an outcome durable: pending row first for a non-terminal one, status doc first for a terminal one. */
  const settle = async (job: RoundJob, outcome: StatusOutcome, attempts: number, row: PendingRow | null, wakeAfter: boolean): Promise<void> => {
    const entity = entityOf(job.doc);
    const inFlight: { write: Promise<string> | null } = { write: null };
    const write = (async () => {
      if (row) await recordPending(row);
      return writeStatus(job.owner, job.mid, job.status, outcome, attempts, inFlight);
    })();
    durable.set(job.key, write);
    let state: StatusState;
    try {
      state = await write;
    } catch (err) {
      const late = inFlight.write;
      if (err instanceof StepTimeout && late) {
        // The write may still land: later looks wait for what it really did instead of deciding again.
        if (isTerminal(outcome.state)) remember(job.key, { owner: job.owner, entity, state: outcome.state });
        const outcomeOfLate = late.then(
          () => undefined,
          (e: unknown) => {
            known.delete(job.key);
            throw e;
          },
        );
        outcomeOfLate.catch(() => undefined);
        durable.set(job.key, outcomeOfLate);
        void outcomeOfLate.finally(() => durable.get(job.key) === outcomeOfLate && durable.delete(job.key)).catch(() => undefined);
      } else {
        // Not durable: forget the decision, so the next look reads what stands and decides again.
        if (durable.get(job.key) === write) durable.delete(job.key);
        known.delete(job.key);
      }
      throw err;
    }
    if (durable.get(job.key) === write) durable.delete(job.key);
    remember(job.key, { owner: job.owner, entity, state });
    if (isTerminal(state)) {
      await leavePending(job.key);
      if (wakeAfter) wake(job.mid);
    }
  };

  const finish = async (job: RoundJob, state: StatusState): Promise<void> => {
    // A status this runner decided counts only once it is durable; if its write fails, so does this.
    await durable.get(job.key);
    if (!known.get(job.key)?.state) remember(job.key, { owner: job.owner, entity: entityOf(job.doc), state });
    await leavePending(job.key);
    // Its status may have landed after the look that wrote it gave up: its waiters must still hear.
    wake(job.mid);
  };

  // ---- one round -------------------------------------------------------------------------

  const readDocs = async (slots: readonly Slot[]): Promise<Map<string, { doc: MutationDocRaw | null; deleted: boolean }>> => {
    const out = new Map<string, { doc: MutationDocRaw | null; deleted: boolean }>();
    const missing = slots.filter((s) => s.doc === undefined);
    if (missing.length === 0) return out;
    const res = await inbox.request('POST', '/_all_docs', { keys: missing.map((s) => mutationDocId(s.owner, s.mid)) }, { include_docs: 'true', conflicts: 'true' });
    if (!res.ok) throw new CouchError(res.status, 'read_failed', 'mutation read failed');
    const body = (await res.json()) as { rows: Array<{ key: string; doc?: MutationDocRaw | null; value?: { deleted?: boolean } }> };
    for (const row of body.rows) {
      const ref = parseInboxDocId(row.key);
      if (!ref) continue;
      out.set(`${ref.owner}:${ref.mid}`, { doc: row.doc ?? null, deleted: row.value?.deleted === true });
    }
    return out;
  };

  /** Predecessors named by `after` outside the round: from what this runner knows, else two bulk reads, else the seen index. */
  const lookupPredecessors = async (jobs: readonly RoundJob[]): Promise<Map<string, Predecessor>> => {
    const out = new Map<string, Predecessor>();
    const inRoundKeys = new Set(jobs.map((j) => j.key));
    const wanted: Array<{ owner: string; mid: string; key: string }> = [];
    for (const j of jobs) {
      const after = afterOf(j.doc);
      if (!after) continue;
      const key = `${j.owner}:${after}`;
      if (inRoundKeys.has(key) || out.has(key) || wanted.some((w) => w.key === key)) continue;
      const k = known.get(key);
      // An entry cached without its entity cannot answer the "another entity" check: read the doc.
      if (k && k.state !== null && k.entity !== null) out.set(key, { kind: 'found', owner: k.owner, entity: k.entity, state: k.state });
      else wanted.push({ owner: j.owner, mid: after, key });
    }
    if (wanted.length === 0) return out;
    const docs = await readDocs(wanted.map((w) => ({ key: w.key, owner: w.owner, mid: w.mid, entityKey: '', deleted: false, source: 'pending', done: [] })));
    const present = wanted.filter((w) => docs.get(w.key)?.doc);
    const sts = present.length ? await statuses.readMany(present) : new Map<string, CurrentStatus | null>();
    for (const w of wanted) {
      const doc = docs.get(w.key)?.doc;
      if (doc) {
        const found = { owner: w.owner, entity: entityOf(doc), state: known.get(w.key)?.state ?? sts.get(`s:${w.owner}:${w.mid}`)?.state ?? null };
        remember(w.key, found);
        out.set(w.key, { kind: 'found', ...found });
        continue;
      }
      // A predecessor retention purged keeps its state in the platform database (its tombstone).
      const seen = await positions.seen(tenant, w.mid);
      out.set(w.key, seen ? { kind: 'found', owner: seen.owner, entity: seen.entity, state: seen.purgedState } : { kind: 'missing' });
    }
    return out;
  };

  const runRound = async (slots: Slot[], decided: () => void): Promise<void> => {
    const completed = new Set<string>();
    const complete = (key: string) => {
      if (completed.has(key)) return;
      completed.add(key);
      for (const s of slots) if (s.key === key) for (const d of s.done.splice(0)) d();
    };
    // This round's hold on its keys and entities ends once, whichever path ends it.
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      leaveRound(slots);
    };
    // Until its outcome is durable, a mutation still counts against maxInFlight.
    const track = (work: Promise<void>): Promise<void> => {
      settling++;
      return work.finally(() => {
        settling--;
        notifyRoom();
      });
    };
    try {
      if (stopped) return;
      deps.assertLease();
      const docs = await step('mutation read', readDocs(slots));
      for (const s of slots) {
        const d = docs.get(s.key);
        if (d) {
          s.doc = d.doc;
          s.deleted = d.deleted || d.doc === null;
        }
      }
      const statusById = await step('status read', statuses.readMany(slots));
      const jobs: RoundJob[] = slots.map((s) => ({
        key: s.key,
        owner: s.owner,
        mid: s.mid,
        doc: s.doc ?? null,
        deleted: s.deleted,
        status: statusById.get(`s:${s.owner}:${s.mid}`) ?? null,
        decided: ((st) => (st && isTerminal(st) ? st : null))(known.get(s.key)?.state ?? null),
        pending: pendingRows.get(s.key) ?? null,
        source: s.source,
      }));
      const predecessors = await step('predecessor read', lookupPredecessors(jobs));
      // Roles once per round, at commit time (DESIGN §3): a removed member commits nothing more.
      const roles = await step('roles read', deps.commit.memberships.rolesOfMany(tenant, [...new Set(jobs.map((j) => j.owner))]));
      const now = clock();
      const plan = planRound({ tenant, jobs, predecessors, roles, now, waitingTimeoutMs: options.waitingTimeoutMs });
      const jobByKey = new Map(jobs.map((j) => [j.key, j]));

      // Decisions that need no service answer go first, alongside the service call.
      const effects: Array<Promise<void>> = [];
      const deferred: Slot[] = [];
      for (const [key, d] of plan.decisions as Map<string, JobDecision>) {
        const job = jobByKey.get(key)!;
        if (d.kind === 'finish') effects.push(track(finish(job, d.state).then(() => complete(key))));
        else if (d.kind === 'settle') effects.push(track(settle(job, d.outcome, d.attempts, d.pending, true).then(() => complete(key))));
        else if (d.kind === 'hold') complete(key); // its retry is already recorded
        else if (d.kind === 'defer') deferred.push(...slots.filter((s) => s.key === key));
      }
      let answers: CommitAnswer[] = [];
      if (plan.commits.length > 0) {
        deps.assertLease();
        const started = performance.now();
        answers = await within(deps.commit.timeoutMs + 5_000, 'service batch', commitBatch(deps.commit, tenant, plan.commits));
        const seconds = (performance.now() - started) / 1000;
        for (const c of plan.commits) metrics.commitLatency.observe({ tenant, module: c.op.module }, seconds);
      }
      const settled = settleCommits(plan.commits, answers, { now: clock(), waitingTimeoutMs: options.waitingTimeoutMs, retry: options.retry, random: deps.random });
      // What the service answered is known now: the chain's next link may go in the next round
      // while these statuses are written.
      for (const s of settled) {
        const job = jobByKey.get(s.key)!;
        remember(s.key, { owner: job.owner, entity: entityOf(job.doc), state: s.outcome.state });
        if (s.outcome.state === 'retrying' && s.called) metrics.retries.inc({ tenant });
      }
      effects.push(...settled.map((s) => track(settle(jobByKey.get(s.key)!, s.outcome, s.attempts, s.pending, false).then(() => complete(s.key)))));
      for (const s of settled) if (isTerminal(s.outcome.state)) wake(jobByKey.get(s.key)!.mid);
      leave();
      for (const s of deferred) enqueue({ ...s, done: s.done.splice(0) });
      decided();
      const results = await Promise.allSettled(effects);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      roundFailures = 0;
    } catch (err) {
      leave();
      if (err instanceof LeaseLost || (err instanceof CouchError && err.status === 403)) {
        fail(err instanceof LeaseLost ? err : new LeaseLost(tenant));
        return;
      }
      if (stopped) return;
      roundFailures++;
      logger.warn({ tenant, err: loggableError(err), mutations: slots.length, failures: roundFailures }, 'worker round failed; its mutations are looked at again');
      // Whatever was not made durable is looked at again after a pause; a later look finds what
      // did land (terminal statuses are never written twice, commits replay).
      const again = slots.filter((s) => !completed.has(s.key));
      const t = setTimeout(() => {
        retryTimers.delete(t);
        for (const s of again) enqueue({ ...s, doc: undefined, done: s.done.splice(0) });
        pump();
      }, Math.min(10_000, 200 * 2 ** Math.min(roundFailures, 6)));
      t.unref();
      retryTimers.add(t);
    } finally {
      pump();
    }
  };

  // ---- the feed ----------------------------------------------------------------------------

  interface Page {
    seq: string;
    remaining: number;
  }
  const pages: Page[] = [];
  let saving: Promise<void> = Promise.resolve();
  const advance = (): void => {
    saving = saving
      .then(async () => {
        let last: string | null = null;
        while (pages[0] && pages[0].remaining === 0) last = pages.shift()!.seq;
        if (last !== null && !stopped) {
          deps.assertLease();
          await step('checkpoint save', positions.saveCheckpoint(lease, last));
        }
      })
      .catch((err: unknown) => {
        if (err instanceof LeaseLost) fail(err);
        else logger.warn({ tenant, err: loggableError(err) }, 'checkpoint save failed; the next page moves it');
      });
  };

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      abort.signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });

  const takePage = async (rows: ReadonlyArray<ChangeRow<Record<string, unknown>>>, seq: string): Promise<void> => {
    const items = rows.flatMap((row) => {
      const ref = parseInboxDocId(row.id);
      if (!ref || ref.kind !== 'mutation') return [];
      const doc = (row.doc ?? null) as MutationDocRaw | null;
      const deleted = row.deleted === true || doc?._deleted === true;
      return [{ owner: ref.owner, mid: ref.mid, doc: deleted ? null : doc, deleted, entity: deleted ? null : entityOf(doc), after: afterOf(doc) }];
    });
    if (items.length > 0) {
      metrics.received.inc({ tenant }, items.length);
      await step(
        'seen record',
        positions.recordSeen(
          tenant,
          items.map((i) => ({ mid: i.mid, owner: i.owner, entity: i.entity })),
        ),
      );
    }
    const page: Page = { seq, remaining: items.length };
    pages.push(page);
    const groups = new Map<string, typeof items>();
    for (const item of items) {
      const key = item.entity ?? `id:${item.mid}`;
      const g = groups.get(key);
      if (g) g.push(item);
      else groups.set(key, [item]);
    }
    const oneDone = () => {
      page.remaining--;
      if (page.remaining === 0) advance();
    };
    for (const [entityKey, group] of groups) {
      for (const item of orderByAfter(group)) {
        enqueue({ key: `${item.owner}:${item.mid}`, owner: item.owner, mid: item.mid, entityKey, doc: item.doc, deleted: item.deleted, source: 'feed', done: [oneDone] });
      }
    }
    // Rows arriving now can settle other owners' or entities' waiters (DEPENDENCY_FAILED).
    for (const item of items) wake(item.mid);
    if (page.remaining === 0) advance();
    pump();
  };

  const feedLoop = async () => {
    let since: string | number = (await step('checkpoint read', positions.checkpoint(tenant))) ?? 0;
    let longpoll = false;
    let failures = 0;
    while (!stopped) {
      try {
        await room();
        if (stopped) break;
        const page: ChangesPage<Record<string, unknown>> = await inbox.changes<Record<string, unknown>>({
          since,
          limit: options.pageSize,
          include_docs: true,
          conflicts: true,
          ...(longpoll ? { feed: 'longpoll' as const, timeout: options.pollTimeoutMs } : {}),
          signal: abort.signal,
        });
        if (page.results.length > 0) await takePage(page.results, String(page.last_seq));
        since = page.last_seq;
        longpoll = page.results.length < options.pageSize;
        failures = 0;
      } catch (err) {
        if (stopped) break;
        if (err instanceof LeaseLost) throw err;
        if (err instanceof CouchError && err.status === 403) throw new LeaseLost(tenant);
        if ((err as Error).name === 'TimeoutError') {
          longpoll = false; // a longpoll that outlived the client timeout: just ask again
          continue;
        }
        failures++;
        logger.warn({ tenant, err: loggableError(err), failures }, 'worker feed failed; asking again');
        longpoll = false;
        await sleep(Math.min(5_000, 100 * 2 ** Math.min(failures, 6)));
      }
    }
  };

  const onTick = () => {
    const now = clock();
    for (const [key, row] of pendingRows) if (row.nextAttemptAt <= now && !queued.has(key)) lookAgain(key);
    pump();
  };

  // ---- retention -------------------------------------------------------------------------

  let retentionTimer: NodeJS.Timeout | undefined;
  let retentionRunning: Promise<void> | null = null;
  const startRetention = () => {
    const r = deps.retention;
    if (!r) return;
    const pass = () => {
      if (stopped || retentionRunning) return;
      retentionRunning = (async () => {
        try {
          deps.assertLease();
          const result = await runRetentionPass({ tenant, lease, db: r.db, inbox, purger: r.purger, policy: r.policy, batchSize: r.batchSize, now: clock() });
          deps.metrics.retentionPurged.inc({ tenant }, result.purged);
          deps.metrics.retentionRepurged.inc({ tenant }, result.repurged);
          // Counts only (no ids); a re-purge is worth a warning: CouchDB put purged docs back.
          if (result.repurged > 0) logger.warn({ tenant, repurged: result.repurged }, 'retention: purged docs were back; purged again');
          if (result.purged > 0 || result.looked > 0) logger.info({ tenant, ...result }, 'retention pass');
        } catch (err) {
          if (err instanceof LeaseLost) fail(err);
          else if (!stopped) logger.warn({ tenant, err: loggableError(err) }, 'retention pass failed; the next one tries again');
        } finally {
          retentionRunning = null;
        }
      })();
    };
    retentionTimer = setInterval(pass, r.intervalMs);
    retentionTimer.unref();
    pass();
  };

  const run = async () => {
    try {
      await step('head heal', writer.healHead());
      // A predecessor may have settled under the previous holder after the checkpoint passed it,
      // with the wake-up lost: every waiting row is looked at once now, not only at its timeout.
      const now = clock();
      for (const row of await step('pending list', pending.list(tenant))) trackPending(row.state === 'waiting' ? { ...row, nextAttemptAt: Math.min(row.nextAttemptAt, now) } : row);
      reportDepth();
      tick = setInterval(onTick, options.tickMs);
      tick.unref();
      onTick();
      startRetention();
      await feedLoop();
      if (failure !== null) throw failure;
    } catch (err) {
      if (!(err instanceof LeaseLost) && !stopped) logger.error({ tenant, err: loggableError(err) }, 'tenant runner failed');
      else if (err instanceof LeaseLost || failure instanceof LeaseLost) logger.info({ tenant }, 'tenant runner stopping: lease lost');
    } finally {
      stopped = true;
      if (tick) clearInterval(tick);
      if (retentionTimer) clearInterval(retentionTimer);
      if (retentionRunning) await Promise.race([retentionRunning, new Promise((r) => setTimeout(r, 10_000).unref())]);
      for (const t of retryTimers) clearTimeout(t);
      abort.abort();
      for (const r of roomWatchers.splice(0)) r();
      const idle = roundsRunning === 0 ? Promise.resolve() : new Promise<void>((r) => roundsIdle.push(r));
      await Promise.race([idle.then(() => writer.settled()), new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
  };

  const done = run();
  return {
    done,
    async stop() {
      stopped = true;
      abort.abort();
      notifyRoom();
      // Bounded: a runner stuck in a call with no deadline must not hold up a shutdown or a
      // handover. Whatever it still does after this is fenced out once its lease is released.
      const gaveUp = await Promise.race([done.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 15_000).unref())]);
      if (gaveUp) logger.warn({ tenant }, 'tenant runner did not stop in time; its lease is released and it is fenced out');
    },
  };
}
