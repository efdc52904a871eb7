// openSession(): wires the store, outbox, drafts, reconcile, conflicts and sync into one object
// for one (tenant, user) on one device.

import { v7 as uuidv7 } from 'uuid';
import { findOp } from '../validators/manifest.ts';
import { parseWith } from '../validators/issues.ts';
import { ENTITY_ID, MUTATION_ID, parseInboxDocId, statusDocSchema, type MutationDoc } from '../validators/mutation.ts';
import { OWNER_ID, TENANT_ID } from '../validators/identity.ts';
import { isErrorCode, type ErrorCode, type FieldError } from '../validators/codes.ts';
import { ClientError } from './errors.ts';
import { Emitter } from './emitter.ts';
import { DEFAULT_BACKOFF, type BackoffOptions } from './backoff.ts';
import { createAuthFetch, type FetchLike, type TenantMismatchSource, type TokenProvider } from './auth-fetch.ts';
import { withHeartbeatWatch } from './heartbeat-watch.ts';
import { withTransientRetry } from './transient-retry.ts';
import { changePassphrase as rewrapKeyring, getLocal, localDbName, openStore, rawDb, readPrefix, stripRevisions, type Db, type PouchStatic, type StoreConfig } from './store.ts';
import { chain, mutationDoc } from './outbox.ts';
import { LocalIndex, entityView, isPending, localNoteId, mutationInfo, type EntityView, type LocalNoteDoc, type MutationInfo } from './reconcile.ts';
import { planResolution, toConflict, type Conflict, type Resolution } from './conflicts.ts';
import { revokeOnServer } from './sign-out.ts';
import { getDraft, listDrafts, removeDraft, saveDraft, type Draft, type DraftInput } from './drafts.ts';
import { ConnectionLoop, DEFAULT_BATCH_SIZE, browserOnlineSource, realScheduler, replicationConnector, syncOnce, type OnlineSource, type Scheduler, type SyncOnceResult, type SyncState } from './sync.ts';

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

export type CloseResult = { ok: true; unsynced: number } | { ok: false; reason: 'unsynced'; unsynced: number };

/** `revoked`: the gateway took the revocation; false when it could not be reached (the tokens are cleared anyway). */
export type SignOutResult = { ok: true; unsynced: number; revoked: boolean } | { ok: false; reason: 'unsynced'; unsynced: number };

export type ResolveResult = MutateResult | { ok: true; discarded: string } | { ok: false; code: 'CANNOT_RESOLVE'; reason: string; errors: FieldError[] };

export type SessionEvents = {
  /** A mutation was queued or its state changed. */
  status: MutationInfo;
  /** A conflict arrived from the server. */
  conflict: Conflict;
  sync: SyncState;
  lock: { locked: boolean };
  /** Something was ignored for safety; counts only, never content. */
  warning: { code: 'PULL_GUARD_DROPPED' | 'STATUS_INVALID'; count: number };
};

interface DeviceDoc {
  _id: string;
  _rev?: string;
  device: string;
  seq: number;
}
const DEVICE_ID = '_local/ferry-device';

/** A `mutate` call waiting for the next flush. */
interface PendingWrite {
  op: string;
  payload: unknown;
  opts: MutateOptions;
  resolve(result: MutateResult): void;
  reject(err: unknown): void;
}

interface PlannedWrite {
  write: PendingWrite;
  doc: MutationDoc;
  mid: string;
}

interface Open {
  db: Db;
  index: LocalIndex;
  device: DeviceDoc;
  loop: ConnectionLoop;
  /** Reads of pulled status docs, one batch after another. */
  pulled: Promise<void>;
  /** `mutate` calls not written yet. */
  writes: PendingWrite[];
}

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

  drafts: {
    save(input: DraftInput): Promise<Draft>;
    get(id: string): Promise<Draft | null>;
    list(): Promise<Draft[]>;
    remove(id: string): Promise<boolean>;
    /** Validates and queues the draft as a mutation; the draft is removed when that works. */
    submit(id: string, options?: Omit<MutateOptions, 'entity'>): Promise<MutateResult | { ok: false; code: 'NO_SUCH_DRAFT'; errors: FieldError[] }>;
  };

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

