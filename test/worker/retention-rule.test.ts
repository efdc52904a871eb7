import { expect } from 'chai';
import { decideRetention, type RetentionCandidate, type RetentionVerdict } from '../../gateway/worker/retention-rule.ts';
import { ackDocId, ackOf, deviceVerdict, nextAck, type DeviceHeld, type DeviceVerdict } from '../../validators/acknowledgement.ts';

// Retention's decisions (docs/SYNC.md "Retention"): the server's rule for purging a mutation and
// its status from the inbox, and the device's rule for dropping its own copies.

const DAY = 24 * 3600_000;
const NOW = 100 * DAY;
const policy = { windowMs: 7 * DAY, maxMs: null };
const capped = { windowMs: 7 * DAY, maxMs: 30 * DAY };
const base: RetentionCandidate = { state: 'committed', terminalAt: NOW - 8 * DAY, counter: 40, acked: 40, awaited: false, conflicted: false };

describe('worker/retention: decideRetention', () => {
  const cases: Array<[string, Partial<RetentionCandidate>, typeof policy | typeof capped, RetentionVerdict]> = [
    ['terminal, acknowledged at its counter, past the window', {}, policy, { kind: 'purge', because: 'acknowledged' }],
    ['acknowledged past its counter', { acked: 900 }, policy, { kind: 'purge', because: 'acknowledged' }],
    ['rejected and conflict are terminal too', { state: 'conflict' }, policy, { kind: 'purge', because: 'acknowledged' }],
    ['acknowledged one below its counter', { acked: 39 }, policy, { kind: 'keep', reason: 'unacknowledged' }],
    ['never acknowledged (no ack doc for its device)', { acked: null }, policy, { kind: 'keep', reason: 'unacknowledged' }],
    ['never acknowledged, a year old, no maximum set', { acked: null, terminalAt: NOW - 365 * DAY }, policy, { kind: 'keep', reason: 'unacknowledged' }],
    ['never acknowledged, past the maximum', { acked: null, terminalAt: NOW - 30 * DAY }, capped, { kind: 'purge', because: 'past-maximum' }],
    ['never acknowledged, under the maximum', { acked: null, terminalAt: NOW - 29 * DAY }, capped, { kind: 'keep', reason: 'unacknowledged' }],
    ['acknowledged but inside the window', { terminalAt: NOW - 6 * DAY }, policy, { kind: 'keep', reason: 'in-window' }],
    ['the window ends exactly now', { terminalAt: NOW - 7 * DAY }, policy, { kind: 'purge', because: 'acknowledged' }],
    ['waiting (not terminal)', { state: 'waiting' }, capped, { kind: 'keep', reason: 'not-terminal' }],
    ['retrying (not terminal)', { state: 'retrying', terminalAt: NOW - 99 * DAY }, capped, { kind: 'keep', reason: 'not-terminal' }],
    ['status doc gone or unreadable', { state: null }, capped, { kind: 'keep', reason: 'not-terminal' }],
    ['a pending mutation waits on it', { awaited: true }, capped, { kind: 'keep', reason: 'awaited' }],
    ['its status doc is conflicted (the worker resolves it first)', { conflicted: true }, capped, { kind: 'keep', reason: 'conflicted' }],
  ];
  for (const [name, over, p, want] of cases) {
    it(`${name} → ${want.kind === 'purge' ? `purge (${want.because})` : `keep (${want.reason})`}`, () => {
      expect(decideRetention({ ...base, ...over }, p, NOW)).to.deep.equal(want);
    });
  }
});

describe('validators/acknowledgement: the device side', () => {
  const acks: Array<[string, string, unknown, boolean]> = [
    ['its own id and shape', ackDocId('dev-3f9c'), { type: 'ferry-ack', v: 1, device: 'dev-3f9c', counter: 12 }, true],
    ['another device named in the body', ackDocId('dev-3f9c'), { type: 'ferry-ack', v: 1, device: 'dev-other', counter: 12 }, false],
    ['a PouchDB checkpoint', 'ZmVycnk=', { last_seq: 12, history: [], session_id: 'x' }, false],
    ['a negative counter', ackDocId('d'), { type: 'ferry-ack', v: 1, device: 'd', counter: -1 }, false],
    ['a string counter', ackDocId('d'), { type: 'ferry-ack', v: 1, device: 'd', counter: '12' }, false],
  ];
  for (const [name, id, body, ok] of acks) it(`ackOf: ${name} → ${ok ? 'an ack' : 'not one'}`, () => expect(ackOf(id, body) !== null).to.equal(ok));

  const next: Array<[number | null, number, number | null]> = [
    [null, 0, 0],
    [null, 15, 15],
    [10, 15, 15],
    [15, 15, null],
    [20, 15, null],
    [10, -1, null],
    [10, 1.5, null],
  ];
  for (const [acked, upTo, want] of next) it(`nextAck(${acked}, ${upTo}) → ${want}`, () => expect(nextAck(acked, upTo)).to.equal(want));

  const held: DeviceHeld = { state: 'committed', counter: 40, awaitingUser: false, neededByQueued: false };
  const verdicts: Array<[string, Partial<DeviceHeld>, number | null, DeviceVerdict]> = [
    ['committed and acknowledged', {}, 40, { kind: 'drop' }],
    ['no status yet', { state: null, counter: null }, 40, { kind: 'keep', reason: 'no-status' }],
    ['retrying', { state: 'retrying' }, 40, { kind: 'keep', reason: 'not-terminal' }],
    ['not acknowledged yet', {}, 39, { kind: 'keep', reason: 'not-acknowledged' }],
    ['never acknowledged', {}, null, { kind: 'keep', reason: 'not-acknowledged' }],
    ['a conflict the user has not resolved', { state: 'conflict', awaitingUser: true }, 40, { kind: 'keep', reason: 'awaiting-user' }],
    ['a queued mutation still chains to it', { neededByQueued: true }, 40, { kind: 'keep', reason: 'needed-by-queued' }],
  ];
  for (const [name, over, acked, want] of verdicts) it(`deviceVerdict: ${name} → ${want.kind}`, () => expect(deviceVerdict({ ...held, ...over }, acked)).to.deep.equal(want));
});
