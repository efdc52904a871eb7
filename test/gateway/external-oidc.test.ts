import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import express from 'express';
import { SignJWT, UnsecuredJWT, decodeJwt, exportJWK, exportSPKI, generateKeyPair, type JWK } from 'jose';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { createGatewayApp } from '../../gateway/app.ts';
import { createExternalTokenVerifier } from '../../gateway/auth/external-idp.ts';
import { generateSigningKey, type SigningKey } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier, type TokenIssuer } from '../../identity/tokens.ts';
import { base32, deriveOwner, loadOrCreateOwnerSecret } from '../../identity/owner.ts';
import { readConfig, ConfigError } from '../../scripts/config.ts';
import { silentLogger } from '../../http/log.ts';
import { FerryError } from '../../validators/codes.ts';
import { listen, postJson, type Listening } from '../support/http.ts';
import { tempDir, type TempDir } from '../support/services.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';

// External OIDC mode (DESIGN §2, §3). The identity provider here is real for the gateway's
// purposes: RS256 and ES256 key pairs generated in the test, their public halves served as a
// JWKS over HTTP on a loopback port, and tokens signed with them.

const ISSUER = 'https://idp-a.test';
const OTHER_ISSUER = 'https://idp-b.test';
const AUDIENCE = 'ferry-api';
const SUB = 'auth0|alice-4711';

interface IdpKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

async function idpKey(alg: 'RS256' | 'ES256', kid: string): Promise<IdpKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

interface Answer {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
  user: { id: string; tenant: string; roles: string[] };
}

