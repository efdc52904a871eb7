// Issue 11, "done means": records on the device, end to end on the full real stack (gateway with
// /replica, the projection, worker, registration service, NATS, embedded CouchDB server) and
// devices running the real client library. ada registers a patient at north-hc-1; ben, on a fresh
// device, finds it offline by name, updates it offline, and commits it when back online; cy
// (north-hc-2) never receives it until it is moved there, and then ben's device lets it go.

import { devTokens, dispose, openDevice, startAcceptanceStack, syntheticPatient, waitFor, waitForState, type Device } from './support.ts';
import { expect } from 'chai';
import type { FetchLike } from '../../client/auth-fetch.ts';
import { requireNats } from '../support/services.ts';
import type { TestStack } from '../support/stack.ts';

/** A device transport that can be cut off: open requests are cut and new ones fail, as a lost network does. */
function switchableNetwork(): { fetch: FetchLike; setOffline(offline: boolean): void } {
  let offline = false;
  const open = new Set<AbortController>();
  return {
    setOffline(next) {
      offline = next;
      if (next) for (const c of open) c.abort(new TypeError('fetch failed: network is down'));
    },
    fetch: async (input, init) => {
      if (offline) throw new TypeError('fetch failed: network is down');
      const c = new AbortController();
      init?.signal?.addEventListener('abort', () => c.abort(init.signal?.reason));
      open.add(c);
      try {
        const res = await globalThis.fetch(input, { ...init, signal: c.signal });
        // The body streams on (a longpoll): it is cut with the connection until it is read.
        void res.clone().arrayBuffer().catch(() => undefined).finally(() => open.delete(c));
        return res;
      } catch (err) {
        open.delete(c);
        throw err;
      }
    },
  };
}

describe('acceptance: records on the device (issue 11)', function () {
  this.timeout(240_000);
  let stack: TestStack;
  const devices: Device[] = [];

  before(async function () {
    this.timeout(120_000);
    await requireNats(this);
    stack = await startAcceptanceStack();
  });
  after(async function () {
    this.timeout(60_000);
    for (const d of devices) await dispose(d);
    await stack?.stop();
  });

  it('ada registers at north-hc-1; ben finds it offline by name on a fresh device, updates it offline and commits it back online; cy (north-hc-2) gets it only once it is moved there', async () => {
    const ada = await openDevice(stack, await devTokens(stack.url, 'ada', 'north'));
    devices.push(ada);
    const cy = await openDevice(stack, await devTokens(stack.url, 'cy', 'north'));
    devices.push(cy);
    const cyChanged: string[] = [];
    cy.session.on('records', (e) => cyChanged.push(...e.changed));

    // ada registers a patient at north-hc-1.
    const patient = syntheticPatient({ facility: 'north-hc-1' });
    const created = await ada.session.mutate('patient.create', patient);
    if (!created.ok) throw new Error(created.code);
    await waitForState(ada.session, created.mid, 'committed');
    const id = created.entity;

    // ben, on a fresh device: the replica arrives while online.
    const net = switchableNetwork();
    const ben = await openDevice(stack, await devTokens(stack.url, 'ben', 'north'), { fetch: net.fetch });
    devices.push(ben);
    // The first projection after a stack starts can take a while on a loaded machine.
    await waitFor('the record on ben’s device', () => ben.session.entity(id).record, 60_000);
    expect(ben.session.records.state.live).to.equal(true);

    // Offline: ben finds the patient by name and updates it.
    net.setOffline(true);
    await waitFor('ben’s device to notice it is offline', () => !ben.session.records.state.live);
    const found = ben.session.records.search({ text: `${String(patient.givenName).toUpperCase()} ${String(patient.familyName).slice(0, 6)}` });
    expect(found.map((h) => h.id)).to.deep.equal([id]);
    expect(found[0]).to.deep.include({ version: 1, facility: 'north-hc-1', pending: false });
    expect(ben.session.entity(id).baseVersion).to.equal(1);
    const updated = await ben.session.mutate('patient.update', { ...patient, phone: '+2348011100011' }, id);
    if (!updated.ok) throw new Error(updated.code);
    expect(ben.session.mutation(updated.mid)?.baseVersion).to.equal(1);
    expect(ben.session.records.search({ text: String(patient.givenName) })[0]).to.deep.include({ id, pending: true });
    expect(ben.session.entity(id).current).to.include({ phone: '+2348011100011' });
    await new Promise((r) => setTimeout(r, 300));
    expect(ben.session.mutation(updated.mid)?.state.kind).to.equal('queued');

    // Back online: it commits at version 2, and the replica catches up.
    net.setOffline(false);
    ben.session.sync.kick();
    const committed = await waitForState(ben.session, updated.mid, 'committed', 30_000);
    expect((committed.state.response?.body as { version?: number }).version).to.equal(2);
    await waitFor('the replica at version 2 on ben’s device', () => ben.session.entity(id).record?.version === 2, 60_000);
    expect(ben.session.entity(id).pending).to.deep.equal([]);
    expect(ben.session.records.search({ text: String(patient.familyName) })[0]).to.deep.include({ id, version: 2, pending: false });

    // cy serves north-hc-2 only: nothing of it reached her device.
    await waitFor('ada’s device to hold version 2', () => ada.session.entity(id).record?.version === 2, 60_000);
    expect(cy.session.records.state.live).to.equal(true);
    expect(cy.session.entity(id).record).to.equal(null);
    expect(cy.session.records.search({ text: String(patient.familyName) })).to.deep.equal([]);
    expect(cyChanged).to.not.include(id);

    // ben moves it to north-hc-2: cy receives it, and it leaves ben’s device (out of his scope).
    const moved = await ben.session.mutate('patient.update', { ...patient, phone: '+2348011100011', facility: 'north-hc-2' }, id);
    if (!moved.ok) throw new Error(moved.code);
    expect(ben.session.mutation(moved.mid)?.baseVersion).to.equal(2);
    await waitForState(ben.session, moved.mid, 'committed', 30_000);
    await waitFor('the record on cy’s device', () => cy.session.entity(id).record, 60_000);
    expect(cy.session.entity(id).record).to.include({ version: 3, facility: 'north-hc-2' });
    expect(cy.session.records.search({ text: String(patient.givenName) }).map((h) => h.id)).to.deep.equal([id]);
    await waitFor('the record to leave ben’s replica', () => ben.session.entity(id).record === null, 60_000);
    expect(ben.session.records.search({ text: String(patient.givenName) })).to.deep.equal([]);
  });
});
