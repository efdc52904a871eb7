import { loggableError } from '../../http/log.ts';
import { CouchError, type ChangeRow, type ChangesPage, type CouchDb } from '../../couchdb/client.ts';
import type { Logger } from '../../http/log.ts';
import { isTerminal, mutationDocId, parseInboxDocId, type StatusOutcome, type StatusState } from '../../validators/mutation.ts';
import type { RetryPolicy } from './backoff.ts';
import { backoffDelay } from '../../retry/backoff.ts';
import { commitMutation, type CommitDeps } from './commit.ts';
import { createEntityQueue } from './entity-queue.ts';
import { LeaseLost, type Fence } from './lease.ts';
import type { WorkerMetrics } from './metrics.ts';
import { decideOrder, type Predecessor } from './order.ts';
import { outcomeOf } from './outcome.ts';
import type { PendingRow, PendingStore } from './pending.ts';
import type { PositionStore } from './position.ts';
import { screen } from './screen.ts';
import { shouldWrite, statusDocFor } from './status.ts';
import { createStatusReader, type CurrentStatus } from './status-reader.ts';
import { createStatusWriter, StatusConflict } from './status-writer.ts';

// One tenant's work while this worker holds its lease: follow the inbox feed from the durable
// checkpoint, take each mutation to a terminal status or into the pending table, and only then
// move the checkpoint (DESIGN §4 "Exactly once"). Pending mutations come back on their own: a
// retry when its delay is up, a waiting one when its predecessor settles or its timeout passes.

export interface TenantRunnerOptions {
  pageSize: number;
  /** Feed pauses while more tasks than this are queued or running (backpressure). */
  maxInFlight: number;
  /** Service calls and status decisions running at once. */
  concurrency: number;
  waitingTimeoutMs: number;
  retry: RetryPolicy;
  /** How often pending mutations are looked at. */
  tickMs: number;
  /** Longpoll timeout sent to CouchDB. */
  pollTimeoutMs: number;
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
}

export interface TenantRunner {
  /** Resolves when the runner has stopped, on its own (lease lost) or by `stop()`. */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

type MutationDocRaw = Record<string, unknown> & { _id: string; _rev?: string; _conflicts?: string[]; _deleted?: boolean };

interface Job {
  owner: string;
  mid: string;
  /** The doc as the feed delivered it; fetched again when absent. */
  doc?: MutationDocRaw | null;
  deleted?: boolean;
  /** Prefetched status; undefined means "read it". */
  status?: CurrentStatus | null;
  source: 'feed' | 'pending';
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
  const queue = createEntityQueue(options.concurrency);
  const writer = createStatusWriter({ db: inbox, lease, positions, assertLease: deps.assertLease });
  const statuses = createStatusReader(inbox, lease.fence, () => writer);
  const known = new Map<string, Known>();
  /** Keyed by `owner:mid`. */
  const pendingRows = new Map<string, PendingRow>();
  /** after-mid → `owner:mid` keys of the mutations waiting for it. */
  const waiters = new Map<string, Set<string>>();
  const rowKey = (r: { owner: string; mid: string }) => `${r.owner}:${r.mid}`;
  let stopped = false;
  let tick: NodeJS.Timeout | undefined;

  // Keyed by `owner:mid`: a mid is only unique within its owner's ids.
  const remember = (key: string, k: Known) => {
    known.delete(key);
    known.set(key, k);
    if (known.size > KNOWN_LIMIT) known.delete(known.keys().next().value!);
  };
  const setKnownState = (key: string, state: StatusState) => {
    const k = known.get(key);
    if (k) k.state = state;
  };
  const reportDepth = () => metrics.queueDepth.set({ tenant }, pendingRows.size);

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
    if (old.after) waiters.get(old.after)?.delete(key);
    pendingRows.delete(key);
    reportDepth();
  };

  // ---- status writes ----------------------------------------------------------------------

  /** Writes `outcome` unless the standing status forbids it; returns the state that stands. */
  const settleStatus = async (job: Job, status: CurrentStatus | null, outcome: StatusOutcome, attempts: number): Promise<StatusState> => {
    let cur = status;
    for (let i = 0; i < 5; i++) {
      if (!shouldWrite(cur?.state ?? null, outcome.state)) return cur!.state;
      deps.assertLease();
      try {
        const doc = statusDocFor({ tenant, owner: job.owner, mid: job.mid }, outcome, attempts, clock());
        await writer.write(cur ? { ...doc, _rev: cur.rev } : doc);
        metrics.outcomes.inc({ tenant, state: outcome.state, code: outcome.code ?? 'none' });
        return outcome.state;
      } catch (err) {
        if (!(err instanceof StatusConflict)) throw err;
        cur = await statuses.read(job.owner, job.mid);
      }
    }
    throw new Error('status doc kept changing');
  };

