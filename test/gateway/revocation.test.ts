// First: mocha tries require() before import(), and the stack's modules only load as ESM; once
// the client's PouchDB has loaded under require() first, the import() fallback fails.
import { startTestStack, type TestStack } from '../support/stack.ts';
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import { createLiveness, decideLiveness, type LiveKey, type LiveState } from '../../gateway/auth/liveness.ts';
import { sameRoles } from '../../gateway/v1/proxy.ts';
import { isSameOrigin } from '../../gateway/operators/routes.ts';
import { parseTrustedProxies } from '../../gateway/operators/trusted-proxies.ts';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { createGatewayApp } from '../../gateway/app.ts';
import type { AdminSessionStore } from '../../gateway/operators/admin-sessions.ts';
import type { MembershipDirectory } from '../../gateway/tenant/membership.ts';
import { silentLogger } from '../../http/log.ts';
import { generateSigningKey, jwksOf } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier } from '../../identity/tokens.ts';
import { FerryError } from '../../validators/codes.ts';
import { openNodeSession } from '../../client/node.ts';
import { devIdpTokens } from '../../client/examples/quickstart.ts';
import { readConfig, ConfigError } from '../../scripts/config.ts';
import { listen, postJson, type Listening } from '../support/http.ts';
import { TEST_DATABASE_URL, dropSchema, requireNats, requirePostgres, uniqueSchema } from '../support/services.ts';

// Issue 10, "revocation that bites": a revoked session, a removed membership and a changed role
// take effect on /sync and /v1 within seconds, not when the 5-minute access token expires; device
// sign-out (POST /auth/revoke); a failed refresh rolls its rotation back; the operator cookie
// behind a TLS proxy and the operator Origin check. Users and patients are the synthetic demo ones.