const fieldError = (path: string, message: string): FieldError[] => [{ path, message }];

export async function openSession(options: SessionOptions): Promise<Session> {
  if (!TENANT_ID.test(options.tenant)) throw new ClientError('INVALID_ARGUMENT', 'tenant is not a valid tenant id');
  if (!OWNER_ID.test(options.owner)) throw new ClientError('INVALID_ARGUMENT', 'owner is not a valid owner id');
  const session = new SessionImpl(options);
  await session.init(options.passphrase);
  return session;
}

/** Tears down the current tenant's replication and closes it (its queue stays on disk), then opens the next. */
export async function switchTenant(current: Session, next: SessionOptions): Promise<{ session: Session; leftQueued: number }> {
  await current.sync.stop();
  const closed = await current.close({ confirm: true });
  const session = await openSession(next);
  return { session, leftQueued: closed.unsynced };
}

class SessionImpl implements Session {
  readonly tenant: string;
  readonly owner: string;
  private deviceId = '';
  private open: Open | null = null;
  private isClosed = false;
  private wasSyncing: boolean;
  private halt: TenantMismatchSource | null = null;
  private reachable = true;
  private idleTimer: unknown = null;
  private serial: Promise<unknown> = Promise.resolve();
  /** lock/unlock/close/wipe run one at a time, so no second handle opens while one is closing. */
  private lifecycle: Promise<unknown> = Promise.resolve();
  private readonly events = new Emitter<SessionEvents>();
  private readonly store: StoreConfig;
  private readonly now: () => Date;
  private readonly scheduler: Scheduler;
  private readonly remote: Db;
  private readonly authFetch: ReturnType<typeof createAuthFetch>;
  private syncStateValue: SyncState = { kind: 'stopped' };

  constructor(private readonly options: SessionOptions) {
    this.tenant = options.tenant;
    this.owner = options.owner;
    this.store = { PouchDB: options.PouchDB, adapter: options.adapter, prefix: options.prefix, tenant: options.tenant, owner: options.owner };
    this.now = options.now ?? (() => new Date());
    this.scheduler = options.scheduler ?? realScheduler;
    this.wasSyncing = options.autoSync ?? true;
    // A request whose connection failed is sent once more (client/transient-retry.ts); a live pull
    // whose heartbeats stop is a dead connection (client/heartbeat-watch.ts), failed so the loop reconnects.
    const baseFetch: FetchLike = withHeartbeatWatch(withTransientRetry(options.fetch ?? ((input, init) => globalThis.fetch(input, init))));
    this.authFetch = createAuthFetch({
      fetch: baseFetch,
      tokens: options.tokens,
      tenant: options.tenant,
      owner: options.owner,
      onTenantMismatch: (source) => {
        this.halt = source;
      },
      onReachability: (ok) => {
        this.reachable = ok;
      },
    });
    const syncUrl = options.syncUrl ?? `${options.gatewayUrl.replace(/\/+$/, '')}/sync/${encodeURIComponent(options.tenant)}`;
    this.remote = guardRemoteInfo(new options.PouchDB(syncUrl, { skip_setup: true, fetch: this.authFetch } as PouchDB.Configuration.RemoteDatabaseConfiguration));
  }

  /** What live sync and one-shot sync share: the stores, the owner and how outcomes come back. */
  private replicationOf(db: Db) {
    return {
      db,
      remote: this.remote,
      owner: this.owner,
      batchSize: this.options.batchSize ?? DEFAULT_BATCH_SIZE,
      onDenied: (docId: string, reason: string) => void this.onDenied(docId, reason),
      halted: () => this.halt,
      reachable: () => this.reachable,
    };
  }

  get device(): string {
    return this.deviceId;
  }
  get locked(): boolean {
    return !this.isClosed && this.open === null;
  }
  get closed(): boolean {
    return this.isClosed;
  }

  async init(passphrase: string): Promise<void> {
    await this.unlockWith(passphrase);
  }

  // ---- lifecycle ----

