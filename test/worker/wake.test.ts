import { expect } from 'chai';
import type { Worker } from '../../gateway/worker/worker.ts';
import { mutationDoc, newEntity, patientPayload, sharedEnv, waitUntil } from './fixture.ts';

// A `waiting` mutation whose predecessor has settled must be looked at again soon, not only when the
// waiting timeout (7 days by default) passes: neither when the look its predecessor woke failed,
// nor when the worker that settled the predecessor stopped before that look was over.

describe('worker: waking waiting mutations', function () {
  this.timeout(60_000);
  const shared = sharedEnv({ tenants: ['north'] });

  /** Answers the first service batch with 503 (so the create retries and its successor waits), then passes through; `onCommitted` runs on the first 201 inside a batch answer. */
  function flakyFetch(onCommitted: () => void): typeof fetch {
    let first = true;
    let committed = false;
    return (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (init?.method === 'POST' && first) {
        first = false;
        return new Response(JSON.stringify({ code: 'UNAVAILABLE' }), { status: 503, headers: { 'content-type': 'application/json' } });
      }
      const res = await fetch(input, init);
      if (init?.method === 'POST' && res.status === 200 && !committed) {
        const body = (await res.clone().json()) as { items?: Array<{ status?: number }> };
        if (body.items?.some((i) => i.status === 201)) {
          committed = true;
          onCommitted();
        }
      }
      return res;
    }) as typeof fetch;
  }

  const pair = () => {
    const c = mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload() });
    const u = mutationDoc({ owner: 'ada', tenant: 'north', entity: c.entity, op: 'patient.update', after: c.mid, baseVersion: 1, payload: patientPayload() });
    return { c, u };
  };

  it('a woken look that fails is tried again at the next tick', async () => {
    let failNext = false;
    const memberships = Object.create(shared.env.platform.memberships) as typeof shared.env.platform.memberships;
    memberships.rolesOfMany = async (tenant, users) => {
      if (failNext) {
        failNext = false;
        throw new Error('platform database blip');
      }
      return shared.env.platform.memberships.rolesOfMany(tenant, users);
    };
    const worker: Worker = await shared.env.startWorker({
      platform: { ...shared.env.platform, memberships },
      fetch: flakyFetch(() => (failNext = true)),
      waitingTimeoutMs: 7 * 24 * 3600_000,
    });
    try {
      const { c, u } = pair();
      await shared.env.push('north', [c, u]);
      await shared.env.waitStatus('north', 'ada', c.mid, (s) => s.state === 'committed');
      const s = await shared.env.waitStatus('north', 'ada', u.mid, (x) => x.state === 'committed', 10_000);
      expect(s.attempts).to.equal(1);
    } finally {
      await worker.stop();
    }
  });

  it('a worker that takes over looks at waiting mutations whose predecessor settled under its predecessor', async () => {
    let hold = false;
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    const memberships = Object.create(shared.env.platform.memberships) as typeof shared.env.platform.memberships;
    memberships.rolesOfMany = async (tenant, users) => {
      if (hold) {
        hold = false;
        await released; // the worker stops while the woken look is still under way
        throw new Error('stopped');
      }
      return shared.env.platform.memberships.rolesOfMany(tenant, users);
    };
    const first = await shared.env.startWorker({
      workerId: 'first',
      platform: { ...shared.env.platform, memberships },
      fetch: flakyFetch(() => (hold = true)),
      waitingTimeoutMs: 7 * 24 * 3600_000,
    });
    await waitUntil(async () => first.held().includes('north'));
    const { c, u } = pair();
    await shared.env.push('north', [c, u]);
    await shared.env.waitStatus('north', 'ada', c.mid, (s) => s.state === 'committed');
    await waitUntil(async () => !hold, 5_000); // the woken look of `u` is stuck reading roles
    const stopping = first.stop();
    release();
    await stopping;
    expect((await shared.env.status('north', 'ada', u.mid))!.state).to.equal('waiting');

    const second = await shared.env.startWorker({ workerId: 'second', waitingTimeoutMs: 7 * 24 * 3600_000 });
    try {
      const s = await shared.env.waitStatus('north', 'ada', u.mid, (x) => x.state === 'committed', 15_000);
      expect(s.attempts).to.equal(1);
    } finally {
      await second.stop();
    }
  });
});
