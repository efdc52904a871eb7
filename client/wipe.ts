// Leaving the device: logout (close, the store stays on disk), wipe (the store is destroyed, also
// while locked, for a forgotten passphrase) and sign-out (either, then the server session is
// revoked and the tokens forgotten). Each reports the unsynced count and needs confirmation when
// there is unsynced work.

import { ClientError } from './errors.ts';
import { localDbName, rawDb, recordsDbName, type Db } from './store.ts';
import { isPending } from './reconcile.ts';
import { revokeOnServer } from './sign-out.ts';
import { unansweredFromIds } from './own-ids.ts';
import type { SessionCore } from './session-core.ts';
import type { SyncWiring } from './sync-wiring.ts';
import type { LockControls } from './lock.ts';
import type { ReplicaWiring } from './records/replica.ts';

export type CloseResult = { ok: true; unsynced: number } | { ok: false; reason: 'unsynced'; unsynced: number };

/** `revoked`: the gateway took the revocation; false when it could not be reached (the tokens are cleared anyway). */
export type SignOutResult = { ok: true; unsynced: number; revoked: boolean } | { ok: false; reason: 'unsynced'; unsynced: number };

export interface LeaveControls {
  unsynced(): Promise<number>;
  close(options?: { confirm?: boolean }): Promise<CloseResult>;
  wipe(options?: { confirm?: boolean }): Promise<CloseResult>;
  signOut(options?: { confirm?: boolean; wipe?: boolean }): Promise<SignOutResult>;
}

export function createLeave(core: SessionCore, sync: SyncWiring, lock: LockControls, replica: ReplicaWiring): LeaveControls {
  async function countUnsynced(): Promise<number> {
    // Statuses a pull has just stored count as received.
    if (core.open) await core.open.pulled;
    if (core.open) return core.open.index.all().filter((m) => isPending(m.state)).length;
    if (core.closed) return 0;
    // Locked: count from ids alone (they are stored in clear).
    const db = rawDb(core.store, await localDbName(core.tenant, core.owner));
    try {
      return unansweredFromIds((await db.allDocs({ startkey: '', endkey: '\uffff' })).rows.map((r) => r.id), core.owner);
    } finally {
      await db.close();
    }
  }

  /**
   * Stops sync (push, pull and the replica's pull) and the idle timer, drops the indexes; returns
   * the open handles, if any (the replica's is null once it was dropped).
   */
  async function shutDown(): Promise<{ db: Db; records: Db | null } | null> {
    lock.disarm();
    const open = core.open;
    if (open) {
      await Promise.all([open.loop.stop(), replica.stop(open.replica)]);
      await open.pulled;
      await core.exclusive(async () => {
        open.index.clear();
        open.replica.index.clear();
        core.open = null;
      });
    }
    core.closed = true;
    await Promise.all([sync.close(), replica.close()]);
    return open ? { db: open.db, records: open.replica.dropped ? null : open.replica.db } : null;
  }

  function ended(): void {
    core.events.emit('sync', { kind: 'stopped' });
    core.events.clear();
  }

  async function closeNow(options: { confirm?: boolean }): Promise<CloseResult> {
    if (core.closed) return { ok: true, unsynced: 0 };
    const unsynced = await countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    const handles = await shutDown();
    await handles?.db.close();
    await handles?.records?.close();
    ended();
    return { ok: true, unsynced };
  }

  async function wipeNow(options: { confirm?: boolean }): Promise<CloseResult> {
    if (core.closed) throw new ClientError('CLOSED');
    const unsynced = await countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    const handles = await shutDown();
    // Locked: open the stores by name (no key needed to destroy them). The replica goes with the outbox.
    await (handles?.db ?? rawDb(core.store, await localDbName(core.tenant, core.owner))).destroy();
    await (handles?.records ?? rawDb(core.store, await recordsDbName(core.tenant, core.owner))).destroy();
    ended();
    return { ok: true, unsynced };
  }

  async function signOutNow(options: { confirm?: boolean; wipe?: boolean }): Promise<SignOutResult> {
    const unsynced = core.closed ? 0 : await countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    // Replication stops first, so nothing is in flight with a token that is being revoked.
    if (options.wipe) await wipeNow({ confirm: true });
    else await closeNow({ confirm: true });
    const revoked = await revokeOnServer(core.options.fetch ?? ((input, init) => globalThis.fetch(input, init)), core.options.gatewayUrl, core.options.tokens);
    await core.options.tokens.clear?.();
    return { ok: true, unsynced, revoked };
  }

  return {
    unsynced: () => core.lifecycle(countUnsynced),
    close: (options = {}) => core.lifecycle(() => closeNow(options)),
    wipe: (options = {}) => core.lifecycle(() => wipeNow(options)),
    signOut: (options = {}) => core.lifecycle(() => signOutNow(options)),
  };
}
