import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startFaultProxy, chooseFault, requestKind, CALM, type FaultProxy, type RequestKind } from '../../harness/fault-proxy.ts';
import { seededRandom, forkRandom } from '../../harness/random.ts';

describe('harness fault proxy', function () {
  let upstream: Server;
  let hits: string[];
  let target: string;

  before(async function () {
    hits = [];
    upstream = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        hits.push(`${req.method} ${req.url} ${body}`);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ n: hits.length }));
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    target = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  });
  after(async function () {
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
  });
  beforeEach(function () {
    hits.length = 0;
  });

  async function withProxy(plan: typeof CALM, fn: (p: FaultProxy) => Promise<void>): Promise<void> {
    const proxy = await startFaultProxy({ target, plan, randomFor: (d) => forkRandom(7, d) });
    try {
      await fn(proxy);
    } finally {
      await proxy.close();
    }
  }

  it('gives the same fault schedule for the same seed', function () {
    const plan = { ...CALM, reset: 0.2, dropResponse: 0.2, duplicate: 0.2 };
    const run = (seed: number) => {
      const r = seededRandom(seed);
      return Array.from({ length: 50 }, () => chooseFault(r, plan, false));
    };
    expect(run(7)).to.deep.equal(run(7));
    expect(run(7)).to.not.deep.equal(run(8));
    expect(new Set(run(7))).to.include.members(['none', 'reset', 'drop-response', 'duplicate']);
  });

  it('several targets: round robin, and a target that refuses connections is passed over', async function () {
    const second: string[] = [];
    const other = createServer((req, res) => {
      second.push(`${req.method} ${req.url}`);
      res.end('{}');
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const otherUrl = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    // A port nothing listens on: a killed gateway.
    const dead = await new Promise<string>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const port = (s.address() as AddressInfo).port;
        s.close(() => resolve(`http://127.0.0.1:${port}`));
      });
    });
    const proxy = await startFaultProxy({ target: [target, dead, otherUrl], plan: CALM, randomFor: (d) => forkRandom(7, d) });
    try {
      for (let i = 0; i < 6; i++) expect((await fetch(`${proxy.deviceUrl('dev-rr')}/x${i}`)).status).to.equal(200);
      // Turns 0..5 go to target, dead→other, other, target, dead→other, other: nothing is lost or sent twice.
      expect(hits.map((h) => h.split(' ')[1])).to.deep.equal(['/x0', '/x3']);
      expect(second).to.deep.equal(['GET /x1', 'GET /x2', 'GET /x4', 'GET /x5']);
    } finally {
      await proxy.close();
      other.closeAllConnections();
      await new Promise<void>((r) => other.close(() => r()));
    }
  });

  it('passes requests through with the device prefix stripped', async function () {
    await withProxy(CALM, async (p) => {
      const res = await fetch(`${p.deviceUrl('dev-1')}/sync/north/_revs_diff`, { method: 'POST', body: '{"a":1}' });
      expect(res.status).to.equal(200);
      expect(hits).to.deep.equal(['POST /sync/north/_revs_diff {"a":1}']);
    });
  });

  it('duplicates a request: the server sees it twice, the device gets one answer', async function () {
    await withProxy({ ...CALM, duplicate: 1 }, async (p) => {
      const res = await fetch(`${p.deviceUrl('dev-1')}/x`, { method: 'POST', body: 'b' });
      expect(await res.json()).to.deep.equal({ n: 1 });
      expect(hits).to.have.length(2);
      expect(p.counts().duplicate).to.equal(1);
    });
  });

  it('drops the answer after the server did the work', async function () {
    await withProxy({ ...CALM, dropResponse: 1 }, async (p) => {
      let failed = false;
      await fetch(`${p.deviceUrl('dev-1')}/x`, { method: 'POST', body: 'b' }).catch(() => (failed = true));
      expect(failed).to.equal(true);
      expect(hits).to.have.length(1);
    });
  });

  it('resets before the server sees anything, and refuses offline devices', async function () {
    await withProxy({ ...CALM, reset: 1 }, async (p) => {
      let failed = false;
      await fetch(`${p.deviceUrl('dev-1')}/x`).catch(() => (failed = true));
      expect(failed).to.equal(true);
      expect(hits).to.have.length(0);
    });
    await withProxy(CALM, async (p) => {
      p.setOffline('dev-2', true);
      let failed = false;
      await fetch(`${p.deviceUrl('dev-2')}/x`).catch(() => (failed = true));
      expect(failed).to.equal(true);
      expect((await fetch(`${p.deviceUrl('dev-3')}/x`)).status).to.equal(200);
      p.setOffline('dev-2', false);
      expect((await fetch(`${p.deviceUrl('dev-2')}/x`)).status).to.equal(200);
      expect(p.counts()['offline-refused']).to.equal(1);
    });
  });

  it('caps bandwidth on answers', async function () {
    await withProxy({ ...CALM, bandwidthBytesPerSec: 1_000_000 }, async (p) => {
      const res = await fetch(`${p.deviceUrl('dev-1')}/x`);
      expect(await res.json()).to.deep.equal({ n: 1 });
    });
  });

  describe('when the gateway dies in the middle of an answer', function () {
    // A gateway killed with -9 while a longpoll waits: headers and a heartbeat went out, then the
    // socket goes away. The device must see its request fail, as it would on a real network,
    // and not wait forever on a half-sent 200 (the device's fetch has no timeout of its own).
    let dying: Server;
    let dyingTarget: string;
    before(async function () {
      dying = createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('\n');
        setTimeout(() => req.socket.destroy(), 50);
      });
      await new Promise<void>((r) => dying.listen(0, '127.0.0.1', r));
      dyingTarget = `http://127.0.0.1:${(dying.address() as AddressInfo).port}`;
    });
    after(async function () {
      dying.closeAllConnections();
      await new Promise<void>((r) => dying.close(() => r()));
    });

    /** What the device's fetch ends with: the body, its failure, or 'hung' if neither came in 3 s. */
    async function outcome(plan: typeof CALM, path: string): Promise<string> {
      const proxy = await startFaultProxy({ target: dyingTarget, plan, randomFor: (d) => forkRandom(7, d) });
      let timer: NodeJS.Timeout | undefined;
      try {
        const hung = new Promise<string>((r) => (timer = setTimeout(() => r('hung'), 3_000)));
        const got = fetch(`${proxy.deviceUrl('dev-1')}${path}`).then(
          async (res) => (res.status === 200 ? res.text().then(() => 'ended', () => 'failed') : `status ${res.status}`),
          () => 'failed',
        );
        return await Promise.race([got, hung]);
      } finally {
        clearTimeout(timer);
        await proxy.close();
      }
    }

    const longpoll = '/sync/north/_changes?feed=longpoll&heartbeat=10000&since=4';
    it('fails the device\'s longpoll instead of leaving it open', async function () {
      expect(await outcome(CALM, longpoll)).to.equal('failed');
    });
    it('fails it too when the answer goes through the bandwidth cap', async function () {
      expect(await outcome({ ...CALM, bandwidthBytesPerSec: 256 * 1024 }, longpoll)).to.equal('failed');
    });
    it('answers a duplicated request whose original answer broke off with 502', async function () {
      expect(await outcome({ ...CALM, duplicate: 1 }, '/sync/north/_bulk_docs')).to.equal('status 502');
    });
  });
});

