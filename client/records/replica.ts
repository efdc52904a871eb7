// The replica on the device (DESIGN §8): `/replica/{tenant}` pulled live into its own encrypted
// store while online, through the session's token transport and the same connection loop as
// `/sync`; the in-memory index built from it after unlock, fed by each pulled batch and dropped
// on lock; and `session.records` (search, list, state).

import { DEFAULT_BACKOFF } from '../backoff.ts';
import { peekClaims, type FetchLike, type TenantMismatchSource } from '../auth-fetch.ts';
import { ConnectionLoop, DEFAULT_BATCH_SIZE, browserOnlineSource, type SyncState } from '../sync.ts';
import { guardRemoteInfo, type SyncWiring } from '../sync-wiring.ts';
import { getLocal, stripRevisions, type Db, type PullGuard } from '../store.ts';
import { requireOpen, type SessionCore } from '../session-core.ts';
import { RECORD_PREFIX, admitRecordDoc, parseRecordDocId, storedRecord, type ReplicaRecord } from './record-doc.ts';
import { ReplicaIndex } from './replica-index.ts';
import { listPatients, searchPatients } from './patients.ts';
import { startsFromScratch, sweepHeld } from './scope-sweep.ts';
import { recordDocId } from '../../validators/record.ts';
import { pullReplicaOnce, replicaPullConnector, type ReplicaPullOptions, type ReplicaPullResult } from './replica-pull.ts';
import type { PatientHit, PatientQuery } from './patient-search.ts';

const STATE_ID = '_local/ferry-replica';

/** The replica while the store is unlocked: dropped on lock. */
export interface OpenReplica {
  db: Db;
  index: ReplicaIndex;
  loop: ConnectionLoop;
  /** Reads of pulled record batches, one batch after another. */
  applied: Promise<void>;
  lastPulledAt: string | null;
  /** Destroyed because the membership is gone: nothing is pulled or shown until the next unlock. */
  dropped: boolean;
}

export interface RecordsState {
  /** Records held (the user's facilities). */
  count: number;
  /** When a pull last caught up with the server (kept across restarts); null: never. */
  lastPulledAt: string | null;
  /** The live pull is connected. */
  live: boolean;
}

export interface RecordsControls {
  search(query: PatientQuery, options?: { limit?: number }): PatientHit[];
  list(options?: { limit?: number; offset?: number }): PatientHit[];
  readonly state: RecordsState;
  /** One pull now, not live (a "refresh" button, tests). */
  pull(): Promise<ReplicaPullResult>;
}

export interface ReplicaWiring {
  readonly controls: RecordsControls;
  /** The replica store's pull guard, for `openStore`. */
  readonly guard: PullGuard;
  /** Loads the index of a store that has just been unlocked, and builds its loop (not started). */
  open(db: Db): Promise<OpenReplica>;
  /** Starts the live pull of the unlocked replica (and clears a halt). */
  start(): void;
  /** Stops the live pull and waits for the batches being read. */
  stop(open: OpenReplica): Promise<void>;
  /** The membership is gone: stop, destroy the replica store, empty the index. */
  drop(): Promise<void>;
  /** The record the replica holds for a patient id. */
  record(id: string): ReplicaRecord | null;
  close(): Promise<void>;
}

interface ReplicaStateDoc {
  _id: typeof STATE_ID;
  _rev?: string;
  lastPulledAt: string;
}