  private async unlockWith(passphrase: string): Promise<void> {
    // Replication (the only writer of status docs) starts after `this.open` is set below.
    let opened: Open | null = null;
    const { db } = await openStore(this.store, {
      passphrase,
      kdfIterations: this.options.kdfIterations,
      now: this.now,
      onPullDropped: ({ dropped }) => this.events.emit('warning', { code: 'PULL_GUARD_DROPPED', count: dropped }),
      onPulled: (ids) => {
        if (opened) this.readPulled(opened, ids);
      },
    });
    try {
      let device = (await getLocal<DeviceDoc>(db, DEVICE_ID)) ?? { _id: DEVICE_ID, device: `dev-${uuidv7().replace(/-/g, '').slice(-16)}`, seq: 0 };
      if (!device._rev) {
        try {
          device._rev = (await db.put(device as unknown as PouchDB.Core.PutDocument<object>)).rev;
        } catch (err) {
          if ((err as { status?: number }).status !== 409) throw err;
          device = (await getLocal<DeviceDoc>(db, DEVICE_ID))!;
        }
      }
      this.deviceId = device.device;
      const index = new LocalIndex();
      await this.load(db, index);
      // The device doc is written before each mutation doc, so it is ahead already; this only
      // makes sure no `seq` a stored mutation doc carries is ever handed out again.
      device = { ...device, seq: Math.max(device.seq, index.highestSeq()) };
      const loop = new ConnectionLoop({
        connect: replicationConnector(this.replicationOf(db)),
        backoff: { ...DEFAULT_BACKOFF, ...this.options.backoff },
        scheduler: this.scheduler,
        online: this.options.online === undefined ? browserOnlineSource() : this.options.online,
        onState: (state) => {
          this.syncStateValue = state;
          this.events.emit('sync', state);
        },
      });
      opened = { db, index, device, loop, pulled: Promise.resolve(), writes: [] };
      this.open = opened;
    } catch (err) {
      await db.close().catch(() => undefined);
      throw err;
    }
    this.events.emit('lock', { locked: false });
    this.armIdle();
    if (this.wasSyncing) this.startSync();
  }

  private async load(db: Db, index: LocalIndex): Promise<void> {
    const p = (kind: string) => `${kind}:${this.owner}:`;
    for (const doc of await readPrefix<MutationDoc>(db, p('m'))) {
      const ref = parseInboxDocId(doc._id);
      if (ref) index.addMutation(doc, ref.mid);
    }
    let invalid = 0;
    for (const raw of await readPrefix<unknown>(db, p('s'))) {
      const parsed = statusDocSchema.safeParse(raw);
      if (parsed.success) index.setStatus(parsed.data);
      else invalid++;
    }
    if (invalid) this.events.emit('warning', { code: 'STATUS_INVALID', count: invalid });
    for (const note of await readPrefix<LocalNoteDoc>(db, p('l'))) index.setNote(note);
  }

  /**
   * Status docs arrive only by pull; the pull guard names the ones it has just stored. Each batch
   * is read back once (decrypted once, the winning revision), in the order the batches landed.
   */
  private readPulled(open: Open, ids: string[]): void {
    const { db, index } = open;
    open.pulled = open.pulled
      .then(async () => {
        if (this.open !== open) return;
        const res = await db.allDocs({ keys: ids, include_docs: true });
        if (this.open !== open) return;
        let invalid = 0;
        for (const row of res.rows) {
          if (!('doc' in row) || !row.doc) continue;
          const parsed = statusDocSchema.safeParse(stripRevisions(row.doc));
          if (!parsed.success) {
            invalid++;
            continue;
          }
          if (!index.setStatus(parsed.data)) continue;
          const info = index.info(parsed.data.mutation);
          if (!info) continue;
          this.events.emit('status', info);
          const conflict = toConflict(info);
          if (conflict) this.events.emit('conflict', conflict);
        }
        if (invalid) this.events.emit('warning', { code: 'STATUS_INVALID', count: invalid });
      })
      .catch(() => undefined);
  }

  private requireOpen(): Open {
    if (this.isClosed) throw new ClientError('CLOSED');
    if (!this.open) throw new ClientError('LOCKED');
    this.touch();
    return this.open;
  }

