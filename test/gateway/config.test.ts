import { expect } from 'chai';
import { readConfig, ConfigError } from '../../scripts/config.ts';

describe('configuration fails closed (DESIGN §2)', function () {
  it('uses embedded defaults with nothing set', function () {
    const c = readConfig({});
    expect(c.port).to.equal(8080);
    expect(c.couchdbUrl).to.equal(undefined);
    expect(c.databaseUrl).to.equal(undefined);
    expect(c.natsUrl).to.equal('nats://127.0.0.1:4222');
    expect(c.externalAuth).to.equal(null);
  });

  it('refuses a partial external identity provider configuration', function () {
    expect(() => readConfig({ FERRY_AUTH_JWKS_URL: 'https://idp.example/jwks' })).to.throw(ConfigError);
    expect(() => readConfig({ FERRY_AUTH_ISSUER: 'x', FERRY_AUTH_AUDIENCE: 'y' })).to.throw(ConfigError);
  });

  it('refuses the dev identity provider under NODE_ENV=production', function () {
    expect(() => readConfig({ NODE_ENV: 'production' })).to.throw(ConfigError, /dev IdP/);
  });

  it('accepts a complete external configuration in production, with Fauxton off unless asked for', function () {
    const env = { NODE_ENV: 'production', FERRY_AUTH_JWKS_URL: 'https://idp.example/jwks', FERRY_AUTH_ISSUER: 'https://idp.example', FERRY_AUTH_AUDIENCE: 'ferry' };
    expect(readConfig(env).externalAuth).to.deep.equal({ jwksUrl: 'https://idp.example/jwks', issuer: 'https://idp.example', audience: 'ferry' });
    expect(readConfig(env).fauxton).to.equal(false);
    expect(readConfig({ ...env, FERRY_FAUXTON: '1' }).fauxton).to.equal(true);
  });

  it('refuses a port that is not a port', function () {
    expect(() => readConfig({ FERRY_PORT: 'eighty' })).to.throw(ConfigError);
  });
});
