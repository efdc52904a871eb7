// The app's one piece of shared state: the token provider, the open session, who is signed in,
// sync state and reachability. Session events only bump `revision`: screens re-read what they
// show, and a form's own state (held in its component) is never reset by them.

import { useEffect, useState } from 'preact/hooks';
import { openBrowserSession, localDbName, type Session, type SyncState } from '../../client/browser.ts';
import { AppTokens, readLast, saveLast, type Last } from './auth.ts';

export type Phase = 'signin' | 'tenant' | 'unlock' | 'ready';

export interface AppState {
  phase: Phase;
  session: Session | null;
  last: Last | null;
  sync: SyncState;
  /** When sync last caught up with the server (ISO), this page's lifetime. */
  lastSyncAt: string | null;
  /** Bumped on every status, conflict or sync event: re-read the session. */
  revision: number;
  /** A one-line message for the next screen (signed out, locked, wiped). */
  notice: 'signedOut' | 'wiped' | 'locked' | null;
}

type Listener = () => void;
const listeners = new Set<Listener>();
export const tokens = new AppTokens(location.origin);

const IDLE_KEY = 'ferry.idleMinutes';
export const IDLE_CHOICES = [1, 5, 15] as const;

let state: AppState = {
  phase: readLast() ? 'unlock' : 'signin',
  session: null,
  last: readLast(),
  sync: { kind: 'stopped' },
  lastSyncAt: null,
  revision: 0,
  notice: null,
};
let unsubscribe: Array<() => void> = [];

export function getState(): AppState {
  return state;
}

export function update(patch: Partial<AppState>): void {
  state = { ...state, ...patch };
  for (const l of listeners) l();
}

/** Re-renders the caller on every state change. */
export function useApp(): AppState {
  const [, setTick] = useState(0);
  useEffect(() => {
    const l = () => setTick((n) => n + 1);
    listeners.add(l);
    return () => void listeners.delete(l);
  }, []);
  return state;
}

export function idleMinutes(): number {
  const v = Number(localStorage.getItem(IDLE_KEY));
  return (IDLE_CHOICES as readonly number[]).includes(v) ? v : 15;
}

export function setIdleMinutes(m: number): void {
  localStorage.setItem(IDLE_KEY, String(m));
  update({});
}

/** Whether this device already holds an encrypted store for (tenant, user): unlock, not first use. */
export async function storeExists(tenant: string, owner: string): Promise<boolean> {
  const name = await localDbName(tenant, owner);
  const dbs = await indexedDB.databases();
  return dbs.some((d) => d.name === `_pouch_${name}`);
}

export function signedInAs(last: Last): void {
  saveLast(last);
  update({ last });
}

export async function openStore(passphrase: string): Promise<void> {
  const { last, session } = state;
  if (!last) throw new Error('NO_USER');
  if (session && !session.closed && session.tenant === last.tenant && session.owner === last.owner) {
    await session.unlock(passphrase);
    if (tokens.signedIn) session.sync.start();
  } else {
    if (session && !session.closed) await session.close({ confirm: true });
    const opened = await openBrowserSession({ gatewayUrl: location.origin, tenant: last.tenant, owner: last.owner, passphrase, tokens, autoSync: tokens.signedIn, idleTimeoutMs: null });
    wire(opened);
    update({ session: opened });
  }
  lastActivity = Date.now();
  update({ phase: 'ready', notice: null });
}

function wire(s: Session): void {
  for (const u of unsubscribe) u();
  const bump = () => update({ revision: state.revision + 1 });
  unsubscribe = [
    s.on('status', bump),
    s.on('conflict', bump),
    s.on('records', bump),
    s.on('sync', (sync) => update({ sync, ...(sync.kind === 'idle' ? { lastSyncAt: new Date().toISOString() } : {}), revision: state.revision + 1 })),
    s.on('lock', ({ locked }) => {
      if (locked && state.session === s) update({ phase: 'unlock', notice: 'locked' });
    }),
  ];
  tokens.onEnded = (reason) => {
    if (reason === 'revoked') void s.membershipRevoked().then(bump);
    else bump();
  };
}

/** Closes the current tenant's store (its queue stays) before signing in elsewhere. */
export async function leaveTenant(): Promise<void> {
  const s = state.session;
  if (s && !s.closed) {
    await s.sync.stop();
    await s.close({ confirm: true });
  }
  await tokens.revokeCurrent();
  update({ session: null, sync: { kind: 'stopped' }, phase: 'signin', lastSyncAt: null });
}

export function signedOut(notice: 'signedOut' | 'wiped'): void {
  for (const u of unsubscribe) u();
  unsubscribe = [];
  tokens.forget();
  update({ session: null, sync: { kind: 'stopped' }, phase: 'signin', notice, lastSyncAt: null });
}

// ---- idle lock: the app counts activity; the chosen minutes without any lock the store ----
let lastActivity = Date.now();
for (const type of ['pointerdown', 'keydown', 'input']) {
  addEventListener(
    type,
    () => {
      lastActivity = Date.now();
      const s = state.session;
      if (s && !s.locked && !s.closed) s.touch();
    },
    { passive: true, capture: true },
  );
}
setInterval(() => {
  const s = state.session;
  if (state.phase === 'ready' && s && !s.locked && !s.closed && Date.now() - lastActivity >= idleMinutes() * 60_000) void s.lock();
}, 1_000);
