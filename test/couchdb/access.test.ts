import { expect } from 'chai';
import { decideAfterAuth, decideBeforeAuth, pathSegments, type UserCtx } from '../../couchdb/embedded/access.ts';

const ANON: UserCtx = { name: null, roles: [] };
const ADMIN_PARTY_ANON: UserCtx = { name: null, roles: ['_admin'] };
const ADMIN: UserCtx = { name: 'ferry-admin', roles: ['_admin'] };
const GATEWAY: UserCtx = { name: 'ferry-gateway', roles: ['ferry-gateway'] };

describe('couchdb/embedded access decisions', () => {
  const before: Array<[string, string, boolean, 'allow' | number]> = [
    ['GET', '/', false, 401],
    ['PUT', '/newdb', false, 401],
    ['GET', '/_utils/', false, 401],
    ['OPTIONS', '/inbox_north', false, 401],
    ['POST', '/_session', false, 'allow'],
    ['GET', '/_session', false, 401],
    ['PUT', '/newdb', true, 'allow'],
    ['GET', '/%E0%A4%A', true, 400],
  ];
  for (const [method, path, creds, expected] of before) {
    it(`before auth: ${method} ${path} ${creds ? 'with' : 'without'} credentials → ${expected}`, () => {
      const d = decideBeforeAuth({ method, path, hasCredentials: creds });
      expect(d.kind === 'allow' ? 'allow' : d.status).to.equal(expected);
    });
  }

  const after: Array<[string, string, UserCtx, 'allow' | number]> = [
    ['GET', '/', ANON, 401],
    ['GET', '/', ADMIN_PARTY_ANON, 401],
    ['GET', '/_all_dbs', ADMIN, 'allow'],
    ['PUT', '/_config/admins/x', ADMIN, 'allow'],
    ['GET', '/', GATEWAY, 'allow'],
    ['GET', '/_session', GATEWAY, 'allow'],
    ['GET', '/_all_dbs', GATEWAY, 403],
    ['GET', '/_users/org.couchdb.user:ferry-gateway', GATEWAY, 403],
    ['GET', '/%5Fusers', GATEWAY, 403],
    ['GET', '/_config', GATEWAY, 403],
    ['GET', '/_utils/', GATEWAY, 403],
    ['PUT', '/newdb', GATEWAY, 403],
    ['DELETE', '/inbox_north', GATEWAY, 403],
    ['GET', '/inbox_north', GATEWAY, 'allow'],
    ['POST', '/inbox_north/_bulk_docs', GATEWAY, 'allow'],
    ['GET', '/inbox_north/_changes', GATEWAY, 'allow'],
    ['PUT', '/inbox_north/_design/x', GATEWAY, 403],
    ['PUT', '/inbox_north/_design%2Fx', GATEWAY, 403],
    ['GET', '/inbox_north/_design/ferry/_view/feed', GATEWAY, 'allow'],
    ['POST', '/inbox_north/_design/ferry/_view/feed', GATEWAY, 'allow'],
    ['PUT', '/inbox_north/_security', GATEWAY, 403],
    ['POST', '/inbox_north/_compact', GATEWAY, 403],
  ];
  for (const [method, path, user, expected] of after) {
    it(`after auth: ${method} ${path} as ${user.name ?? 'anonymous'} → ${expected}`, () => {
      const d = decideAfterAuth({ method, path }, user, true);
      expect(d.kind === 'allow' ? 'allow' : d.status).to.equal(expected);
    });
  }

  it('serves nothing while no admin is configured (admin party)', () => {
    const d = decideAfterAuth({ method: 'GET', path: '/' }, ADMIN, false);
    expect(d.kind === 'deny' && d.status).to.equal(503);
  });

  it('splits %2F inside a segment', () => {
    expect(pathSegments('/db/_design%2Fx')).to.deep.equal(['db', '_design', 'x']);
  });
});
