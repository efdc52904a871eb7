import { z } from 'zod';
import { isTerminal, type StatusState } from './mutation.ts';

// A device's acknowledgement of the statuses it has pulled (docs/SYNC.md "Retention"): the wire
// contract between the device, which writes it, and the worker's retention, which reads it.
//
// The device keeps one `_local/ferry-ack-{device}` doc on `/sync/{tenant}` (stored per user in
// the platform database like every `_local` doc), saying: "every status of mine up to feed counter
// `counter` is stored and reconciled on this device". A status doc is acknowledged when the ack of
// the device named in its mutation doc (`device`) is at or past the status's counter.
//
// Why not PouchDB's own pull checkpoints: push and pull checkpoints are `_local` docs of the same
// shape (`last_seq`, `history`, `session_id`), and a push checkpoint's `last_seq` is the device's
// local sequence, a number the server cannot tell from a feed counter; and neither says which
// device wrote it, so with several devices per user the server could not know whether the device
// that owns a mutation has its status. Reading them would purge statuses nobody has pulled.

export const ACK_PREFIX = 'ferry-ack-';

/** The `_local` id (without `_local/`) of a device's acknowledgement. */
export function ackDocId(device: string): string {
  return `${ACK_PREFIX}${device}`;
}

export const ackDocSchema = z.object({
  type: z.literal('ferry-ack'),
  v: z.literal(1),
  device: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  counter: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});
export type AckDoc = z.infer<typeof ackDocSchema>;

/** The device's acknowledgement from a stored `_local` body; null when it is not one (or names another device). */
export function ackOf(localId: string, body: unknown): AckDoc | null {
  if (!localId.startsWith(ACK_PREFIX)) return null;
  const parsed = ackDocSchema.safeParse(body);
  if (!parsed.success || ackDocId(parsed.data.device) !== localId) return null;
  return parsed.data;
}

/**
 * What the device acknowledges next: the counter its pull has stored and reconciled (PouchDB's
 * pull `last_seq` once the batch's status docs are applied), never lower than what it already
 * acknowledged (a restarted pull from an older checkpoint must not take an acknowledgement back).
 * Null when there is nothing new to write.
 */
export function nextAck(acked: number | null, reconciledUpTo: number): number | null {
  if (!Number.isSafeInteger(reconciledUpTo) || reconciledUpTo < 0) return null;
  if (acked !== null && reconciledUpTo <= acked) return null;
  return reconciledUpTo;
}

/** One mutation as the device holds it: its outbox doc, and its status if one was pulled. */
export interface DeviceHeld {
  /** The status's state, null while the device has none. */
  state: StatusState | null;
  /** The status's feed counter (`counter` in the status doc). */
  counter: number | null;
  /** A conflict or rejection the user has not dealt with yet (no later mutation resolves it, not dismissed). */
  awaitingUser: boolean;
  /** A later queued mutation of this device still names it in `after` or `resolves`, and is not terminal. */
  neededByQueued: boolean;
  /**
   * Its status carries the newest server record the device has for the entity (a commit's answer or
   * a conflict's `current`): the entity's view and the next update's `baseVersion` come from it.
   */
  holdsConfirmedRecord?: boolean;
}

export type DeviceVerdict = { kind: 'drop' } | { kind: 'keep'; reason: 'no-status' | 'not-terminal' | 'not-acknowledged' | 'awaiting-user' | 'needed-by-queued' | 'confirmed-record' };

/**
 * The device's own rule for its outbox and status docs: it drops a mutation doc and its status doc
 * once the status is terminal, acknowledged by this device (so the server may purge them too), the
 * user has nothing left to do about it, no queued mutation still chains to it, and it is not the
 * entity's newest confirmed record (one kept per entity, so it is bounded by the entities touched). Dropping is
 * local only: the push replication selects only live `m:` docs, so the device removes them in a way
 * it never pushes (see docs/SYNC.md "On the device").
 */
export function deviceVerdict(held: DeviceHeld, acked: number | null): DeviceVerdict {
  if (held.state === null || held.counter === null) return { kind: 'keep', reason: 'no-status' };
  if (!isTerminal(held.state)) return { kind: 'keep', reason: 'not-terminal' };
  if (acked === null || acked < held.counter) return { kind: 'keep', reason: 'not-acknowledged' };
  if (held.awaitingUser) return { kind: 'keep', reason: 'awaiting-user' };
  if (held.neededByQueued) return { kind: 'keep', reason: 'needed-by-queued' };
  if (held.holdsConfirmedRecord === true) return { kind: 'keep', reason: 'confirmed-record' };
  return { kind: 'drop' };
}
