// Sync wiring: the gateway's `/sync/{tenant}` as a PouchDB remote behind the token transport, the
// connection loop for the unlocked store, and the `session.sync` controls. What one connection
// does is `sync.ts`; how a token travels is `auth-fetch.ts`.

import { DEFAULT_BACKOFF } from './backoff.ts';
import { createAuthFetch, type AuthFetch, type FetchLike, type TenantMismatchSource } from './auth-fetch.ts';
import { withHeartbeatWatch } from './heartbeat-watch.ts';
import { withTransientRetry } from './transient-retry.ts';
import { withCheckpointMemory } from './checkpoint-memory.ts';
import { createAckWriter, DEFAULT_ACKNOWLEDGE_EVERY_MS, writeAcked, type AckWriter } from './acknowledgement.ts';
import { dropAcknowledged } from './statuses.ts';
import { ConnectionLoop, DEFAULT_BATCH_SIZE, browserOnlineSource, replicationConnector, syncOnce, type ReplicationOptions, type SyncOnceResult, type SyncState } from './sync.ts';
import type { Db } from './store.ts';
import { requireOpen, type SessionCore } from './session-core.ts';

export interface SyncControls {
  readonly state: SyncState;
  /** Start (or resume after a tenant mismatch) live sync. */
  start(): void;
  stop(): Promise<void>;
  /** One push + one pull, not live. */
  once(): Promise<SyncOnceResult>;
  /** Retry now instead of waiting for the backoff. */
  kick(): void;
}

export interface SyncWiring {
  /** The session's `sync` member. */
  readonly controls: SyncControls;
  /** The authenticated transport every gateway request of this session goes through. */
  readonly authFetch: AuthFetch;
  /** A live loop for a store that has just been unlocked (not started). */
  loopFor(db: Db): ConnectionLoop;
  /** Starts the loop of the unlocked store (and clears a halt), if it is unlocked. */
  start(): void;
  /** Whether live sync should run after the next unlock. */
  wanted: boolean;
  /** Stops for good until `start()`: the membership is gone. */
  haltForMembership(): Promise<void>;
  /** The live loop stopped on lock: report it. */
  reportStopped(): void;
  /** Closes the remote handle (the session is closing). */
  close(): Promise<void>;
  /** The retention acknowledgements of this session (`acknowledgement.ts`). */
  readonly acks: AckWriter;
}

/** A fetch that a connection which failed is sent once more through, and whose silent live pulls fail. */
export function gatewayTransport(fetch: FetchLike | undefined): FetchLike {
  return withHeartbeatWatch(withTransientRetry(fetch ?? ((input, init) => globalThis.fetch(input, init))));
}

export function createSyncWiring(core: SessionCore, onDenied: (docId: string, reason: string) => void): SyncWiring {
  const { options } = core;
  let halt: TenantMismatchSource | null = null;
  let reachable = true;
  let state: SyncState = { kind: 'stopped' };
  const setState = (next: SyncState): void => {
    state = next;
    core.events.emit('sync', next);
  };
  const authFetch = createAuthFetch({
    fetch: gatewayTransport(options.fetch),
    tokens: options.tokens,
    tenant: options.tenant,
    owner: options.owner,
    onTenantMismatch: (source) => {
      halt = source;
    },
    onReachability: (ok) => {
      reachable = ok;
    },
  });
  const syncUrl = options.syncUrl ?? `${options.gatewayUrl.replace(/\/+$/, '')}/sync/${encodeURIComponent(options.tenant)}`;
  const checkpoints = withCheckpointMemory(authFetch, syncUrl);
  const remote = rememberRemote(
    alwaysBulkGet(new options.PouchDB(syncUrl, { skip_setup: true, fetch: checkpoints.fetch } as PouchDB.Configuration.RemoteDatabaseConfiguration), checkpoints.fetch, syncUrl),
  );

  const acks = createAckWriter({
    fetch: authFetch,
    dbUrl: syncUrl,
    device: () => core.open?.device.device ?? null,
    scheduler: core.scheduler,
    everyMs: options.acknowledgeEveryMs ?? DEFAULT_ACKNOWLEDGE_EVERY_MS,
    reconciled: () => core.open?.pulled ?? Promise.resolve(),
    // A store write like any other: serialised with `mutate`, and only on the store that is open.
    acknowledged: (counter) =>
      core.exclusive(async () => {
        const open = core.open;
        if (!open) return;
        await writeAcked(open.db, counter);
        await dropAcknowledged(core, open.db, counter);
      }),
  });

  /** What live sync and one-shot sync share: the stores, the owner and how outcomes come back. */
  const replicationOf = (db: Db): ReplicationOptions => ({
    db,
    remote: remote.db,
    owner: core.owner,
    batchSize: options.batchSize ?? DEFAULT_BATCH_SIZE,
    onDenied,
    halted: () => halt,
    reachable: () => reachable,
    newConnection: () => {
      checkpoints.forget();
      remote.newConnection();
    },
    sideRestart: () => checkpoints.forget(),
    onPulled: (lastSeq) => acks.pulled(lastSeq),
    backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
    scheduler: core.scheduler,
  });

  const wiring: SyncWiring = {
    authFetch,
    acks,
    wanted: options.autoSync ?? true,
    loopFor: (db) =>
      new ConnectionLoop({
        connect: replicationConnector(replicationOf(db)),
        backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
        scheduler: core.scheduler,
        online: options.online === undefined ? browserOnlineSource() : options.online,
        onState: setState,
      }),
    start() {
      const open = core.open;
      if (!open) return;
      halt = null;
      wiring.wanted = true;
      open.loop.start();
    },
    async haltForMembership() {
      await core.open?.loop.stop();
      halt = 'membership';
      setState({ kind: 'tenant-mismatch', source: 'membership' });
    },
    reportStopped: () => setState({ kind: 'stopped' }),
    close: () => {
      acks.stop();
      return remote.db.close().catch(() => undefined);
    },
    controls: {
      get state(): SyncState {
        return state;
      },
      start: () => {
        requireOpen(core);
        wiring.start();
      },
      stop: async () => {
        wiring.wanted = false;
        await core.open?.loop.stop();
      },
      once: async () => {
        const open = requireOpen(core);
        halt = null;
        return syncOnce(replicationOf(open.db));
      },
      kick: () => core.open?.loop.kick(),
    },
  };
  return wiring;
}

