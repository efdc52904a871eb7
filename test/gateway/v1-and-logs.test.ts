import { expect } from 'chai';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { v7 as uuidv7 } from 'uuid';
import { createGatewayApp } from '../../gateway/app.ts';
import { createLogger, silentLogger } from '../../http/log.ts';
import { generateSigningKey, jwksOf } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier } from '../../identity/tokens.ts';
import { listen, type Listening } from '../support/http.ts';
import { requireNats, requirePostgres } from '../support/services.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';

const CORRELATION = '0190a0b0-c0de-7000-8000-000000000123';

describe('/v1 pass-through', function () {
  let echo: Server;
  let echoUrl: string;
  let gateway: Listening;
  let token: string;
  let issuer: ReturnType<typeof createTokenIssuer>;

  before(async function () {
    echo = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        res.writeHead(req.url?.includes('fail') ? 409 : 200, { 'content-type': 'application/json', etag: '"7"', 'idempotent-replayed': 'true', 'x-secret': 'no' });
        res.end(JSON.stringify({ url: req.url, method: req.method, headers: req.headers, body, code: 'VERSION_CONFLICT' }));
      });
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoUrl = `http://127.0.0.1:${(echo.address() as AddressInfo).port}`;
    const key = await generateSigningKey();
    issuer = createTokenIssuer({ key, issuer: 'ferry-test' });
    token = await issuer.mintAccess({ sub: 'ada', owner: 'ada', tid: 'north', roles: ['registrar'], sid: 's' });
    gateway = await listen(
      createGatewayApp({
        logger: silentLogger(),
        signingKeys: [key],
        devIdp: null,
        v1Routes: [{ collection: 'patients', serviceUrl: echoUrl }],
        readiness: async () => undefined,
        verifyToken: createTokenVerifier({ jwks: jwksOf([key]), issuer: 'ferry-test' }),
        limits: { v1PerUser: { rate: 1, burst: 3 } },
      }),
    );
  });
  after(async function () {
    await gateway?.close();
    echo?.closeAllConnections();
    await new Promise<void>((r) => echo?.close(() => r()));
  });

  it('forwards identity, Idempotency-Key, If-Match and X-Correlation-Id unchanged, strips X-Ferry-*, and hands answers back as they came', async function () {
    const res = await fetch(`${gateway.url}/v1/patients/pat_x?fail=1`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${token}`,
        'idempotency-key': 'k-1',
        'if-match': '"3"',
        'x-correlation-id': CORRELATION,
        'x-ferry-actor': 'forged',
        'content-type': 'application/json',
      },
      body: JSON.stringify({ a: 1 }),
    });
    expect(res.status).to.equal(409);
    expect(res.headers.get('etag')).to.equal('"7"');
    expect(res.headers.get('idempotent-replayed')).to.equal('true');
    expect(res.headers.get('x-secret')).to.equal(null);
    expect(res.headers.get('x-correlation-id')).to.equal(CORRELATION);
    const seen = (await res.json()) as { url: string; method: string; headers: Record<string, string>; body: string; code: string };
    expect(seen.code).to.equal('VERSION_CONFLICT');
    expect(seen.url).to.equal('/v1/patients/pat_x?fail=1');
    expect(seen.method).to.equal('PUT');
    expect(seen.body).to.equal('{"a":1}');
    expect(seen.headers).to.include({ authorization: `Bearer ${token}`, 'idempotency-key': 'k-1', 'if-match': '"3"', 'x-correlation-id': CORRELATION });
    expect(Object.keys(seen.headers).filter((h) => h.startsWith('x-ferry-'))).to.deep.equal([]);
  });

  it('mints a correlation id when there is none, and refuses a missing token at the edge', async function () {
    const res = await fetch(`${gateway.url}/v1/patients/pat_y`, { headers: { authorization: `Bearer ${token}` } });
    const minted = res.headers.get('x-correlation-id');
    expect(minted).to.match(/^[0-9a-f-]{36}$/);
    expect(((await res.json()) as { headers: Record<string, string> }).headers['x-correlation-id']).to.equal(minted);
    const anonymous = await fetch(`${gateway.url}/v1/patients/pat_y`);
    expect(anonymous.status).to.equal(401);
    expect(await anonymous.json()).to.include({ code: 'UNAUTHENTICATED' });
  });

  it('a path cannot climb out of its collection on the service (`..`, `%2e%2e`)', async function () {
    // Raw request paths: fetch() would normalise `..` on the client side already.
    const climber = await issuer.mintAccess({ sub: 'ben', owner: 'ben', tid: 'north', roles: ['registrar'], sid: 's' });
    const rawGet = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const u = new URL(gateway.url);
        const req = request({ host: u.hostname, port: u.port, path, headers: { authorization: `Bearer ${climber}` } }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    for (const path of ['/v1/patients/../admin', '/v1/patients/%2e%2e/%2e%2e/internal', '/v1/patients\\..\\..\\admin']) {
      const res = await rawGet(path);
      expect(res.status, path).to.be.oneOf([200, 404]);
      if (res.status === 200) expect((JSON.parse(res.body) as { url: string }).url, path).to.match(/^\/v1\/patients(\/|$)/);
    }
  });

  it('limits each user with 429 and Retry-After', async function () {
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${gateway.url}/v1/patients/pat_z`, { headers: { authorization: `Bearer ${token}` } });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
      await res.body?.cancel();
    }
    expect(statuses).to.include(429);
    expect(Number(retryAfter)).to.be.greaterThan(0);
  });
});

