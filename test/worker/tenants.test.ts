import { expect } from 'chai';
import { provisionTenant } from '../../couchdb/provision.ts';
import { mutationDoc, newEntity, patientPayload, sharedEnv } from './fixture.ts';

// The worker learns which inboxes exist from the tenant registry (no _db_updates, DESIGN §2), so a
// tenant provisioned while it runs is drained without a restart.

describe('worker: tenants provisioned while it runs', function () {
  this.timeout(120_000);
  const shared = sharedEnv({ tenants: ['north'] });

  it('picks up a new tenant from the registry and commits its mutations', async function () {
    const worker = await shared.env.startWorker({ workerId: 'w-registry', leaseTtlMs: 3_000 });
    expect(worker.held()).to.not.include('south');
    await provisionTenant({ admin: shared.env.admin, tenant: 'south', registry: shared.env.platform.tenants });
    await shared.env.platform.memberships.set('south', 'cy', ['registrar']);
    const m = mutationDoc({ owner: 'cy', tenant: 'south', entity: newEntity(), op: 'patient.create', payload: patientPayload() });
    await shared.env.push('south', [m]);
    const status = await shared.env.waitStatus('south', 'cy', m.mid, (s) => s.state === 'committed', 60_000);
    expect(status.state).to.equal('committed');
    expect(worker.held()).to.include('south');
    await worker.stop();
  });
});
