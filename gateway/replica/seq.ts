import { createHash } from 'node:crypto';
import type { ReplicaScope } from '../tenant/scope.ts';

// Positions in a caller's replica feed, as the `seq`/`last_seq`/`since` strings of /replica.
//
// A feed is read under a scope (the caller's facilities, or all of them), and the answer to "what
// changed since" depends on the scope the device last pulled with: a facility gained must be sent
// whole, a facility lost must be sent as deletions. So a position carries the tag of its scope:
//   `{counter}-{tag}`            the device holds scope `tag` up to `counter`;
//   `{cursor}-{base}-{tag}`      it held scope `tag` up to `base`, and has received the catch-up
//                                to its current scope up to counter `cursor`.
// A plain number (`0`, or a CouchDB client's own) is a position in the current scope. Tags are
// short hashes; the scopes behind them are stored per user (store.ts `replica_scopes`), so a
// caller can only ever name a scope they were served.

export interface Position {
  cursor: number;
  base: number;
  /** Null: the caller's current scope. */
  tag: string | null;
  /** True inside a catch-up (three parts), even where `cursor` happens to equal `base`. */
  catchUp: boolean;
}

const TAG = /^[0-9a-f]{12}$/;
const COUNTER = /^(0|[1-9]\d{0,15})$/;

/** The tag of a scope: the same scope always has the same tag. */
export function scopeTag(scope: ReplicaScope): string {
  const text = scope.kind === 'all' ? 'all' : `f:${[...scope.facilities].sort().join('\n')}`;
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/** `since` as a position, `now`, or null when it is not one of ours. */
export function parseSince(raw: string | undefined): Position | 'now' | null {
  if (raw === undefined) return { cursor: 0, base: 0, tag: null, catchUp: false };
  if (raw === 'now') return 'now';
  // CouchDB clients may send a seq JSON-quoted.
  const text = raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
  const parts = text.split('-');
  const nums = parts.slice(0, -1);
  if (parts.length === 1) return COUNTER.test(text) ? { cursor: Number(text), base: Number(text), tag: null, catchUp: false } : null;
  const tag = parts[parts.length - 1]!;
  if (!TAG.test(tag) || nums.length > 2 || !nums.every((n) => COUNTER.test(n))) return null;
  const cursor = Number(nums[0]);
  const base = nums.length === 2 ? Number(nums[1]) : cursor;
  return Number.isSafeInteger(cursor) && Number.isSafeInteger(base) ? { cursor, base, tag, catchUp: nums.length === 2 } : null;
}

export function formatPosition(p: Position & { tag: string }): string {
  return p.catchUp ? `${p.cursor}-${p.base}-${p.tag}` : `${p.cursor}-${p.tag}`;
}

/**
 * How a feed is read, from the caller's position and current scope:
 * - `normal`: the caller holds the current scope up to `after`; rows past it.
 * - `catch-up`: the caller held scope `fromTag` up to `base`; the difference to the current scope
 *   is sent in counter order past `cursor` (records of gained facilities whatever their counter,
 *   records of lost ones as deletions).
 */
export type FeedPlan = { kind: 'normal'; after: number } | { kind: 'catch-up'; fromTag: string; base: number; cursor: number };

export function planFeed(position: Position, currentTag: string): FeedPlan {
  if (position.tag === null || (position.tag === currentTag && !position.catchUp)) return { kind: 'normal', after: position.cursor };
  // Entering a catch-up, the catch-up set is read from its beginning.
  const cursor = position.catchUp ? position.cursor : 0;
  return { kind: 'catch-up', fromTag: position.tag, base: position.base, cursor };
}

/**
 * The position after a page. A full page continues where it ended; a short one means the set is
 * exhausted, so a catch-up is complete and the caller now holds the current scope up to the
 * furthest counter read (or `since`'s base, whichever is later).
 */
export function positionAfter(plan: FeedPlan, currentTag: string, lastCounter: number | null, full: boolean): Position & { tag: string } {
  if (plan.kind === 'normal') {
    const at = lastCounter ?? plan.after;
    return { cursor: at, base: at, tag: currentTag, catchUp: false };
  }
  const reached = lastCounter ?? plan.cursor;
  if (full) return { cursor: reached, base: plan.base, tag: plan.fromTag, catchUp: true };
  const at = Math.max(reached, plan.base);
  return { cursor: at, base: at, tag: currentTag, catchUp: false };
}