/** Polls `probe` until it returns true; resolves with the milliseconds it took, fails after `maxMs`. */
async function within(maxMs: number, probe: () => Promise<boolean>): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    if (Date.now() - start > maxMs) throw new Error(`not within ${maxMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('revocation: the liveness cache (pure parts)', function () {
  const key: LiveKey = { sid: 's1', tid: 'north', owner: 'ada' };
  const live: LiveState = { sessionActive: true, roles: ['registrar'] };

  function fakeLoader(state: () => LiveState) {
    const calls: LiveKey[] = [];
    return { calls, load: async (k: LiveKey) => (calls.push(k), state()) };
  }

  it('decides: a gone session first (401), then a missing membership (403), else the live roles', function () {
    expect(decideLiveness(live)).to.deep.equal({ kind: 'live', roles: ['registrar'] });
    expect(decideLiveness({ sessionActive: false, roles: ['registrar'] }).kind).to.equal('revoked');
    expect(decideLiveness({ sessionActive: false, roles: null }).kind).to.equal('revoked');
    expect(decideLiveness({ sessionActive: true, roles: null }).kind).to.equal('not-member');
  });

  it('asks the database once per session per TTL, not once per request (the hot /sync path)', async function () {
    let t = 0;
    const f = fakeLoader(() => live);
    const liveness = createLiveness({ load: f.load, ttlMs: 2_000, now: () => t });
    await Promise.all(Array.from({ length: 50 }, () => liveness.check(key)));
    for (let i = 0; i < 50; i++) await liveness.check(key);
    expect(f.calls).to.have.length(1);
    t = 1_999;
    await liveness.check(key);
    expect(f.calls).to.have.length(1);
    t = 2_001;
    await liveness.check(key);
    expect(f.calls).to.have.length(2);
    // Another session of the same user is its own entry.
    await liveness.check({ ...key, sid: 's2' });
    expect(f.calls).to.have.length(3);
  });

  it('drops a session at once when this process revokes it, and a user’s entries when their membership changes', async function () {
    let state: LiveState = live;
    const f = fakeLoader(() => state);
    const liveness = createLiveness({ load: f.load, ttlMs: 60_000, now: () => 0 });
    await liveness.check(key);
    await liveness.check({ sid: 'other', tid: 'north', owner: 'ben' });
    state = { sessionActive: false, roles: ['registrar'] };
    liveness.sessionRevoked('s1');
    const err = await liveness.check(key).then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(FerryError).with.property('code', 'UNAUTHENTICATED');

    state = { sessionActive: true, roles: null };
    const before = f.calls.length;
    liveness.membershipChanged('north', 'ben');
    const ben = await liveness.check({ sid: 'other', tid: 'north', owner: 'ben' }).then(() => null, (e: unknown) => e);
    expect(ben).to.be.instanceOf(FerryError).with.property('code', 'TENANT_MISMATCH');
    expect(f.calls.length).to.equal(before + 1);
  });

  it('uses a cached answer only for the same tenant and owner, and never caches a failed lookup', async function () {
    let fail = true;
    const f = fakeLoader(() => {
      if (fail) throw new Error('database down');
      return live;
    });
    const liveness = createLiveness({ load: f.load, ttlMs: 60_000, now: () => 0 });
    const down = await liveness.check(key).then(() => null, (e: unknown) => e);
    expect(down).to.be.instanceOf(FerryError).with.property('code', 'UNAVAILABLE');
    fail = false;
    expect(await liveness.check(key)).to.deep.equal(['registrar']);
    await liveness.check({ ...key, tid: 'south' });
    expect(f.calls.map((c) => c.tid)).to.deep.equal(['north', 'north', 'south']);
  });

  it('compares roles as sets (a stale token is re-minted only when they differ)', function () {
    expect(sameRoles(['a', 'b'], ['b', 'a'])).to.equal(true);
    expect(sameRoles(['registrar'], ['viewer'])).to.equal(false);
    expect(sameRoles(['registrar'], ['registrar', 'admin'])).to.equal(false);
    expect(sameRoles([], [])).to.equal(true);
  });
});

describe('revocation: operators behind a proxy (pure parts)', function () {
  it('an Origin is the gateway’s own only with the same scheme, host and port', function () {
    const cases: Array<[string, string, string, boolean]> = [
      ['http://gw:8080', 'http', 'gw:8080', true],
      ['https://gw', 'https', 'gw:443', true],
      ['https://gw:443', 'https', 'gw', true],
      ['https://gw:8080', 'http', 'gw:8080', false], // scheme differs: the old host-only check let this through
      ['http://gw:8080', 'https', 'gw:8080', false], // a plain-HTTP page writing to the TLS origin
      ['http://gw:9090', 'http', 'gw:8080', false],
      ['http://evil:8080', 'http', 'gw:8080', false],
      ['null', 'http', 'gw:8080', false],
      ['not a url', 'http', 'gw:8080', false],
    ];
    for (const [origin, protocol, host, same] of cases) expect(isSameOrigin(origin, { protocol, host }), `${origin} vs ${protocol}://${host}`).to.equal(same);
    expect(isSameOrigin('http://gw', { protocol: 'http', host: undefined })).to.equal(false);
  });

  it('FERRY_TRUSTED_PROXIES takes addresses, CIDR ranges and the named ranges, and refuses anything else naming the variable', function () {
    expect(parseTrustedProxies(undefined)).to.deep.equal([]);
    expect(parseTrustedProxies(' ')).to.deep.equal([]);
    expect(parseTrustedProxies('loopback, 10.0.0.5,10.1.0.0/16, ::1, fd00::/8')).to.deep.equal(['loopback', '10.0.0.5', '10.1.0.0/16', '::1', 'fd00::/8']);
    for (const bad of ['true', '*', '10.0.0.0/33', 'example.org', '10.0.0.1/x', '1']) {
      expect(() => readConfig({ FERRY_TRUSTED_PROXIES: bad }), bad).to.throw(ConfigError, /FERRY_TRUSTED_PROXIES/);
    }
    expect(readConfig({}).trustedProxies).to.deep.equal([]);
    expect(readConfig({}).sessionCheckTtlMs).to.equal(2000);
    expect(readConfig({ FERRY_SESSION_CHECK_TTL_MS: '500' }).sessionCheckTtlMs).to.equal(500);
    expect(() => readConfig({ FERRY_SESSION_CHECK_TTL_MS: 'soon' })).to.throw(ConfigError, /FERRY_SESSION_CHECK_TTL_MS/);
  });
});

