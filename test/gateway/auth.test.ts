import { expect } from 'chai';
import { decodeJwt } from 'jose';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { seedDemo } from '../../gateway/tenant/demo.ts';
import { createGatewayApp } from '../../gateway/app.ts';
import { generateSigningKey, type SigningKey } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier } from '../../identity/tokens.ts';
import { silentLogger } from '../../http/log.ts';
import { listen, postJson, type Listening } from '../support/http.ts';
import { decideRefresh } from '../../gateway/auth/sessions.ts';

describe('dev identity provider', function () {
  let platform: Platform;
  let key: SigningKey;
  let server: Listening;

  before(async function () {
    this.timeout(60_000);
    platform = await openPlatform({});
    await seedDemo(platform);
    key = await generateSigningKey();
    const issuer = createTokenIssuer({ key, issuer: 'ferry-test' });
    const app = createGatewayApp({
      logger: silentLogger(),
      signingKeys: [key],
      devIdp: { users: platform.users, memberships: platform.memberships, sessions: platform.sessions, issuer },
      v1Routes: [],
      readiness: async () => undefined,
    });
    server = await listen(app);
  });
  after(async function () {
    await server?.close();
    await platform?.close();
  });

  it('issues an access token whose claims match DESIGN §3 and verify against the JWKS', async function () {
    const res = await postJson(`${server.url}/auth/token`, { username: 'ada', password: 'ferry-dev', tenant: 'north' });
    expect(res.status).to.equal(200);
    const body = res.body as { access_token: string; refresh_token: string; token_type: string; expires_in: number; user: { id: string; tenant: string; roles: string[] } };
    expect(body.token_type).to.equal('Bearer');
    expect(body.expires_in).to.equal(300);
    expect(body.user).to.deep.equal({ id: 'ada', tenant: 'north', roles: ['registrar'] });
    const jwks = (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()) as { keys: Array<{ kid: string; d?: string }> };
    expect(jwks.keys).to.have.length(1);
    expect(jwks.keys[0]).to.not.have.property('d');
    const verify = createTokenVerifier({ jwks: `${server.url}/.well-known/jwks.json`, issuer: 'ferry-test' });
    const claims = await verify(body.access_token);
    expect(claims).to.include({ sub: 'ada', owner: 'ada', tid: 'north' });
    expect(claims.roles).to.deep.equal(['registrar']);
    expect(claims.exp - Math.floor(Date.now() / 1000)).to.be.within(290, 301);
  });

  it('answers 401 with a JSON error for a wrong password and for an unknown user', async function () {
    for (const username of ['ada', 'nobody']) {
      const res = await postJson(`${server.url}/auth/token`, { username, password: 'wrong', tenant: 'north' });
      expect(res.status).to.equal(401);
      expect(res.body).to.include({ code: 'INVALID_CREDENTIALS' });
    }
  });

  it('answers 403 for a user who is not a member of the tenant', async function () {
    const res = await postJson(`${server.url}/auth/token`, { username: 'ada', password: 'ferry-dev', tenant: 'south' });
    expect(res.status).to.equal(403);
    expect(res.body).to.include({ code: 'FORBIDDEN' });
  });

  it('refuses a malformed login with a structured error that does not echo input', async function () {
    const res = await postJson(`${server.url}/auth/token`, { username: 'ada', password: 'ferry-dev', tenant: 'Not A Tenant!' });
    expect(res.status).to.equal(422);
    expect(JSON.stringify(res.body)).to.not.include('Not A Tenant');
    const bad = await fetch(`${server.url}/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{nope' });
    expect(bad.status).to.equal(400);
    expect(await bad.json()).to.include({ code: 'MALFORMED_REQUEST' });
  });

  it('rotates refresh tokens, keeps the tenant, and revokes the session when an old one is reused', async function () {
    const login = (await postJson(`${server.url}/auth/token`, { username: 'cy', password: 'ferry-dev', tenant: 'south' })).body as { refresh_token: string; access_token: string };
    const first = await postJson(`${server.url}/auth/refresh`, { refresh_token: login.refresh_token });
    expect(first.status).to.equal(200);
    const rotated = first.body as { refresh_token: string; access_token: string; user: { tenant: string } };
    expect(rotated.refresh_token).to.not.equal(login.refresh_token);
    expect(rotated.user.tenant).to.equal('south');
    expect(decodeJwt(rotated.access_token).tid).to.equal('south');

    const reuse = await postJson(`${server.url}/auth/refresh`, { refresh_token: login.refresh_token });
    expect(reuse.status).to.equal(401);
    // The reuse revoked the whole session: the newest token is dead too.
    const after = await postJson(`${server.url}/auth/refresh`, { refresh_token: rotated.refresh_token });
    expect(after.status).to.equal(401);
  });

  it('refuses a refresh once the user has left the tenant', async function () {
    const login = (await postJson(`${server.url}/auth/token`, { username: 'cy', password: 'ferry-dev', tenant: 'east' })).body as { refresh_token: string };
    await platform.memberships.remove('east', 'cy');
    try {
      const res = await postJson(`${server.url}/auth/refresh`, { refresh_token: login.refresh_token });
      expect(res.status).to.equal(403);
    } finally {
      await platform.memberships.set('east', 'cy', ['registrar']);
    }
  });

  it('decides refresh outcomes from stored state alone', function () {
    const base = { sid: 's1', userId: 'u', tenantId: 't', rotated: false, sessionRevoked: false, sessionExpired: false };
    const cases: Array<[Parameters<typeof decideRefresh>[0], string]> = [
      [null, 'reject'],
      [base, 'rotate'],
      [{ ...base, rotated: true }, 'revoke-session'],
      [{ ...base, sessionRevoked: true }, 'reject'],
      [{ ...base, rotated: true, sessionRevoked: true }, 'reject'],
      [{ ...base, sessionExpired: true }, 'reject'],
    ];
    for (const [stored, kind] of cases) expect(decideRefresh(stored).kind, JSON.stringify(stored)).to.equal(kind);
  });
});
