import { expect } from 'chai';
import { cacheableAuthorization, createAuthCache, isRememberable, mayWriteUsers, type CouchSession } from '../../couchdb/embedded/auth-cache.ts';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw } from './http.ts';

// The embedded server keeps successful HTTP Basic checks for a short while
// (couchdb/embedded/auth-cache.ts). A changed password, role or user must bite from the next
// request, as with Apache CouchDB's own authentication cache.

const session = (name: string | null, authenticated?: string): CouchSession => ({
  ok: true,
  userCtx: { name, roles: ['r'] },
  info: { ...(authenticated ? { authenticated } : {}), authentication_handlers: ['cookie', 'default'] },
});

describe('couchdb/embedded: the Basic authentication cache', () => {
  describe('decisions', () => {
    const requests: Array<[string, { headers: { authorization?: string }; cookies?: Record<string, string> }, boolean]> = [
      ['Basic credentials', { headers: { authorization: 'Basic YTpi' } }, true],
      ['lower-case scheme', { headers: { authorization: 'basic YTpi' } }, true],
      ['no header', { headers: {} }, false],
      ['a Bearer token', { headers: { authorization: 'Bearer x.y.z' } }, false],
      ['Basic without credentials', { headers: { authorization: 'Basic ' } }, false],
      ['Basic and a session cookie (the cookie wins)', { headers: { authorization: 'Basic YTpi' }, cookies: { AuthSession: 'c' } }, false],
    ];
    for (const [name, req, cacheable] of requests) {
      it(`${name}: ${cacheable ? 'may use the cache' : 'always checked in full'}`, () => {
        expect(cacheableAuthorization(req) !== null).to.equal(cacheable);
      });
    }

    it('keeps only a named user whose Basic check succeeded', () => {
      expect(isRememberable(session('ferry-gateway', 'default'))).to.equal(true);
      expect(isRememberable(session(null))).to.equal(false);
      expect(isRememberable(session('x', 'cookie'))).to.equal(false);
      expect(isRememberable(session('', 'default'))).to.equal(false);
      expect(isRememberable(undefined)).to.equal(false);
    });

    it('answers a kept check until it expires, with a copy each time', () => {
      const cache = createAuthCache(1_000, 10);
      cache.remember('Basic YTpi', session('a', 'default'), 0, cache.ticket());
      const first = cache.lookup('Basic YTpi', 999)!;
      first.userCtx.roles.push('_admin');
      expect(cache.lookup('Basic YTpi', 999)!.userCtx.roles).to.deep.equal(['r']);
      expect(cache.lookup('Basic YTpj', 999)).to.equal(null);
      expect(cache.lookup('Basic YTpi', 1_000)).to.equal(null);
    });

    it('stays bounded and forgets everything on clear', () => {
      const cache = createAuthCache(1_000, 3);
      for (let i = 0; i < 7; i++) cache.remember(`Basic ${i}`, session('a', 'default'), 0, cache.ticket());
      expect(cache.size()).to.be.at.most(3);
      cache.clear();
      expect(cache.size()).to.equal(0);
    });

    it('keeps no check that overlapped a write to _users, and uses none during one', () => {
      const cache = createAuthCache(1_000, 10);
      cache.remember('Basic old', session('a', 'default'), 0, cache.ticket());
      const before = cache.ticket();
      cache.writeStarted();
      expect(cache.lookup('Basic old', 1)).to.equal(null);
      const during = cache.ticket();
      cache.remember('Basic during', session('a', 'default'), 1, during);
      cache.writeEnded();
      cache.remember('Basic before', session('a', 'default'), 2, before);
      expect(cache.lookup('Basic during', 3)).to.equal(null);
      expect(cache.lookup('Basic before', 3)).to.equal(null);
      cache.remember('Basic after', session('a', 'default'), 3, cache.ticket());
      expect(cache.lookup('Basic after', 4)).to.not.equal(null);
    });
  });

  describe('which requests may change the users database', () => {
    const cases: Array<[string, string, boolean]> = [
      ['PUT', '/_users/org.couchdb.user:a', true],
      ['POST', '/_users/_bulk_docs', true],
      ['DELETE', '/_users', true],
      ['POST', '/_users/_purge', true],
      ['PUT', '/%5Fusers/org.couchdb.user:a', true],
      ['GET', '/_users/org.couchdb.user:a', false],
      ['PUT', '/inbox_north/doc', false],
      ['POST', '/_session', false],
      ['PUT', '/%E0%A4%A', true],
    ];
    for (const [method, path, writes] of cases) {
      it(`${method} ${path}: ${writes ? 'may' : 'does not'}`, () => {
        expect(mayWriteUsers(method, path, '_users')).to.equal(writes);
      });
    }
  });

  describe('on a running server', function () {
    this.timeout(60_000);
    let dir: TempDir;
    let couch: EmbeddedCouch;
    const admin = () => ({ auth: couch.admin });
    const userId = '/_users/org.couchdb.user:cached-user';
    const read = async (password: string) => (await raw(couch.url, 'GET', '/cached/_all_docs', { auth: { username: 'cached-user', password } })).status;
    const userDoc = async () => (await raw(couch.url, 'GET', userId, admin())).body as Record<string, unknown>;
    const putUser = async (fields: Record<string, unknown>) => {
      const { _rev } = (await userDoc()) as { _rev: string };
      const res = await raw(couch.url, 'PUT', userId, { ...admin(), body: { name: 'cached-user', type: 'user', roles: ['readers'], _rev, ...fields } });
      expect(res.status).to.equal(201);
    };

    before(async () => {
      dir = tempDir('ferry-auth-cache-');
      couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
      expect((await raw(couch.url, 'PUT', '/cached', admin())).status).to.equal(201);
      const sec = await raw(couch.url, 'PUT', '/cached/_security', { ...admin(), body: { admins: { names: [], roles: [] }, members: { names: [], roles: ['readers'] } } });
      expect(sec.status).to.equal(200);
      const res = await raw(couch.url, 'PUT', userId, { ...admin(), body: { name: 'cached-user', password: 'first-secret-1', roles: ['readers'], type: 'user' } });
      expect(res.status).to.equal(201);
    });
    after(async () => {
      await couch?.stop();
      dir?.remove();
    });

    it('refuses a wrong password right after the right one was accepted', async () => {
      expect(await read('first-secret-1')).to.equal(200);
      expect(await read('first-secret-1')).to.equal(200);
      expect(await read('wrong-secret-1')).to.equal(401);
      expect(await read('first-secret-1')).to.equal(200);
    });

    it('refuses the old password from the request after a password change', async () => {
      expect(await read('first-secret-1')).to.equal(200);
      await putUser({ password: 'second-secret-2' });
      expect(await read('first-secret-1')).to.equal(401);
      expect(await read('second-secret-2')).to.equal(200);
    });

    it('applies a role change from the next request', async () => {
      expect(await read('second-secret-2')).to.equal(200);
      const { _rev: _r, ...kept } = await userDoc();
      await putUser({ ...kept, roles: ['others'] });
      expect(await read('second-secret-2')).to.be.oneOf([401, 403]);
      await putUser({ ...kept, roles: ['readers'] });
      expect(await read('second-secret-2')).to.equal(200);
    });

    it('refuses a deleted user from the next request', async () => {
      expect(await read('second-secret-2')).to.equal(200);
      const { _rev } = (await userDoc()) as { _rev: string };
      expect((await raw(couch.url, 'DELETE', `${userId}?rev=${_rev}`, admin())).status).to.equal(200);
      expect(await read('second-secret-2')).to.equal(401);
    });
  });
});