  const finishTerminal = async (job: Job, state: StatusState) => {
    setKnownState(`${job.owner}:${job.mid}`, state);
    if (pendingRows.has(rowKey(job))) {
      await pending.remove(lease, job.owner, job.mid);
      untrackPending(rowKey(job));
    }
  };

  const recordPending = async (row: PendingRow) => {
    const old = pendingRows.get(rowKey(row));
    if (old && old.state === row.state && old.attempts === row.attempts && old.nextAttemptAt === row.nextAttemptAt && old.after === row.after) return;
    await pending.put(lease, row);
    trackPending(row);
  };

  /**
   * Looks at a pending mutation again now. Until that look is over, and for a while if it fails,
   * the tick leaves the row alone; after that it tries again, so a failed look is never lost.
   */
  const lookAgain = (row: PendingRow, now: number) => {
    pendingRows.set(rowKey(row), { ...row, nextAttemptAt: now + Math.max(options.tickMs, 1_000) });
    schedule(row.entity, { owner: row.owner, mid: row.mid, source: 'pending' }).catch((err: unknown) => {
      if (!stopped && !(err instanceof LeaseLost)) logger.warn({ tenant, mid: row.mid, err: loggableError(err) }, 'pending mutation failed; will look again');
    });
  };

  /** Waiting mutations whose predecessor just settled (or arrived) are looked at again. */
  const wake = (mid: string) => {
    const set = waiters.get(mid);
    if (!set || set.size === 0) return;
    for (const w of [...set]) {
      const row = pendingRows.get(w);
      if (row) lookAgain(row, clock());
    }
  };

  // ---- one mutation ------------------------------------------------------------------------

  const lookupPredecessor = async (owner: string, after: string): Promise<Predecessor> => {
    const k = known.get(`${owner}:${after}`);
    // An entry cached without its entity cannot answer the "another entity" check: read the doc.
    if (k && k.state !== null && k.entity !== null) return { kind: 'found', owner: k.owner, entity: k.entity, state: k.state };
    const doc = await inbox.get<Record<string, unknown>>(mutationDocId(owner, after));
    if (doc) {
      const st = await statuses.read(owner, after);
      const found = { owner, entity: entityOf(doc), state: st?.state ?? null };
      remember(`${owner}:${after}`, found);
      return { kind: 'found', ...found };
    }
    const seen = await deps.positions.seen(tenant, after);
    if (seen) return { kind: 'found', owner: seen.owner, entity: seen.entity, state: null };
    return { kind: 'missing' };
  };