describe('external OIDC mode', function () {
  this.timeout(60_000);
  let dir: TempDir;
  let idp: Listening;
  let rsa: IdpKey;
  let ec: IdpKey;
  let stranger: IdpKey;
  let platform: Platform;
  let key: SigningKey;
  let issuer: TokenIssuer;
  let secret: KeyObject;
  let gateway: Listening;
  let gatewayB: Listening;
  let devGateway: Listening;
  let owner: string;

  const mint = (k: IdpKey, claims: { iss?: string; aud?: string; sub?: string | null; exp?: number } = {}) => {
    const jwt = new SignJWT({ scope: 'openid' })
      .setProtectedHeader({ alg: k.alg, kid: k.kid, typ: 'JWT' })
      .setIssuer(claims.iss ?? ISSUER)
      .setAudience(claims.aud ?? AUDIENCE)
      .setIssuedAt()
      .setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 300);
    if (claims.sub !== null) jwt.setSubject(claims.sub ?? SUB);
    return jwt.sign(k.privateKey);
  };
  const exchange = (url: string, token: string | null, tenant = 'north') =>
    postJson(`${url}/auth/exchange`, { tenant }, token === null ? {} : { authorization: `Bearer ${token}` });

  const externalApp = (iss: string) =>
    createGatewayApp({
      logger: silentLogger(),
      signingKeys: [key],
      devIdp: null,
      externalIdp: {
        memberships: platform.memberships,
        sessions: platform.sessions,
        issuer,
        verify: createExternalTokenVerifier({ jwks: `${idp.url}/jwks`, issuer: iss, audience: AUDIENCE }),
        ownerSecret: secret,
      },
      v1Routes: [],
      readiness: async () => undefined,
      limits: { authPerIp: { rate: 1000, burst: 1000 } },
    });

  before(async function () {
    dir = tempDir('ferry-oidc-');
    rsa = await idpKey('RS256', 'rsa-1');
    ec = await idpKey('ES256', 'ec-1');
    stranger = await idpKey('RS256', 'rsa-unknown');
    const idpApp = express();
    idpApp.get('/jwks', (_req, res) => {
      res.json({ keys: [rsa.publicJwk, ec.publicJwk] });
    });
    idpApp.get('/garbage', (_req, res) => {
      res.type('text').send('not json');
    });
    idp = await listen(idpApp);

    platform = await openPlatform({});
    key = await generateSigningKey();
    issuer = createTokenIssuer({ key, issuer: 'ferry-test' });
    secret = loadOrCreateOwnerSecret(dir.path);
    owner = deriveOwner(secret, ISSUER, SUB);
    for (const t of ['north', 'south']) await platform.tenants.record(t);
    await platform.users.ensureExternal(owner);
    await platform.memberships.set('north', owner, ['registrar', 'platform-admin']);

    gateway = await listen(externalApp(ISSUER));
    gatewayB = await listen(externalApp(OTHER_ISSUER));
    devGateway = await listen(
      createGatewayApp({
        logger: silentLogger(),
        signingKeys: [key],
        devIdp: { users: platform.users, memberships: platform.memberships, sessions: platform.sessions, issuer },
        v1Routes: [],
        readiness: async () => undefined,
      }),
    );
  });
  after(async function () {
    await gateway?.close();
    await gatewayB?.close();
    await devGateway?.close();
    await idp?.close();
    await platform?.close();
    dir?.remove();
  });

  describe('owner derivation', function () {
    it('is lower-case base32 of an HMAC of (issuer, sub), 32 characters, never the sub', function () {
      expect(owner).to.match(/^[a-z2-7]{32}$/);
      expect(owner).to.match(/^[A-Za-z0-9_-]{1,64}$/);
      expect(owner).to.not.include('alice');
      expect(deriveOwner(secret, ISSUER, SUB)).to.equal(owner);
      expect(deriveOwner(secret, OTHER_ISSUER, SUB)).to.not.equal(owner);
      expect(deriveOwner(secret, ISSUER, `${SUB}x`)).to.not.equal(owner);
    });

    it('encodes base32 per RFC 4648 (lower case, no padding)', function () {
      const vectors: Array<[string, string]> = [['', ''], ['f', 'my'], ['fo', 'mzxq'], ['foo', 'mzxw6'], ['foob', 'mzxw6yq'], ['fooba', 'mzxw6ytb'], ['foobar', 'mzxw6ytboi']];
      for (const [input, out] of vectors) expect(base32(Buffer.from(input)), input).to.equal(out);
    });

    it('keeps its secret under FERRY_DATA_DIR/keys, 0600, and reuses it', function () {
      const file = join(dir.path, 'keys', 'owner-secret');
      expect(statSync(file).mode & 0o777).to.equal(0o600);
      expect(deriveOwner(loadOrCreateOwnerSecret(dir.path), ISSUER, SUB)).to.equal(owner);
      const other = tempDir('ferry-oidc-other-');
      try {
        expect(deriveOwner(loadOrCreateOwnerSecret(other.path), ISSUER, SUB)).to.not.equal(owner);
      } finally {
        other.remove();
      }
    });
  });

  describe('POST /auth/exchange', function () {
    it('gives a member a Ferry session whose owner is the derivation, not the sub', async function () {
      const res = await exchange(gateway.url, await mint(rsa));
      expect(res.status).to.equal(200);
      expect(res.headers.get('cache-control')).to.equal('no-store');
      const body = res.body as Answer;
      expect(Object.keys(body).sort()).to.deep.equal(['access_token', 'expires_in', 'refresh_token', 'token_type', 'user']);
      expect(body.token_type).to.equal('Bearer');
      expect(body.expires_in).to.equal(300);
      expect(body.user).to.deep.equal({ id: owner, tenant: 'north', roles: ['registrar', 'platform-admin'] });
      const claims = await createTokenVerifier({ jwks: `${gateway.url}/.well-known/jwks.json`, issuer: 'ferry-test' })(body.access_token);
      expect(claims).to.include({ owner, sub: owner, tid: 'north' });
      expect(claims.roles).to.deep.equal(['registrar', 'platform-admin']);
      expect(claims.sid).to.be.a('string').with.length.greaterThan(0);
      expect(JSON.stringify(decodeJwt(body.access_token))).to.not.include('alice');
      expect(JSON.stringify(body)).to.not.include('alice');
    });

    it('accepts an ES256 token from the same JWKS', async function () {
      const res = await exchange(gateway.url, await mint(ec));
      expect(res.status).to.equal(200);
      expect((res.body as Answer).user.id).to.equal(owner);
    });

    it('refreshes such a session: rotates, keeps the tenant, and a reused token revokes it', async function () {
      const first = (await exchange(gateway.url, await mint(rsa))).body as Answer;
      const rotated = await postJson(`${gateway.url}/auth/refresh`, { refresh_token: first.refresh_token });
      expect(rotated.status).to.equal(200);
      const next = rotated.body as Answer;
      expect(next.refresh_token).to.not.equal(first.refresh_token);
      expect(next.user).to.deep.equal(first.user);
      expect(decodeJwt(next.access_token)).to.include({ tid: 'north', owner, sub: owner, sid: decodeJwt(first.access_token).sid });

      const reuse = await postJson(`${gateway.url}/auth/refresh`, { refresh_token: first.refresh_token });
      expect(reuse.status).to.equal(401);
      expect(reuse.body).to.include({ code: 'UNAUTHENTICATED' });
      const after = await postJson(`${gateway.url}/auth/refresh`, { refresh_token: next.refresh_token });
      expect(after.status).to.equal(401);
    });

    it('answers 403 with a JSON error to a valid user who is not a member of the tenant', async function () {
      const other = await exchange(gateway.url, await mint(rsa), 'south');
      expect(other.status).to.equal(403);
      expect(other.body).to.include({ code: 'FORBIDDEN' });
      const nobody = await exchange(gateway.url, await mint(rsa, { sub: 'someone-else' }));
      expect(nobody.status).to.equal(403);
      expect(nobody.body).to.include({ code: 'FORBIDDEN' });
    });

    it('answers 401 to every bad token', async function () {
      const now = Math.floor(Date.now() / 1000);
      const rsaPem = await exportSPKI(rsa.publicKey);
      const claims = { iss: ISSUER, aud: AUDIENCE, sub: SUB, exp: now + 300 };
      const cases: Array<[string, string | null]> = [
        ['no Authorization header', null],
        ['not a JWT', 'not-a-jwt'],
        ['wrong issuer', await mint(rsa, { iss: 'https://evil.test' })],
        ['wrong audience', await mint(rsa, { aud: 'someone-else' })],
        ['expired', await mint(rsa, { exp: now - 120 })],
        ['alg none', new UnsecuredJWT(claims).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(SUB).setExpirationTime(now + 300).encode()],
        [
          'HS256 signed with the public key (PEM)',
          await new SignJWT({}).setProtectedHeader({ alg: 'HS256', kid: rsa.kid }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(SUB).setExpirationTime(now + 300).sign(new TextEncoder().encode(rsaPem)),
        ],
        [
          'HS256 signed with the public JWK',
          await new SignJWT({}).setProtectedHeader({ alg: 'HS256', kid: rsa.kid }).setIssuer(ISSUER).setAudience(AUDIENCE).setSubject(SUB).setExpirationTime(now + 300).sign(new TextEncoder().encode(JSON.stringify(rsa.publicJwk))),
        ],
        ['a key not in the JWKS', await mint(stranger)],
        ['a key not in the JWKS, under a listed kid', await mint({ ...stranger, kid: rsa.kid })],
        ['missing sub', await mint(rsa, { sub: null })],
        ['empty sub', await mint(rsa, { sub: '' })],
      ];
      for (const [name, token] of cases) {
        const res = await exchange(gateway.url, token);
        expect(res.status, name).to.equal(401);
        expect(res.body, name).to.include({ code: 'UNAUTHENTICATED' });
        expect(JSON.stringify(res.body), name).to.not.include('alice');
      }
    });

    it('maps the same sub under another issuer to another owner', async function () {
      const ownerB = deriveOwner(secret, OTHER_ISSUER, SUB);
      expect(ownerB).to.not.equal(owner);
      // Issuer A's token is not good at a gateway that trusts issuer B, and B's sub is not A's member.
      expect((await exchange(gatewayB.url, await mint(rsa))).status).to.equal(401);
      expect((await exchange(gatewayB.url, await mint(rsa, { iss: OTHER_ISSUER }))).status).to.equal(403);
      await platform.users.ensureExternal(ownerB);
      await platform.memberships.set('north', ownerB, ['viewer']);
      const res = await exchange(gatewayB.url, await mint(rsa, { iss: OTHER_ISSUER }));
      expect(res.status).to.equal(200);
      expect((res.body as Answer).user).to.deep.equal({ id: ownerB, tenant: 'north', roles: ['viewer'] });
    });

    it('answers 503, not 401, when the IdP JWKS cannot be fetched or read', async function () {
      const token = await mint(rsa);
      for (const jwks of [`${idp.url}/missing`, `${idp.url}/garbage`, 'http://127.0.0.1:1/jwks']) {
        const verify = createExternalTokenVerifier({ jwks, issuer: ISSUER, audience: AUDIENCE });
        const err = await verify(token).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err, jwks).to.be.instanceOf(FerryError);
        expect((err as FerryError).code, jwks).to.equal('UNAVAILABLE');
      }
    });

    it('validates the body after the token', async function () {
      const res = await exchange(gateway.url, await mint(rsa), 'Not A Tenant!');
      expect(res.status).to.equal(422);
      expect(JSON.stringify(res.body)).to.not.include('Not A Tenant');
    });
  });

  describe('one identity mode at a time', function () {
    it('has no /auth/token in external mode', async function () {
      const res = await postJson(`${gateway.url}/auth/token`, { username: owner, password: 'whatever', tenant: 'north' });
      expect(res.status).to.equal(404);
    });

    it('has no /auth/exchange in dev mode', async function () {
      const res = await exchange(devGateway.url, await mint(rsa));
      expect(res.status).to.equal(404);
    });

    it('never lets an external user sign in with a password through the dev IdP', async function () {
      // Their users row has no password hash.
      for (const password of ['', 'x', 'ferry-dev']) {
        const res = await postJson(`${devGateway.url}/auth/token`, { username: owner, password: password || 'y', tenant: 'north' });
        expect(res.status).to.equal(401);
      }
    });

    it('fails closed on a partial FERRY_AUTH_* configuration, empty values counting as unset', function () {
      const full = { FERRY_AUTH_JWKS_URL: `${idp.url}/jwks`, FERRY_AUTH_ISSUER: ISSUER, FERRY_AUTH_AUDIENCE: AUDIENCE };
      expect(readConfig(full).externalAuth).to.deep.equal({ jwksUrl: `${idp.url}/jwks`, issuer: ISSUER, audience: AUDIENCE });
      for (const name of Object.keys(full)) {
        expect(() => readConfig({ ...full, [name]: undefined }), name).to.throw(ConfigError);
        expect(() => readConfig({ ...full, [name]: '' }), name).to.throw(ConfigError);
      }
    });
  });

  describe('scripts/ferry.ts member and owner-of', function () {
    this.timeout(240_000);
    let cliDir: TempDir;
    before(async function () {
      cliDir = tempDir('ferry-oidc-cli-');
      const p = await openPlatform({ dataDir: cliDir.path });
      await p.tenants.record('north');
      await p.close();
    });
    after(() => cliDir?.remove());

    function ferry(...args: string[]) {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        FERRY_DATA_DIR: cliDir.path,
        FERRY_AUTH_JWKS_URL: `${idp.url}/jwks`,
        FERRY_AUTH_ISSUER: ISSUER,
        FERRY_AUTH_AUDIENCE: AUDIENCE,
      };
      delete env.COUCHDB_URL;
      delete env.DATABASE_URL;
      const res = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/ferry.ts', ...args], { env, encoding: 'utf8', timeout: 110_000 });
      return { code: res.status, out: res.stdout, err: res.stderr };
    }

    it('prints the derived owner of a sub, and grants, lists and removes memberships by owner', async function () {
      const printed = ferry('owner-of', SUB);
      expect(printed.code, printed.err).to.equal(0);
      const cliOwner = printed.out.trim();
      expect(cliOwner).to.equal(deriveOwner(loadOrCreateOwnerSecret(cliDir.path), ISSUER, SUB));
      expect(cliOwner).to.not.equal(owner); // another data dir, another secret

      expect(ferry('member', 'add', 'north', cliOwner, 'registrar,viewer')).to.include({ code: 0 });
      const listed = ferry('member', 'list', 'north');
      expect(listed.code, listed.err).to.equal(0);
      expect(listed.out.trim().split('\n')).to.deep.equal([`${cliOwner}\tregistrar,viewer\t(no facility)`]);
      expect(ferry('member', 'remove', 'north', cliOwner)).to.include({ code: 0 });
      expect(ferry('member', 'list', 'north').out.trim()).to.equal('');
    });

    it('refuses unknown roles, bad owners and unknown tenants', function () {
      expect(ferry('member', 'add', 'north', 'abc', 'superuser').code).to.equal(2);
      expect(ferry('member', 'add', 'north', 'not/an owner', 'viewer').code).to.equal(2);
      const unknown = ferry('member', 'add', 'west', 'abc', 'viewer');
      expect(unknown.code).to.equal(2);
      expect(unknown.err).to.contain('error: UNKNOWN_TENANT');
    });
  });
});