  /** Runs writes one at a time, so `seq` and `after` never race. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serial.then(fn, fn);
    this.serial = run.catch(() => undefined);
    return run;
  }

  touch(): void {
    if (!this.open) return;
    this.armIdle();
  }

  private armIdle(): void {
    if (this.idleTimer !== null) this.scheduler.clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const ms = this.options.idleTimeoutMs === undefined ? 15 * 60_000 : this.options.idleTimeoutMs;
    if (ms === null || !this.open) return;
    this.idleTimer = this.scheduler.setTimeout(() => {
      this.idleTimer = null;
      void this.lock();
    }, ms);
  }

  private inLifecycle<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lifecycle.then(fn, fn);
    this.lifecycle = run.catch(() => undefined);
    return run;
  }

  lock(): Promise<void> {
    return this.inLifecycle(() => this.lockNow());
  }

  private async lockNow(): Promise<void> {
    const open = this.open;
    if (!open) return;
    if (this.idleTimer !== null) this.scheduler.clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.wasSyncing = open.loop.isRunning;
    // Replication first, so nothing reads or writes the store while the key goes away.
    await open.loop.stop();
    await open.pulled;
    await this.exclusive(async () => {
      this.open = null;
      open.index.clear();
      await open.db.close();
    });
    this.syncStateValue = { kind: 'stopped' };
    this.events.emit('sync', this.syncStateValue);
    this.events.emit('lock', { locked: true });
  }

  unlock(passphrase: string): Promise<void> {
    return this.inLifecycle(async () => {
      if (this.isClosed) throw new ClientError('CLOSED');
      if (this.open) return;
      await this.unlockWith(passphrase);
    });
  }

  async changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void> {
    const open = this.requireOpen();
    const name = await localDbName(this.tenant, this.owner);
    await this.exclusive(() => rewrapKeyring(open.db, name, oldPassphrase, newPassphrase, { now: this.now }));
  }

  // ---- outbox ----

  mutate(op: string, payload: unknown, target?: string | MutateOptions): Promise<MutateResult> {
    let open: Open;
    try {
      open = this.requireOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const opts: MutateOptions = typeof target === 'string' ? { entity: target } : (target ?? {});
    return new Promise<MutateResult>((resolve, reject) => {
      open.writes.push({ op, payload, opts, resolve, reject });
      // The first call waiting starts a flush; calls made before it runs join the same write.
      if (open.writes.length === 1) void this.exclusive(() => this.flushWrites(open));
    });
  }

  /**
   * Writes every mutation that is waiting, in call order: `seq` and `after` are planned one after
   * another (a later call sees the earlier ones of the same flush), the device doc takes the last
   * `seq`, then one `bulkDocs` stores the mutation docs. Each call resolves only after its doc is
   * stored. A failed device-doc write stores nothing and uses up no `seq`.
   */
  private async flushWrites(open: Open): Promise<void> {
    const batch = open.writes.splice(0);
    if (this.open !== open) {
      for (const w of batch) w.reject(new ClientError(this.isClosed ? 'CLOSED' : 'LOCKED'));
      return;
    }
    const planned: PlannedWrite[] = [];
    const queuedByEntity = new Map<string, MutationInfo[]>();
    let seq = open.device.seq;
    for (const w of batch) {
      const earlier = queuedByEntity.get(w.opts.entity ?? '') ?? [];
      let plan: ReturnType<SessionImpl['planMutation']>;
      try {
        plan = this.planMutation(open, w, seq + 1, earlier);
      } catch (err) {
        // E.g. an injected clock that throws: that call fails, the others go on.
        w.reject(err);
        continue;
      }
      if (!plan.ok) {
        w.resolve(plan);
        continue;
      }
      seq = plan.doc.seq;
      planned.push({ write: w, doc: plan.doc, mid: plan.mid });
      const list = queuedByEntity.get(plan.doc.entity) ?? [];
      list.push(mutationInfo(plan.doc, plan.mid, { kind: 'queued' }, null));
      queuedByEntity.set(plan.doc.entity, list);
    }
    if (planned.length === 0) return;
    let results: (PouchDB.Core.Response | PouchDB.Core.Error)[];
    try {
      const nextDevice = { ...open.device, seq };
      const saved = await open.db.put(nextDevice as unknown as PouchDB.Core.PutDocument<object>);
      open.device = { ...nextDevice, _rev: saved.rev };
      results = await open.db.bulkDocs(planned.map((p) => p.doc));
    } catch (err) {
      for (const p of planned) p.write.reject(err);
      return;
    }
    planned.forEach((p, i) => {
      const res = results[i];
      // A per-doc refusal of a new doc with a fresh UUIDv7 id (409, bad id, reserved field) cannot
      // come from docs built here; were one to happen, that call alone fails.
      if (!res || 'error' in res) {
        p.write.reject(res ?? new ClientError('INVALID_ARGUMENT', 'The mutation was not stored.'));
        return;
      }
      open.index.addMutation(p.doc, p.mid);
      this.events.emit('status', open.index.info(p.mid)!);
      p.write.resolve({ ok: true, mid: p.mid, entity: p.doc.entity, seq: p.doc.seq });
    });
  }

