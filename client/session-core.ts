// What the pieces of a session share: its options, its events, the two serialisers, and the
// unlocked store (null while locked or closed). `session.ts` builds one and hands it to each piece.

import type { ErrorCode, FieldError } from '../validators/codes.ts';
import { ClientError } from './errors.ts';
import { Emitter } from './emitter.ts';
import type { BackoffOptions } from './backoff.ts';
import type { FetchLike, TokenProvider } from './auth-fetch.ts';
import type { Db, PouchStatic, StoreConfig } from './store.ts';
import type { LocalIndex, MutationInfo } from './reconcile.ts';
import type { Conflict } from './conflicts.ts';
import { realScheduler, type ConnectionLoop, type OnlineSource, type Scheduler, type SyncState } from './sync.ts';
import { serialQueue, type Serial } from './serial.ts';
import type { OpenReplica } from './records/replica.ts';

export interface SessionOptions {
  /** Base URL of the Ferry gateway, e.g. `https://ferry.example.org`. */
  gatewayUrl: string;
  tenant: string;
  /** The token's `owner` claim (the user's opaque Ferry id). */
  owner: string;
  /** Unlocks the local data key. Any non-empty passphrase or PIN. */
  passphrase: string;
  tokens: TokenProvider;
  /** A PouchDB constructor with a storage adapter, http and replication (see `node.ts` / `browser.ts`). */
  PouchDB: PouchStatic;
  /** `idb` in browsers; `leveldb` or `memory` in Node. */
  adapter: string;
  /** Directory prefix for leveldb (with trailing slash). */
  prefix?: string;
  /** Defaults to `{gatewayUrl}/sync/{tenant}`. */
  syncUrl?: string;
  /** The records replica (DESIGN §8). Defaults to `{gatewayUrl}/replica/{tenant}`. */
  replicaUrl?: string;
  fetch?: FetchLike;
  now?: () => Date;
  scheduler?: Scheduler;
  /** Defaults to the browser's online/offline events when present, else none (failures tell). */
  online?: OnlineSource | null;
  backoff?: Partial<BackoffOptions>;
  /** PBKDF2 iterations for a new keyring (default 600,000). */
  kdfIterations?: number;
  /** Lock after this long without a call or `touch()`. null: never. Default 15 minutes. */
  idleTimeoutMs?: number | null;
  /** Start live sync on open and after unlock. Default true. */
  autoSync?: boolean;
  /** Docs per replication batch, push and pull. Default `DEFAULT_BATCH_SIZE` (500, see `sync.ts`). */
  batchSize?: number;
  /** At most one retention acknowledgement write per this many ms (`acknowledgement.ts`, default 30 s). */
  acknowledgeEveryMs?: number;
}

export type MutateResult =
  | { ok: true; mid: string; entity: string; seq: number }
  | { ok: false; code: 'VALIDATION_FAILED' | 'UNKNOWN_OP' | 'BASE_VERSION_UNKNOWN'; errors: FieldError[] };

export interface MutateOptions {
  /** Required for updates; for creates, omit to mint a new id (`pat_` + UUIDv7). */
  entity?: string;
  /** Overrides the computed base version (e.g. after reading the record online). */
  baseVersion?: number;
  /** The conflicted or rejected mutation this one replaces. */
  resolves?: string;
}

export type SessionEvents = {
  /** A mutation was queued or its state changed. */
  status: MutationInfo;
  /** A conflict arrived from the server. */
  conflict: Conflict;
  sync: SyncState;
  lock: { locked: boolean };
  /** A replica pull changed these patients (ids): new, updated, or gone from the user's scope. */
  records: { changed: string[] };
  /** Something was ignored for safety; counts only, never content. */
  warning: { code: 'PULL_GUARD_DROPPED' | 'STATUS_INVALID' | 'REPLICA_GUARD_DROPPED' | 'RECORD_INVALID'; count: number };
};

/** `_local/ferry-device`: this store's device id and the last `seq` handed out. */
export interface DeviceDoc {
  _id: string;
  _rev?: string;
  device: string;
  seq: number;
}

/** A `mutate` call waiting for the next flush. */
export interface PendingWrite {
  op: string;
  payload: unknown;
  opts: MutateOptions;
  resolve(result: MutateResult): void;
  reject(err: unknown): void;
}

/** The store while it is unlocked: everything here is dropped on lock. */
export interface Unlocked {
  db: Db;
  index: LocalIndex;
  device: DeviceDoc;
  loop: ConnectionLoop;
  /** Reads of pulled status docs, one batch after another. */
  pulled: Promise<void>;
  /** `mutate` calls not written yet. */
  writes: PendingWrite[];
  /** The records replica: its store, its in-memory index, its live pull. */
  replica: OpenReplica;
}

export interface SessionCore {
  readonly options: SessionOptions;
  readonly tenant: string;
  readonly owner: string;
  readonly store: StoreConfig;
  readonly now: () => Date;
  readonly scheduler: Scheduler;
  readonly events: Emitter<SessionEvents>;
  /** Store writes, one at a time. */
  readonly exclusive: Serial;
  /** lock/unlock/close/wipe, one at a time. */
  readonly lifecycle: Serial;
  /** null while locked or closed. */
  open: Unlocked | null;
  closed: boolean;
  deviceId: string;
  /** Counts as activity for the idle timeout (set by the lock piece). */
  activity(): void;
}

export function createCore(options: SessionOptions): SessionCore {
  return {
    options,
    tenant: options.tenant,
    owner: options.owner,
    store: { PouchDB: options.PouchDB, adapter: options.adapter, prefix: options.prefix, tenant: options.tenant, owner: options.owner },
    now: options.now ?? (() => new Date()),
    scheduler: options.scheduler ?? realScheduler,
    events: new Emitter<SessionEvents>(),
    exclusive: serialQueue(),
    lifecycle: serialQueue(),
    open: null,
    closed: false,
    deviceId: '',
    activity: () => undefined,
  };
}

/** The unlocked store, or `ClientError('CLOSED' | 'LOCKED')`. Counts as activity. */
export function requireOpen(core: SessionCore): Unlocked {
  if (core.closed) throw new ClientError('CLOSED');
  if (!core.open) throw new ClientError('LOCKED');
  core.activity();
  return core.open;
}

export const fieldError = (path: string, message: string): FieldError[] => [{ path, message }];

export type NoteInput = { kind: 'rejected' | 'discarded'; code: ErrorCode | null; errors?: FieldError[] };
