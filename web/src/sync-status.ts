// What the state indicator says, from the sync loop's state (which reflects whether the server
// answered, not the browser's network flag) and the queue. Pure.

import type { SyncState } from '../../client/browser.ts';
import type { MessageKey } from './i18n.ts';

export type Reach = 'online' | 'offline' | 'retrying' | 'connecting' | 'stopped' | 'signed-out' | 'mismatch';

export function reachOf(sync: SyncState, signedIn: boolean): Reach {
  switch (sync.kind) {
    case 'idle':
    case 'active':
      return 'online';
    case 'offline':
      return 'offline';
    case 'backoff':
      return sync.reachable ? 'retrying' : 'offline';
    case 'connecting':
      return 'connecting';
    case 'tenant-mismatch':
      return 'mismatch';
    case 'stopped':
      return signedIn ? 'stopped' : 'signed-out';
  }
}

export const REACH_LABEL: Record<Reach, MessageKey> = {
  online: 'status.online',
  offline: 'status.offline',
  retrying: 'status.retrying',
  connecting: 'status.connecting',
  stopped: 'status.stopped',
  'signed-out': 'status.signedOut',
  mismatch: 'status.tenantMismatch',
};

/** "Everything is confirmed": the server is reachable and caught up, nothing waits, nothing needs a decision. */
export function allConfirmed(sync: SyncState, pending: number, problems: number): boolean {
  return sync.kind === 'idle' && pending === 0 && problems === 0;
}
