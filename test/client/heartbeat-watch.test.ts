import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { heartbeatOf, withHeartbeatWatch } from '../../client/heartbeat-watch.ts';

describe('client heartbeat watch (live pull over a connection that goes silent)', function () {
  let server: Server;
  let base: string;
  before(async function () {
    // /silent: a longpoll that sends headers and one heartbeat, then nothing, and never closes
    // (what a half-open connection looks like). /beating: heartbeats every 50 ms, then the answer.
    server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('\n');
      if (req.url?.startsWith('/db/_changes') && req.url.includes('beating')) {
        const beat = setInterval(() => res.write('\n'), 50);
        setTimeout(() => {
          clearInterval(beat);
          res.end('{"results":[],"last_seq":7,"pending":0}');
        }, 400);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async function () {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it('reads the heartbeat of live _changes requests only', function () {
    const cases: Array<[string, number | null]> = [
      ['/sync/t/_changes?style=all_docs&feed=longpoll&heartbeat=10000&since=4&limit=100', 10_000],
      ['/sync/t/_changes?feed=continuous&heartbeat=500', 500],
      ['/sync/t/_changes?since=4&limit=100', null],
      ['/sync/t/_changes?feed=longpoll', null],
      ['/sync/t/_bulk_get?heartbeat=10000&feed=longpoll', null],
    ];
    for (const [url, want] of cases) expect(heartbeatOf(url), url).to.equal(want);
  });

  it('fails a live pull whose heartbeats stop', async function () {
    const f = withHeartbeatWatch((i, o) => fetch(i, o));
    const res = await f(`${base}/db/_changes?feed=longpoll&heartbeat=100&since=1`);
    const err = await res.json().then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.name).to.equal('HeartbeatMissed');
  });

  it('leaves a live pull alone while heartbeats keep coming', async function () {
    const f = withHeartbeatWatch((i, o) => fetch(i, o));
    const res = await f(`${base}/db/_changes?feed=longpoll&heartbeat=100&since=1&beating`);
    expect(await res.json()).to.deep.equal({ results: [], last_seq: 7, pending: 0 });
  });
});