describe('log scan: no PHI in any log line', function () {
  this.timeout(180_000);
  let stack: TestStack;
  const lines: string[] = [];
  // Synthetic patients only; every value below must stay out of the logs.
  const phi = { givenName: 'Zyxwaldo', familyName: 'Quorvenstein', birthDate: '1987-03-14', identifier: 'SYN-LOGSCAN-4411', phone: '+2348009876543' };

  before(async function () {
    await requirePostgres(this);
    await requireNats(this);
    const logger = createLogger('scan', { level: 'debug', destination: { write: (line: string) => void lines.push(line) } });
    stack = await startTestStack({ logger, workerTuning: { tickMs: 100 } });
  });
  after(async function () {
    await stack?.stop();
  });

  it('keeps names, birth dates, identifiers and phones out of gateway, worker and service logs', async function () {
    const token = await stack.login('ada', 'north');
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const patient = {
      givenName: phi.givenName, familyName: phi.familyName, birthDate: phi.birthDate, sex: 'female', facility: 'north-hc-1',
      phone: phi.phone, identifiers: [{ system: 'national-id', value: phi.identifier }],
    };
    const created = await fetch(`${stack.url}/v1/patients`, { method: 'POST', headers: { ...auth, 'idempotency-key': uuidv7() }, body: JSON.stringify(patient) });
    expect(created.status).to.equal(201);
    const { id } = (await created.json()) as { id: string };
    // A likely duplicate, a stale update, a bad date and a name search: the paths where values most often leak.
    const dup = await fetch(`${stack.url}/v1/patients`, { method: 'POST', headers: { ...auth, 'idempotency-key': uuidv7() }, body: JSON.stringify(patient) });
    expect(dup.status).to.equal(409);
    const stale = await fetch(`${stack.url}/v1/patients/${id}`, { method: 'PUT', headers: { ...auth, 'idempotency-key': uuidv7(), 'if-match': '"9"' }, body: JSON.stringify(patient) });
    expect(stale.status).to.equal(409);
    const bad = await fetch(`${stack.url}/v1/patients`, { method: 'POST', headers: { ...auth, 'idempotency-key': uuidv7() }, body: JSON.stringify({ ...patient, birthDate: '1987-02-30' }) });
    expect(bad.status).to.equal(422);
    const search = await fetch(`${stack.url}/v1/patients?name=${phi.familyName}`, { headers: auth });
    expect(search.status).to.equal(200);
    await search.body?.cancel();

    // And through the offline path: a mutation doc via /sync, committed by the worker.
    const mid = uuidv7();
    const doc = {
      _id: `m:ada:${mid}`, _rev: '1-0123456789abcdef0123456789abcdef', type: 'mutation', v: 1, tenant: 'north', owner: 'ada', device: 'dev-scan', seq: 1,
      op: 'patient.create', entity: `pat_${uuidv7()}`, after: null, resolves: null, baseVersion: null,
      payload: { ...patient, identifiers: [{ system: 'national-id', value: `${phi.identifier}-2` }], givenName: `${phi.givenName}b` }, createdAt: new Date().toISOString(),
    };
    const push = await fetch(`${stack.url}/sync/north/_bulk_docs`, { method: 'POST', headers: auth, body: JSON.stringify({ new_edits: false, docs: [doc] }) });
    expect(push.status).to.equal(201);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const res = await fetch(`${stack.url}/sync/north/_changes?include_docs=true`, { headers: auth });
      const feed = (await res.json()) as { results: Array<{ id: string; doc?: { state?: string } }> };
      const status = feed.results.find((r) => r.id === `s:ada:${mid}`);
      if (status?.doc?.state && status.doc.state !== 'retrying' && status.doc.state !== 'waiting') break;
      if (Date.now() > deadline) throw new Error('no terminal status in time');
      await new Promise((r) => setTimeout(r, 200));
    }

    expect(lines.length).to.be.greaterThan(5);
    expect(lines.some((l) => l.includes('"tenant":"north"') && l.includes('"msg":"request"'))).to.equal(true);
    const leaks = lines.filter((l) => Object.values(phi).some((v) => l.includes(v)) || l.includes(phi.birthDate.replace(/-/g, '')));
    expect(leaks, leaks.join('\n')).to.deep.equal([]);
  });
});
