import { expect } from 'chai';
import { deadlineSignal } from '../../http/deadline.ts';
import { collectGarbage } from '../support/gc.ts';

// A deadline must fire even after the garbage collector ran: the `AbortSignal.any` +
// `AbortSignal.timeout` composite it replaces may not on Node 20 (http/deadline.ts says why).
// Whether that Node bug shows depends on when the collector runs, so it is not asserted here:
// a test of it was flaky.

const aborted = (signal: AbortSignal) => new Promise<unknown>((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true }));

describe('http: deadlineSignal', function () {
  it('aborts with a TimeoutError after its time, garbage collected or not', async function () {
    const parent = new AbortController();
    const d = deadlineSignal(parent.signal, 200);
    const reason = aborted(d.signal);
    for (let i = 0; i < 5; i++) {
      collectGarbage();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await reason) as DOMException).to.have.property('name', 'TimeoutError');
    expect(parent.signal.aborted).to.equal(false);
    d.clear();
  });

  it('aborts with the parent, at once, also when the parent is already aborted', async function () {
    const parent = new AbortController();
    const d = deadlineSignal(parent.signal, 60_000);
    const reason = aborted(d.signal);
    parent.abort(new Error('client left'));
    expect(((await reason) as Error).message).to.equal('client left');
    d.clear();
    const early = deadlineSignal(parent.signal, 60_000);
    expect(early.signal.aborted).to.equal(true);
    early.clear();
  });

  it('does nothing once cleared', async function () {
    const parent = new AbortController();
    const d = deadlineSignal(parent.signal, 50);
    d.clear();
    parent.abort();
    await new Promise((r) => setTimeout(r, 120));
    expect(d.signal.aborted).to.equal(false);
  });
});