  const processMutation = async (job: Job): Promise<void> => {
    const { owner, mid } = job;
    const key = `${owner}:${mid}`;
    const k = known.get(key);
    if (k?.state && isTerminal(k.state)) return finishTerminal(job, k.state);
    const status = job.status !== undefined ? job.status : await statuses.read(owner, mid);
    if (status && isTerminal(status.state)) {
      if (!k) remember(key, { owner, entity: null, state: status.state });
      return finishTerminal(job, status.state);
    }
    const row = pendingRows.get(key) ?? null;
    let doc = job.doc;
    let deleted = job.deleted ?? false;
    if (doc === undefined || doc === null) {
      doc = await inbox.get<MutationDocRaw>(mutationDocId(owner, mid), { conflicts: true });
      deleted = doc === null;
    }
    const attemptsSoFar = row?.attempts ?? status?.attempts ?? 0;
    const screened = screen({ inboxTenant: tenant, owner, mid, doc, conflicted: (doc?._conflicts?.length ?? 0) > 0, deleted });
    remember(key, { owner, entity: entityOf(doc), state: status?.state ?? null });
    if (screened.kind === 'reject') {
      const state = await settleStatus(job, status, screened.outcome, attemptsSoFar);
      await finishTerminal(job, state);
      wake(mid);
      return;
    }
    const m = screened.mutation;
    const now = clock();
    const firstSeenAt = row?.firstSeenAt ?? now;
    const predecessor = m.after ? await lookupPredecessor(owner, m.after) : null;
    const order = decideOrder({ owner, entity: m.entity, after: m.after, resolves: m.resolves, predecessor, firstSeenAt, now, waitingTimeoutMs: options.waitingTimeoutMs });
    if (order.kind === 'reject') {
      const state = await settleStatus(job, status, order.outcome, attemptsSoFar);
      await finishTerminal(job, state);
      wake(mid);
      return;
    }
    if (order.kind === 'wait') {
      // A missing predecessor is looked at again when its timeout passes; a present one wakes us.
      const nextAttemptAt = predecessor?.kind === 'missing' ? firstSeenAt + options.waitingTimeoutMs : now + options.waitingTimeoutMs;
      await recordPending({ mid, owner, entity: m.entity, state: 'waiting', after: m.after, attempts: attemptsSoFar, nextAttemptAt, firstSeenAt });
      setKnownState(key, await settleStatus(job, status, { state: 'waiting', code: null }, attemptsSoFar));
      return;
    }
    if (job.source === 'feed' && row?.state === 'retrying' && row.nextAttemptAt > now) return; // its retry is scheduled

    deps.assertLease();
    const attempts = attemptsSoFar + 1;
    const started = performance.now();
    const result = await commitMutation(deps.commit, tenant, owner, mid, m, screened.op);
    metrics.commitLatency.observe({ tenant, module: screened.op.module }, (performance.now() - started) / 1000);
    const outcome: StatusOutcome = result.kind === 'not-member' ? { state: 'rejected', code: 'TENANT_MISMATCH', errors: [{ path: 'owner', message: 'is not a member of the tenant' }] } : outcomeOf(result.answer);

    if (outcome.state === 'retrying') {
      metrics.retries.inc({ tenant });
      const delay = backoffDelay(attempts, options.retry, deps.random);
      await recordPending({ mid, owner, entity: m.entity, state: 'retrying', after: m.after, attempts, nextAttemptAt: clock() + delay, firstSeenAt });
      setKnownState(key, await settleStatus(job, status, outcome, attempts));
      return;
    }
    const state = await settleStatus(job, status, outcome, attempts);
    await finishTerminal(job, state);
    wake(mid);
  };

  const schedule = (entity: string, job: Job): Promise<void> =>
    queue.run(entity, async () => {
      if (stopped) throw new Error('stopped');
      await processMutation(job);
    });

  // ---- the feed ----------------------------------------------------------------------------