describe('external OIDC mode on the full stack', function () {
  this.timeout(180_000);
  let idp: Listening;
  let rsa: IdpKey;
  let stack: TestStack;

  before(async function () {
    rsa = await idpKey('RS256', 'stack-rsa');
    const idpApp = express();
    idpApp.get('/jwks', (_req, res) => {
      res.json({ keys: [rsa.publicJwk] });
    });
    idp = await listen(idpApp);
    stack = await startTestStack({
      webApp: false,
      env: { FERRY_AUTH_JWKS_URL: `${idp.url}/jwks`, FERRY_AUTH_ISSUER: ISSUER, FERRY_AUTH_AUDIENCE: AUDIENCE },
    });
  });
  after(async function () {
    await stack?.stop();
    await idp?.close();
  });

  it('seeds nothing, serves /auth/exchange instead of /auth/token, and an operator exchanges before opening a session', async function () {
    expect(await stack.platform.tenants.list()).to.deep.equal([]);
    expect((await postJson(`${stack.url}/auth/token`, { username: 'admin', password: 'ferry-dev', tenant: 'north' })).status).to.equal(404);

    const owner = deriveOwner(loadOrCreateOwnerSecret(stack.config.dataDir), ISSUER, SUB);
    await stack.platform.tenants.record('north');
    await stack.platform.users.ensureExternal(owner);
    await stack.platform.memberships.set('north', owner, ['admin', 'platform-admin']);

    const idToken = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: rsa.kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(SUB)
      .setExpirationTime('5m')
      .sign(rsa.privateKey);
    const res = await postJson(`${stack.url}/auth/exchange`, { tenant: 'north' }, { authorization: `Bearer ${idToken}` });
    expect(res.status).to.equal(200);
    const body = res.body as Answer;
    expect(body.user).to.deep.equal({ id: owner, tenant: 'north', roles: ['admin', 'platform-admin'] });

    const refreshed = await postJson(`${stack.url}/auth/refresh`, { refresh_token: body.refresh_token });
    expect(refreshed.status).to.equal(200);

    const session = await postJson(`${stack.url}/auth/session`, {}, { authorization: `Bearer ${body.access_token}` });
    expect(session.status).to.equal(200);
    expect(session.body).to.deep.include({ ok: true, user: { id: owner } });
  });
});
