import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeDocId } from '../../couchdb/client.ts';
import { createLeaseStore, type Fence } from '../../gateway/worker/lease.ts';
import { runRetentionPass, type RetentionPassResult } from '../../gateway/worker/retention.ts';
import type { RetentionPolicy } from '../../gateway/worker/retention-rule.ts';
import { createLocalStore, migrateSync } from '../../gateway/sync/local-store.ts';
import { ackDocId } from '../../validators/acknowledgement.ts';
import { mutationDoc, newEntity, patientPayload, startEnv, waitUntil, type Env, type MutationFixture } from './fixture.ts';

// The re-purge guard end to end on the embedded server (docs/SYNC.md "Retention"). On a 3-node
// CouchDB 3.5.0 cluster purged docs came back with their purged revisions, re-inserted by one shard
// copy (docs/DEPLOY.md "Purge and compaction"). Here they are made to come back the same way: the
// same revisions written back as the admin with `_bulk_docs` `new_edits:false`. The next pass finds
// them with `_all_docs?keys`, purges them again and compacts, and the PHI leaves the files.

const TENANT = 'north';
const DEVICE = 'dev-test';
const MARKER = 'Qzvxwrepurgejq';

type LeafDoc = Record<string, unknown> & { _id: string; _rev: string };

describe('worker/retention: the re-purge guard', function () {
  this.timeout(180_000);
  let env: Env;
  let lease: Fence;
  const muts: MutationFixture[] = [];
  /** Every leaf of the docs before the purge, with their revision histories, to write them back. */
  const saved: LeafDoc[] = [];

  const inbox = () => env.admin.db(`inbox_${TENANT}`);
  const inboxFiles = () => join(env.dir.path, 'couch', 'db', `inbox_${TENANT}`);
  const onDisk = (marker: string) => readdirSync(inboxFiles()).some((f) => readFileSync(join(inboxFiles(), f)).includes(Buffer.from(marker)));
  const exists = async (id: string) => (await inbox().get(id)) !== null;
  const pass = (policy: RetentionPolicy): Promise<RetentionPassResult> =>
    runRetentionPass({ tenant: TENANT, lease, db: env.platform.db, inbox: env.workerCouch.db(`inbox_${TENANT}`), purger: inbox(), policy, batchSize: 10, now: Date.now() + 1_000 });
  const compacted = () =>
    waitUntil(async () => {
      const res = await inbox().request('GET', '');
      return ((await res.json()) as { compact_running?: boolean }).compact_running === false;
    }, 30_000);
  /** What CouchDB's shard copy did: the purged revisions written back, as they were. */
  const putBack = async (docs: LeafDoc[]) => {
    const res = await inbox().request('POST', '/_bulk_docs', { docs, new_edits: false });
    expect(res.status).to.equal(201);
    const answer = (await res.json()) as Array<{ error?: string }>;
    expect(answer.filter((r) => r.error)).to.deep.equal([]);
  };
  const ids = () => muts.flatMap((m) => [m._id, `s:${m.owner as string}:${m.mid}`]);

  before(async () => {
    env = await startEnv({ tenants: [TENANT], backend: 'pglite' });
    await migrateSync(env.platform.db);
    for (let i = 0; i < 3; i++) {
      const m = mutationDoc({ owner: 'ada', tenant: TENANT, entity: newEntity(), op: 'patient.create', payload: patientPayload({ givenName: `${MARKER}${'abc'[i]}` }) });
      m.device = DEVICE;
      muts.push(m);
    }
    const worker = await env.startWorker();
    let top = 0;
    for (const m of muts) {
      await env.push(TENANT, [m]);
      top = Math.max(top, (await env.waitStatus(TENANT, 'ada', m.mid, (x) => x.state === 'committed')).counter!);
    }
    await worker.stop();
    const local = createLocalStore(env.platform.db);
    expect(await local.put({ tenant: TENANT, owner: 'ada', id: ackDocId(DEVICE) }, 1, { type: 'ferry-ack', v: 1, device: DEVICE, counter: top })).to.equal(true);
    for (const id of ids()) {
      const res = await inbox().request('GET', `/${encodeDocId(id)}?open_revs=all&revs=true`);
      const leaves = (await res.json()) as Array<{ ok?: LeafDoc }>;
      for (const l of leaves) if (l.ok) saved.push(l.ok);
    }
    expect(saved.length).to.be.at.least(6);
    lease = (await createLeaseStore(env.platform.db).acquire(TENANT, 'repurge-test', 120_000))!;
    expect(lease).to.not.equal(null);
  });
  after(async () => {
    await env?.close();
  });

  it('purges, then finds nothing back on the next pass', async () => {
    const first = await pass({ windowMs: 1, maxMs: null });
    expect(first).to.include({ purged: 3, repurged: 0, compacted: true });
    await compacted();
    for (const id of ids()) expect(await exists(id)).to.equal(false);
    expect(onDisk(MARKER)).to.equal(false);
    const second = await pass({ windowMs: 1, maxMs: null });
    expect(second).to.include({ purged: 0, rechecked: 3, repurged: 0, compacted: false });
  });

  it('leaves docs that come back after the horizon alone (the guard is bounded)', async () => {
    await putBack(saved);
    for (const id of ids()) expect(await exists(id), 'control: the purged revisions are back').to.equal(true);
    expect(onDisk(MARKER), 'control: the PHI is back in the files').to.equal(true);
    const r = await pass({ windowMs: 1, maxMs: null, recheckMs: 1 });
    expect(r).to.include({ rechecked: 0, repurged: 0, compacted: false });
    expect(await exists(muts[0]!._id)).to.equal(true);
  });

  it('purges again what came back within the horizon, every leaf, and compacts', async () => {
    const r = await pass({ windowMs: 1, maxMs: null });
    expect(r).to.include({ purged: 0, rechecked: 3, repurged: 3, compacted: true });
    await compacted();
    for (const id of ids()) expect(await exists(id), id).to.equal(false);
    const open = await inbox().request('GET', `/${encodeDocId(`s:ada:${muts[0]!.mid}`)}?open_revs=all`);
    expect(open.status === 404 || ((await open.json()) as Array<{ ok?: unknown }>).every((x) => !x.ok)).to.equal(true);
    expect(onDisk(MARKER), 'no purged patient name left in the inbox files').to.equal(false);
    const rows = await env.platform.db.query<{ repurges: number; again: boolean }>(
      'SELECT repurges, repurged_at IS NOT NULL AS again FROM pending_mutations WHERE tenant = $1 AND owner = $2 ORDER BY mid',
      [TENANT, 'ada'],
    );
    expect(rows.rows.map((x) => [Number(x.repurges), x.again])).to.deep.equal([[1, true], [1, true], [1, true]]);
  });

  it('catches a second return too (the horizon restarts at the re-purge), and only the docs that are back', async () => {
    // Only the first mutation's status doc comes back this time.
    await putBack(saved.filter((d) => d._id === `s:ada:${muts[0]!.mid}`));
    const r = await pass({ windowMs: 1, maxMs: null });
    expect(r).to.include({ rechecked: 3, repurged: 1, compacted: true });
    for (const id of ids()) expect(await exists(id)).to.equal(false);
    expect((await pass({ windowMs: 1, maxMs: null })).repurged).to.equal(0);
  });

  it('does not purge again without the lease', async () => {
    await putBack(saved.filter((d) => d._id === muts[1]!._id));
    const leases = createLeaseStore(env.platform.db);
    await leases.release(lease);
    const other = (await leases.acquire(TENANT, 'someone-else', 120_000))!;
    let failed: unknown = null;
    await pass({ windowMs: 1, maxMs: null }).catch((err: unknown) => (failed = err));
    expect(failed, 'the stale holder is refused').to.be.an('error');
    expect(await exists(muts[1]!._id), 'the stale holder purged nothing').to.equal(true);
    lease = other;
    expect((await pass({ windowMs: 1, maxMs: null })).repurged).to.equal(1);
    expect(await exists(muts[1]!._id)).to.equal(false);
  });
});
