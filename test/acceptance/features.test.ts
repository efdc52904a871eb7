// The spec's three Gherkin features (§7), end to end on the full real stack: gateway, embedded
// CouchDB server, worker, registration service (PGlite), real NATS JetStream, and devices running
// the real client library. Test names are the spec's feature and scenario wording.

import {
  FAST_WORKER,
  bulkDocIds,
  devTokens,
  dispose,
  everyLocalDoc,
  openDevice,
  recordingFetch,
  startAcceptanceStack,
  startDroppingProxy,
  demographics,
  syntheticPatient,
  v1,
  waitFor,
  waitForState,
  type Device,
} from './support.ts';
import { expect } from 'chai';
import { silentLogger } from '../../http/log.ts';
import { couchServerAs } from '../../couchdb/identities.ts';
import { startWorker, type Worker } from '../../gateway/worker/worker.ts';
import { createWorkerMetrics } from '../../gateway/worker/metrics.ts';
import { createRegistry } from '../../gateway/metrics/registry.ts';
import { streamEvents, streamLastSeq } from '../../harness/collect.ts';
import { requireNats, TEST_NATS_URL } from '../support/services.ts';
import type { TestStack } from '../support/stack.ts';


describe('acceptance (spec §7 Gherkin features, full stack)', function () {
  this.timeout(90_000);
  let stack: TestStack;
  let worker: Worker | null = null;
  let proxy: Awaited<ReturnType<typeof startDroppingProxy>>;
  /** The worker → registration answer to lose once (an Idempotency-Key, i.e. a mutation id). */
  const dropOnce = new Set<string>();
  const devices: Device[] = [];

  before(async function () {
    this.timeout(120_000);
    await requireNats(this);
    // The worker runs here, behind a proxy to the registration service that can lose one answer.
    stack = await startAcceptanceStack({ worker: false });
    proxy = await startDroppingProxy(stack.registrationUrl, ({ method, idempotencyKey }) => {
      if (method !== 'POST' || !idempotencyKey || !dropOnce.has(idempotencyKey)) return false;
      dropOnce.delete(idempotencyKey);
      return true;
    });
    worker = await startWorker({
      platform: stack.platform,
      couch: couchServerAs(stack.couch.identities, 'worker'),
      issuer: stack.issuer,
      services: { registration: proxy.url },
      workerId: 'acceptance-worker',
      logger: silentLogger(),
      metrics: createWorkerMetrics(createRegistry()),
      waitingTimeoutMs: stack.config.waitingTimeoutMs,
      ...FAST_WORKER,
    });
  });

  after(async function () {
    this.timeout(60_000);
    for (const d of devices) await dispose(d);
    await worker?.stop();
    await proxy?.close();
    await stack?.stop();
  });

  async function device(username: string, tenant: string, opts: Parameters<typeof openDevice>[2] = {}): Promise<Device> {
    const d = await openDevice(stack, await devTokens(stack.url, username, tenant), opts);
    devices.push(d);
    return d;
  }

  describe('Feature: Idempotent offline replay', function () {
    it('Scenario: Queued registration succeeds on replay with same mutation id', async function () {
      const afterSeq = await streamLastSeq(TEST_NATS_URL);
      // The device's first upload reaches the gateway, but its answer is lost (a timeout).
      const transport = recordingFetch((req) => (req.path.endsWith('/_bulk_docs') && !transport.log.some((r) => r.status === 'dropped') ? 'drop-answer' : undefined));
      const ada = await device('ada', 'north', { autoSync: false, fetch: transport.fetch });

      // Given a client queued POST /v1/patients with clientMutationId "m1"
      const patient = syntheticPatient();
      const queued = await ada.session.mutate('patient.create', patient);
      if (!queued.ok) throw new Error(`refused: ${queued.code}`);
      const m1 = queued.mid;
      const docId = `m:${ada.tokens.owner}:${m1}`;
      expect(ada.session.mutation(m1)?.state.kind).to.equal('queued');
      // The worker's call to the service times out once too (the service did commit).
      dropOnce.add(m1);

      // When the client retries the same request with "m1" after a timeout
      ada.session.sync.start();
      const committed = await waitForState(ada.session, m1, 'committed', 30_000);

      // The device's upload timed out once and was retried with the same mutation id.
      const uploads = transport.log.filter((r) => r.path.endsWith('/_bulk_docs'));
      expect(uploads[0]!.status).to.equal('dropped');
      expect(bulkDocIds(uploads[0]!.body)).to.deep.equal([docId]);
      // The transport sends the same upload again after a short pause (client/transient-retry.ts);
      // the commit can come back through the pull before that pause is over, so wait for it.
      const retried = () =>
        transport.log.slice(transport.log.indexOf(uploads[0]!) + 1).some((r) => (r.path.endsWith('/_bulk_docs') || r.path.endsWith('/_revs_diff')) && (r.body ?? '').includes(docId));
      for (let waited = 0; !retried() && waited < 5_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
      expect(retried(), 'the retry offers the same mutation id').to.equal(true);
      // The worker's service call timed out once and was retried with Idempotency-Key = m1.
      const posts = proxy.requests.filter((r) => r.method === 'POST' && r.path === '/v1/patients' && r.idempotencyKey === m1);
      expect(posts.length).to.be.at.least(2);
      expect(posts[0]!.dropped).to.equal(true);
      expect(posts[0]!.status).to.equal(201);
      expect(posts.at(-1)!.status).to.equal(201);
      expect(posts.at(-1)!.replayed).to.equal('true');

      // Then the server returns the same patient id without creating a second patient
      const body = committed.state.response?.body as Record<string, unknown>;
      expect(committed.state.response?.status).to.equal(201);
      expect(body.id).to.equal(queued.entity);
      expect(body.version).to.equal(1);
      const token = await ada.tokens.getToken();
      const search = await v1(stack.url, token, 'GET', `/patients?name=${encodeURIComponent(`${String(patient.givenName)} ${String(patient.familyName)}`)}`);
      expect(search.status).to.equal(200);
      expect((search.body.results as Array<{ id: string }>).map((r) => r.id)).to.deep.equal([queued.entity]);
      // The inbox holds the mutation once.
      const inbox = await fetch(`${stack.url}/sync/north/${encodeURIComponent(docId)}`, { headers: { authorization: `Bearer ${token}` } });
      expect(inbox.status).to.equal(200);

      // And only one REGISTRATION.patient.created event is observed for that id
      const createdFor = async () => (await streamEvents(TEST_NATS_URL, afterSeq, ['north'])).filter((e) => e.patientId === queued.entity && e.subject === 'REGISTRATION.patient.created');
      await waitFor('the created event', async () => (await createdFor()).length > 0, 15_000);
      // Give a second (wrong) event time to show up before counting.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(await createdFor()).to.have.length(1);
    });
  });

  describe('Feature: Conflict visibility', function () {
    it('Scenario: Stale update rejected after concurrent edit', async function () {
      const ada = await device('ada', 'north');
      const created = await ada.session.mutate('patient.create', syntheticPatient());
      if (!created.ok) throw new Error(`refused: ${created.code}`);
      const v1Record = (await waitForState(ada.session, created.mid, 'committed')).state.response?.body as Record<string, unknown>;
      expect(v1Record.version).to.equal(1);

      // Given local draft version 1
      const mine = { ...demographics(v1Record), phone: '+2348000000001' };
      const draft = await ada.session.drafts.save({ op: 'patient.update', entity: created.entity, payload: mine });
      expect(ada.session.entity(created.entity).confirmed?.version).to.equal(1);

      // When the server has advanced the record to version 2
      const ben = await devTokens(stack.url, 'ben', 'north');
      const theirs = { ...demographics(v1Record), address: { line: '1 Synthetic Way', city: 'Testville', country: 'NG' } };
      const advanced = await v1(stack.url, await ben.getToken(), 'PUT', `/patients/${created.entity}`, theirs, { 'if-match': '"1"', 'idempotency-key': crypto.randomUUID() });
      expect(advanced.status, JSON.stringify(advanced.body)).to.equal(200);
      expect(advanced.body.version).to.equal(2);

      // And the client submits an update with version 1
      const conflictSeen = new Promise<void>((resolve) => ada.session.on('conflict', () => resolve()));
      const submitted = await ada.session.drafts.submit(draft.id);
      if (!submitted.ok) throw new Error(`refused: ${submitted.code}`);
      expect(ada.session.mutation(submitted.mid)?.baseVersion).to.equal(1);

      // Then the client receives a conflict or precondition failure
      const conflicted = await waitForState(ada.session, submitted.mid, 'conflict');
      await conflictSeen;
      expect(conflicted.state.code).to.equal('VERSION_CONFLICT');
      const [conflict] = ada.session.conflicts();
      expect(conflict?.mid).to.equal(submitted.mid);
      expect(conflict?.current?.version).to.equal(2);
      expect(conflict?.mine.phone).to.equal('+2348000000001');

      // And the user can refresh and merge per module policy
      const refreshed = await v1(stack.url, await ada.tokens.getToken(), 'GET', `/patients/${created.entity}`);
      expect(refreshed.body).to.deep.equal(conflict?.current);
      const merged = { ...demographics(refreshed.body), phone: mine.phone };
      const resolution = await ada.session.resolve(submitted.mid, { kind: 'merge', payload: merged });
      if (!resolution.ok || !('mid' in resolution)) throw new Error(`merge refused: ${JSON.stringify(resolution)}`);
      expect(ada.session.mutation(resolution.mid)).to.include({ baseVersion: 2, resolves: submitted.mid });
      const final = await waitForState(ada.session, resolution.mid, 'committed');
      expect((final.state.response?.body as Record<string, unknown>).version).to.equal(3);
      const server = await v1(stack.url, await ada.tokens.getToken(), 'GET', `/patients/${created.entity}`);
      expect(server.body).to.include({ version: 3, phone: '+2348000000001' });
      expect(server.body.address).to.deep.equal(theirs.address);
      const view = ada.session.entity(created.entity);
      expect(view.confirmed?.version).to.equal(3);
      expect(view.problems).to.deep.equal([]);
      expect(ada.session.conflicts()).to.deep.equal([]);
    });
  });

  describe('Feature: Tenant isolation', function () {
    it('Scenario: Local store does not leak across tenants', async function () {
      // cy works in north and in south; the south device has committed south data.
      const south = await device('cy', 'south');
      const southPatient = syntheticPatient({ facility: 'south-hc-1' });
      const southCreate = await south.session.mutate('patient.create', southPatient);
      if (!southCreate.ok) throw new Error(`refused: ${southCreate.code}`);
      await waitForState(south.session, southCreate.mid, 'committed');

      const transport = recordingFetch();
      const north = await device('cy', 'north', { autoSync: false, fetch: transport.fetch });
      const northToken = north.tokens.current;
      const queued: string[] = [];
      for (let i = 0; i < 2; i++) {
        const r = await north.session.mutate('patient.create', syntheticPatient());
        if (!r.ok) throw new Error(`refused: ${r.code}`);
        queued.push(r.mid);
      }

      // Given user switched tenant context on the server
      north.tokens.current = await south.tokens.getToken();

      // When the client flushes its queue
      const flushed = await north.session.sync.once();

      // Then mutations are rejected or dropped for wrong tenant
      expect(flushed).to.deep.equal({ kind: 'halted', source: 'token-tenant' });
      expect(transport.log, 'nothing left the device with a south token').to.deep.equal([]);
      north.session.sync.start();
      await waitFor('the tenant-mismatch halt', () => north.session.sync.state.kind === 'tenant-mismatch');
      expect(transport.log).to.deep.equal([]);
      // The gateway refuses the south token on north's endpoint all the same.
      const mismatch = await fetch(`${stack.url}/sync/north/_bulk_docs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await south.tokens.getToken()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ new_edits: false, docs: [] }),
      });
      expect(mismatch.status).to.equal(403);
      expect(((await mismatch.json()) as { code: string }).code).to.equal('TENANT_MISMATCH');
      for (const mid of queued) {
        const res = await fetch(`${stack.url}/sync/north/${encodeURIComponent(`m:${north.tokens.owner}:${mid}`)}`, { headers: { authorization: `Bearer ${northToken}` } });
        expect(res.status, 'not in north inbox').to.equal(404);
        expect(north.session.mutation(mid)?.state.kind).to.equal('queued');
      }

      // The server now also removes cy from north. Revocation bites at the gateway (docs/SECURITY.md):
      // the north token is refused from the next request, so the device halts and its queue never
      // reaches north's inbox; the IdP refuses the refresh (403) and the app drops the queue.
      await stack.platform.memberships.remove('north', north.tokens.owner);
      try {
        north.tokens.current = northToken;
        north.session.sync.start();
        await waitFor('the server’s tenant-mismatch halt', () => {
          const state = north.session.sync.state;
          return state.kind === 'tenant-mismatch' && state.source === 'server';
        });
        await north.session.sync.stop();
        const late = await north.session.mutate('patient.create', syntheticPatient());
        if (!late.ok) throw new Error(`refused: ${late.code}`);
        let refused: unknown = null;
        await north.tokens.refresh().catch((err: unknown) => (refused = err));
        expect(refused).to.be.instanceOf(Error);
        expect(north.tokens.refreshStatus).to.equal(403);
        expect(await north.session.membershipRevoked()).to.deep.equal({ rejected: queued.length + 1 });
        for (const mid of [...queued, late.mid]) {
          expect(north.session.mutation(mid)?.state).to.include({ kind: 'rejected', code: 'TENANT_MISMATCH', source: 'device' });
        }
        expect(await north.session.unsynced()).to.equal(0);
      } finally {
        await stack.platform.memberships.set('north', north.tokens.owner, ['registrar']);
      }
      for (const mid of queued) {
        const res = await fetch(`${stack.url}/sync/north/${encodeURIComponent(`m:${north.tokens.owner}:${mid}`)}`, { headers: { authorization: `Bearer ${northToken}` } });
        expect(res.status, 'never reached the north inbox').to.equal(404);
      }

      // And no cross-tenant data appears in the local database
      expect((await north.session.close()).ok).to.equal(true);
      const docs = await everyLocalDoc(north);
      expect(docs.length).to.be.greaterThan(0);
      const owner = north.tokens.owner;
      for (const doc of docs) {
        expect(doc._id, 'only this user\'s docs').to.match(new RegExp(`^([msl]:${owner}:|d:)`));
        if (doc._id.startsWith('m:') || doc._id.startsWith('s:')) expect(doc.tenant, doc._id).to.equal('north');
        const text = JSON.stringify(doc);
        expect(text).to.not.include('south');
        expect(text).to.not.include(southCreate.mid);
        expect(text).to.not.include(southCreate.entity);
        expect(text).to.not.include(String(southPatient.familyName));
      }
      // Nothing of the queue reached the server, so no status came back; its rejections are local notes.
      expect(docs.filter((d) => d._id.startsWith('s:'))).to.deep.equal([]);
      expect(docs.filter((d) => d._id.startsWith('l:')).map((d) => d.mutation)).to.include.members(queued);
    });
  });
});
