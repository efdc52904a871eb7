import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readConfig, readEnv, registrationUrlOf, ConfigError, CONFIG_VARIABLES } from '../../scripts/config.ts';

describe('configuration fails closed', function () {
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

describe('configuration is parsed by one schema: a bad value names its variable', function () {
  it('retention: 7 days by default, no maximum, hourly passes; a maximum below the window is refused', function () {
    expect(readConfig({}).retention).to.deep.equal({ windowMs: 7 * 24 * 3600_000, maxMs: null, intervalMs: 3600_000, recheckMs: 24 * 3600_000 });
    expect(readConfig({ FERRY_RETENTION_WINDOW_MS: '60000', FERRY_RETENTION_MAX_MS: '120000', FERRY_RETENTION_INTERVAL_MS: '1000', FERRY_RETENTION_RECHECK_MS: '5000' }).retention).to.deep.equal({ windowMs: 60_000, maxMs: 120_000, intervalMs: 1000, recheckMs: 5000 });
    expect(() => readConfig({ FERRY_RETENTION_WINDOW_MS: '60000', FERRY_RETENTION_MAX_MS: '1000' })).to.throw(ConfigError);
    expect(() => readConfig({ FERRY_RETENTION_WINDOW_MS: '7d' })).to.throw(ConfigError);
  });

  it('refuses FERRY_WAITING_TIMEOUT_MS=7d instead of turning it into NaN (which switched the timeout off)', function () {
    let caught: unknown;
    try {
      readConfig({ FERRY_WAITING_TIMEOUT_MS: '7d' });
    } catch (err) {
      caught = err;
    }
    expect(caught).to.be.instanceOf(ConfigError);
    expect((caught as ConfigError).variables).to.deep.equal(['FERRY_WAITING_TIMEOUT_MS']);
    expect((caught as Error).message).to.match(/^FERRY_WAITING_TIMEOUT_MS must be/);
    expect(readConfig({ FERRY_WAITING_TIMEOUT_MS: '60000' }).waitingTimeoutMs).to.equal(60_000);
  });

  // Each bad value must be refused by name, and the message must not quote it (it may be a secret).
  const BAD: Array<[string, string]> = [
    ['FERRY_PORT', '80x80'],
    ['FERRY_PORT', '70000'],
    ['FERRY_HOST', 'evil host/1'],
    ['FERRY_LOG_LEVEL', 'chatty'],
    ['COUCHDB_URL', 'couch-at-localhost'],
    ['DATABASE_URL', 'mysql://u:pw-SECRET@h/db'],
    ['FERRY_PLATFORM_SCHEMA', 'Drop Table'],
    ['FERRY_REGISTRATION_SCHEMA', '1abc'],
    ['NATS_URL', 'http://u:pw-SECRET@h:4222'],
    ['FERRY_AUTH_JWKS_URL', 'not a url'],
    ['FERRY_ACCESS_TTL_SECONDS', '5m'],
    ['FERRY_ACCESS_TTL_SECONDS', '0'],
    ['FERRY_CORS_ORIGINS', 'https://app.example.org/path'],
    ['FERRY_FAUXTON', 'yes'],
    ['FERRY_REGISTRATION_PORT', '-1'],
    ['FERRY_REGISTRATION_URL', 'registration:8081'],
    ['FERRY_WAITING_TIMEOUT_MS', '1.5'],
    ['FERRY_WORKER_ID', 'a b'],
    ['FERRY_WORKER_LEASE_TTL_MS', '15s'],
    ['FERRY_WORKER_RETRY_BASE_MS', '9999999999'],
    ['FERRY_WORKER_RETRY_MAX_MS', 'NaN'],
    ['FERRY_WORKER_TICK_MS', 'Infinity'],
    ['FERRY_WORKER_BATCH_SIZE', '5000'],
  ];
  for (const [name, value] of BAD) {
    it(`refuses ${name}=${value}, naming ${name} and not the value`, function () {
      let caught: unknown;
      try {
        readEnv({ [name]: value });
        readConfig({ [name]: value });
      } catch (err) {
        caught = err;
      }
      expect(caught).to.be.instanceOf(ConfigError);
      expect((caught as ConfigError).variables).to.include(name);
      expect((caught as Error).message).to.contain(name);
      // Short values ('0') occur in any message; the secrets this guards are never that short.
      if (value.length > 3) expect((caught as Error).message).to.not.contain(value);
    });
  }

  it('reports every bad variable at once', function () {
    expect(() => readConfig({ FERRY_PORT: 'x', FERRY_WORKER_TICK_MS: 'y' })).to.throw(ConfigError, /FERRY_PORT .*; FERRY_WORKER_TICK_MS /);
  });

  it('treats empty values as unset', function () {
    expect(readConfig({ FERRY_PORT: '', FERRY_WAITING_TIMEOUT_MS: '' })).to.include({ port: 8080, waitingTimeoutMs: 7 * 24 * 3600_000 });
  });
});

describe('safe defaults (safe starts)', function () {
  it('listens on loopback outside production unless FERRY_HOST says otherwise', function () {
    expect(readConfig({}).host).to.equal('127.0.0.1');
    expect(readConfig({ FERRY_HOST: '0.0.0.0' }).host).to.equal('0.0.0.0');
    const prod = { NODE_ENV: 'production', FERRY_AUTH_JWKS_URL: 'https://idp.example/jwks', FERRY_AUTH_ISSUER: 'https://idp.example', FERRY_AUTH_AUDIENCE: 'ferry' };
    expect(readConfig(prod).host).to.equal('0.0.0.0');
  });

  it('gives the registration service an ephemeral loopback port, so FERRY_PORT alone separates two stacks', function () {
    expect(readConfig({}).registrationPort).to.equal(0);
    expect(readConfig({ FERRY_REGISTRATION_PORT: '9081' }).registrationPort).to.equal(9081);
  });

  it('asks a process without the registration service for FERRY_REGISTRATION_URL rather than guessing a port', function () {
    expect(() => registrationUrlOf(readConfig({}))).to.throw(ConfigError, /FERRY_REGISTRATION_URL/);
    expect(registrationUrlOf(readConfig({ FERRY_REGISTRATION_URL: 'http://reg:8081' }))).to.equal('http://reg:8081');
  });
});

describe('the README lists every variable', function () {
  const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
  const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('### External identity provider'));
  const inTable = new Set(
    section
      .split('\n')
      .filter((line) => line.startsWith('| `'))
      .flatMap((line) => [...(line.split('|')[1] ?? '').matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!)),
  );

  it('has a row for every variable the config schema knows', function () {
    expect(CONFIG_VARIABLES.length).to.be.greaterThan(25);
    expect(CONFIG_VARIABLES.filter((v) => !inTable.has(v))).to.deep.equal([]);
  });

  it('lists nothing the schema does not know', function () {
    expect([...inTable].filter((v) => !CONFIG_VARIABLES.includes(v))).to.deep.equal([]);
  });

  it('knows every variable the server code reads (scripts, services, couchdb, gateway, http, nats)', function () {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const read = new Set<string>();
    const walk = (dir: string) => {
      for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
        const rel = join(dir, entry.name);
        if (entry.isDirectory()) walk(rel);
        else if (entry.name.endsWith('.ts')) {
          const src = readFileSync(join(root, rel), 'utf8');
          for (const m of src.matchAll(/\benv(?:\.|\[['"])([A-Z][A-Z0-9_]+)/g)) read.add(m[1]!);
          for (const m of src.matchAll(/_ENV = '([A-Z][A-Z0-9_]+)'/g)) read.add(m[1]!);
        }
      }
    };
    for (const dir of ['scripts', 'services', 'couchdb', 'gateway', 'http', 'nats', 'sql', 'identity']) walk(dir);
    expect(read.size).to.be.at.least(3);
    // NODE_OPTIONS is set for child processes, not read.
    expect([...read].filter((v) => v !== 'NODE_OPTIONS' && !CONFIG_VARIABLES.includes(v))).to.deep.equal([]);
  });
});
