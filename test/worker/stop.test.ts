import { expect } from 'chai';
import { mutationDoc, newEntity, patientPayload, sharedEnv, waitUntil } from './fixture.ts';

// Stopping a runner while its feed waits for room (more mutations queued than maxInFlight) must
// end the runner at once, not after the 15 s give-up: a runner left behind keeps its tenant.

describe('worker: stopping under backpressure', function () {
  this.timeout(60_000);
  const shared = sharedEnv({ tenants: ['north'] });

  it('a runner whose feed waits on a full queue stops promptly and gives its tenant up', async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    let batches = 0;
    // The service never answers until released: rounds fill, the queue fills, the feed waits.
    const slowFetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
      batches++;
      await held;
      return fetch(input, init);
    }) as typeof fetch;
    const worker = await shared.env.startWorker({ workerId: 'w-stop', fetch: slowFetch, maxInFlight: 2, batchSize: 1, rounds: 1 });
    const docs = Array.from({ length: 12 }, () => mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload() }));
    await shared.env.push('north', docs);
    await waitUntil(async () => batches > 0, 15_000);
    const started = Date.now();
    const stopping = worker.stop();
    release();
    await stopping;
    expect(Date.now() - started, 'stop() took').to.be.below(12_000);
    expect(worker.held()).to.deep.equal([]);
  });
});
