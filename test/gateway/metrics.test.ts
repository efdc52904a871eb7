import { expect } from 'chai';
import { routeClassOf, type RouteClass } from '../../gateway/metrics/http.ts';
import { requireNats } from '../support/services.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';

// `/metrics` on prom-client (issue 10, "Health and metrics"): every metric declared once, the
// default process metrics with event-loop lag, HTTP histograms per route class (never per raw
// path, so no ids in labels), and the outbox and relay backlog gauges.

/** Names that a `# HELP` or `# TYPE` line declares more than once. */
function duplicateDeclarations(text: string): string[] {
  const seen = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^# (HELP|TYPE) (\S+)/.exec(line);
    if (m) seen.set(`${m[1]} ${m[2]}`, (seen.get(`${m[1]} ${m[2]}`) ?? 0) + 1);
  }
  return [...seen].filter(([, n]) => n > 1).map(([k]) => k);
}

describe('metrics', function () {
  describe('route classes', function () {
    const cases: Array<[string, string, RouteClass]> = [
      ['GET', '/healthz', 'health'],
      ['GET', '/readyz', 'health'],
      ['GET', '/metrics', 'metrics'],
      ['POST', '/auth/token', 'auth'],
      ['GET', '/.well-known/jwks.json', 'auth'],
      ['POST', '/v1/patients', 'v1'],
      ['GET', '/v1/patients/pat_0123456789abcdef?x=1', 'v1'],
      ['GET', '/app/index.html', 'app'],
      ['GET', '/', 'app'],
      ['POST', '/sync/north/_bulk_docs', 'sync_write'],
      ['PUT', '/sync/north/_local/abc', 'sync_write'],
      ['GET', '/sync/north/_local/abc', 'sync_read'],
      ['POST', '/sync/north/_revs_diff', 'sync_read'],
      ['POST', '/sync/north/_bulk_get?revs=true', 'sync_read'],
      ['GET', '/sync/north/m%3Aada%3Ax', 'sync_read'],
      ['GET', '/sync/north/_changes?feed=longpoll', 'sync_changes'],
      ['POST', '/sync/north/_bulk_docs/extra', 'other'],
      ['GET', '/_utils/', 'operator'],
      ['GET', '/inbox_north', 'operator'],
      ['GET', '/nowhere', 'other'],
    ];
    for (const [method, path, expected] of cases) {
      it(`${method} ${path} → ${expected}`, function () {
        expect(routeClassOf(method, path)).to.equal(expected);
      });
    }
  });

  describe('/metrics on a running stack', function () {
    this.timeout(120_000);
    let stack: TestStack;
    let text: string;

    before(async function () {
      await requireNats(this);
      stack = await startTestStack({ webApp: false });
      const token = await stack.login('ada', 'north');
      const auth = { authorization: `Bearer ${token}` };
      await fetch(`${stack.url}/healthz`);
      const created = await fetch(`${stack.url}/v1/patients`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json', 'idempotency-key': 'metrics-1' },
        body: JSON.stringify({ givenName: 'Orlavi', familyName: 'Pemtaru', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1' }),
      });
      expect(created.status).to.equal(201);
      const { id } = (await created.json()) as { id: string };
      expect((await fetch(`${stack.url}/v1/patients/${id}`, { headers: auth })).status).to.equal(200);
      expect((await fetch(`${stack.url}/sync/north/_changes?since=0&limit=1`, { headers: auth })).status).to.equal(200);
      expect((await fetch(`${stack.url}/sync/north/_bulk_docs`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"docs":[]}' })).status).to.be.below(500);
      const res = await fetch(`${stack.url}/metrics`);
      expect(res.status).to.equal(200);
      text = await res.text();
    });
    after(async () => {
      await stack?.stop();
    });

    it('declares every metric once', function () {
      expect(duplicateDeclarations(text)).to.deep.equal([]);
      expect(text.match(/^# TYPE ferry_queue_depth /gm)).to.have.length(1);
    });

    it('has the default process metrics, event-loop lag included', function () {
      expect(text).to.match(/^process_cpu_user_seconds_total \d/m);
      expect(text).to.match(/^process_resident_memory_bytes \d/m);
      expect(text).to.match(/^nodejs_eventloop_lag_seconds \d/m);
    });

    it('has request-duration histograms per route class, with no path or id in any label', function () {
      for (const cls of ['health', 'auth', 'v1', 'sync_changes', 'sync_write']) {
        expect(text, cls).to.match(new RegExp(`^ferry_http_request_duration_seconds_count\\{route_class="${cls}",method="[A-Z]+",status="\\d+"\\} [1-9]`, 'm'));
      }
      const labelValues = [...text.matchAll(/="([^"]*)"/g)].map((m) => m[1]!);
      expect(labelValues.filter((v) => v.includes('/') || v.startsWith('pat_') || v.includes('ada'))).to.deep.equal([]);
    });

    it('has the worker figures, and the outbox and relay backlog gauges', function () {
      for (const name of ['ferry_queue_depth', 'ferry_worker_lease_live', 'ferry_worker_outcomes_total', 'ferry_worker_commit_seconds', 'ferry_outbox_backlog', 'ferry_relay_backlog_seconds', 'ferry_relay_connected']) {
        expect(text, name).to.match(new RegExp(`^# TYPE ${name} `, 'm'));
      }
      expect(text).to.match(/^ferry_outbox_backlog\{service="registration"\} \d+/m);
      expect(text).to.match(/^ferry_relay_backlog_seconds\{service="registration"\} [\d.e+-]+/m);
    });
  });
});