/**
 * PouchDB 9's replication asks the source for `info()` after every pulled batch (progress
 * bookkeeping) and never handles a failure there: a connection reset at that moment is an
 * unhandled rejection, which ends a Node process. Once one `info()` has succeeded, a failed one
 * answers the last known info instead; the next request notices the outage the ordinary way.
 */
export function guardRemoteInfo(remote: Db): Db {
  const info = remote.info.bind(remote);
  let last: PouchDB.Core.DatabaseInfo | undefined;
  remote.info = (() =>
    info().then(
      (fresh) => (last = fresh),
      (err: unknown) => {
        if (last) return last;
        throw err;
      },
    )) as Db['info'];
  return remote;
}

export interface RememberedRemote {
  db: Db;
  /** A new connection: its first `info()` goes to the gateway again. */
  newConnection(): void;
}

/**
 * What the remote handle need not ask the gateway twice:
 * - `id()`, the server's uuid (`GET /sync/`), which names the replication. Ferry's gateway answers
 *   the same uuid from every process (`gateway/sync/router.ts`), so the first answer holds for the
 *   session. PouchDB asked for it at every start of each side (a seventh of the device's requests in
 *   the chaos harness), and when that request failed it named the replication after the URL
 *   instead, a new replication id whose checkpoints start from 0. Only an id built from a uuid is
 *   remembered; PouchDB's fallback (the URL) is not.
 * - `info()`, which PouchDB's replication asks for at its start and after every pulled batch, only
 *   for its progress figures (`activeTasks`). The first call of each connection goes to the gateway;
 *   later ones answer what it said. A failed one answers the last known info (`guardRemoteInfo`).
 */
export function rememberRemote(remote: Db): RememberedRemote {
  const db = guardRemoteInfo(remote);
  // Boundary: `id()` is PouchDB's (the replication's naming call), missing from @types/pouchdb-core.
  const named = db as unknown as { id(): Promise<string> };
  const id = named.id.bind(db);
  let knownId: string | null = null;
  named.id = () => {
    if (knownId !== null) return Promise.resolve(knownId);
    return id().then((fresh) => {
      if (!fresh.includes('://')) knownId = fresh;
      return fresh;
    });
  };
  const info = db.info.bind(db);
  let known: Promise<PouchDB.Core.DatabaseInfo> | null = null;
  db.info = (() => {
    if (known) return known;
    const asked = info();
    known = asked;
    asked.catch(() => {
      if (known === asked) known = null;
    });
    return asked;
  }) as Db['info'];
  return {
    db,
    newConnection: () => {
      known = null;
    },
  };
}

/**
 * PouchDB's HTTP adapter decides once per process and database URL whether the server has
 * `_bulk_get`, from the first call: when that one fails for any reason (a reset, a 502 while a
 * gateway restarts), it falls back for good to one `GET {id}?open_revs=…` per doc (STACK-NOTES trap
 * 13), so every later pulled batch of N statuses costs N requests instead of one. The gateway always
 * serves `_bulk_get` (DESIGN §5), so this remote always sends it; a failed one fails the batch like
 * any other request (the side restarts, `afterSideFailure`).
 */
export function alwaysBulkGet(remote: Db, fetch: FetchLike, dbUrl: string): Db {
  const url = `${dbUrl.replace(/\/+$/, '')}/_bulk_get`;
  remote.bulkGet = (async (opts: PouchDB.Core.BulkGetOptions & { latest?: boolean }) => {
    const params = new URLSearchParams();
    if (opts.revs) params.set('revs', 'true');
    if (opts.latest) params.set('latest', 'true');
    const query = params.size ? `?${params.toString()}` : '';
    const res = await fetch(`${url}${query}`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify({ docs: opts.docs }) });
    const body = (await res.json().catch(() => null)) as { results?: unknown; error?: unknown; reason?: unknown } | null;
    if (!res.ok || !body || !Array.isArray(body.results)) {
      // The shape of a PouchDB HTTP error, which the replication reports as `error`.
      throw Object.assign(new Error(typeof body?.reason === 'string' ? body.reason : 'bulk_get failed'), { status: res.status, name: typeof body?.error === 'string' ? body.error : 'bulk_get_failed' });
    }
    return body as PouchDB.Core.BulkGetResponse<object>;
  }) as Db['bulkGet'];
  return remote;
}
