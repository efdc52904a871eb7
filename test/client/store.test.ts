// The encrypted device store on Node memory and leveldb: key wrapping, wrong passphrase, re-wrap,
// no plaintext PHI in raw storage, drafts, validation before queueing, lock/unlock/idle, close/wipe.
import { expect } from 'chai';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { openNodeSession, NodePouch, type NodeSessionOptions } from '../../client/node.ts';
import { localDbName, rawDb } from '../../client/store.ts';
import { isClientError } from '../../client/errors.ts';
import type { Session } from '../../client/session.ts';
import { FakeScheduler, patient, waitFor } from './support.ts';

const NAME = 'Zyxwvuta'; // synthetic; must never appear in raw storage
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const noTokens = { getToken: async () => 'unused', refresh: async () => 'unused' };

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

async function rawContains(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  for (const f of await filesUnder(dir)) if ((await readFile(f)).includes(Buffer.from(needle))) hits.push(f);
  return hits;
}

for (const adapter of ['memory', 'leveldb'] as const) {
  describe(`client/store on ${adapter}`, () => {
    let dir: string;
    let prefix: string;
    const open: Session[] = [];
    const base = (): NodeSessionOptions => ({ gatewayUrl: 'http://127.0.0.1:9', tenant: 'north', owner: 'ada', passphrase: 'correct horse', tokens: noTokens, adapter, prefix, kdfIterations: 1_000, autoSync: false, idleTimeoutMs: null });
    const openS = async (o: Partial<NodeSessionOptions> = {}) => {
      const s = await openNodeSession({ ...base(), ...o });
      open.push(s);
      return s;
    };

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'ferry-client-'));
      prefix = adapter === 'leveldb' ? `${dir}/` : `mem-${randomUUID()}-`;
    });
    afterEach(async () => {
      for (const s of open.splice(0)) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    });

    it('names the database without PHI or user names', async () => {
      const name = await localDbName('north', 'ada');
      expect(name).to.match(/^ferry-[0-9a-f]{32}$/);
      expect(await localDbName('south', 'ada')).to.not.equal(name);
      expect(await localDbName('north', 'ben')).to.not.equal(name);
    });

    it('queues a validated mutation with UUIDv7 ids, and it survives a reopen with the passphrase', async () => {
      const s = await openS();
      const r = await s.mutate('patient.create', patient({ givenName: `  ${NAME}  ` }));
      if (!r.ok) throw new Error(r.code);
      expect(r.mid).to.match(UUID_V7);
      expect(r.entity).to.match(/^pat_/);
      expect(r.entity.slice(4)).to.match(UUID_V7);
      expect(r.seq).to.equal(1);
      expect(s.mutation(r.mid)?.payload).to.include({ givenName: NAME }); // the schema's trim ran
      expect((await s.close({ confirm: true })).ok).to.equal(true);

      const again = await openS();
      expect(again.device).to.equal(s.device);
      expect(again.mutation(r.mid)?.state.kind).to.equal('queued');
      expect(again.entity(r.entity).current).to.include({ givenName: NAME, id: r.entity });
      const u = await again.mutate('patient.update', patient({ givenName: 'Second' }), r.entity);
      if (!u.ok) throw new Error(u.code);
      expect(u.seq).to.equal(2);
      expect(again.mutation(u.mid)).to.include({ after: r.mid, baseVersion: 1 });
    });

    it('refuses invalid input before anything is queued, without echoing it', async () => {
      const s = await openS();
      const bad = await s.mutate('patient.create', patient({ birthDate: '2999-01-01', sex: 'SECRET-VALUE' }));
      expect(bad.ok).to.equal(false);
      if (bad.ok) return;
      expect(bad.code).to.equal('VALIDATION_FAILED');
      expect(bad.errors.map((e) => e.path).sort()).to.deep.equal(['birthDate', 'sex']);
      expect(JSON.stringify(bad)).to.not.include('SECRET-VALUE');
      expect(await s.mutate('patient.delete', patient())).to.deep.include({ ok: false, code: 'UNKNOWN_OP' });
      expect(await s.mutate('patient.update', patient())).to.deep.include({ ok: false, code: 'VALIDATION_FAILED' });
      expect(await s.mutate('patient.update', patient(), 'pat_0190f000-0000-7000-8000-000000000001')).to.deep.include({ ok: false, code: 'BASE_VERSION_UNKNOWN' });
      expect(await s.mutate('patient.create', patient(), 'not-an-id')).to.deep.include({ ok: false, code: 'VALIDATION_FAILED' });
      expect(s.mutations()).to.have.length(0);
      expect(await s.unsynced()).to.equal(0);
    });

    it('a wrong passphrase is a clear error and destroys nothing', async () => {
      const s = await openS();
      const r = await s.mutate('patient.create', patient());
      await s.close({ confirm: true });
      let err: unknown;
      try {
        await openS({ passphrase: 'wrong' });
      } catch (e) {
        err = e;
      }
      expect(isClientError(err, 'WRONG_PASSPHRASE')).to.equal(true);
      const again = await openS();
      expect(again.mutations().map((m) => m.mid)).to.deep.equal([r.ok ? r.mid : '']);
    });

    it('a passphrase change only re-wraps the key: stored ciphertext is unchanged, old passphrase stops working', async () => {
      const s = await openS();
      const r = await s.mutate('patient.create', patient({ givenName: NAME }));
      if (!r.ok) throw new Error();
      await s.close({ confirm: true });
      const name = await localDbName('north', 'ada');
      const readRaw = async () => {
        const db = rawDb({ PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' }, name);
        const doc = (await db.get(`m:ada:${r.mid}`)) as unknown as Record<string, unknown>;
        const ring = (await db.get('_local/ferry-keyring')) as unknown as Record<string, unknown>;
        await db.close();
        return { doc, ring };
      };
      const before = await readRaw();
      expect(Object.keys(before.doc).sort()).to.deep.equal(['_id', '_rev', 'payload']); // crypto-pouch envelope only
      expect(before.ring).to.have.keys('_id', '_rev', 'v', 'kdf', 'wrap', 'wrappedKey', 'createdAt', 'updatedAt');

      const s2 = await openS();
      await s2.changePassphrase('correct horse', '4711');
      await s2.close({ confirm: true });
      const after = await readRaw();
      expect(after.doc).to.deep.equal(before.doc);
      expect(after.ring.wrappedKey).to.not.equal(before.ring.wrappedKey);
      expect((after.ring.kdf as { salt: string }).salt).to.not.equal((before.ring.kdf as { salt: string }).salt);

      let err: unknown;
      await openS().catch((e: unknown) => (err = e));
      expect(isClientError(err, 'WRONG_PASSPHRASE')).to.equal(true);
      const withPin = await openS({ passphrase: '4711' });
      expect(withPin.mutation(r.mid)?.payload).to.include({ givenName: NAME });
      let wrongOld: unknown;
      await withPin.changePassphrase('nope', 'x').catch((e: unknown) => (wrongOld = e));
      expect(isClientError(wrongOld, 'WRONG_PASSPHRASE')).to.equal(true);
    });

    it('raw storage holds no plaintext PHI (mutations, drafts, statuses are all encrypted)', async () => {
      const s = await openS();
      await s.mutate('patient.create', patient({ givenName: NAME, phone: '+2348000000000' }));
      await s.drafts.save({ op: 'patient.create', payload: { givenName: NAME } });
      await s.close({ confirm: true });
      const name = await localDbName('north', 'ada');
      if (adapter === 'leveldb') {
        expect(await rawContains(join(dir, name), NAME)).to.deep.equal([]);
        expect(await rawContains(join(dir, name), '+2348000000000')).to.deep.equal([]);
        // Control: the same grep finds the name in a plain (unencrypted) leveldb database.
        const plain = new NodePouch(`${dir}/control`, { adapter: 'leveldb' } as PouchDB.Configuration.DatabaseConfiguration);
        await plain.put({ _id: 'x', givenName: NAME });
        await plain.close();
        expect(await rawContains(join(dir, 'control'), NAME)).to.have.length.greaterThan(0);
      } else {
        const db = rawDb({ PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' }, name);
        const all = await db.allDocs({ include_docs: true });
        await db.close();
        expect(all.rows.length).to.be.greaterThan(1);
        expect(JSON.stringify(all.rows)).to.not.include(NAME);
      }
    });

    it('drafts stay local, are encrypted, and submit through the outbox', async () => {
      const s = await openS();
      const d = await s.drafts.save({ op: 'patient.create', payload: { givenName: NAME } });
      expect(d.id).to.match(UUID_V7);
      const updated = await s.drafts.save({ id: d.id, op: 'patient.create', payload: patient({ givenName: NAME }) });
      expect(updated.createdAt).to.equal(d.createdAt);
      expect((await s.drafts.list()).map((x) => x.id)).to.deep.equal([d.id]);
      expect(s.mutations()).to.have.length(0);

      const incomplete = await s.drafts.save({ op: 'patient.create', payload: { givenName: 'Only' } });
      const refused = await s.drafts.submit(incomplete.id);
      expect(refused).to.deep.include({ ok: false, code: 'VALIDATION_FAILED' });
      expect(await s.drafts.get(incomplete.id)).to.not.equal(null);

      const submitted = await s.drafts.submit(d.id);
      expect(submitted.ok).to.equal(true);
      expect(await s.drafts.get(d.id)).to.equal(null);
      expect(s.mutations()).to.have.length(1);
      expect(await s.drafts.submit(d.id)).to.deep.include({ ok: false, code: 'NO_SUCH_DRAFT' });
      expect(await s.drafts.remove(incomplete.id)).to.equal(true);
    });

    it('lock drops the key and refuses access; unlock needs the passphrase; the idle timeout locks (fake time)', async () => {
      const scheduler = new FakeScheduler();
      const s = await openS({ scheduler, idleTimeoutMs: 60_000 });
      const r = await s.mutate('patient.create', patient());
      const events: boolean[] = [];
      s.on('lock', (e) => events.push(e.locked));
      scheduler.advance(59_000);
      s.touch();
      scheduler.advance(59_000);
      expect(s.locked).to.equal(false);
      scheduler.advance(1_000);
      await waitFor(() => s.locked);
      expect(events).to.deep.equal([true]);
      let err: unknown;
      await s.mutate('patient.create', patient()).catch((e: unknown) => (err = e));
      expect(isClientError(err, 'LOCKED')).to.equal(true);
      expect(() => s.entity('pat_x')).to.throw(/locked/);
      expect(await s.unsynced()).to.equal(1); // counted from ids while locked

      let wrong: unknown;
      await s.unlock('nope').catch((e: unknown) => (wrong = e));
      expect(isClientError(wrong, 'WRONG_PASSPHRASE')).to.equal(true);
      expect(s.locked).to.equal(true);
      await s.unlock('correct horse');
      expect(s.locked).to.equal(false);
      expect(s.mutation(r.ok ? r.mid : '')?.state.kind).to.equal('queued');
      expect(events).to.deep.equal([true, false]);
    });

    it('close and wipe with unsynced mutations report the count and need confirmation', async () => {
      const s = await openS();
      await s.mutate('patient.create', patient());
      await s.mutate('patient.create', patient({ givenName: 'Other' }));
      expect(await s.close()).to.deep.equal({ ok: false, reason: 'unsynced', unsynced: 2 });
      expect(s.closed).to.equal(false);
      expect(await s.wipe()).to.deep.equal({ ok: false, reason: 'unsynced', unsynced: 2 });
      expect(s.mutations()).to.have.length(2);
      expect(await s.wipe({ confirm: true })).to.deep.equal({ ok: true, unsynced: 2 });
      expect(s.closed).to.equal(true);
      // A wiped store is gone: the next open starts empty, with any passphrase.
      const fresh = await openS({ passphrase: 'new one' });
      expect(fresh.mutations()).to.have.length(0);
      expect(fresh.device).to.not.equal(s.device);
      expect(await fresh.close()).to.deep.equal({ ok: true, unsynced: 0 });
    });

    it('reads docs that have their own `payload` field exactly once (crypto-pouch + open_revs/bulkGet)', async () => {
      // Regression: transform-pouch decrypted these twice, and push failed with
      // "There was a problem getting docs" for every mutation doc.
      const { openStore } = await import('../../client/store.ts');
      const { db } = await openStore({ PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' }, { passphrase: 'pw', kdfIterations: 1_000 });
      try {
        const put = await db.put({ _id: 'm:ada:x', payload: { givenName: NAME } } as PouchDB.Core.PutDocument<object>);
        const single = (await db.get('m:ada:x', { revs: true })) as unknown as Record<string, unknown>;
        expect(single.payload).to.deep.equal({ givenName: NAME });
        expect(single._revisions).to.deep.include({ start: 1 });
        const open = (await db.get('m:ada:x', { open_revs: [put.rev], revs: true, latest: true } as PouchDB.Core.GetOpenRevisions)) as unknown as { ok: Record<string, unknown> }[];
        expect(open[0]!.ok.payload).to.deep.equal({ givenName: NAME });
        const bulk = await db.bulkGet({ docs: [{ id: 'm:ada:x', rev: put.rev }], revs: true, latest: true } as PouchDB.Core.BulkGetOptions);
        expect((bulk.results[0]!.docs[0] as unknown as { ok: Record<string, unknown> }).ok.payload).to.deep.equal({ givenName: NAME });
      } finally {
        await db.destroy();
      }
    });

    it('two handles creating the store at once end up with one keyring (second tab)', async () => {
      const { openStore } = await import('../../client/store.ts');
      const cfg = { PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' };
      const [a, b] = await Promise.all([openStore(cfg, { passphrase: 'pw', kdfIterations: 1_000 }), openStore(cfg, { passphrase: 'pw', kdfIterations: 1_000 })]);
      try {
        await a.db.put({ _id: 'x:1', givenName: NAME } as PouchDB.Core.PutDocument<object>);
        expect(((await b.db.get('x:1')) as unknown as { givenName: string }).givenName).to.equal(NAME);
      } finally {
        await a.db.destroy();
      }
    });

    it('wipe works while locked (forgotten passphrase)', async () => {
      const s = await openS();
      await s.mutate('patient.create', patient());
      await s.lock();
      expect(await s.wipe()).to.deep.equal({ ok: false, reason: 'unsynced', unsynced: 1 });
      expect(await s.wipe({ confirm: true })).to.deep.equal({ ok: true, unsynced: 1 });
      const fresh = await openS({ passphrase: 'anything' });
      expect(fresh.mutations()).to.have.length(0);
    });
  });
}