export function createReplica(core: SessionCore, sync: SyncWiring): ReplicaWiring {
  const { options } = core;
  let halt: TenantMismatchSource | null = null;
  let reachable = true;
  let loopState: SyncState = { kind: 'stopped' };
  // Set when a pull asked for the feed from the beginning: it sends no scope-leaves, so once it has
  // caught up the held records are checked against the endpoint (scope-sweep.ts).
  let fromScratch = false;

  /**
   * The session's token transport (one single-flight refresh for `/sync` and `/replica`), with
   * this pull's own view of reachability and of a tenant mismatch.
   */
  const replicaFetch: FetchLike = async (input, init) => {
    let res: Response;
    if (startsFromScratch(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)) fromScratch = true;
    try {
      res = await sync.authFetch(input, init);
    } catch (err) {
      if (!(err instanceof Error && err.name === 'AbortError')) reachable = false;
      throw err;
    }
    reachable = true;
    if (res.status === 403) {
      const code = await res
        .clone()
        .json()
        .then((b: unknown) => (typeof b === 'object' && b !== null ? (b as { code?: unknown }).code : undefined))
        .catch(() => undefined);
      if (code === 'TENANT_MISMATCH') halt = await mismatchSource();
    }
    return res;
  };
  async function mismatchSource(): Promise<TenantMismatchSource> {
    const claims = peekClaims(await options.tokens.getToken().catch(() => ''));
    if (typeof claims?.tid === 'string' && claims.tid !== options.tenant) return 'token-tenant';
    if (typeof claims?.owner === 'string' && claims.owner !== options.owner) return 'token-owner';
    return 'server';
  }
  const replicaUrl = options.replicaUrl ?? `${options.gatewayUrl.replace(/\/+$/, '')}/replica/${encodeURIComponent(options.tenant)}`;
  const remote = guardRemoteInfo(new options.PouchDB(replicaUrl, { skip_setup: true, fetch: replicaFetch } as PouchDB.Configuration.RemoteDatabaseConfiguration));

  const openReplica = (): OpenReplica | null => {
    const r = core.open?.replica;
    return r && !r.dropped ? r : null;
  };

  /** Pulled batches are read back once (the winning revision, decrypted once), in order. */
  function apply(ids: string[]): void {
    const r = openReplica();
    if (!r) return;
    r.applied = r.applied
      .then(async () => {
        if (openReplica() !== r) return;
        const res = await r.db.allDocs({ keys: ids, include_docs: true });
        if (openReplica() !== r) return;
        const changed: string[] = [];
        let invalid = 0;
        for (const row of res.rows) {
          const id = parseRecordDocId(row.key);
          if (!id) continue;
          const value = 'value' in row ? (row.value as { deleted?: boolean } | undefined) : undefined;
          if (value?.deleted) {
            if (r.index.remove(id)) changed.push(id);
            continue;
          }
          const record = 'doc' in row && row.doc ? storedRecord(stripRevisions(row.doc), core.tenant) : null;
          if (!record) {
            invalid++;
            continue;
          }
          r.index.set(record);
          changed.push(id);
        }
        if (invalid) core.events.emit('warning', { code: 'RECORD_INVALID', count: invalid });
        if (changed.length) core.events.emit('records', { changed });
      })
      .catch(() => undefined);
  }

  /** A pull caught up: remember when (a timestamp only, in `_local`, which is not encrypted). */
  function caughtUp(r: OpenReplica): void {
    const at = core.now().toISOString();
    r.lastPulledAt = at;
    r.applied = r.applied
      .then(async () => {
        if (openReplica() !== r) return;
        const existing = await getLocal<ReplicaStateDoc>(r.db, STATE_ID);
        await r.db.put({ _id: STATE_ID, lastPulledAt: at, ...(existing?._rev ? { _rev: existing._rev } : {}) } as unknown as PouchDB.Core.PutDocument<object>);
      })
      .catch(() => undefined);
  }

  /** After a pull from the beginning caught up: drop the held records the endpoint no longer serves. */
  function sweep(r: OpenReplica): void {
    r.applied = r.applied
      .then(async () => {
        if (openReplica() !== r) return;
        const held = [...r.index.values()].map((e) => recordDocId(e.record.id));
        const removed = await sweepHeld(r.db, remote, held);
        if (openReplica() !== r) return;
        const changed = removed.flatMap((docId) => {
          const id = parseRecordDocId(docId);
          return id && r.index.remove(id) ? [id] : [];
        });
        if (changed.length) core.events.emit('records', { changed });
      })
      .catch(() => {
        // Not swept this time (offline, say): the next pull from the beginning asks again.
        fromScratch = true;
      });
  }

  const pullOf = (db: Db, r: () => OpenReplica | null): ReplicaPullOptions => ({
    db,
    remote,
    batchSize: options.batchSize ?? DEFAULT_BATCH_SIZE,
    halted: () => halt,
    reachable: () => reachable,
    caughtUp: () => {
      const open = r();
      if (!open) return;
      caughtUp(open);
      if (fromScratch) {
        fromScratch = false;
        sweep(open);
      }
    },
  });

  const wiring: ReplicaWiring = {
    guard: {
      admit: admitRecordDoc(core.tenant),
      onDropped: ({ dropped }) => core.events.emit('warning', { code: 'REPLICA_GUARD_DROPPED', count: dropped }),
      onStored: apply,
    },
    async open(db) {
      const index = new ReplicaIndex();
      let invalid = 0;
      // In pages, so the decrypted docs of a large replica are not all held at once.
      for (let after: string | null = null; ; ) {
        const page: Awaited<ReturnType<typeof readPage>> = await readPage(db, after);
        for (const doc of page.docs) {
          const record = storedRecord(doc, core.tenant);
          if (record) index.set(record);
          else invalid++;
        }
        if (page.last === null) break;
        after = page.last;
      }
      if (invalid) core.events.emit('warning', { code: 'RECORD_INVALID', count: invalid });
      const state = await getLocal<ReplicaStateDoc>(db, STATE_ID);
      const opened: OpenReplica = {
        db,
        index,
        applied: Promise.resolve(),
        lastPulledAt: state?.lastPulledAt ?? null,
        dropped: false,
        loop: new ConnectionLoop({
          connect: replicaPullConnector(pullOf(db, () => (openReplica() === opened ? opened : null))),
          backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
          scheduler: core.scheduler,
          online: options.online === undefined ? browserOnlineSource() : options.online,
          onState: (s) => {
            loopState = s;
          },
        }),
      };
      return opened;
    },
    start() {
      const r = openReplica();
      if (!r) return;
      halt = null;
      r.loop.start();
    },
    async stop(r) {
      await r.loop.stop();
      await r.applied;
    },
    async drop() {
      const r = core.open?.replica;
      if (!r || r.dropped) return;
      await wiring.stop(r);
      halt = 'membership';
      const changed = [...r.index.values()].map((e) => e.record.id);
      r.dropped = true;
      r.index.clear();
      await r.db.destroy();
      if (changed.length) core.events.emit('records', { changed });
    },
    record: (id) => openReplica()?.index.get(id) ?? null,
    close: () => remote.close().catch(() => undefined),
    controls: {
      search: (query, opts) => {
        const open = requireOpen(core);
        return searchPatients(openReplica()?.index ?? EMPTY, open.index, query, opts);
      },
      list: (opts) => {
        const open = requireOpen(core);
        return listPatients(openReplica()?.index ?? EMPTY, open.index, opts);
      },
      get state(): RecordsState {
        const r = openReplica();
        return { count: r?.index.size ?? 0, lastPulledAt: r?.lastPulledAt ?? null, live: r !== null && r.loop.isRunning && (loopState.kind === 'idle' || loopState.kind === 'active') };
      },
      async pull() {
        requireOpen(core);
        const r = openReplica();
        if (!r) return { kind: 'halted', source: 'membership' };
        halt = null;
        const result = await pullReplicaOnce(pullOf(r.db, () => (openReplica() === r ? r : null)));
        await r.applied;
        return result;
      },
    },
  };
  return wiring;
}

const LOAD_PAGE = 1_000;

/** One page of record docs after `after` (decrypted, stale `_revisions` stripped); `last` is null at the end. */
async function readPage(db: Db, after: string | null): Promise<{ docs: unknown[]; last: string | null }> {
  const res = await db.allDocs({ include_docs: true, startkey: after ?? RECORD_PREFIX, endkey: `${RECORD_PREFIX}\uffff`, limit: LOAD_PAGE, skip: after === null ? 0 : 1 });
  const docs = res.rows.flatMap((row) => ('doc' in row && row.doc ? [stripRevisions(row.doc)] : []));
  return { docs, last: res.rows.length === LOAD_PAGE ? res.rows[res.rows.length - 1]!.id : null };
}

/** What a dropped replica shows: nothing. */
const EMPTY = new ReplicaIndex();
