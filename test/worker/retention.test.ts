import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLeaseStore, type Fence } from '../../gateway/worker/lease.ts';
import { runRetentionPass, type RetentionPassResult } from '../../gateway/worker/retention.ts';
import type { RetentionPolicy } from '../../gateway/worker/retention-rule.ts';
import { createLocalStore, migrateSync } from '../../gateway/sync/local-store.ts';
import { ackDocId } from '../../validators/acknowledgement.ts';
import { mutationDoc, newEntity, patientPayload, startEnv, waitUntil, type Env, type MutationFixture } from './fixture.ts';

// Retention against the real parts (docs/SYNC.md "Retention"): the embedded CouchDB, the platform
// database, the registration service and the worker. A pass purges only what its own device has
// acknowledged, the PHI leaves the leveldb files, and the worker goes on after a purge.

const TENANT = 'north';
const DEVICE = 'dev-test';
const MARKER = 'Qzvxwmarkerjq';

describe('worker/retention: purging acknowledged mutations and statuses', function () {
  this.timeout(180_000);
  let env: Env;
  let lease: Fence;
  const ada: MutationFixture[] = [];
  const ben: MutationFixture[] = [];
  const counterOf = new Map<string, number>();

  const inboxFiles = () => join(env.dir.path, 'couch', 'db', `inbox_${TENANT}`);
  const onDisk = (marker: string) => readdirSync(inboxFiles()).some((f) => readFileSync(join(inboxFiles(), f)).includes(Buffer.from(marker)));
  const exists = async (id: string) => (await env.admin.db(`inbox_${TENANT}`).get(id)) !== null;
  const pass = (policy: RetentionPolicy): Promise<RetentionPassResult> =>
    runRetentionPass({ tenant: TENANT, lease, db: env.platform.db, inbox: env.workerCouch.db(`inbox_${TENANT}`), purger: env.admin.db(`inbox_${TENANT}`), policy, batchSize: 2, now: Date.now() + 1_000 });
  const ack = async (owner: string, counter: number) => {
    const local = createLocalStore(env.platform.db);
    const key = { tenant: TENANT, owner, id: ackDocId(DEVICE) };
    const current = await local.get(key);
    expect(await local.put(key, (current?.rev ?? 0) + 1, { type: 'ferry-ack', v: 1, device: DEVICE, counter })).to.equal(true);
  };

  before(async () => {
    env = await startEnv({ tenants: [TENANT], backend: 'pglite' });
    await migrateSync(env.platform.db);
    for (let i = 0; i < 4; i++) ada.push(mutationDoc({ owner: 'ada', tenant: TENANT, entity: newEntity(), op: 'patient.create', payload: patientPayload({ givenName: `${MARKER}${'abcd'[i]}` }) }));
    for (let i = 0; i < 2; i++) ben.push(mutationDoc({ owner: 'ben', tenant: TENANT, entity: newEntity(), op: 'patient.create', payload: patientPayload({ givenName: `Benmarker${'ab'[i]}` }) }));
    const worker = await env.startWorker();
    // One at a time, so each status has its own, increasing counter.
    for (const m of [...ada, ...ben]) {
      await env.push(TENANT, [m]);
      const s = await env.waitStatus(TENANT, m.owner as string, m.mid, (x) => x.state === 'committed');
      counterOf.set(m.mid, s.counter!);
    }
    await worker.stop();
    lease = (await createLeaseStore(env.platform.db).acquire(TENANT, 'retention-test', 120_000))!;
    expect(lease).to.not.equal(null);
  });
  after(async () => {
    await env?.close();
  });

  it('never purges an unacknowledged status, however old, with no maximum set', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await pass({ windowMs: 1, maxMs: null });
      expect(r.purged).to.equal(0);
      expect(r.kept.unacknowledged).to.equal(6);
    }
    for (const m of [...ada, ...ben]) {
      expect(await exists(m._id)).to.equal(true);
      expect(await exists(`s:${m.owner as string}:${m.mid}`)).to.equal(true);
    }
  });

  it('keeps acknowledged statuses inside the window', async () => {
    await ack('ada', counterOf.get(ada[3]!.mid)!);
    const r = await pass({ windowMs: 24 * 3600_000, maxMs: null });
    expect(r.looked).to.equal(0);
    expect(await exists(ada[0]!._id)).to.equal(true);
  });

  it('purges what the owning device acknowledged, and only that; the PHI leaves the files after compaction', async () => {
    expect(onDisk(MARKER), 'control: the marker is in the files before').to.equal(true);
    // ada's device has stored her statuses up to the second one's counter; ben's has no ack at all.
    await ack('ada', counterOf.get(ada[1]!.mid)!);
    const r = await pass({ windowMs: 1, maxMs: null });
    expect(r.purged).to.equal(2);
    expect(r.kept.unacknowledged).to.equal(4);
    expect(r.compacted).to.equal(true);
    for (const m of ada.slice(0, 2)) {
      expect(await exists(m._id)).to.equal(false);
      expect(await exists(`s:ada:${m.mid}`)).to.equal(false);
    }
    for (const m of [...ada.slice(2), ...ben]) {
      expect(await exists(m._id)).to.equal(true);
      expect(await exists(`s:${m.owner as string}:${m.mid}`)).to.equal(true);
    }
    const rows = await env.platform.db.query<{ mid: string; purged_state: string | null; purged: boolean }>(
      `SELECT mid, purged_state, purged_at IS NOT NULL AS purged FROM pending_mutations WHERE tenant = $1 AND owner = 'ada' ORDER BY mid`,
      [TENANT],
    );
    const byMid = new Map(rows.rows.map((x) => [x.mid, x]));
    for (const m of ada.slice(0, 2)) expect(byMid.get(m.mid)).to.include({ purged_state: 'committed', purged: true });
    for (const m of ada.slice(2)) expect(byMid.get(m.mid)).to.include({ purged: false });
    const feed = await env.platform.db.query<{ doc_id: string }>('SELECT doc_id FROM feed_index WHERE tenant = $1', [TENANT]);
    expect(feed.rows.map((x) => x.doc_id)).to.not.include.members(ada.slice(0, 2).map((m) => `s:ada:${m.mid}`));
    expect(feed.rows).to.have.length(4);

    await waitUntil(async () => {
      const res = await env.admin.db(`inbox_${TENANT}`).request('GET', '');
      return ((await res.json()) as { compact_running?: boolean }).compact_running === false;
    }, 30_000);
    expect(onDisk(`${MARKER}a`), 'a purged patient name is gone from every leveldb file').to.equal(false);
    expect(onDisk(`${MARKER}b`)).to.equal(false);
    expect(onDisk(`${MARKER}c`), 'control: an unacknowledged one is still there').to.equal(true);
    // A second pass has nothing more to do for what is gone.
    expect((await pass({ windowMs: 1, maxMs: null })).purged).to.equal(0);
  });

  it('purges an unacknowledged status only once the optional maximum has passed', async () => {
    const r = await pass({ windowMs: 1, maxMs: 1 });
    expect(r.purged).to.equal(4);
    expect(await exists(ben[0]!._id)).to.equal(false);
  });

  it('the worker goes on after a purge: an update chained to a purged create commits, new mutations commit', async () => {
    await createLeaseStore(env.platform.db).release(lease);
    await env.startWorker();
    const create = ada[0]!;
    const update = mutationDoc({ owner: 'ada', tenant: TENANT, entity: create.entity, op: 'patient.update', after: create.mid, baseVersion: 1, payload: patientPayload({ givenName: 'Updatedname' }) });
    const fresh = mutationDoc({ owner: 'ada', tenant: TENANT, entity: newEntity(), op: 'patient.create', payload: patientPayload() });
    await env.push(TENANT, [update, fresh]);
    const s = await env.waitStatus(TENANT, 'ada', update.mid, (x) => x.state !== 'waiting' && x.state !== 'retrying');
    expect(s.state).to.equal('committed');
    expect((await env.waitStatus(TENANT, 'ada', fresh.mid, (x) => x.state === 'committed')).state).to.equal('committed');
    // The purged mutations were not looked at again: no status doc came back for them.
    expect(await exists(`s:ada:${create.mid}`)).to.equal(false);
  });

  it('a purged mutation pushed again replays its first answer and is back under retention', async () => {
    const again = ada[2]!;
    await env.push(TENANT, [again]);
    const s = await env.waitStatus(TENANT, 'ada', again.mid, (x) => x.state === 'committed');
    expect(s.response?.status).to.equal(201);
    const row = await env.platform.db.query<{ purged: boolean; terminal: boolean }>(
      'SELECT purged_at IS NOT NULL AS purged, terminal FROM pending_mutations WHERE tenant = $1 AND owner = $2 AND mid = $3',
      [TENANT, 'ada', again.mid],
    );
    expect(row.rows[0]).to.deep.equal({ purged: false, terminal: true });
  });
});
