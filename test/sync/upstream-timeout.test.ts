import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createUpstream } from '../../gateway/sync/upstream.ts';
import { FerryError } from '../../validators/codes.ts';
import { collectGarbage } from '../support/gc.ts';

// An upstream request the caller can also cancel (every /sync handler passes its client's signal)
// still gives up at the upstream timeout when CouchDB never answers, even after a GC. Its deadline
// is an `AbortSignal.any` of an `AbortSignal.timeout`, the pattern a GC disarmed in the longpoll
// (test/sync/longpoll-timeout.test.ts); handed to fetch it survives, and this keeps it so.

describe('sync: upstream timeout', function () {
  let server: Server;
  let url: string;
  before(async function () {
    // A CouchDB that accepts the request and never answers.
    server = createServer(() => undefined);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async function () {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('fails UNAVAILABLE at its timeout although the garbage collector ran meanwhile', async function () {
    const upstream = createUpstream({ url, timeoutMs: 300 });
    const client = new AbortController();
    const gc = setInterval(collectGarbage, 50);
    try {
      const outcome = await Promise.race([
        upstream.inbox('north').request({ path: ['_all_docs'], signal: client.signal }).then(
          () => 'answered',
          (err: unknown) => err,
        ),
        // Far past the timeout: only reached if the deadline was lost.
        new Promise((r) => setTimeout(() => r('still waiting'), 10_000)),
      ]);
      expect(outcome).to.be.instanceOf(FerryError);
      expect((outcome as FerryError).code).to.equal('UNAVAILABLE');
    } finally {
      clearInterval(gc);
      client.abort();
    }
  });

  it('stops at once when the caller aborts', async function () {
    const upstream = createUpstream({ url, timeoutMs: 60_000 });
    const client = new AbortController();
    const pending = upstream.inbox('north').request({ path: ['_all_docs'], signal: client.signal }).then(
      () => 'answered',
      (err: unknown) => err,
    );
    client.abort();
    const err = await pending;
    expect(err).to.have.property('name', 'AbortError');
  });
});
