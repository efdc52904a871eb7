// The device's half of retention (docs/SYNC.md "Retention"): it tells the gateway which statuses
// it holds, so the worker may purge them from the inbox, and it drops its own copies once nothing
// needs them. The wire contract (the ack doc, `nextAck`, `deviceVerdict`) is
// `validators/acknowledgement.ts`; this file is what the device does with it.
//
// 1. Acknowledge. After a pulled batch has been stored and read into the index, its `last_seq` (the
//    feed counter it reached) may be acknowledged. The writer batches: at most one
//    `PUT /sync/{tenant}/_local/ferry-ack-{device}` per `acknowledgeEveryMs` (30 s), carrying the
//    newest counter reconciled by then, however many statuses came in between. It keeps the doc's
//    revision itself (one GET per session, again after a 409), and never lowers the counter.
// 2. Remember. Once the gateway has taken the ack, the counter goes into the device's own
//    `_local/ferry-acked` (not replicated), so drops need no network and survive a restart.
// 3. Drop. `dropPlan` (pure) picks the mutations whose mutation, status and note docs can go; they
//    are deleted locally (the push selects live `m:` docs only, so the deletion never leaves the
//    device) and the store is compacted so the old bodies go too. It runs after each new ack and
//    on unlock (`loadIndex`), where the dropped ones also stay out of the index.

import { ackDocId, deviceVerdict, nextAck, type DeviceVerdict } from '../validators/acknowledgement.ts';
import type { MutationDoc, StatusDoc, StatusState } from '../validators/mutation.ts';
import type { FetchLike } from './auth-fetch.ts';
import { isPending, mutationState, versionOf, type LocalNoteDoc, type MutationState } from './reconcile.ts';
import { getLocal, type Db } from './store.ts';
import type { Scheduler } from './sync.ts';

/** Default pause between two acknowledgement writes: the retention window is days, so batching costs nothing. */
export const DEFAULT_ACKNOWLEDGE_EVERY_MS = 30_000;

/** The device's record of what the gateway has taken (`_local`, never replicated, ids and counters only). */
export const ACKED_LOCAL_ID = '_local/ferry-acked';

// ---- deciding what to drop (pure) ----

/** One mutation (or a status without its mutation doc, from another device of the user) as the store holds it. */
export interface HeldDocs {
  mid: string;
  mutation: Pick<MutationDoc, 'entity' | 'seq' | 'after' | 'resolves'> | null;
  status: Pick<StatusDoc, 'state' | 'counter' | 'response' | 'current'> | null;
  note: Pick<LocalNoteDoc, 'kind'> | null;
}

export interface PlannedDrop {
  mid: string;
  verdict: DeviceVerdict;
}

function stateOf(h: HeldDocs): MutationState {
  return mutationState((h.status ?? undefined) as StatusDoc | undefined, (h.note ?? undefined) as LocalNoteDoc | undefined);
}

/** The version of the server record a status carries (a commit's answer, a conflict's `current`). */
function confirmedVersion(h: HeldDocs): number | null {
  if (!h.status) return null;
  if (h.status.state === 'committed') return versionOf(h.status.response?.body);
  if (h.status.state === 'conflict') return versionOf(h.status.current);
  return null;
}

/**
 * The verdict for every held mutation, given the counter the gateway has taken. A conflict or
 * rejection stays until a later mutation resolves it or the user discards it; a mutation that a
 * pending one chains to (`after`, `resolves`) stays; per entity, the mutation whose status carries
 * the newest server record stays (the entity's view and the next `baseVersion` come from it).
 */