  /**
   * Checks one call and builds its doc (nothing is written here). The payload is parsed once, with
   * the op's schema from the manifest (the one the worker runs); the other fields are checked
   * where they come from, so the doc is not parsed again.
   */
  private planMutation(open: Open, w: PendingWrite, seq: number, queued: readonly MutationInfo[]): { ok: true; doc: MutationDoc; mid: string } | Extract<MutateResult, { ok: false }> {
    const { op, payload, opts } = w;
    const def = findOp(op);
    if (!def) return { ok: false, code: 'UNKNOWN_OP', errors: fieldError('op', 'is not in any module manifest') };
    const parsed = parseWith(def.schema, payload);
    if (!parsed.ok) return { ok: false, code: 'VALIDATION_FAILED', errors: parsed.errors };
    let entity = opts.entity;
    if (entity === undefined) {
      if (def.kind !== 'create') return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('entity', 'is required for an update') };
      entity = `${def.entityPrefix}_${uuidv7()}`;
    } else if (!ENTITY_ID.test(entity) || !entity.startsWith(`${def.entityPrefix}_`)) {
      return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('entity', 'has an invalid format') };
    }
    if (opts.resolves !== undefined && (!MUTATION_ID.test(opts.resolves) || !open.index.has(opts.resolves))) {
      return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('resolves', 'does not name a mutation of this device') };
    }
    if (opts.baseVersion !== undefined && (!Number.isInteger(opts.baseVersion) || opts.baseVersion < 1)) {
      return { ok: false, code: 'VALIDATION_FAILED', errors: fieldError('baseVersion', 'is too short or too small') };
    }
    const earlier = queued.length ? [...open.index.forEntity(entity), ...queued] : open.index.forEntity(entity);
    const chained = chain({ kind: def.kind, earlier, baseVersion: opts.baseVersion });
    if (!chained.ok) return { ok: false, code: 'BASE_VERSION_UNKNOWN', errors: fieldError('baseVersion', 'is unknown: read the record first or pass baseVersion') };
    const mid = uuidv7();
    const doc = mutationDoc({
      tenant: this.tenant,
      owner: this.owner,
      device: open.device.device,
      seq,
      mid,
      op,
      entity,
      after: chained.after,
      resolves: opts.resolves ?? null,
      baseVersion: chained.baseVersion,
      payload: parsed.value,
      createdAt: this.now().toISOString(),
    });
    return { ok: true, doc, mid };
  }

  // ---- reading ----

  entity(id: string): EntityView {
    const open = this.requireOpen();
    return entityView(id, open.index.forEntity(id));
  }

  mutation(mid: string): MutationInfo | undefined {
    return this.requireOpen().index.info(mid);
  }

  mutations(): MutationInfo[] {
    return this.requireOpen().index.all();
  }

  conflicts(): Conflict[] {
    return this.requireOpen()
      .index.all()
      .filter((m) => m.resolvedBy === null)
      .flatMap((m) => toConflict(m) ?? []);
  }

  // ---- conflicts ----

  async resolve(mid: string, resolution: Resolution): Promise<ResolveResult> {
    const open = this.requireOpen();
    const info = open.index.info(mid);
    if (!info) return { ok: false, code: 'CANNOT_RESOLVE', reason: 'NO_SUCH_MUTATION', errors: fieldError('mid', 'does not name a mutation of this device') };
    const plan = planResolution(info, resolution);
    switch (plan.kind) {
      case 'invalid':
        return { ok: false, code: 'CANNOT_RESOLVE', reason: plan.reason, errors: fieldError('resolution', 'does not apply to this mutation') };
      case 'discard':
        await this.exclusive(() => this.writeNote(open, mid, { kind: 'discarded', code: null }));
        return { ok: true, discarded: mid };
      case 'mutate':
        return this.mutate(plan.op, plan.payload, { entity: plan.entity, resolves: plan.resolves, ...(plan.baseVersion === null ? {} : { baseVersion: plan.baseVersion }) });
    }
  }

  private async writeNote(open: Open, mid: string, note: { kind: LocalNoteDoc['kind']; code: ErrorCode | null; errors?: FieldError[] }): Promise<void> {
    if (this.open !== open) return;
    const _id = localNoteId(this.owner, mid);
    const existing = open.index.note(mid);
    const doc: LocalNoteDoc = { _id, type: 'local-status', mutation: mid, kind: note.kind, code: note.code, at: this.now().toISOString() };
    if (note.errors) doc.errors = note.errors;
    if (existing?._rev) doc._rev = existing._rev;
    const res = await open.db.put(doc);
    open.index.setNote({ ...doc, _rev: res.rev });
    const info = open.index.info(mid);
    if (info) this.events.emit('status', info);
  }

  private async onDenied(docId: string, reason: string): Promise<void> {
    const ref = parseInboxDocId(docId);
    const open = this.open;
    if (!ref || ref.kind !== 'mutation' || ref.owner !== this.owner || !open || !open.index.has(ref.mid)) return;
    const code: ErrorCode = isErrorCode(reason) ? reason : 'FORBIDDEN';
    await this.exclusive(() => this.writeNote(open, ref.mid, { kind: 'rejected', code, errors: fieldError('(mutation)', 'was refused by the gateway') }));
  }

  async membershipRevoked(): Promise<{ rejected: number }> {
    const open = this.requireOpen();
    await open.loop.stop();
    this.halt = 'membership';
    this.syncStateValue = { kind: 'tenant-mismatch', source: 'membership' };
    this.events.emit('sync', this.syncStateValue);
    const queued = open.index.all().filter((m) => isPending(m.state));
    await this.exclusive(async () => {
      for (const m of queued) await this.writeNote(open, m.mid, { kind: 'rejected', code: 'TENANT_MISMATCH', errors: fieldError('(mutation)', 'the user is no longer a member of this tenant') });
    });
    return { rejected: queued.length };
  }

  // ---- drafts ----

  readonly drafts: Session['drafts'] = {
    save: async (input) => {
      const open = this.requireOpen();
      return this.exclusive(() => saveDraft(open.db, input, this.now()));
    },
    get: async (id) => getDraft(this.requireOpen().db, id),
    list: async () => listDrafts(this.requireOpen().db),
    remove: async (id) => {
      const open = this.requireOpen();
      return this.exclusive(() => removeDraft(open.db, id));
    },
    submit: async (id, options = {}) => {
      const open = this.requireOpen();
      const draft = await getDraft(open.db, id);
      if (!draft) return { ok: false, code: 'NO_SUCH_DRAFT', errors: fieldError('id', 'does not name a draft') };
      const result = await this.mutate(draft.op, draft.payload, { ...options, ...(draft.entity ? { entity: draft.entity } : {}) });
      if (result.ok) await this.exclusive(() => removeDraft(open.db, id));
      return result;
    },
  };

  // ---- sync ----

  private startSync(): void {
    const open = this.open;
    if (!open) return;
    this.halt = null;
    this.wasSyncing = true;
    open.loop.start();
  }

  readonly sync: Session['sync'] = ((session: SessionImpl): Session['sync'] => ({
    get state(): SyncState {
      return session.syncStateValue;
    },
    start: () => {
      this.requireOpen();
      this.startSync();
    },
    stop: async () => {
      this.wasSyncing = false;
      await this.open?.loop.stop();
    },
    once: async () => {
      const open = this.requireOpen();
      this.halt = null;
      return syncOnce(this.replicationOf(open.db));
    },
    kick: () => this.open?.loop.kick(),
  }))(this);

  on<K extends keyof SessionEvents>(event: K, listener: (value: SessionEvents[K]) => void): () => void {
    return this.events.on(event, listener);
  }

  // ---- close / wipe ----

  unsynced(): Promise<number> {
    return this.inLifecycle(() => this.countUnsynced());
  }

  private async countUnsynced(): Promise<number> {
    // Statuses a pull has just stored count as received.
    if (this.open) await this.open.pulled;
    if (this.open) return this.open.index.all().filter((m) => isPending(m.state)).length;
    if (this.isClosed) return 0;
    // Locked: count from ids alone (they are stored in clear) — mutations with no status or note at all.
    const db = rawDb(this.store, await localDbName(this.tenant, this.owner));
    try {
      const ids = (await db.allDocs({ startkey: '', endkey: '\uffff' })).rows.map((r) => r.id);
      const answered = new Set(ids.filter((id) => id.startsWith(`s:${this.owner}:`) || id.startsWith(`l:${this.owner}:`)).map((id) => id.slice(id.lastIndexOf(':') + 1)));
      return ids.filter((id) => id.startsWith(`m:${this.owner}:`) && !answered.has(id.slice(id.lastIndexOf(':') + 1))).length;
    } finally {
      await db.close();
    }
  }

  private async shutDown(): Promise<Db | null> {
    if (this.idleTimer !== null) this.scheduler.clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const open = this.open;
    if (open) {
      await open.loop.stop();
      await open.pulled;
      await this.exclusive(async () => {
        open.index.clear();
        this.open = null;
      });
    }
    this.isClosed = true;
    await this.remote.close().catch(() => undefined);
    return open?.db ?? null;
  }

  close(options: { confirm?: boolean } = {}): Promise<CloseResult> {
    return this.inLifecycle(() => this.closeNow(options));
  }

  private async closeNow(options: { confirm?: boolean }): Promise<CloseResult> {
    if (this.isClosed) return { ok: true, unsynced: 0 };
    const unsynced = await this.countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    const db = await this.shutDown();
    await db?.close();
    this.events.emit('sync', { kind: 'stopped' });
    this.events.clear();
    return { ok: true, unsynced };
  }

  wipe(options: { confirm?: boolean } = {}): Promise<CloseResult> {
    return this.inLifecycle(() => this.wipeNow(options));
  }

  signOut(options: { confirm?: boolean; wipe?: boolean } = {}): Promise<SignOutResult> {
    return this.inLifecycle(() => this.signOutNow(options));
  }

  private async signOutNow(options: { confirm?: boolean; wipe?: boolean }): Promise<SignOutResult> {
    const unsynced = this.isClosed ? 0 : await this.countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    // Replication stops first, so nothing is in flight with a token that is being revoked.
    if (options.wipe) await this.wipeNow({ confirm: true });
    else await this.closeNow({ confirm: true });
    const revoked = await revokeOnServer(this.options.fetch ?? ((input, init) => globalThis.fetch(input, init)), this.options.gatewayUrl, this.options.tokens);
    await this.options.tokens.clear?.();
    return { ok: true, unsynced, revoked };
  }

  private async wipeNow(options: { confirm?: boolean }): Promise<CloseResult> {
    if (this.isClosed) throw new ClientError('CLOSED');
    const unsynced = await this.countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    const db = (await this.shutDown()) ?? rawDb(this.store, await localDbName(this.tenant, this.owner));
    await db.destroy();
    this.events.emit('sync', { kind: 'stopped' });
    this.events.clear();
    return { ok: true, unsynced };
  }
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
