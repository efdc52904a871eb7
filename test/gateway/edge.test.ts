import { expect } from 'chai';
import express from 'express';
import { takeToken, createRateLimiter } from '../../gateway/edge/rate-limit.ts';
import { cors } from '../../gateway/edge/cors.ts';
import { isOperatorPath } from '../../gateway/operators/routes.ts';
import { listen } from '../support/http.ts';

describe('gateway edge', function () {
  describe('token bucket', function () {
    const limit = { rate: 2, burst: 3 };
    it('allows a burst, then refuses with a Retry-After, then refills with time', function () {
      let bucket;
      const outcomes: boolean[] = [];
      for (let i = 0; i < 4; i++) {
        const r = takeToken(bucket, 1000, limit);
        outcomes.push(r.kind === 'allow');
        bucket = r.bucket;
      }
      expect(outcomes).to.deep.equal([true, true, true, false]);
      const refused = takeToken(bucket, 1000, limit);
      expect(refused.kind).to.equal('limited');
      if (refused.kind === 'limited') expect(refused.retryAfterSeconds).to.equal(1);
      expect(takeToken(bucket, 1500, limit).kind).to.equal('allow');
    });

    it('keeps separate buckets per key and forgets the oldest keys past its cap', function () {
      let t = 0;
      const limiter = createRateLimiter({ rate: 1, burst: 1 }, { now: () => t, maxKeys: 2 });
      expect(limiter.take('a').kind).to.equal('allow');
      expect(limiter.take('a').kind).to.equal('limited');
      expect(limiter.take('b').kind).to.equal('allow');
      expect(limiter.take('c').kind).to.equal('allow'); // evicts 'a'
      expect(limiter.take('a').kind).to.equal('allow');
      t = 1000;
      expect(limiter.take('b').kind).to.equal('allow');
    });
  });

  describe('operator paths', function () {
    const cases: Array<[string, boolean]> = [
      ['/', true],
      ['/_utils/', true],
      ['/_utils/dashboard.assets/x.js', true],
      ['/_session', true],
      ['/_all_dbs', true],
      ['/inbox_north', true],
      ['/inbox_north/m%3Aada%3Ax', true],
      ['/_users/org.couchdb.user:ada', true],
      ['/sync/north', false],
      ['/v1/patients', false],
      ['/auth/token', false],
      ['/metrics', false],
      ['/healthz', false],
      ['/.well-known/jwks.json', false],
      ['/%E0%A4%A', false],
      ['/Capital', false],
    ];
    for (const [path, expected] of cases) {
      it(`${expected ? 'proxies' : 'keeps'} ${path}`, function () {
        expect(isOperatorPath(path)).to.equal(expected);
      });
    }
  });

  describe('CORS', function () {
    it('answers allow-listed origins only, never with credentials', async function () {
      const app = express();
      app.use(cors({ origins: ['https://app.example'] }));
      app.get('/x', (_req, res) => {
        res.json({ ok: true });
      });
      const server = await listen(app);
      try {
        const ok = await fetch(`${server.url}/x`, { headers: { origin: 'https://app.example' } });
        expect(ok.headers.get('access-control-allow-origin')).to.equal('https://app.example');
        expect(ok.headers.get('access-control-allow-credentials')).to.equal(null);
        const other = await fetch(`${server.url}/x`, { headers: { origin: 'https://evil.example' } });
        expect(other.headers.get('access-control-allow-origin')).to.equal(null);
        const preflight = await fetch(`${server.url}/x`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
        expect(preflight.status).to.equal(403);
      } finally {
        await server.close();
      }
    });
  });
});
