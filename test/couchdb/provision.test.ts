import { expect } from 'chai';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { createCouchServer, type CouchServer } from '../../couchdb/client.ts';
import { prepareCouch, type PreparedCouch } from '../../couchdb/prepare.ts';
import { provisionTenant, inboxSecurity, InvalidTenantError } from '../../couchdb/provision.ts';
import { couchServerAs, ensureServiceUsers, canLogIn } from '../../couchdb/identities.ts';
import { DESIGN_DOC_ID, VDU_MESSAGES } from '../../couchdb/design/index.ts';
import { tempDir, type TempDir } from '../support/services.ts';
import { raw } from './http.ts';
import { feedHead, MID, MID2, mutationDoc, statusDoc, type Doc } from './fixtures.ts';

describe('couchdb: identities, provisioning and the inbox design doc on the embedded server', function () {
  this.timeout(60_000);
  let dir: TempDir;
  let platform: Platform;
  let couch: PreparedCouch | undefined;

  before(async () => {
    dir = tempDir('ferry-provision-');
    platform = await openPlatform({});
    couch = await prepareCouch({ dataDir: dir.path, couchdbUrl: undefined }, platform);
  });

  after(async () => {
    await couch?.stop();
    await platform?.close();
    dir?.remove();
  });

  const admin = (): CouchServer => couch!.server;
  const as = (who: 'gateway' | 'worker') => couchServerAs(couch!.identities, who).db('inbox_north');

  describe('start-up', () => {
    it('provisions the demo tenants and records them in the registry', async () => {
      expect(await platform.tenants.list()).to.deep.equal(['east', 'north', 'south']);
      expect(await admin().allDbs()).to.include.members(['inbox_north', 'inbox_south', 'inbox_east', '_users']);
      expect(couch!.provisioned.map((p) => p.tenant)).to.deep.equal(['east', 'north', 'south']);
    });

    it('keeps the service passwords in a 0600 file and creates both users', async () => {
      expect(statSync(join(dir.path, 'couch', 'service-users.json')).mode & 0o777).to.equal(0o600);
      expect(await canLogIn(couch!.identities.url, couch!.identities.gateway)).to.equal(true);
      expect(await canLogIn(couch!.identities.url, couch!.identities.worker)).to.equal(true);
      const users = admin().db('_users');
      expect((await users.get<{ roles: string[] }>('org.couchdb.user:ferry-gateway'))!.roles).to.deep.equal(['ferry-gateway']);
      expect((await users.get<{ roles: string[] }>('org.couchdb.user:ferry-worker'))!.roles).to.deep.equal(['ferry-worker']);
    });

    it('a second start changes nothing', async () => {
      const design = await admin().db('inbox_north').get(DESIGN_DOC_ID);
      await couch!.stop();
      couch = await prepareCouch({ dataDir: dir.path, couchdbUrl: undefined }, platform);
      for (const p of couch.provisioned) expect(p).to.include({ dbCreated: false, securityUpdated: false, designUpdated: false });
      expect((await admin().db('inbox_north').get(DESIGN_DOC_ID))!._rev).to.equal(design!._rev);
      expect(await ensureServiceUsers(admin(), couch.identities)).to.deep.equal({ created: [], updated: [] });
    });
  });

  describe('provisionTenant', () => {
    it('is idempotent: twice gives the same state', async () => {
      const first = await provisionTenant({ admin: admin(), tenant: 'west', registry: platform.tenants });
      expect(first).to.deep.equal({ tenant: 'west', db: 'inbox_west', dbCreated: true, securityUpdated: true, designUpdated: true });
      const snapshot = async () => ({
        security: (await raw(admin().url, 'GET', '/inbox_west/_security', { auth: couch!.identities.admin })).body,
        design: await admin().db('inbox_west').get(DESIGN_DOC_ID),
        tenants: await platform.tenants.list(),
      });
      const before = await snapshot();
      const second = await provisionTenant({ admin: admin(), tenant: 'west', registry: platform.tenants });
      expect(second).to.deep.equal({ tenant: 'west', db: 'inbox_west', dbCreated: false, securityUpdated: false, designUpdated: false });
      expect(await snapshot()).to.deep.equal(before);
      expect(before.security).to.deep.equal(inboxSecurity());
      expect(before.tenants).to.include('west');
    });

    it('repairs a drifted _security and design doc', async () => {
      await admin().db('inbox_west').request('PUT', '/_security', { admins: { names: [], roles: [] }, members: { names: [], roles: [] } });
      const design = (await admin().db('inbox_west').get<Record<string, unknown>>(DESIGN_DOC_ID))!;
      await admin().db('inbox_west').put({ ...design, _id: DESIGN_DOC_ID, views: {} });
      const result = await provisionTenant({ admin: admin(), tenant: 'west', registry: platform.tenants });
      expect(result).to.include({ dbCreated: false, securityUpdated: true, designUpdated: true });
      expect(await provisionTenant({ admin: admin(), tenant: 'west', registry: platform.tenants })).to.include({ securityUpdated: false, designUpdated: false });
    });

    it('refuses bad tenant ids before touching anything', async () => {
      for (const bad of ['', 'North', '1abc', 'a_b', 'a/b', '../x', 'a'.repeat(41)]) {
        let error: unknown;
        await provisionTenant({ admin: admin(), tenant: bad, registry: platform.tenants }).catch((err: unknown) => (error = err));
        expect(error, bad).to.be.instanceOf(InvalidTenantError);
      }
      expect(await platform.tenants.list()).to.deep.equal(['east', 'north', 'south', 'west']);
    });
  });

  describe('_security', () => {
    it('lets only the two service users in', async () => {
      await admin().db('_users').put({ _id: 'org.couchdb.user:intruder', name: 'intruder', type: 'user', roles: ['registrar'], password: 'pw-i' });
      const intruder = { username: 'intruder', password: 'pw-i' };
      for (const [method, path, body] of [
        ['GET', '/inbox_north', undefined],
        ['GET', '/inbox_north/_changes', undefined],
        ['GET', '/inbox_north/_all_docs', undefined],
        ['POST', '/inbox_north/_bulk_docs', { docs: [mutationDoc()] }],
        ['PUT', `/inbox_north/${encodeURIComponent(mutationDoc()._id)}`, mutationDoc()],
      ] as const) {
        const res = await raw(admin().url, method, path, { auth: intruder, ...(body ? { body } : {}) });
        if (path.endsWith('_bulk_docs') && res.status === 201) {
          // express-pouchdb answers a non-member's _bulk_docs 201 with a per-doc error (CouchDB: 401).
          expect(res.body).to.be.an('array').with.length(1);
          expect((res.body as Array<{ error?: string }>)[0]!.error).to.be.oneOf(['unauthorized', 'forbidden']);
          continue;
        }
        expect([401, 403], `${method} ${path}`).to.include(res.status);
      }
      expect(await admin().db('inbox_north').get(mutationDoc()._id)).to.equal(null);
      for (const who of ['gateway', 'worker'] as const) {
        expect((await as(who).info()).db_name).to.equal('inbox_north');
      }
    });

    it('keeps service users away from _security, design docs and db creation', async () => {
      const gw = couchServerAs(couch!.identities, 'gateway');
      for (const [method, path, body] of [
        ['PUT', '/inbox_north/_security', {}],
        ['PUT', '/inbox_north/_design/evil', { views: {} }],
        ['DELETE', '/inbox_north', undefined],
        ['PUT', '/inbox_new', undefined],
      ] as const) {
        const res = await gw.request(method, path, body);
        expect([401, 403], `${method} ${path}`).to.include(res.status);
        await res.body?.cancel();
      }
      const bulk = await gw.db('inbox_north').bulkDocs([{ _id: '_design/evil', views: {} }]);
      expect(bulk[0]!.error).to.be.oneOf(['unauthorized', 'forbidden']);
    });

    it('updates a changed service password, idempotently', async () => {
      const identities = { ...couch!.identities, gateway: { ...couch!.identities.gateway, password: 'rotated-secret' } };
      expect(await ensureServiceUsers(admin(), identities)).to.deep.equal({ created: [], updated: ['ferry-gateway'] });
      expect(await canLogIn(admin().url, identities.gateway)).to.equal(true);
      expect(await canLogIn(admin().url, couch!.identities.gateway)).to.equal(false);
      expect(await ensureServiceUsers(admin(), couch!.identities)).to.deep.equal({ created: [], updated: ['ferry-gateway'] });
      expect(await canLogIn(admin().url, couch!.identities.gateway)).to.equal(true);
    });
  });

  describe('validate_doc_update over plain HTTP', () => {
    type Who = 'gateway' | 'worker';
    const M = VDU_MESSAGES;
    const owner = 'vdu';
    const m = (over: Record<string, unknown> = {}, mid = MID) => mutationDoc(over, owner, mid);
    const s = (over: Record<string, unknown> = {}, mid = MID) => statusDoc(over, owner, mid);

    async function write(who: Who, doc: Doc, newEdits = true): Promise<{ ok: boolean; error?: string; reason?: string; rev?: string }> {
      const [r] = await as(who).bulkDocs([doc], { new_edits: newEdits });
      if (!newEdits && r === undefined) return { ok: true };
      return { ok: r?.ok === true || (r !== undefined && !r.error), ...r };
    }

    async function current(id: string): Promise<Doc & { _rev: string; _conflicts?: string[] }> {
      return (await as('worker').get<Doc & { _rev: string }>(id, { conflicts: true }))!;
    }

    it('m: accepted from the gateway, refused from the worker', async () => {
      expect(await write('worker', m())).to.include({ ok: false, error: 'forbidden', reason: M.mutationRole });
      expect((await write('gateway', m())).ok).to.equal(true);
    });

    it('s: accepted from the worker, refused from the gateway', async () => {
      expect(await write('gateway', s())).to.include({ ok: false, error: 'forbidden', reason: M.statusRole });
      expect((await write('worker', s())).ok).to.equal(true);
    });

    it('refuses a wrong owner prefix, a wrong tenant and foreign ids', async () => {
      expect(await write('gateway', mutationDoc({ owner: 'someone-else' }, owner, MID2))).to.include({ reason: M.owner });
      expect(await write('gateway', m({ tenant: 'south' }, MID2))).to.include({ reason: M.tenant });
      expect(await write('worker', s({ tenant: 'south' }, MID2))).to.include({ reason: M.tenant });
      expect(await write('gateway', { ...m({}, MID2), _id: 'random-id' })).to.include({ reason: M.unknownId });
    });

    it('keeps mutation docs immutable and undeletable', async () => {
      const doc = await current(m()._id);
      expect(await write('gateway', { ...doc, seq: 99 })).to.include({ reason: M.mutationImmutable });
      expect(await write('gateway', { _id: doc._id, _rev: doc._rev, _deleted: true })).to.include({ reason: M.mutationDeleted });
      const res = await as('gateway').request('DELETE', `/${encodeURIComponent(doc._id)}`, undefined, { rev: doc._rev });
      expect(res.status).to.equal(403);
      expect((await current(doc._id))._rev).to.equal(doc._rev);
    });

    it('enforces the VDU on new_edits:false writes too (trap 19)', async () => {
      // An identical re-push of the same revision is a no-op.
      const doc = await current(m()._id);
      expect((await write('gateway', { ...doc }, false)).ok).to.equal(true);
      // A bad shape is refused on the replication path as well.
      expect(await write('gateway', { ...m({ seq: 'x' }, MID2), _rev: '1-aaaa' }, false)).to.include({ reason: M.mutationShape });
      expect(await write('worker', { ...m({}, MID2), _rev: '1-aaaa' }, false)).to.include({ reason: M.mutationRole });
    });

    it('conflicted second root via new_edits:false', async () => {
      const id = m()._id;
      const stored = await current(id);
      // A second root with different content later: the embedded server validates it against the
      // current winner, so it is refused as a change. (A real CouchDB validates a new root against
      // no old doc; the gateway's single-root rule and the worker's conflict check cover that.)
      const second = await write('gateway', { ...m({ seq: 2 }), _rev: '1-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' }, false);
      expect(second).to.include({ reason: M.mutationImmutable });
      expect((await current(id))._conflicts ?? []).to.deep.equal([]);
      expect((await current(id))._rev).to.equal(stored._rev);
      // Two roots in one batch are each validated as new docs: the doc ends up conflicted, which
      // is what the worker must detect and reject (DESIGN §4).
      const mid = '0190f000-0000-7000-8000-0000000000c1';
      const a = { ...m({ seq: 5 }, mid), _rev: '1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' };
      const b = { ...m({ seq: 6 }, mid), _rev: '1-cccccccccccccccccccccccccccccccc' };
      expect(await as('gateway').bulkDocs([a, b], { new_edits: false })).to.deep.equal([]);
      expect((await current(a._id))._conflicts).to.have.length(1);
    });

    it('fences status docs and never downgrades a terminal one', async () => {
      const doc = await current(s()._id);
      expect(await write('worker', { ...doc, state: 'retrying', fence: 4 })).to.include({ reason: M.staleFence });
      const committed = await write('worker', { ...doc, state: 'committed', fence: 6, counter: 1 });
      expect(committed.ok).to.equal(true);
      const now = await current(s()._id);
      expect(await write('worker', { ...now, state: 'retrying', fence: 7 })).to.include({ reason: M.downgrade });
      expect(await write('worker', { ...now, state: 'committed', fence: 5 })).to.include({ reason: M.staleFence });
      expect(await write('worker', { ...s({}, MID2), mutation: MID })).to.include({ reason: M.mutationRef });
    });

    it('guards the feed head', async () => {
      expect(await write('gateway', feedHead())).to.include({ reason: M.feedRole });
      expect((await write('worker', feedHead())).ok).to.equal(true);
      const head = await current('feed:head');
      expect(await write('worker', { ...head, counter: 9 })).to.include({ reason: M.counterDecrease });
      expect(await write('worker', { ...head, counter: 11, fence: 4 })).to.include({ reason: M.staleFence });
      expect((await write('worker', { ...head, counter: 11, fence: 6 })).ok).to.equal(true);
    });
  });

  describe('views', () => {
    const owner = 'viewer1';
    const mids = ['0190f000-0000-7000-8000-0000000000d1', '0190f000-0000-7000-8000-0000000000d2', '0190f000-0000-7000-8000-0000000000d3'];

    before(async () => {
      const entity = 'pat_0190f000-0000-7000-8000-0000000000ee';
      await as('gateway').bulkDocs(mids.map((mid, i) => mutationDoc({ seq: i + 1, entity, after: i ? mids[i - 1] : null }, owner, mid)));
      await as('worker').bulkDocs([
        statusDoc({ state: 'committed', counter: 21 }, owner, mids[0]),
        statusDoc({ state: 'rejected', code: 'VALIDATION_FAILED', counter: 22 }, owner, mids[1]),
        statusDoc({ state: 'waiting', counter: 23 }, owner, mids[2]),
      ]);
    });

    it('by_entity: the chain of an entity', async () => {
      const entity = 'pat_0190f000-0000-7000-8000-0000000000ee';
      const res = await as('worker').view('ferry', 'by_entity', { startkey: [owner, entity], endkey: [owner, entity, {}] });
      expect(res.rows.map((r) => [r.key, r.value])).to.deep.equal([
        [[owner, entity, 1], null],
        [[owner, entity, 2], mids[0]],
        [[owner, entity, 3], mids[1]],
      ]);
    });
  });

  it('the admin client stays usable for raw calls', async () => {
    const c = createCouchServer({ url: couch!.identities.url, auth: couch!.identities.admin });
    expect(await c.up()).to.equal(true);
  });
});