export function dropPlan(held: readonly HeldDocs[], acked: number | null): PlannedDrop[] {
  const states = new Map(held.map((h) => [h.mid, stateOf(h)]));
  const resolved = new Set<string>();
  const chainedByPending = new Set<string>();
  const newest = new Map<string, { mid: string; version: number }>();
  for (const h of held) {
    if (!h.mutation) continue;
    if (h.mutation.resolves) resolved.add(h.mutation.resolves);
    if (isPending(states.get(h.mid)!)) {
      if (h.mutation.after) chainedByPending.add(h.mutation.after);
      if (h.mutation.resolves) chainedByPending.add(h.mutation.resolves);
    }
    const version = confirmedVersion(h);
    const best = newest.get(h.mutation.entity);
    if (version !== null && (!best || version > best.version)) newest.set(h.mutation.entity, { mid: h.mid, version });
  }
  return held.map((h) => {
    const state = states.get(h.mid)!;
    const counter = h.status?.counter ?? null;
    const verdict = deviceVerdict(
      {
        state: h.status ? (h.status.state as StatusState) : null,
        counter,
        awaitingUser: (state.kind === 'rejected' || state.kind === 'conflict') && !resolved.has(h.mid),
        neededByQueued: chainedByPending.has(h.mid),
        holdsConfirmedRecord: h.mutation !== null && newest.get(h.mutation.entity)?.mid === h.mid,
      },
      acked,
    );
    return { mid: h.mid, verdict };
  });
}

// ---- dropping (I/O) ----

/** The counter the gateway has taken, as this device recorded it; null before the first ack. */
export async function readAcked(db: Db): Promise<number | null> {
  const doc = await getLocal<{ counter?: unknown }>(db, ACKED_LOCAL_ID);
  return typeof doc?.counter === 'number' && Number.isSafeInteger(doc.counter) ? doc.counter : null;
}

export async function writeAcked(db: Db, counter: number): Promise<void> {
  const current = await getLocal<{ counter?: number }>(db, ACKED_LOCAL_ID);
  if (typeof current?.counter === 'number' && current.counter >= counter) return;
  await db.put({ _id: ACKED_LOCAL_ID, ...(current?._rev ? { _rev: current._rev } : {}), counter } as unknown as PouchDB.Core.PutDocument<object>);
}

/** Groups the store's docs by mutation id. */
export function heldFrom(
  mutations: ReadonlyArray<{ mid: string; doc: MutationDoc }>,
  statuses: readonly StatusDoc[],
  notes: readonly LocalNoteDoc[],
): HeldDocs[] {
  const byMid = new Map<string, HeldDocs>();
  const entry = (mid: string): HeldDocs => {
    let h = byMid.get(mid);
    if (!h) byMid.set(mid, (h = { mid, mutation: null, status: null, note: null }));
    return h;
  };
  for (const m of mutations) entry(m.mid).mutation = m.doc;
  for (const s of statuses) entry(s.mutation).status = s;
  for (const n of notes) entry(n.mutation).note = n;
  return [...byMid.values()];
}

/**
 * Deletes the given docs locally, then compacts the store so that the bodies of the deleted
 * revisions leave it too. Returns how many docs went.
 */
export async function dropDocs(db: Db, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const res = await db.allDocs({ keys: [...ids] });
  const gone = res.rows.flatMap((r) => ('value' in r && r.value && !r.value.deleted ? [{ _id: r.id, _rev: r.value.rev, _deleted: true }] : []));
  if (gone.length === 0) return 0;
  await db.bulkDocs(gone as unknown as PouchDB.Core.PutDocument<object>[]);
  await db.compact();
  return gone.length;
}

// ---- acknowledging (I/O, batched) ----

export interface AckWriterOptions {
  /** The session's authenticated transport. */
  fetch: FetchLike;
  /** `/sync/{tenant}`. */
  dbUrl: string;
  /** This store's device id; null while no store is open. */
  device(): string | null;
  scheduler: Scheduler;
  everyMs: number;
  /** Resolves once every pulled batch stored so far has been read into the index. */
  reconciled(): Promise<void>;
  /** The gateway took `counter`: record it and drop what it frees. */
  acknowledged(counter: number): Promise<void>;
}

