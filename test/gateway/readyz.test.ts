import { expect } from 'chai';
import { createReadiness, decideReadiness, type ComponentCheck } from '../../gateway/health/readiness.ts';
import { freePort, requireNats } from '../support/services.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';

// `/readyz` (issue 10, "Health and metrics"): it names what makes the stack unready (CouchDB, the
// platform database, the registration service it runs) with 503, reports degraded states (NATS
// down, an outbox backlog) with 200, answers within its timeout, and reveals no secrets.

interface ReadyBody {
  ok: boolean;
  status: 'ready' | 'degraded' | 'unready';
  components: Record<string, { status: string; reason?: string }>;
}

async function readyz(stack: TestStack): Promise<{ status: number; body: ReadyBody; text: string }> {
  const res = await fetch(`${stack.url}/readyz`);
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as ReadyBody, text };
}

async function registerPatient(stack: TestStack, token: string, key: string): Promise<void> {
  const res = await fetch(`${stack.url}/v1/patients`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ givenName: 'Selvari', familyName: `Ondrek${key.replace(/\W/g, '')}`, birthDate: '1988-02-03', sex: 'male', facility: 'north-hc-1' }),
  });
  expect(res.status).to.equal(201);
}

describe('/readyz', function () {
  describe('decision', function () {
    it('is ready when all is up, degraded for an optional component, unready for a required one', function () {
      expect(decideReadiness([{ component: 'couchdb', impact: 'unready', failure: null }]).status).to.equal('ready');
      const degraded = decideReadiness([
        { component: 'couchdb', impact: 'unready', failure: null },
        { component: 'nats', impact: 'degraded', failure: 'disconnected' },
      ]);
      expect(degraded).to.deep.equal({ status: 'degraded', components: { couchdb: { status: 'up' }, nats: { status: 'degraded', reason: 'disconnected' } } });
      const unready = decideReadiness([
        { component: 'nats', impact: 'degraded', failure: 'disconnected' },
        { component: 'platform_db', impact: 'unready', failure: 'timeout' },
      ]);
      expect(unready.status).to.equal('unready');
      expect(unready.components.platform_db).to.deep.equal({ status: 'down', reason: 'timeout' });
    });

    it('bounds a probe that never answers by the timeout, and does not start it again while it hangs', async function () {
      let started = 0;
      const hangs: ComponentCheck = {
        component: 'platform_db',
        impact: 'unready',
        probe: () => {
          started++;
          return new Promise(() => undefined);
        },
      };
      const throws: ComponentCheck = { component: 'couchdb', impact: 'unready', probe: () => Promise.reject(new Error('ECONNREFUSED http://admin:secret@127.0.0.1:1')) };
      const readiness = createReadiness([hangs, throws], { timeoutMs: 50 });
      const first = await readiness();
      expect(first).to.deep.equal({
        status: 'unready',
        components: { platform_db: { status: 'down', reason: 'timeout' }, couchdb: { status: 'down', reason: 'unreachable' } },
      });
      await readiness();
      expect(started).to.equal(1);
    });
  });

  describe('on a running stack', function () {
    this.timeout(180_000);
    let stack: TestStack;
    before(async function () {
      await requireNats(this);
      // No worker: closing the platform database below must not upset anything else.
      stack = await startTestStack({ webApp: false, worker: false, env: { FERRY_READYZ_TIMEOUT_MS: '3000' } });
    });
    after(async () => {
      await stack?.stop();
    });

    it('is ready with every component up, and /healthz stays liveness only', async function () {
      // The relay connects to NATS in the background after start-up; until then NATS counts as degraded.
      let r = await readyz(stack);
      for (let i = 0; i < 100 && r.body.status !== 'ready'; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        r = await readyz(stack);
      }
      expect(r.status).to.equal(200);
      expect(r.body).to.deep.equal({
        ok: true,
        status: 'ready',
        components: { couchdb: { status: 'up' }, platform_db: { status: 'up' }, registration: { status: 'up' }, nats: { status: 'up' }, outbox: { status: 'up' } },
      });
      const health = await fetch(`${stack.url}/healthz`);
      expect(health.status).to.equal(200);
      expect(await health.json()).to.deep.equal({ ok: true });
    });

    it('answers 503 naming CouchDB once it is stopped, without URLs or credentials', async function () {
      await stack.couch.embedded!.stop();
      const r = await readyz(stack);
      expect(r.status).to.equal(503);
      expect(r.body.status).to.equal('unready');
      expect(r.body.components.couchdb).to.deep.equal({ status: 'down', reason: 'unreachable' });
      expect(r.body.components.platform_db).to.deep.equal({ status: 'up' });
      expect(r.text).to.not.match(/127\.0\.0\.1|http:|password|admin/i);
      expect((await fetch(`${stack.url}/healthz`)).status).to.equal(200);
    });

    it('answers 503 naming the platform database once it is unreachable', async function () {
      await stack.platform.db.close();
      const r = await readyz(stack);
      expect(r.status).to.equal(503);
      expect(r.body.components.platform_db).to.deep.equal({ status: 'down', reason: 'unreachable' });
    });
  });

  describe('degraded states', function () {
    this.timeout(180_000);
    let stack: TestStack;
    before(async function () {
      await requireNats(this);
      // A NATS that is not there: the relay cannot publish, events wait in the outbox.
      const nowhere = `nats://127.0.0.1:${await freePort()}`;
      stack = await startTestStack({ webApp: false, worker: false, env: { NATS_URL: nowhere, FERRY_READYZ_OUTBOX_BACKLOG: '1' } });
    });
    after(async () => {
      await stack?.stop();
    });

    it('is degraded, not unready, while NATS is down, and names an outbox backlog above the threshold', async function () {
      const token = await stack.login('ada', 'north');
      let r = await readyz(stack);
      expect(r.status).to.equal(200);
      expect(r.body).to.include({ ok: true, status: 'degraded' });
      expect(r.body.components.nats).to.deep.equal({ status: 'degraded', reason: 'disconnected' });
      expect(r.body.components.outbox).to.deep.equal({ status: 'up' });
      await registerPatient(stack, token, 'readyz-1');
      await registerPatient(stack, token, 'readyz-2');
      r = await readyz(stack);
      expect(r.status).to.equal(200);
      expect(r.body.components.outbox).to.deep.equal({ status: 'degraded', reason: 'backlog' });
      expect(r.body.components.couchdb).to.deep.equal({ status: 'up' });
      // The number itself is for /metrics, which needs a token outside loopback.
      expect(r.text).to.not.match(/\d{2,}/);
    });
  });
});
