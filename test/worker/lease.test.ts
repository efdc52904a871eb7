import { expect } from 'chai';
import { createLeaseStore, LeaseLost, type Fence } from '../../gateway/worker/lease.ts';
import { createPendingStore } from '../../gateway/worker/pending.ts';
import { createPositionStore } from '../../gateway/worker/position.ts';
import { migrateWorker } from '../../gateway/worker/schema.ts';
import { createStatusWriter } from '../../gateway/worker/status-writer.ts';
import { statusDocFor } from '../../gateway/worker/status.ts';
import { mutationDoc, newEntity, newMid, patientPayload, sharedEnv, waitUntil } from './fixture.ts';
import { valueOf } from '../../gateway/metrics/registry.ts';

// Leases and fencing: one holder per tenant, a standby that takes over, and a worker whose lease
// lapsed can write nothing: not the pending table, not the checkpoint, not counters, not status
// docs over its successor's, not feed:head.

describe('worker: leases and fencing', function () {
  this.timeout(120_000);
  const shared = sharedEnv({ tenants: ['north'] });

  const expire = (tenant: string) => shared.env.platform.db.query(`UPDATE worker_leases SET expires_at = now() - interval '1 second' WHERE tenant = $1`, [tenant]);

  it('a worker whose lease lapsed is fenced out of every write', async () => {
    const leases = createLeaseStore(shared.env.platform.db);
    const pending = createPendingStore(shared.env.platform.db);
    const positions = createPositionStore(shared.env.platform.db);
    await migrateWorker(shared.env.platform.db);

    const a = (await leases.acquire('fence-t', 'a', 60_000))!;
    expect(a.fence).to.equal(1);
    expect(await leases.acquire('fence-t', 'b', 60_000)).to.equal(null);
    expect(await leases.renew(a, 60_000)).to.equal(true);
    await expire('fence-t');
    expect(await leases.renew(a, 60_000)).to.equal(false);
    const b = (await leases.acquire('fence-t', 'b', 60_000))!;
    expect(b.fence).to.equal(2);

    const row = { mid: newMid(), owner: 'ada', entity: newEntity(), state: 'waiting' as const, after: null, attempts: 0, nextAttemptAt: 0, firstSeenAt: 0 };
    let lost = 0;
    for (const attempt of [() => pending.put(a, row), () => positions.saveCheckpoint(a, '5'), () => positions.allocateCounters(a, 3)]) {
      try {
        await attempt();
      } catch (err) {
        if (err instanceof LeaseLost) lost++;
      }
    }
    expect(lost).to.equal(3);
    await pending.put(b, row);
    await positions.saveCheckpoint(b, '5');
    expect(await positions.allocateCounters(b, 3)).to.equal(1);
    expect(await pending.count('fence-t')).to.equal(1);
  });

  it('the inbox refuses status docs and feed:head from a lower fence', async () => {
    const leases = createLeaseStore(shared.env.platform.db);
    const positions = createPositionStore(shared.env.platform.db);
    const inbox = shared.env.workerCouch.db('inbox_north');
    const old: Fence = (await leases.acquire('north', 'old', 60_000))!;
    await expire('north');
    const current: Fence = (await leases.acquire('north', 'new', 60_000))!;
    const mid = newMid();
    const doc = statusDocFor({ tenant: 'north', owner: 'ada', mid }, { state: 'retrying', code: null }, 1, Date.now());
    const writerNew = createStatusWriter({ db: inbox, lease: current, positions, assertLease: () => undefined });
    const rev = await writerNew.write(doc);
    // The old holder still trusts its lease locally; the database and the VDU do not.
    const writerOld = createStatusWriter({ db: inbox, lease: old, positions, assertLease: () => undefined });
    let refused: unknown = null;
    try {
      await writerOld.write({ ...statusDocFor({ tenant: 'north', owner: 'ada', mid }, { state: 'committed', code: null }, 2, Date.now()), _rev: rev });
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(LeaseLost);
    const stored = await inbox.get<{ state: string; fence: number }>(`s:ada:${mid}`);
    expect(stored).to.include({ state: 'retrying', fence: current.fence });
    await writerNew.settled();
    await writerOld.settled();
    const head = await inbox.get<{ _rev: string; counter: number; fence: number }>('feed:head');
    expect(head).to.include({ fence: current.fence });
    const put = await inbox.request('PUT', '/feed%3Ahead', { ...head, counter: head!.counter + 1, fence: old.fence });
    expect(put.status).to.equal(403);
    await put.body?.cancel();
    await leases.release(current);
  });

  it('a standby takes over when the holder stops, and carries on where it left off', async () => {
    // A TTL well above event-loop pauses of a loaded CI machine, so the holder keeps its lease until it stops.
    const first = await shared.env.startWorker({ workerId: 'holder', leaseTtlMs: 6_000 });
    await waitUntil(async () => first.held().includes('north'));
    const standby = await shared.env.startWorker({ workerId: 'standby', leaseTtlMs: 6_000 });
    await new Promise((r) => setTimeout(r, 1_000));
    expect(standby.held()).to.not.include('north');
    expect(await valueOf(standby.metrics.lease, { tenant: 'north', state: 'standby' })).to.equal(1);
    const c = mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload() });
    await shared.env.push('north', [c]);
    await shared.env.waitStatus('north', 'ada', c.mid, (s) => s.state === 'committed');
    await first.stop();
    await waitUntil(async () => standby.held().includes('north'), 30_000);
    const u = mutationDoc({ owner: 'ada', tenant: 'north', entity: c.entity, op: 'patient.update', after: c.mid, baseVersion: 1, payload: patientPayload() });
    await shared.env.push('north', [u]);
    const s = await shared.env.waitStatus('north', 'ada', u.mid, (x) => x.state === 'committed');
    const lease = await createLeaseStore(shared.env.platform.db).holderOf('north');
    expect(lease).to.include({ holder: 'standby', live: true });
    expect(s.fence).to.equal(lease!.fence);
    await standby.stop();
  });
});
