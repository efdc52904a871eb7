import { expect } from 'chai';
import { createGatewayApp } from '../../gateway/app.ts';
import { silentLogger } from '../../http/log.ts';
import { generateSigningKey } from '../../identity/keys.ts';
import { listen } from '../support/http.ts';

// The per-IP limit behind a load balancer (docs/DEPLOY.md "Gateways behind TLS"): with the
// balancer in FERRY_TRUSTED_PROXIES, each client forwarded by it has its own bucket; without it,
// a forwarded address is not believed and every request counts against the peer's one bucket.

describe('gateway per-IP limit behind a proxy', function () {
  const BURST = 2;

  async function gateway(trustedProxies: readonly string[]) {
    return listen(
      createGatewayApp({
        logger: silentLogger(),
        signingKeys: [await generateSigningKey()],
        devIdp: null,
        v1Routes: [],
        readiness: async () => undefined,
        trustedProxies,
        // A bucket that does not refill within the test: only the burst counts.
        limits: { perIp: { rate: 0.001, burst: BURST } },
      }),
    );
  }

  const statuses = async (url: string, clients: string[]) => {
    const out: number[] = [];
    for (const client of clients) {
      const res = await fetch(`${url}/healthz`, { headers: { 'x-forwarded-for': client } });
      await res.body?.cancel();
      out.push(res.status);
    }
    return out;
  };

  it('keys on the forwarded client when the proxy is trusted', async function () {
    const gw = await gateway(['loopback']);
    try {
      // Client A spends its burst, then is refused; client B, through the same proxy, is not.
      expect(await statuses(gw.url, ['203.0.113.1', '203.0.113.1', '203.0.113.1', '203.0.113.2', '203.0.113.2'])).to.deep.equal([200, 200, 429, 200, 200]);
    } finally {
      await gw.close();
    }
  });

  it('ignores X-Forwarded-For from an untrusted peer: one bucket for the peer', async function () {
    const gw = await gateway([]);
    try {
      expect(await statuses(gw.url, ['203.0.113.1', '203.0.113.2', '203.0.113.3'])).to.deep.equal([200, 200, 429]);
    } finally {
      await gw.close();
    }
  });
});