describe('revocation: operator cookie and Origin over HTTP', function () {
  let couch: Server;
  let couchUrl: string;
  const gateways: Listening[] = [];
  let adminToken: string;
  let make: (trustedProxies: readonly string[]) => Promise<Listening>;

  before(async function () {
    // Stands in for CouchDB: every proxied operator call is answered 200.
    couch = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"ok":true}');
      });
    });
    await new Promise<void>((r) => couch.listen(0, '127.0.0.1', r));
    couchUrl = `http://127.0.0.1:${(couch.address() as AddressInfo).port}`;
    const key = await generateSigningKey();
    const issuer = createTokenIssuer({ key, issuer: 'ferry-op-test' });
    adminToken = await issuer.mintAccess({ sub: 'admin', owner: 'admin', tid: 'north', roles: ['admin', 'platform-admin'], sid: 'op' });
    const open = new Map<string, string>();
    const sessions: AdminSessionStore = {
      async open(userId) {
        const id = randomUUID().replace(/-/g, '').padEnd(43, 'x');
        open.set(id, userId);
        return id;
      },
      userOf: async (id) => open.get(id) ?? null,
      close: async (id) => void open.delete(id),
    };
    const memberships: MembershipDirectory = {
      rolesOf: async () => ['platform-admin'],
      rolesOfMany: async () => new Map(),
      set: async () => undefined,
      remove: async () => undefined,
      tenantsOf: async () => ['north'],
      membersOf: async () => [],
      isPlatformAdmin: async (u) => u === 'admin',
      facilitiesOf: async () => [],
      membershipOf: async () => ({ roles: ['platform-admin'], facilities: [] }),
      setFacilities: async () => true,
    };
    make = async (trustedProxies) => {
      const gw = await listen(
        createGatewayApp({
          logger: silentLogger(),
          signingKeys: [key],
          devIdp: null,
          v1Routes: [],
          readiness: async () => undefined,
          trustedProxies,
          operators: {
            couch: { url: couchUrl, admin: { username: 'admin', password: 'x' } },
            sessions,
            memberships,
            verifier: createTokenVerifier({ jwks: jwksOf([key]), issuer: 'ferry-op-test' }),
            users: null,
            logger: silentLogger(),
          },
        }),
      );
      gateways.push(gw);
      return gw;
    };
  });
  after(async function () {
    for (const gw of gateways) await gw.close();
    couch?.closeAllConnections();
    await new Promise<void>((r) => couch?.close(() => r()));
  });

  const signIn = (gw: Listening, headers: Record<string, string> = {}) =>
    fetch(`${gw.url}/auth/session`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json', ...headers }, body: '{}' });
  const cookieOf = (res: Response) => res.headers.get('set-cookie')?.split(';')[0] ?? '';

  it('the cookie is Secure when a trusted proxy says the browser used https, and not when anyone else says so', async function () {
    const behindProxy = await make(['loopback']);
    const viaTls = await signIn(behindProxy, { 'x-forwarded-proto': 'https' });
    expect(viaTls.status).to.equal(200);
    expect(viaTls.headers.get('set-cookie')).to.match(/;\s*Secure/i).and.match(/HttpOnly/i).and.match(/SameSite=Strict/i);
    const plain = await signIn(behindProxy);
    expect(plain.headers.get('set-cookie')).to.not.match(/;\s*Secure/i);

    // No trusted proxy: a client that sends X-Forwarded-Proto itself changes nothing.
    const direct = await make([]);
    const spoofed = await signIn(direct, { 'x-forwarded-proto': 'https' });
    expect(spoofed.status).to.equal(200);
    expect(spoofed.headers.get('set-cookie')).to.not.match(/;\s*Secure/i);
  });

  it('a write whose Origin differs in scheme or port is refused; the gateway’s own origin passes', async function () {
    const gw = await make([]);
    const cookie = cookieOf(await signIn(gw));
    const write = (origin: string, headers: Record<string, string> = {}) =>
      fetch(`${gw.url}/inbox_north/_bulk_docs`, { method: 'POST', headers: { cookie, origin, 'content-type': 'application/json', ...headers }, body: '{"docs":[]}' });
    const port = new URL(gw.url).port;
    expect((await write(gw.url)).status).to.equal(200);
    for (const foreign of [`https://127.0.0.1:${port}`, `http://127.0.0.1:${Number(port) + 1}`, 'http://evil.example', 'null']) {
      const res = await write(foreign);
      expect(res.status, foreign).to.equal(403);
      expect(await res.json()).to.include({ code: 'FORBIDDEN' });
    }

    // Behind a trusted TLS proxy the gateway's origin is https://host: the http one is foreign.
    const proxied = await make(['loopback']);
    const proxiedCookie = cookieOf(await signIn(proxied, { 'x-forwarded-proto': 'https' }));
    const host = new URL(proxied.url).host;
    const viaProxy = (origin: string) =>
      fetch(`${proxied.url}/inbox_north/_bulk_docs`, { method: 'POST', headers: { cookie: proxiedCookie, origin, 'x-forwarded-proto': 'https', 'content-type': 'application/json' }, body: '{"docs":[]}' });
    expect((await viaProxy(`https://${host}`)).status).to.equal(200);
    expect((await viaProxy(`http://${host}`)).status).to.equal(403);
  });
});

