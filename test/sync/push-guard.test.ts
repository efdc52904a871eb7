import { expect } from 'chai';
import { createPushGuard, createSlots, pushLockName } from '../../gateway/sync/push-guard.ts';
import type { Database } from '../../sql/database.ts';

// The push guard's in-process parts: slots (bounded pool use) and the PGlite decision.

describe('sync: push guard', function () {
  it('slots: at most max holders, FIFO hand-over, a waiter gives up after its wait', async function () {
    const slots = createSlots(2);
    const r1 = await slots.acquire(50);
    const r2 = await slots.acquire(50);
    expect(slots.held).to.equal(2);
    const order: string[] = [];
    const w1 = slots.acquire(1_000).then((r) => (order.push('w1'), r));
    const w2 = slots.acquire(1_000).then((r) => (order.push('w2'), r));
    expect(await slots.acquire(20)).to.equal(null);
    r1!();
    r1!(); // a second release is a no-op
    const g1 = await w1;
    r2!();
    const g2 = await w2;
    expect(order).to.deep.equal(['w1', 'w2']);
    expect(slots.held).to.equal(2);
    g1!();
    g2!();
    expect(slots.held).to.equal(0);
  });

  it('on PGlite (one process) it is the in-process serialiser: one push per user at a time, others run alongside', async function () {
    // Only `kind` is read on PGlite; no transaction is opened (a boundary cast for the case table).
    const guard = createPushGuard({ kind: 'pglite' } as unknown as Pick<Database, 'kind' | 'transaction'>);
    expect(guard.crossProcess).to.equal(false);
    const log: string[] = [];
    const step = (name: string, ms: number) => async () => {
      log.push(`${name}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${name}-`);
    };
    await Promise.all([guard.hold('north', 'ada', step('a1', 30)), guard.hold('north', 'ada', step('a2', 5)), guard.hold('north', 'ben', step('b1', 5))]);
    expect(log.indexOf('a2+')).to.be.greaterThan(log.indexOf('a1-'));
    expect(log.indexOf('b1+')).to.be.lessThan(log.indexOf('a1-'));
  });

  it('lock names: one per (tenant, owner), unambiguous whatever the characters', function () {
    const cases: Array<[[string, string], [string, string], boolean]> = [
      [['north', 'ada'], ['north', 'ada'], true],
      [['north', 'ada'], ['south', 'ada'], false],
      [['a:b', 'c'], ['a', 'b:c'], false],
      [['a","b', 'c'], ['a', 'b","c'], false],
    ];
    for (const [x, y, same] of cases) expect(pushLockName(...x) === pushLockName(...y), `${x} / ${y}`).to.equal(same);
  });
});
