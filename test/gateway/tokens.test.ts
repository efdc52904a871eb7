import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair, base64url } from 'jose';
import { generateSigningKey, jwksOf, type SigningKey } from '../../identity/keys.ts';
import { createTokenIssuer, createTokenVerifier, bearerToken, WORKER_ACTOR } from '../../identity/tokens.ts';
import { FerryError } from '../../validators/codes.ts';
import { tempDir } from '../support/services.ts';

const grant = { sub: 'ada', owner: 'ada', tid: 'north', roles: ['registrar'], sid: 's-1' };

async function rejects(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(FerryError);
    expect((err as FerryError).code).to.equal('UNAUTHENTICATED');
    return;
  }
  expect.fail('token was accepted');
}

describe('token verification refuses every forgery', function () {
  let key: SigningKey;
  let verify: ReturnType<typeof createTokenVerifier>;

  before(async function () {
    key = await generateSigningKey();
    verify = createTokenVerifier({ jwks: jwksOf([key]), issuer: 'ferry-test' });
  });

  it('accepts a token it issued, and a delegated one carries the worker as actor', async function () {
    const issuer = createTokenIssuer({ key, issuer: 'ferry-test' });
    expect(await verify(await issuer.mintAccess(grant))).to.include({ owner: 'ada', tid: 'north' });
    const delegated = await verify(await issuer.mintDelegated({ sub: 'ada', owner: 'ada', tid: 'north', roles: ['registrar'] }));
    expect(delegated.act).to.deep.equal({ sub: WORKER_ACTOR });
  });

  it('refuses delegated tokens where the edge asks it to, and only there', async function () {
    const issuer = createTokenIssuer({ key, issuer: 'ferry-test' });
    const delegated = await issuer.mintDelegated({ sub: 'ada', owner: 'ada', tid: 'north', roles: ['registrar'] });
    const edge = createTokenVerifier({ jwks: jwksOf([key]), issuer: 'ferry-test', delegated: 'refuse' });
    await rejects(edge(delegated));
    expect(await edge(await issuer.mintAccess(grant))).to.include({ owner: 'ada' });
    expect(await verify(delegated)).to.have.property('act');
  });

  it('refuses alg: none', async function () {
    const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT' }));
    const payload = base64url.encode(JSON.stringify({ ...grant, iss: 'ferry-test', aud: 'ferry', exp: Math.floor(Date.now() / 1000) + 60 }));
    await rejects(verify(`${header}.${payload}.`));
  });

  it('refuses HS256 signed with the public key (algorithm confusion)', async function () {
    const secret = new TextEncoder().encode(JSON.stringify(key.publicJwk));
    const token = await new SignJWT({ ...grant }).setProtectedHeader({ alg: 'HS256', kid: key.kid }).setIssuer('ferry-test').setAudience('ferry').setSubject('ada').setExpirationTime('1m').sign(secret);
    await rejects(verify(token));
  });

  it('refuses an RS256 token from an unknown key', async function () {
    const { privateKey } = await generateKeyPair('RS256');
    const token = await new SignJWT({ ...grant }).setProtectedHeader({ alg: 'RS256', kid: key.kid }).setIssuer('ferry-test').setAudience('ferry').setSubject('ada').setExpirationTime('1m').sign(privateKey);
    await rejects(verify(token));
  });

  it('refuses a token signed by another Ed25519 key', async function () {
    const other = await generateSigningKey();
    await rejects(verify(await createTokenIssuer({ key: other, issuer: 'ferry-test' }).mintAccess(grant)));
    expect(await exportJWK((await generateKeyPair('EdDSA')).publicKey)).to.have.property('x');
  });

  it('refuses expired tokens, the wrong audience and the wrong issuer', async function () {
    const past = Date.now() - 3600_000;
    await rejects(verify(await createTokenIssuer({ key, issuer: 'ferry-test', now: () => past }).mintAccess(grant)));
    await rejects(verify(await createTokenIssuer({ key, issuer: 'ferry-test', audience: 'elsewhere' }).mintAccess(grant)));
    await rejects(verify(await createTokenIssuer({ key, issuer: 'someone-else' }).mintAccess(grant)));
  });

  it('refuses tokens whose claims break the contract (owner with PII-like characters)', async function () {
    const token = await new SignJWT({ tid: 'north', owner: 'ada@example.org', roles: [], sid: 's' })
      .setProtectedHeader({ alg: 'EdDSA', kid: key.kid })
      .setIssuer('ferry-test').setAudience('ferry').setSubject('ada').setExpirationTime('1m')
      .sign(key.privateKey);
    await rejects(verify(token));
  });

  it('parses only well-formed Bearer headers', function () {
    expect(bearerToken('Bearer abc.def.ghi')).to.equal('abc.def.ghi');
    expect(bearerToken('bearer abc')).to.equal('abc');
    expect(bearerToken('Basic abc')).to.equal(null);
    expect(bearerToken('Bearer a b')).to.equal(null);
    expect(bearerToken(undefined)).to.equal(null);
  });
});

describe('the signing key on a fresh data dir', function () {
  this.timeout(60_000);

  it('is one key however many processes start at once, and no temp file is left', async function () {
    const dir = tempDir('ferry-keys-');
    try {
      const script = `import(${JSON.stringify(new URL('../../identity/keys.ts', import.meta.url).href)}).then((k) => k.loadOrCreateSigningKey(process.argv[1])).then((key) => console.log(key.kid))`;
      const run = () =>
        new Promise<string>((resolve, reject) => {
          const child = spawn(process.execPath, ['--import', 'tsx', '-e', script, dir.path], { stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          child.stdout.on('data', (c: Buffer) => (out += c.toString()));
          child.once('error', reject);
          child.once('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}`))));
        });
      const kids = await Promise.all([run(), run(), run(), run()]);
      expect(new Set(kids).size, kids.join(' ')).to.equal(1);
      expect(readdirSync(join(dir.path, 'keys'))).to.deep.equal(['signing-key.json']);
    } finally {
      dir.remove();
    }
  });
});
