// Lock and unlock: opening the encrypted store with the passphrase (and building the in-memory
// index), the idle timeout, and locking (replication stops first, then the key and the decrypted
// index leave memory). Passphrase changes re-wrap the key through the open handle.

import { v7 as uuidv7 } from 'uuid';
import { ClientError } from './errors.ts';
import { changePassphrase as rewrapKeyring, getLocal, localDbName, openStore, type Db } from './store.ts';
import { LocalIndex } from './reconcile.ts';
import { loadIndex, readPulled } from './statuses.ts';
import { requireOpen, type DeviceDoc, type SessionCore, type Unlocked } from './session-core.ts';
import type { SyncWiring } from './sync-wiring.ts';
import type { ReplicaWiring } from './records/replica.ts';

const DEVICE_ID = '_local/ferry-device';
const DEFAULT_IDLE_MS = 15 * 60_000;

export interface LockControls {
  /** Opens the store with the passphrase, loads the index, starts sync if it should run. */
  unlockWith(passphrase: string): Promise<void>;
  /** Counts as activity for the idle timeout. */
  touch(): void;
  lock(): Promise<void>;
  unlock(passphrase: string): Promise<void>;
  changePassphrase(oldPassphrase: string, newPassphrase: string): Promise<void>;
  /** Stops the idle timer (the session is closing). */
  disarm(): void;
}

/** The device doc of this store, created on first open (a second handle's 409 reads the winner). */
async function deviceDoc(db: Db): Promise<DeviceDoc> {
  let device = (await getLocal<DeviceDoc>(db, DEVICE_ID)) ?? { _id: DEVICE_ID, device: `dev-${uuidv7().replace(/-/g, '').slice(-16)}`, seq: 0 };
  if (device._rev) return device;
  try {
    device._rev = (await db.put(device as unknown as PouchDB.Core.PutDocument<object>)).rev;
  } catch (err) {
    if ((err as { status?: number }).status !== 409) throw err;
    device = (await getLocal<DeviceDoc>(db, DEVICE_ID))!;
  }
  return device;
}

export function createLock(core: SessionCore, sync: SyncWiring, replica: ReplicaWiring): LockControls {
  let idleTimer: unknown = null;

  const disarm = (): void => {
    if (idleTimer !== null) core.scheduler.clearTimeout(idleTimer);
    idleTimer = null;
  };
  const arm = (): void => {
    disarm();
    const ms = core.options.idleTimeoutMs === undefined ? DEFAULT_IDLE_MS : core.options.idleTimeoutMs;
    if (ms === null || !core.open) return;
    idleTimer = core.scheduler.setTimeout(() => {
      idleTimer = null;
      void controls.lock();
    }, ms);
  };
  core.activity = () => {
    if (core.open) arm();
  };

  async function unlockWith(passphrase: string): Promise<void> {
    // Replication (the only writer of status docs) starts after `core.open` is set below.
    let opened: Unlocked | null = null;
    const { db, records } = await openStore(core.store, {
      passphrase,
      kdfIterations: core.options.kdfIterations,
      now: core.now,
      onPullDropped: ({ dropped }) => core.events.emit('warning', { code: 'PULL_GUARD_DROPPED', count: dropped }),
      onPulled: (ids) => {
        if (opened) readPulled(core, opened, ids);
      },
      records: replica.guard,
    });
    try {
      let device = await deviceDoc(db);
      core.deviceId = device.device;
      const index = new LocalIndex();
      await loadIndex(core, db, index);
      // The device doc is written before each mutation doc, so it is ahead already; this only
      // makes sure no `seq` a stored mutation doc carries is ever handed out again.
      device = { ...device, seq: Math.max(device.seq, index.highestSeq()) };
      const openedReplica = await replica.open(records!);
      opened = { db, index, device, loop: sync.loopFor(db), pulled: Promise.resolve(), writes: [], replica: openedReplica };
      core.open = opened;
    } catch (err) {
      await db.close().catch(() => undefined);
      await records?.close().catch(() => undefined);
      throw err;
    }
    core.events.emit('lock', { locked: false });
    arm();
    if (sync.wanted) {
      sync.start();
      replica.start();
    }
  }

  async function lockNow(): Promise<void> {
    const open = core.open;
    if (!open) return;
    disarm();
    sync.wanted = open.loop.isRunning;
    // Replication first, so nothing reads or writes the store while the key goes away.
    await Promise.all([open.loop.stop(), replica.stop(open.replica)]);
    await open.pulled;
    await core.exclusive(async () => {
      core.open = null;
      open.index.clear();
      open.replica.index.clear();
      await open.db.close();
      if (!open.replica.dropped) await open.replica.db.close();
    });
    sync.reportStopped();
    core.events.emit('lock', { locked: true });
  }

  const controls: LockControls = {
    unlockWith,
    disarm,
    touch: () => core.activity(),
    lock: () => core.lifecycle(lockNow),
    unlock: (passphrase) =>
      core.lifecycle(async () => {
        if (core.closed) throw new ClientError('CLOSED');
        if (core.open) return;
        await unlockWith(passphrase);
      }),
    async changePassphrase(oldPassphrase, newPassphrase) {
      const open = requireOpen(core);
      const name = await localDbName(core.tenant, core.owner);
      await core.exclusive(() => rewrapKeyring(open.db, name, oldPassphrase, newPassphrase, { now: core.now }));
    },
  };
  return controls;
}