describe('harness fault proxy: requestKind (what a device request is for)', () => {
  const cases: Array<[string, string, RequestKind]> = [
    ['GET', '/sync/', 'server-root'],
    ['GET', '/sync/h1-abc', 'db-info'],
    ['GET', '/sync/h1-abc/', 'db-info'],
    ['GET', '/sync/h1-abc/_local/x%3D%3D', 'local-get'],
    ['PUT', '/sync/h1-abc/_local/ferry-ack-d1', 'local-put'],
    ['GET', '/sync/h1-abc/_changes?style=all_docs&feed=longpoll&heartbeat=10000&since=3', 'changes-longpoll'],
    ['GET', '/sync/h1-abc/_changes?style=all_docs&since=3&limit=500', 'changes'],
    ['POST', '/sync/h1-abc/_revs_diff', 'revs-diff'],
    ['POST', '/sync/h1-abc/_bulk_docs', 'bulk-docs'],
    ['POST', '/sync/h1-abc/_bulk_get?revs=true&latest=true', 'bulk-get'],
    ['POST', '/auth/refresh', 'auth'],
    ['GET', '/sync/h1-abc/s:u:0190?revs=true&latest=true&open_revs=%5B%221-a%22%5D', 'doc-get'],
    ['GET', '/sync/h1-abc/_all_docs', 'other'],
    ['GET', '/v1/patients/p1', 'other'],
  ];
  for (const [method, path, want] of cases) it(`${method} ${path} → ${want}`, () => expect(requestKind(method, path)).to.equal(want));
});
