import { expect } from 'chai';
import { collectGarbage } from '../support/gc.ts';
import { startSyncStack, type SyncStack } from './support.ts';

// A waiting longpoll answers once its `timeout` has passed, with nothing and `last_seq = since`,
// even when the gateway's process collects garbage while it waits (the deadline used to be an
// `AbortSignal.any` of an `AbortSignal.timeout`, which a GC silently disarmed on Node 20).

describe('sync: longpoll timeout', function () {
  this.timeout(60_000);
  let s: SyncStack;
  before(async function () {
    s = await startSyncStack();
  });
  after(async function () {
    await s?.close();
  });

  it('answers an empty page after `timeout` although the garbage collector ran meanwhile', async function () {
    const token = await s.token('lpt');
    const gc = setInterval(collectGarbage, 100);
    try {
      // The client gives up far later than the timeout it asked for: the gateway must end it first.
      const res = await fetch(`${s.url}/sync/north/_changes?feed=longpoll&since=0&heartbeat=500&timeout=1500`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(30_000),
      });
      expect(res.status).to.equal(200);
      const page = JSON.parse((await res.text()).trim()) as { results: unknown[]; last_seq: number };
      expect(page).to.deep.equal({ results: [], last_seq: 0, pending: 0 });
    } finally {
      clearInterval(gc);
    }
  });
});
