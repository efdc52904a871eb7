import { expect } from 'chai';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import {
  CouchIdentityError,
  embeddedCouchIdentities,
  externalCouchIdentities,
  parseCouchUrl,
  resolveCouchIdentities,
} from '../../couchdb/identities.ts';
import { tempDir } from '../support/services.ts';

describe('couchdb/identities', () => {
  const env = { FERRY_COUCH_GATEWAY_PASSWORD: 'gw-pw', FERRY_COUCH_WORKER_PASSWORD: 'wk-pw' };

  it('takes the admin from COUCHDB_URL and strips it from the base URL', () => {
    expect(parseCouchUrl('http://admin:s%40cret@couch.internal:5984/')).to.deep.equal({
      url: 'http://couch.internal:5984',
      admin: { username: 'admin', password: 's@cret' },
    });
    const ids = externalCouchIdentities('https://root:pw@db.example:6984', env);
    expect(ids).to.deep.equal({
      url: 'https://db.example:6984',
      admin: { username: 'root', password: 'pw' },
      gateway: { username: 'ferry-gateway', password: 'gw-pw' },
      worker: { username: 'ferry-worker', password: 'wk-pw' },
      embedded: false,
    });
  });

  it('fails clearly without admin credentials or service passwords', () => {
    expect(() => parseCouchUrl('http://couch:5984')).to.throw(CouchIdentityError, 'admin credentials');
    expect(() => parseCouchUrl('not a url')).to.throw(CouchIdentityError, 'not a valid URL');
    expect(() => parseCouchUrl('ftp://a:b@couch')).to.throw(CouchIdentityError, 'http(s)');
    expect(() => externalCouchIdentities('http://a:b@couch:5984', {})).to.throw(
      CouchIdentityError,
      'FERRY_COUCH_GATEWAY_PASSWORD and FERRY_COUCH_WORKER_PASSWORD',
    );
    expect(() => externalCouchIdentities('http://a:b@couch:5984', { FERRY_COUCH_GATEWAY_PASSWORD: 'x' })).to.throw('FERRY_COUCH_WORKER_PASSWORD');
    expect(() => resolveCouchIdentities({ couchdbUrl: undefined, dataDir: '/nonexistent' })).to.throw(CouchIdentityError);
  });

  it('generates embedded service passwords once, in a 0600 file', () => {
    const dir = tempDir('ferry-ids-');
    try {
      const server = { url: 'http://127.0.0.1:1', admin: { username: 'a', password: 'b' } };
      const first = embeddedCouchIdentities(dir.path, server);
      const again = resolveCouchIdentities({ couchdbUrl: undefined, dataDir: dir.path, embedded: server });
      expect(again).to.deep.equal(first);
      expect(first.gateway.password).to.have.length.greaterThan(20);
      expect(first.gateway.password).not.to.equal(first.worker.password);
      expect(statSync(join(dir.path, 'couch', 'service-users.json')).mode & 0o777).to.equal(0o600);
      expect(statSync(join(dir.path, 'couch')).mode & 0o777).to.equal(0o700);
    } finally {
      dir.remove();
    }
  });
});
