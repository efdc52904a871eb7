import { expect } from 'chai';
import { startEmbeddedCouch, type EmbeddedCouch } from '../../couchdb/embedded/supervisor.ts';
import { freePort, tempDir, type TempDir } from '../support/services.ts';
import { raw } from './http.ts';

// The embedded server loads a database's `_security` once per request, before every database
// route (couchdb/embedded/security-once.ts). The access rules stay CouchDB's: members write
// ordinary docs, only admins write design docs, a non-member is refused, and a change of
// `_security` applies from the next request; `validate_doc_update` sees the real security object.

// Refuses any doc unless it is handed the database's own security object.
const VDU = `function (newDoc, oldDoc, userCtx, secObj) {
  if (!secObj || !secObj.members || !secObj.members.roles || secObj.members.roles.indexOf('writers') === -1) {
    throw({ forbidden: 'no security object' });
  }
}`;

describe('couchdb/embedded: the security object, once per request', function () {
  this.timeout(60_000);
  let dir: TempDir;
  let couch: EmbeddedCouch;
  const admin = () => ({ auth: couch.admin });
  const writer = { username: 'sec-writer', password: 'writer-secret-1' };
  const outsider = { username: 'sec-outsider', password: 'outsider-secret-1' };
  const security = (roles: string[]) => ({ admins: { names: [], roles: [] }, members: { names: [], roles } });
  let n = 0;
  const bulk = async (auth: { username: string; password: string }, doc: Record<string, unknown> = { _id: `d${++n}` }) => {
    const res = await raw(couch.url, 'POST', '/sec/_bulk_docs', { auth, body: { docs: [doc] } });
    if (res.status !== 201) return res.status;
    const [row] = res.body as Array<{ ok?: boolean; error?: string }>;
    return row?.ok ? 'ok' : row?.error;
  };

  before(async () => {
    dir = tempDir('ferry-security-once-');
    couch = await startEmbeddedCouch({ dataDir: dir.path, port: await freePort() });
    expect((await raw(couch.url, 'PUT', '/sec', admin())).status).to.equal(201);
    for (const [u, role] of [[writer, 'writers'], [outsider, 'others']] as const) {
      const res = await raw(couch.url, 'PUT', `/_users/org.couchdb.user:${u.username}`, { ...admin(), body: { name: u.username, password: u.password, roles: [role], type: 'user' } });
      expect(res.status).to.equal(201);
    }
    expect((await raw(couch.url, 'PUT', '/sec/_security', { ...admin(), body: security(['writers']) })).status).to.equal(200);
    expect((await raw(couch.url, 'PUT', '/sec/_design/rules', { ...admin(), body: { validate_doc_update: VDU } })).status).to.equal(201);
  });

  after(async () => {
    await couch?.stop();
    dir?.remove();
  });

  it('hands validate_doc_update the database security object in _bulk_docs, as in a single PUT', async () => {
    expect(await bulk(writer)).to.equal('ok');
    const put = await raw(couch.url, 'PUT', '/sec/single', { auth: writer, body: { a: 1 } });
    expect(put.status).to.equal(201);
  });

  it('refuses a non-member and a member writing a design doc', async () => {
    expect(await bulk(outsider)).to.be.oneOf([401, 403, 'unauthorized', 'forbidden']);
    expect(await bulk(writer, { _id: '_design/other', views: {} })).to.be.oneOf(['unauthorized', 'forbidden']);
    const read = await raw(couch.url, 'POST', '/sec/_all_docs', { auth: outsider, body: { keys: ['single'] } });
    expect(read.status).to.be.oneOf([401, 403]);
  });

  it('applies a changed _security from the next request', async () => {
    expect((await raw(couch.url, 'PUT', '/sec/_security', { ...admin(), body: security(['others']) })).status).to.equal(200);
    expect(await bulk(writer)).to.be.oneOf([401, 403, 'unauthorized', 'forbidden']);
    // The outsider is a member now, but the validation function wants the role 'writers' listed.
    expect(await bulk(outsider)).to.equal('forbidden');
    expect((await raw(couch.url, 'PUT', '/sec/_security', { ...admin(), body: security(['others', 'writers']) })).status).to.equal(200);
    expect(await bulk(outsider)).to.equal('ok');
  });
});