  /** Reads what a page needs and queues its work in feed order; `done` settles when all of it has. */
  const processPage = async (rows: ReadonlyArray<ChangeRow<Record<string, unknown>>>): Promise<{ done: Promise<void> }> => {
    const items = rows.flatMap((row) => {
      const ref = parseInboxDocId(row.id);
      if (!ref || ref.kind !== 'mutation') return [];
      const doc = (row.doc ?? null) as MutationDocRaw | null;
      return [{ owner: ref.owner, mid: ref.mid, doc, deleted: row.deleted === true || doc?._deleted === true, entity: entityOf(doc), after: afterOf(doc) }];
    });
    if (items.length === 0) return { done: Promise.resolve() };
    metrics.received.inc({ tenant }, items.length);
    await positions.recordSeen(
      tenant,
      items.map((i) => ({ mid: i.mid, owner: i.owner, entity: i.entity })),
    );
    const statusById = await statuses.readMany(items);
    const groups = new Map<string, typeof items>();
    for (const item of items) {
      const key = item.entity ?? `id:${item.mid}`;
      const g = groups.get(key);
      if (g) g.push(item);
      else groups.set(key, [item]);
      const knownKey = `${item.owner}:${item.mid}`;
      if (!known.has(knownKey) || known.get(knownKey)!.state === null) {
        const st = statusById.get(`s:${item.owner}:${item.mid}`)?.state ?? null;
        remember(knownKey, { owner: item.owner, entity: item.entity, state: st });
      }
    }
    const work: Promise<void>[] = [];
    for (const [key, group] of groups) {
      for (const item of orderByAfter(group)) {
        const job: Job = { owner: item.owner, mid: item.mid, doc: item.deleted ? null : item.doc, deleted: item.deleted, status: statusById.get(`s:${item.owner}:${item.mid}`) ?? null, source: 'feed' };
        work.push(schedule(key, job));
      }
    }
    // Rows arriving now can settle other owners' or entities' waiters (DEPENDENCY_FAILED).
    for (const item of items) wake(item.mid);
    const done = Promise.allSettled(work).then((results) => {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    });
    return { done };
  };

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      abort.signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });

  // Pages are fetched ahead while earlier ones are still being worked on (up to maxInFlight
  // tasks); the checkpoint only moves over a prefix of pages whose work has all settled.
  interface PageInFlight {
    seq: string;
    state: 'running' | 'ok' | 'failed';
    error?: unknown;
  }
  let pages: PageInFlight[] = [];
  let pageFailure: unknown = null;
  let saving: Promise<void> = Promise.resolve();
  const advance = (): Promise<void> => {
    const current = pages;
    saving = saving
      .then(async () => {
        let last: string | null = null;
        while (current[0]?.state === 'ok') last = current.shift()!.seq;
        if (current[0]?.state === 'failed') pageFailure ??= current[0].error;
        if (last !== null && !stopped) {
          deps.assertLease();
          await positions.saveCheckpoint(lease, last);
        }
      })
      .catch((err: unknown) => {
        pageFailure ??= err;
      });
    return saving;
  };

  const feedLoop = async () => {
    let since: string | number = (await positions.checkpoint(tenant)) ?? 0;
    let longpoll = false;
    let failures = 0;
    while (!stopped) {
      try {
        if (pageFailure !== null) throw pageFailure;
        await queue.below(options.maxInFlight);
        if (stopped) break;
        const page: ChangesPage<Record<string, unknown>> = await inbox.changes<Record<string, unknown>>({
          since,
          limit: options.pageSize,
          include_docs: true,
          conflicts: true,
          ...(longpoll ? { feed: 'longpoll' as const, timeout: options.pollTimeoutMs } : {}),
          signal: abort.signal,
        });
        const { done } = await processPage(page.results);
        if (page.results.length > 0) {
          const entry: PageInFlight = { seq: String(page.last_seq), state: 'running' };
          pages.push(entry);
          done.then(
            () => {
              entry.state = 'ok';
              void advance();
            },
            (err: unknown) => {
              entry.state = 'failed';
              entry.error = err;
              void advance();
            },
          );
        }
        since = page.last_seq;
        longpoll = page.results.length < options.pageSize;
        failures = 0;
      } catch (err) {
        if (stopped) break;
        if (err instanceof LeaseLost) throw err;
        if (err instanceof CouchError && err.status === 403) throw new LeaseLost(tenant);
        const name = (err as Error).name;
        if (name === 'TimeoutError' && pageFailure === null) {
          longpoll = false; // a longpoll that outlived the client timeout: just ask again
          continue;
        }
        failures++;
        logger.warn({ tenant, err: loggableError(err), failures }, 'worker feed failed; resuming from the checkpoint');
        // Start again from the durable checkpoint once queued work is over; terminal mutations
        // are skipped on the way.
        await Promise.race([queue.idle(), sleep(30_000)]);
        await saving;
        if (pageFailure instanceof LeaseLost) throw pageFailure;
        pages = [];
        pageFailure = null;
        since = (await positions.checkpoint(tenant).catch(() => null)) ?? 0;
        longpoll = false;
        await sleep(Math.min(5_000, 100 * 2 ** Math.min(failures, 6)));
      }
    }
  };

  const onTick = () => {
    const now = clock();
    for (const row of pendingRows.values()) {
      if (row.nextAttemptAt > now) continue;
      lookAgain(row, now);
    }
  };

  const run = async () => {
    try {
      await writer.healHead();
      // A predecessor may have settled under the previous holder after the checkpoint passed it,
      // with the wake-up lost: every waiting row is looked at once now, not only at its timeout.
      const now = clock();
      for (const row of await pending.list(tenant)) trackPending(row.state === 'waiting' ? { ...row, nextAttemptAt: Math.min(row.nextAttemptAt, now) } : row);
      reportDepth();
      tick = setInterval(onTick, options.tickMs);
      onTick();
      await feedLoop();
    } catch (err) {
      if (!(err instanceof LeaseLost) && !stopped) logger.error({ tenant, err: loggableError(err) }, 'tenant runner failed');
      else logger.info({ tenant }, 'tenant runner stopping: lease lost');
    } finally {
      stopped = true;
      if (tick) clearInterval(tick);
      abort.abort();
      await Promise.race([queue.idle().then(() => writer.settled()), new Promise((r) => setTimeout(r, 10_000).unref())]);
    }
  };

  const done = run();
  return {
    done,
    async stop() {
      stopped = true;
      abort.abort();
      // Bounded: a runner stuck in a call with no deadline must not hold up a shutdown or a
      // handover. Whatever it still does after this is fenced out once its lease is released.
      const gaveUp = await Promise.race([done.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 15_000).unref())]);
      if (gaveUp) logger.warn({ tenant }, 'tenant runner did not stop in time; its lease is released and it is fenced out');
    },
  };
}
