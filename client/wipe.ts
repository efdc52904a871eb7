// Leaving the device: logout (close, the store stays on disk), wipe (the store is destroyed, also
// while locked, for a forgotten passphrase) and sign-out (either, then the server session is
// revoked and the tokens forgotten). Each reports the unsynced count and needs confirmation when
// there is unsynced work.

import { ClientError } from './errors.ts';
import { localDbName, rawDb, type Db } from './store.ts';
import { isPending } from './reconcile.ts';
import { revokeOnServer } from './sign-out.ts';
import { unansweredFromIds } from './own-ids.ts';
import type { SessionCore } from './session-core.ts';
import type { SyncWiring } from './sync-wiring.ts';
import type { LockControls } from './lock.ts';

export type CloseResult = { ok: true; unsynced: number } | { ok: false; reason: 'unsynced'; unsynced: number };

/** `revoked`: the gateway took the revocation; false when it could not be reached (the tokens are cleared anyway). */
export type SignOutResult = { ok: true; unsynced: number; revoked: boolean } | { ok: false; reason: 'unsynced'; unsynced: number };

export interface LeaveControls {
  unsynced(): Promise<number>;
  close(options?: { confirm?: boolean }): Promise<CloseResult>;
  wipe(options?: { confirm?: boolean }): Promise<CloseResult>;
  signOut(options?: { confirm?: boolean; wipe?: boolean }): Promise<SignOutResult>;
}

export function createLeave(core: SessionCore, sync: SyncWiring, lock: LockControls): LeaveControls {
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

  /** Stops sync and the idle timer, drops the index; returns the open handle, if any. */
  async function shutDown(): Promise<Db | null> {
    lock.disarm();
    const open = core.open;
    if (open) {
      await open.loop.stop();
      await open.pulled;
      await core.exclusive(async () => {
        open.index.clear();
        core.open = null;
      });
    }
    core.closed = true;
    await sync.close();
    return open?.db ?? null;
  }

  function ended(): void {
    core.events.emit('sync', { kind: 'stopped' });
    core.events.clear();
  }

  async function closeNow(options: { confirm?: boolean }): Promise<CloseResult> {
    if (core.closed) return { ok: true, unsynced: 0 };
    const unsynced = await countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    const db = await shutDown();
    await db?.close();
    ended();
    return { ok: true, unsynced };
  }

  async function wipeNow(options: { confirm?: boolean }): Promise<CloseResult> {
    if (core.closed) throw new ClientError('CLOSED');
    const unsynced = await countUnsynced();
    if (unsynced > 0 && !options.confirm) return { ok: false, reason: 'unsynced', unsynced };
    const db = (await shutDown()) ?? rawDb(core.store, await localDbName(core.tenant, core.owner));
    await db.destroy();
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
