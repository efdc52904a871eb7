// The replica on the device against the full real stack (gateway /replica, the projection, worker,
// registration service, NATS, embedded CouchDB server): duplicate candidates named from the
// replica, the raw leveldb files of a replica pulled from the real endpoint, and a tenant switch.

import { devTokens, dispose, openDevice, startAcceptanceStack, syntheticPatient, waitFor, waitForState, type Device } from './support.ts';
import { expect } from 'chai';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodePouch, openNodeSession, switchTenant, type Session } from '../../client/node.ts';
import { recordsDbName } from '../../client/store.ts';
import { requireNats } from '../support/services.ts';
import type { TestStack } from '../support/stack.ts';

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

describe('client/records on the full stack (/replica)', function () {
  this.timeout(240_000);
  let stack: TestStack;
  const devices: Device[] = [];
  const sessions: Session[] = [];
  let dir: string;

  before(async function () {
    this.timeout(120_000);
    await requireNats(this);
    stack = await startAcceptanceStack();
    dir = await mkdtemp(join(tmpdir(), 'ferry-records-stack-'));
  });
  after(async function () {
    this.timeout(60_000);
    for (const d of devices) await dispose(d);
    for (const s of sessions) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
    await stack?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('a DUPLICATE_DETECTED conflict names its in-scope candidate from the replica', async () => {
    const ada = await openDevice(stack, await devTokens(stack.url, 'ada', 'north'));
    devices.push(ada);
    const patient = syntheticPatient({ facility: 'north-hc-1' });
    const first = await ada.session.mutate('patient.create', patient);
    if (!first.ok) throw new Error(first.code);
    await waitForState(ada.session, first.mid, 'committed');
    const ben = await openDevice(stack, await devTokens(stack.url, 'ben', 'north'));
    devices.push(ben);
    // The first projection after a stack starts can take a while on a loaded machine.
    await waitFor('the record on ben’s device', () => ben.session.entity(first.entity).record, 60_000);
    const again = await ben.session.mutate('patient.create', patient);
    if (!again.ok) throw new Error(again.code);
    const conflict = await waitForState(ben.session, again.mid, 'conflict');
    expect(conflict.state.code).to.equal('DUPLICATE_DETECTED');
    const [c] = ben.session.conflicts();
    expect(c?.candidates).to.deep.equal([first.entity]);
    expect(c?.candidateDetails).to.deep.equal([
      { id: first.entity, inScope: true, givenName: patient.givenName, familyName: patient.familyName, birthDate: patient.birthDate, facility: 'north-hc-1', version: 1 },
    ]);
  });

  it('a facility taken from the membership empties the device’s replica of its records on the next pull', async () => {
    const ada = await openDevice(stack, await devTokens(stack.url, 'ada', 'north'));
    devices.push(ada);
    const made = await ada.session.mutate('patient.create', syntheticPatient({ facility: 'north-hc-1' }));
    if (!made.ok) throw new Error(made.code);
    await waitForState(ada.session, made.mid, 'committed');
    const dee = await openDevice(stack, await devTokens(stack.url, 'dee', 'north'));
    devices.push(dee);
    await waitFor('the record on dee’s device', () => dee.session.entity(made.entity).record, 60_000);
    const left: string[] = [];
    dee.session.on('records', (e) => left.push(...e.changed));
    // One-shot pulls from here: the live pull is stopped so "the next pull" is this one.
    await dee.session.sync.stop();
    const membership = await stack.platform.memberships.membershipOf('north', 'dee');
    try {
      await stack.platform.memberships.set('north', 'dee', membership!.roles, []);
      await waitFor('the record to leave dee’s device', async () => {
        await dee.session.records.pull();
        return dee.session.entity(made.entity).record === null;
      }, 60_000);
      expect(left).to.include(made.entity);
      expect(dee.session.records.state.count).to.equal(0);
    } finally {
      await stack.platform.memberships.set('north', 'dee', membership!.roles, membership!.facilities);
    }
  });

  it('a pull from the beginning (its checkpoint lost) still removes the records of a facility taken away', async () => {
    const ada = await openDevice(stack, await devTokens(stack.url, 'ada', 'north'));
    devices.push(ada);
    const made = await ada.session.mutate('patient.create', syntheticPatient({ facility: 'north-hc-1' }));
    if (!made.ok) throw new Error(made.code);
    await waitForState(ada.session, made.mid, 'committed');
    const dee = await openDevice(stack, await devTokens(stack.url, 'dee', 'north'));
    devices.push(dee);
    await waitFor('the record on dee’s device', () => dee.session.entity(made.entity).record, 60_000);
    await dee.session.sync.stop();
    const membership = await stack.platform.memberships.membershipOf('north', 'dee');
    try {
      await stack.platform.memberships.set('north', 'dee', membership!.roles, []);
      // The checkpoints the replica pull kept on the server are gone (as if never written): the
      // next pull starts from the beginning, where the feed has no scope-leave to send.
      await stack.platform.db.query("DELETE FROM sync_local_docs WHERE tenant_id = 'replica:north' AND owner = 'dee'");
      const pulled = await dee.session.records.pull();
      expect(pulled.kind).to.equal('ok');
      expect(dee.session.entity(made.entity).record).to.equal(null);
      expect(dee.session.records.state.count).to.equal(0);
    } finally {
      await stack.platform.memberships.set('north', 'dee', membership!.roles, membership!.facilities);
    }
  });

  it('on leveldb, a replica pulled from /replica holds no PHI in clear; a tenant switch shows nothing of the other tenant', async () => {
    const ada = await openDevice(stack, await devTokens(stack.url, 'ada', 'north'));
    devices.push(ada);
    const patient = syntheticPatient({ facility: 'north-hc-2', identifiers: [{ system: 'nin', value: 'NX-7719-3305' }], phone: '+2348099900099' });
    const made = await ada.session.mutate('patient.create', patient);
    if (!made.ok) throw new Error(made.code);
    await waitForState(ada.session, made.mid, 'committed');
    // cy serves north-hc-2 in north, and south-hc-1 in south.
    const cyNorth = await devTokens(stack.url, 'cy', 'north');
    const options = { gatewayUrl: stack.url, passphrase: 'a long device passphrase', adapter: 'leveldb' as const, prefix: `${dir}/`, kdfIterations: 1_000, idleTimeoutMs: null, online: null, backoff: { base: 100, cap: 1_000 } };
    const north = await openNodeSession({ ...options, tenant: 'north', owner: cyNorth.owner, tokens: cyNorth });
    sessions.push(north);
    await waitFor('the record on cy’s device', () => north.entity(made.entity).record, 60_000);
    expect(north.records.search({ identifier: 'nx-7719' }).map((h) => h.id)).to.deep.equal([made.entity]);
    const cySouth = await devTokens(stack.url, 'cy', 'south');
    const { session: south } = await switchTenant(north, { ...options, tenant: 'south', owner: cySouth.owner, tokens: cySouth, PouchDB: NodePouch });
    sessions.push(south);
    await waitFor('the south replica to be live', () => south.records.state.live);
    expect(south.entity(made.entity).record).to.equal(null);
    expect(south.records.search({ text: String(patient.givenName) })).to.deep.equal([]);
    expect(south.records.list().map((h) => h.id)).to.not.include(made.entity);
    await south.close();

    const name = await recordsDbName('north', cyNorth.owner);
    const files = await filesUnder(join(dir, name));
    const contents = await Promise.all(files.map((f) => readFile(f)));
    const found = (needle: string): boolean => contents.some((b) => b.includes(Buffer.from(needle)));
    expect(found(made.entity), 'the files hold the record doc (its id is in clear)').to.equal(true);
    const needles = [String(patient.givenName), String(patient.familyName), String(patient.birthDate), 'NX-7719-3305', '+2348099900099'];
    expect(needles.filter(found)).to.deep.equal([]);
  });
});