export interface AckWriter {
  /** A pulled batch reached `lastSeq` (PouchDB's `last_seq`). */
  pulled(lastSeq: unknown): void;
  /** Writes now what is due (tests, and before a lock). */
  flush(): Promise<void>;
  stop(): void;
  /** PUTs sent (tests and figures). */
  readonly writes: number;
}

type AckRemote = { rev: string | null; counter: number | null };

export function createAckWriter(o: AckWriterOptions): AckWriter {
  const base = o.dbUrl.replace(/\/+$/, '');
  let device: string | null = null;
  /** What the gateway holds for this device; undefined until read. */
  let remote: AckRemote | undefined;
  let reached: number | null = null;
  let timer: unknown = null;
  let running: Promise<void> | null = null;
  let writes = 0;
  let stopped = false;

  const url = (id: string): string => `${base}/_local/${encodeURIComponent(ackDocId(id))}`;

  async function read(id: string): Promise<AckRemote | null> {
    const res = await o.fetch(url(id), { method: 'GET', headers: { accept: 'application/json' } });
    if (res.status === 404) {
      await res.body?.cancel();
      return { rev: null, counter: null };
    }
    if (!res.ok) {
      await res.body?.cancel();
      return null;
    }
    const body = (await res.json()) as { _rev?: unknown; counter?: unknown; device?: unknown };
    return { rev: typeof body._rev === 'string' ? body._rev : null, counter: typeof body.counter === 'number' && body.device === id ? body.counter : null };
  }

  async function write(): Promise<void> {
    const id = o.device();
    if (id === null || id !== device || reached === null) return;
    const target = reached;
    await o.reconciled();
    if (remote === undefined) {
      const fresh = await read(id);
      if (!fresh) return schedule();
      remote = fresh;
    }
    const counter = nextAck(remote.counter, target);
    if (counter === null) return;
    const body = { _id: `_local/${ackDocId(id)}`, ...(remote.rev ? { _rev: remote.rev } : {}), type: 'ferry-ack', v: 1, device: id, counter };
    writes++;
    const res = await o.fetch(url(id), { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const answer = (await res.json().catch(() => null)) as { ok?: unknown; rev?: unknown } | null;
    if ((res.status === 201 || res.status === 200) && answer?.ok === true && typeof answer.rev === 'string') {
      remote = { rev: answer.rev, counter };
      await o.acknowledged(counter);
      return;
    }
    // 409: someone (this device in an earlier session, a duplicated request) wrote it: read it again.
    if (res.status === 409) remote = undefined;
    schedule();
  }

  /** A run was asked for while one was writing: it may carry a newer counter, so another follows. */
  let again = false;

  function run(): Promise<void> {
    if (running) {
      again = true;
      return running;
    }
    running = write()
      .catch(() => schedule())
      .finally(() => {
        running = null;
        if (again) {
          again = false;
          schedule();
        }
      });
    return running;
  }

  function schedule(): void {
    if (stopped || timer !== null) return;
    timer = o.scheduler.setTimeout(() => {
      timer = null;
      void run();
    }, o.everyMs);
  }

  return {
    pulled(lastSeq) {
      const id = o.device();
      if (id !== device) {
        // Another store (a wipe made a new device, another tenant): its pull starts over.
        device = id;
        remote = undefined;
        reached = null;
      }
      const seq = typeof lastSeq === 'number' ? lastSeq : typeof lastSeq === 'string' && /^\d+$/.test(lastSeq) ? Number(lastSeq) : NaN;
      if (!Number.isSafeInteger(seq) || seq < 0) return;
      if (reached === null || seq > reached) reached = seq;
      stopped = false;
      schedule();
    },
    flush: async () => {
      if (timer !== null) o.scheduler.clearTimeout(timer);
      timer = null;
      await run();
    },
    stop() {
      stopped = true;
      if (timer !== null) o.scheduler.clearTimeout(timer);
      timer = null;
    },
    get writes() {
      return writes;
    },
  };
}
