// openSession(): composes the pieces of a session for one (tenant, user) on one device:
// lock (unlock, idle timeout, lock), the outbox writer (mutate), drafts, device decisions
// (conflicts, refusals, membership loss), sync wiring and leaving (close, wipe, sign-out). Each
// piece is a factory over the shared core (`session-core.ts`); this file only wires them.

import { OWNER_ID, TENANT_ID } from '../validators/identity.ts';
import { ClientError } from './errors.ts';
import { entityView, type EntityView, type MutationInfo } from './reconcile.ts';
import { withCandidates, type Conflict, type Resolution } from './conflicts.ts';
import type { SyncOnceResult, SyncState } from './sync.ts';
import { createCore, requireOpen, type MutateOptions, type MutateResult, type SessionEvents, type SessionOptions } from './session-core.ts';
import { createSyncWiring } from './sync-wiring.ts';
import { createLock } from './lock.ts';
import { createMutate } from './outbox-writer.ts';
import { createDrafts, type DraftControls } from './drafts.ts';
import { createDeviceDecisions, type ResolveResult } from './device-decisions.ts';
import { createLeave, type CloseResult, type SignOutResult } from './wipe.ts';
import { createReplica, type RecordsControls } from './records/replica.ts';

export type { SessionOptions, SessionEvents, MutateResult, MutateOptions } from './session-core.ts';
export type { ResolveResult } from './device-decisions.ts';
export type { CloseResult, SignOutResult } from './wipe.ts';
export type { RecordsControls, RecordsState } from './records/replica.ts';
export { guardRemoteInfo } from './sync-wiring.ts';

export interface Session {
  readonly tenant: string;
  readonly owner: string;
  /** This store's device id (set on first open). */
  readonly device: string;
  readonly locked: boolean;
  readonly closed: boolean;

  mutate(op: string, payload: unknown, target?: string | MutateOptions): Promise<MutateResult>;
  entity(id: string): EntityView;
  mutation(mid: string): MutationInfo | undefined;
  mutations(): MutationInfo[];
  conflicts(): Conflict[];
  resolve(mid: string, resolution: Resolution): Promise<ResolveResult>;

  drafts: DraftControls;

  /** The patients of the user's facilities (the replica) and their own pending ones: offline search and list. */
  records: RecordsControls;

  sync: {
    readonly state: SyncState;
    /** Start (or resume after a tenant mismatch) live sync. */
    start(): void;
    stop(): Promise<void>;
    /** One push + one pull, not live. */
    once(): Promise<SyncOnceResult>;
    /** Retry now instead of waiting for the backoff. */
    kick(): void;
  };

  /** The user's membership in this tenant is gone: queued mutations become local `rejected` / TENANT_MISMATCH. */
  membershipRevoked(): Promise<{ rejected: number }>;

  on<K extends keyof SessionEvents>(event: K, listener: (value: SessionEvents[K]) => void): () => void;

  /** Counts as activity for the idle timeout. */
  touch(): void;
  /** Stops replication, then drops the key and the decrypted index from memory. */
  lock(): Promise<void>;
  unlock(passphrase: string): Promise<void>;
  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void>;
  /** Mutations whose outcome the device has not received yet. */
  unsynced(): Promise<number>;
  /** Logout: closes the store, keeping it on disk. With unsynced mutations, needs `{ confirm: true }`. */
  close(options?: { confirm?: boolean }): Promise<CloseResult>;
  /** Destroys the local database. With unsynced mutations, needs `{ confirm: true }`. */
  wipe(options?: { confirm?: boolean }): Promise<CloseResult>;
  /**
   * Device sign-out: stops sync and closes the store (or destroys it with `wipe: true`), revokes the
   * session on the server (`POST /auth/revoke`, RFC 7009 style) and clears the token provider's
   * tokens. With unsynced mutations, needs `{ confirm: true }`, and nothing happens without it.
   */
  signOut(options?: { confirm?: boolean; wipe?: boolean }): Promise<SignOutResult>;
}

export async function openSession(options: SessionOptions): Promise<Session> {
  if (!TENANT_ID.test(options.tenant)) throw new ClientError('INVALID_ARGUMENT', 'tenant is not a valid tenant id');
  if (!OWNER_ID.test(options.owner)) throw new ClientError('INVALID_ARGUMENT', 'owner is not a valid owner id');
  const core = createCore(options);
  const mutate = createMutate(core);
  const lookup = (id: string) => replica.record(id);
  const decisions = createDeviceDecisions(core, mutate, lookup);
  const sync = createSyncWiring(core, (docId, reason) => void decisions.onDenied(docId, reason));
  const replica = createReplica(core, sync);
  const lock = createLock(core, sync, replica);
  const leave = createLeave(core, sync, lock, replica);
  await lock.unlockWith(options.passphrase);

  return {
    tenant: core.tenant,
    owner: core.owner,
    get device() {
      return core.deviceId;
    },
    get locked() {
      return !core.closed && core.open === null;
    },
    get closed() {
      return core.closed;
    },
    mutate,
    entity: (id) => {
      const open = requireOpen(core);
      return entityView(id, open.index.forEntity(id), replica.record(id));
    },
    mutation: (mid) => requireOpen(core).index.info(mid),
    mutations: () => requireOpen(core).index.all(),
    conflicts: decisions.conflicts,
    resolve: decisions.resolve,
    drafts: createDrafts(core, mutate),
    records: replica.controls,
    // The replica's live pull runs whenever live sync does.
    sync: {
      get state() {
        return sync.controls.state;
      },
      start: () => {
        sync.controls.start();
        replica.start();
      },
      stop: async () => {
        const open = core.open;
        await Promise.all([sync.controls.stop(), open ? replica.stop(open.replica) : undefined]);
      },
      once: () => sync.controls.once(),
      kick: () => {
        sync.controls.kick();
        core.open?.replica.loop.kick();
      },
    },
    async membershipRevoked() {
      requireOpen(core);
      await Promise.all([sync.haltForMembership(), replica.drop()]);
      return { rejected: await decisions.rejectQueued() };
    },
    // A conflict reported by a pull names its duplicate candidates by id: resolve them here.
    on: (event, listener) =>
      event === 'conflict'
        ? core.events.on('conflict', (c) => (listener as (value: Conflict) => void)(withCandidates(c, lookup)))
        : core.events.on(event, listener),
    touch: lock.touch,
    lock: lock.lock,
    unlock: lock.unlock,
    changePassphrase: lock.changePassphrase,
    unsynced: leave.unsynced,
    close: leave.close,
    wipe: leave.wipe,
    signOut: leave.signOut,
  };
}

/** Tears down the current tenant's replication and closes it (its queue stays on disk), then opens the next. */
export async function switchTenant(current: Session, next: SessionOptions): Promise<{ session: Session; leftQueued: number }> {
  await current.sync.stop();
  const closed = await current.close({ confirm: true });
  const session = await openSession(next);
  return { session, leftQueued: closed.unsynced };
}
