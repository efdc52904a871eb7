import { expect } from 'chai';
import type { Worker } from '../../gateway/worker/worker.ts';
import { requirePostgres } from '../support/services.ts';
import { mutationDoc, newEntity, patientPayload, serviceCounts, startEnv, waitUntil, type Env, type MutationFixture } from './fixture.ts';
import { valueOf } from '../../gateway/metrics/registry.ts';

// The owning service is down for about 10 s: mutations go `retrying` (their successors `waiting`),
// other entities are not held up, and once it is back everything commits, nothing lost or doubled.

describe('worker: service outage', function () {
  this.timeout(120_000);
  let env: Env;
  let worker: Worker;

  before(async function () {
    this.timeout(120_000);
    await requirePostgres(this);
    env = await startEnv({ tenants: ['north'] });
    worker = await env.startWorker({ retry: { baseMs: 200, maxMs: 1_500, jitter: 0.5 } });
  });
  after(async () => {
    await env?.close();
  });

  it('retries with backoff through a 10 s outage, then commits everything exactly once', async () => {
    const before = await serviceCounts(env.serviceDb);
    const creates: MutationFixture[] = [];
    const updates: MutationFixture[] = [];
    for (let i = 0; i < 10; i++) {
      const c = mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload() });
      creates.push(c);
      updates.push(mutationDoc({ owner: 'ada', tenant: 'north', entity: c.entity, op: 'patient.update', after: c.mid, baseVersion: 1, payload: patientPayload({ facility: 'after-outage' }) }));
    }
    await env.stopService();
    const downAt = Date.now();
    await env.push('north', [...creates, ...updates]);
    for (const c of creates) await env.waitStatus('north', 'ada', c.mid, (s) => s.state === 'retrying');
    for (const u of updates) await env.waitStatus('north', 'ada', u.mid, (s) => s.state === 'waiting');
    expect(await valueOf(worker.metrics.queueDepth, { tenant: 'north' })).to.equal(20);
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - downAt))));
    expect(await valueOf(worker.metrics.retries, { tenant: 'north' })).to.be.above(10);
    await env.restartService();

    for (const d of [...creates, ...updates]) {
      const s = await env.waitStatus('north', 'ada', d.mid, (x) => x.state === 'committed', 30_000);
      if (creates.includes(d)) expect(s.attempts).to.be.above(1);
    }
    await waitUntil(async () => (await valueOf(worker.metrics.queueDepth, { tenant: 'north' })) === 0, 5_000);
    const after = await serviceCounts(env.serviceDb);
    expect(after.patients - before.patients).to.equal(10);
    expect(after.events - before.events).to.equal(20);
    for (const c of creates) expect((await serviceCounts(env.serviceDb, c.entity)).data!.facility).to.equal('after-outage');
  });
});