describe('revocation on a running stack', function () {
  this.timeout(120_000);
  let stack: TestStack;
  let other: Platform;
  const platformSchema = uniqueSchema('revoke_platform');
  const registrationSchema = uniqueSchema('revoke_reg');
  const measured: string[] = [];

  interface Login {
    access_token: string;
    refresh_token: string;
  }
  const login = async (username: string, tenant: string): Promise<Login> => {
    const res = await postJson(`${stack.url}/auth/token`, { username, password: 'ferry-dev', tenant });
    expect(res.status, `login ${username}@${tenant}`).to.equal(200);
    return res.body as Login;
  };
  const refresh = (token: string) => postJson(`${stack.url}/auth/refresh`, { refresh_token: token });
  const syncInfo = (token: string, tenant = 'north') => fetch(`${stack.url}/sync/${tenant}`, { headers: { authorization: `Bearer ${token}` } });
  const v1Get = (token: string) => fetch(`${stack.url}/v1/patients/pat_0190f000-0000-7000-8000-000000000000`, { headers: { authorization: `Bearer ${token}` } });
  const createPatient = (token: string) =>
    fetch(`${stack.url}/v1/patients`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': uuidv7() },
      body: JSON.stringify({ givenName: 'Synthetic', familyName: `Revocation${randomUUID().slice(0, 8)}`, birthDate: '1990-01-01', sex: 'unknown', facility: 'north-hc-1' }),
    });
  const revoke = (body: string, contentType = 'application/x-www-form-urlencoded') => fetch(`${stack.url}/auth/revoke`, { method: 'POST', headers: { 'content-type': contentType }, body });
  const statusOf = async (res: Promise<Response>) => {
    const r = await res;
    await r.body?.cancel();
    return r.status;
  };

  before(async function () {
    await requirePostgres(this);
    await requireNats(this);
    // PostgreSQL, so a second connection (another process's view) can change the same platform database.
    stack = await startTestStack({
      worker: false,
      webApp: false,
      env: { DATABASE_URL: TEST_DATABASE_URL, FERRY_PLATFORM_SCHEMA: platformSchema, FERRY_REGISTRATION_SCHEMA: registrationSchema },
    });
    other = await openPlatform({ databaseUrl: TEST_DATABASE_URL, schema: platformSchema });
  });
  after(async function () {
    if (measured.length) console.log(`      measured: ${measured.join('; ')}`);
    await other?.close();
    await stack?.stop();
    await dropSchema(platformSchema).catch(() => undefined);
    await dropSchema(registrationSchema).catch(() => undefined);
  });

  it('refresh-token reuse revokes the session, and its access tokens stop working on /sync and /v1 at once', async function () {
    const first = await login('cy', 'south');
    expect(await statusOf(syncInfo(first.access_token, 'south'))).to.equal(200);
    const rotated = (await refresh(first.refresh_token)).body as Login;
    expect(await statusOf(syncInfo(rotated.access_token, 'south'))).to.equal(200);
    expect((await refresh(first.refresh_token)).status).to.equal(401); // reuse: the session is revoked
    const ms = await within(10_000, async () => (await statusOf(syncInfo(rotated.access_token, 'south'))) === 401);
    measured.push(`same process, reuse → /sync 401 in ${ms} ms`);
    for (const token of [first.access_token, rotated.access_token]) {
      const sync = await syncInfo(token, 'south');
      expect(sync.status).to.equal(401);
      expect(await sync.json()).to.include({ code: 'UNAUTHENTICATED', error: 'unauthorized' });
      const v1 = await v1Get(token);
      expect(v1.status).to.equal(401);
      expect(await v1.json()).to.include({ code: 'UNAUTHENTICATED' });
    }
  });

  it('POST /auth/revoke with the refresh token (form-encoded) ends the session: refresh, /sync and /v1 all 401', async function () {
    const s = await login('ada', 'north');
    const keep = await login('ada', 'north'); // another device of the same user
    expect(await statusOf(syncInfo(s.access_token))).to.equal(200);
    const res = await revoke(new URLSearchParams({ token: s.refresh_token, token_type_hint: 'refresh_token' }).toString());
    expect(res.status).to.equal(200);
    expect(res.headers.get('cache-control')).to.equal('no-store');
    expect(await res.text()).to.equal('');
    expect(await statusOf(syncInfo(s.access_token))).to.equal(401);
    expect(await statusOf(v1Get(s.access_token))).to.equal(401);
    expect((await refresh(s.refresh_token)).status).to.equal(401);
    // Only that session: the other device goes on.
    expect(await statusOf(syncInfo(keep.access_token))).to.equal(200);
    expect((await refresh(keep.refresh_token)).status).to.equal(200);
  });

  it('POST /auth/revoke with the access token (JSON, no hint) ends its session too', async function () {
    const s = await login('ben', 'north');
    const res = await revoke(JSON.stringify({ token: s.access_token }), 'application/json');
    expect(res.status).to.equal(200);
    expect(await statusOf(syncInfo(s.access_token))).to.equal(401);
    expect((await refresh(s.refresh_token)).status).to.equal(401);
  });

  it('POST /auth/revoke answers 200 for unknown, garbage and foreign tokens, and revokes nothing with them', async function () {
    const s = await login('dee', 'north');
    const foreign = await createTokenIssuer({ key: await generateSigningKey(), issuer: 'ferry' }).mintAccess({ sub: 'dee', owner: 'dee', tid: 'north', roles: ['viewer'], sid: 'x' });
    for (const token of ['a'.repeat(43), 'not-a-token', 'a.b.c', foreign]) {
      const res = await revoke(new URLSearchParams({ token }).toString());
      expect(res.status, token).to.equal(200);
      expect(await res.text()).to.equal('');
    }
    expect(await statusOf(syncInfo(s.access_token))).to.equal(200);
    expect((await revoke('')).status).to.be.within(400, 422);
  });

  it('a member removed in this process gets 403 TENANT_MISMATCH on /sync and /v1 at once, the same answer as any non-member', async function () {
    const ben = await login('ben', 'north');
    const southToken = (await login('cy', 'south')).access_token;
    expect(await statusOf(syncInfo(ben.access_token))).to.equal(200);
    await stack.platform.memberships.remove('north', 'ben');
    try {
      const removed = await syncInfo(ben.access_token);
      const nonMember = await syncInfo(southToken, 'north');
      expect(removed.status).to.equal(403);
      expect(nonMember.status).to.equal(403);
      const strip = (b: Record<string, unknown>) => ({ ...b, correlationId: undefined });
      expect(strip((await removed.json()) as Record<string, unknown>)).to.deep.equal(strip((await nonMember.json()) as Record<string, unknown>));
      const v1 = await v1Get(ben.access_token);
      expect(v1.status).to.equal(403);
      expect(await v1.json()).to.include({ code: 'TENANT_MISMATCH' });
    } finally {
      await stack.platform.memberships.set('north', 'ben', ['registrar']);
    }
    expect(await statusOf(syncInfo(ben.access_token))).to.equal(200);
  });

  it('/v1 acts on the live role, not the one in the token: a demoted registrar cannot create, a promoted viewer can', async function () {
    const ada = (await login('ada', 'north')).access_token;
    const dee = (await login('dee', 'north')).access_token;
    expect((await createPatient(ada)).status).to.equal(201);
    expect((await createPatient(dee)).status).to.equal(403);
    await stack.platform.memberships.set('north', 'ada', ['viewer']);
    await stack.platform.memberships.set('north', 'dee', ['registrar']);
    try {
      const demoted = await createPatient(ada);
      expect(demoted.status).to.equal(403);
      expect(await demoted.json()).to.include({ code: 'FORBIDDEN' });
      expect((await createPatient(dee)).status).to.equal(201);
    } finally {
      await stack.platform.memberships.set('north', 'ada', ['registrar']);
      await stack.platform.memberships.set('north', 'dee', ['viewer']);
    }
    expect((await createPatient(ada)).status).to.equal(201);
  });

  it('/metrics with a platform-admin token stops at once when its session is revoked, and when the role is taken away', async function () {
    const metrics = (token: string) => statusOf(fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${token}` } }));
    const first = await login('admin', 'north');
    expect(await metrics(first.access_token)).to.equal(200);
    expect((await revoke(`token=${encodeURIComponent(first.refresh_token)}`)).status).to.equal(200);
    expect(await metrics(first.access_token)).to.equal(401);
    const second = (await login('admin', 'north')).access_token;
    expect(await metrics(second)).to.equal(200);
    await stack.platform.memberships.set('north', 'admin', ['admin']);
    try {
      expect(await metrics(second)).to.equal(403);
    } finally {
      await stack.platform.memberships.set('north', 'admin', ['admin', 'platform-admin']);
    }
  });

  it('a change made by another process (a second database connection) takes effect within the check TTL', async function () {
    const dee = await login('dee', 'north');
    const cy = await login('cy', 'east');
    expect(await statusOf(syncInfo(dee.access_token))).to.equal(200);
    expect(await statusOf(syncInfo(cy.access_token, 'east'))).to.equal(200);
    await other.memberships.remove('north', 'dee');
    try {
      const removedMs = await within(10_000, async () => (await statusOf(syncInfo(dee.access_token))) === 403);
      measured.push(`other process, membership removed → /sync 403 in ${removedMs} ms`);
    } finally {
      await other.memberships.set('north', 'dee', ['viewer']);
    }
    const sid = (JSON.parse(Buffer.from(cy.access_token.split('.')[1]!, 'base64url').toString()) as { sid: string }).sid;
    await other.sessions.revoke(sid);
    const revokedMs = await within(10_000, async () => (await statusOf(syncInfo(cy.access_token, 'east'))) === 401);
    measured.push(`other process, session revoked → /sync 401 in ${revokedMs} ms`);
    const v1Ms = await within(10_000, async () => (await statusOf(v1Get(cy.access_token))) === 401);
    measured.push(`→ /v1 401 ${v1Ms} ms later`);
  });

  it('`ferry member remove` (the CLI, another process) takes effect on /sync within the check TTL', async function () {
    const ben = await login('ben', 'north');
    expect(await statusOf(syncInfo(ben.access_token))).to.equal(200);
    const env = { ...process.env, DATABASE_URL: TEST_DATABASE_URL, FERRY_PLATFORM_SCHEMA: platformSchema, FERRY_DATA_DIR: stack.dir.path, COUCHDB_URL: '' };
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/ferry.ts', 'member', 'remove', 'north', 'ben'], { env, stdio: 'ignore' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.once('error', reject);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    try {
      expect(code).to.equal(0);
      const ms = await within(10_000, async () => (await statusOf(syncInfo(ben.access_token))) === 403);
      measured.push(`ferry CLI member remove → /sync 403 in ${ms} ms after the CLI exited`);
    } finally {
      await stack.platform.memberships.set('north', 'ben', ['registrar']);
    }
  });

  it('a refresh that fails after rotation rolls the rotation back: the retry is a refresh, not a reuse', async function () {
    const s = await login('cy', 'north');
    const failed = await stack.platform.sessions
      .refresh(s.refresh_token, async () => {
        throw new Error('signing failed after rotation');
      })
      .then(() => null, (e: unknown) => e);
    expect(failed).to.be.instanceOf(Error);
    const retry = await refresh(s.refresh_token);
    expect(retry.status).to.equal(200);
    expect(await statusOf(syncInfo((retry.body as Login).access_token))).to.equal(200);
    expect(await statusOf(syncInfo(s.access_token))).to.equal(200); // the session was never revoked
  });

  it('a refresh refused because the membership is gone does not burn the token: it works again once the member is back', async function () {
    const s = await login('cy', 'east');
    await stack.platform.memberships.remove('east', 'cy');
    try {
      const refused = await refresh(s.refresh_token);
      expect(refused.status).to.equal(403);
    } finally {
      await stack.platform.memberships.set('east', 'cy', ['registrar']);
    }
    const again = await refresh(s.refresh_token);
    expect(again.status).to.equal(200);
  });

  describe('session.signOut() in the device library', function () {
    const openDevice = async (tokens: Awaited<ReturnType<typeof devIdpTokens>>) =>
      openNodeSession({
        gatewayUrl: stack.url,
        tenant: 'north',
        owner: tokens.owner,
        passphrase: 'a synthetic passphrase',
        tokens,
        adapter: 'memory',
        prefix: `signout-${randomUUID()}-`,
        autoSync: false,
        kdfIterations: 1_000,
        idleTimeoutMs: null,
        online: null,
      });

    it('revokes the session on the server and clears the tokens', async function () {
      const tokens = await devIdpTokens(stack.url, 'ada', 'ferry-dev', 'north');
      const access = await tokens.getToken();
      const refreshToken = (await tokens.revocationToken!())!;
      const session = await openDevice(tokens);
      const out = await session.signOut();
      expect(out).to.deep.equal({ ok: true, unsynced: 0, revoked: true });
      expect(session.closed).to.equal(true);
      expect(await tokens.revocationToken!()).to.equal(null);
      const gone = await tokens.getToken().then(() => null, (e: unknown) => e);
      expect(gone).to.be.instanceOf(Error);
      expect(await statusOf(syncInfo(access))).to.equal(401);
      expect((await refresh(refreshToken)).status).to.equal(401);
    });

    it('with unsynced mutations it does nothing without confirm, and revokes with it', async function () {
      const tokens = await devIdpTokens(stack.url, 'ada', 'ferry-dev', 'north');
      const access = await tokens.getToken();
      const session = await openDevice(tokens);
      const queued = await session.mutate('patient.create', { givenName: 'Synthetic', familyName: 'Signout', birthDate: '1990-01-01', sex: 'unknown', facility: 'north-hc-1' });
      expect(queued.ok).to.equal(true);
      expect(await session.signOut()).to.deep.equal({ ok: false, reason: 'unsynced', unsynced: 1 });
      expect(session.closed).to.equal(false);
      expect(await statusOf(syncInfo(access))).to.equal(200);
      const out = await session.signOut({ confirm: true, wipe: true });
      expect(out).to.deep.equal({ ok: true, unsynced: 1, revoked: true });
      expect(await statusOf(syncInfo(access))).to.equal(401);
    });
  });
});
