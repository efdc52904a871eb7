// The write path of `mutate` on memory and leveldb: concurrent calls (which share one write) get
// distinct, increasing seqs and correct `after`/`baseVersion` chains; every resolved call is
// durable (a reopen, and on leveldb a SIGKILLed process); docs pass the worker's envelope schema;
// `status` events fire once per local write; nothing of a synthetic name is stored in clear.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { openNodeSession, NodePouch, type NodeSessionOptions } from '../../client/node.ts';
import { localDbName, rawDb } from '../../client/store.ts';
import type { MutateResult, Session, SessionEvents } from '../../client/session.ts';
import { v7 as uuidv7 } from 'uuid';
import { mutationDocSchema } from '../../validators/mutation.ts';
import { patient } from './support.ts';

const NAME = 'Qojvexuplat'; // synthetic; must never appear in raw storage
const noTokens = { getToken: async () => 'unused', refresh: async () => 'unused' };
type Ok = Extract<MutateResult, { ok: true }>;

function ok(r: MutateResult): Ok {
  if (!r.ok) throw new Error(`refused: ${r.code}`);
  return r;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else out.push(p);
  }
  return out;
}

for (const adapter of ['memory', 'leveldb'] as const) {
  describe(`client/outbox write path on ${adapter}`, function () {
    this.timeout(20_000);
    let dir: string;
    let prefix: string;
    const sessions: Session[] = [];
    const openS = async (o: Partial<NodeSessionOptions> = {}): Promise<Session> => {
      const s = await openNodeSession({ gatewayUrl: 'http://127.0.0.1:9', tenant: 'north', owner: 'ada', passphrase: 'correct horse', tokens: noTokens, adapter, prefix, kdfIterations: 1_000, autoSync: false, idleTimeoutMs: null, online: null, ...o });
      sessions.push(s);
      return s;
    };
    /** Ids of the stored mutation docs, read from the raw store (ids are in clear). */
    const storedIds = async (): Promise<string[]> => {
      const db = rawDb({ PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' }, await localDbName('north', 'ada'));
      try {
        return (await db.allDocs({ startkey: 'm:ada:', endkey: 'm:ada:\uffff' })).rows.map((r) => r.id);
      } finally {
        await db.close();
      }
    };

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'ferry-outbox-'));
      prefix = adapter === 'leveldb' ? `${dir}/` : `mem-${randomUUID()}-`;
    });
    afterEach(async () => {
      for (const s of sessions.splice(0)) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    });

    it('concurrent calls get distinct seqs counting up in call order, and after/baseVersion chain through calls of the same write', async () => {
      const s = await openS();
      const events: SessionEvents['status'][] = [];
      s.on('status', (m) => events.push(m));
      const a = ok(await s.mutate('patient.create', patient()));
      const b = ok(await s.mutate('patient.create', patient()));
      // Twelve calls in flight at once, on two entities, with an invalid one in the middle.
      const calls: Promise<MutateResult>[] = [];
      for (let i = 0; i < 12; i++) {
        if (i === 5) calls.push(s.mutate('patient.update', { givenName: '' }, a.entity));
        else calls.push(s.mutate('patient.update', patient({ phone: `+23480000000${String(i).padStart(2, '0')}` }), i % 2 === 0 ? a.entity : b.entity));
      }
      const results = await Promise.all(calls);
      expect(results[5]).to.deep.include({ ok: false, code: 'VALIDATION_FAILED' });
      const done = results.filter((r): r is Ok => r.ok);
      expect(done).to.have.length(11);
      // Counting up, in call order, without gaps (the refused call took no seq), never reused.
      expect(done.map((r) => r.seq)).to.deep.equal([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
      for (const [entity, first] of [[a.entity, a], [b.entity, b]] as const) {
        const history = s.entity(entity).history;
        expect(history.map((m) => m.seq)).to.deep.equal([...history.map((m) => m.seq)].sort((x, y) => x - y));
        expect(history[0]!.mid).to.equal(first.mid);
        history.forEach((m, i) => {
          if (i === 0) return;
          expect(m.after, `after of seq ${m.seq}`).to.equal(history[i - 1]!.mid);
          // After a pending create the base is 1, then each pending update adds one.
          expect(m.baseVersion, `baseVersion of seq ${m.seq}`).to.equal(i);
        });
      }
      // One `status` (queued) per stored mutation, in seq order; none for the refused call.
      expect(events.map((m) => [m.seq, m.state.kind])).to.deep.equal([1, 2, ...done.map((r) => r.seq)].map((q) => [q, 'queued']));
      expect(await s.unsynced()).to.equal(13);
      // A later call after a reopen continues the count.
      expect((await s.close({ confirm: true })).ok).to.equal(true);
      const again = await openS();
      expect(again.mutations().map((m) => m.seq)).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
      expect(ok(await again.mutate('patient.update', patient(), a.entity)).seq).to.equal(14);
      expect(again.entity(a.entity).history.at(-1)!.after).to.equal((results[10] as Ok).mid);
    });

    it('every resolved call is in the store on reopen, and each doc passes the worker’s envelope schema', async () => {
      const s = await openS();
      const first = ok(await s.mutate('patient.create', patient()));
      const resolved = (await Promise.all([
        s.mutate('patient.create', patient()),
        s.mutate('patient.update', patient({ familyName: 'Secondname' }), first.entity),
        s.mutate('patient.create', patient(), { entity: `pat_${uuidv7()}` }),
      ])).map(ok);
      expect((await s.close({ confirm: true })).ok).to.equal(true);
      const ids = await storedIds();
      for (const r of [first, ...resolved]) expect(ids).to.include(`m:ada:${r.mid}`);
      const again = await openS();
      for (const r of [first, ...resolved]) {
        const info = again.mutation(r.mid);
        expect(info?.seq).to.equal(r.seq);
        expect(info?.state.kind).to.equal('queued');
        const doc = { _id: `m:ada:${r.mid}`, type: 'mutation', v: 1, tenant: 'north', owner: 'ada', device: again.device, seq: info!.seq, op: info!.op, entity: info!.entity, after: info!.after, resolves: info!.resolves, baseVersion: info!.baseVersion, payload: info!.payload, createdAt: info!.createdAt };
        expect(mutationDocSchema.safeParse(doc).success, `doc seq ${r.seq}`).to.equal(true);
      }
    });

    it('raw stored docs hold no plaintext of a synthetic patient’s name, also for calls written together', async () => {
      const s = await openS();
      await Promise.all([
        s.mutate('patient.create', patient({ givenName: NAME })),
        s.mutate('patient.create', patient({ familyName: NAME })),
        s.mutate('patient.create', patient({ givenName: NAME, phone: '+2348000009999' })),
      ]);
      expect(s.mutations()).to.have.length(3);
      await s.close({ confirm: true });
      const name = await localDbName('north', 'ada');
      if (adapter === 'leveldb') {
        for (const f of await filesUnder(join(dir, name))) {
          const bytes = await readFile(f);
          expect(bytes.includes(Buffer.from(NAME)), f).to.equal(false);
          expect(bytes.includes(Buffer.from('+2348000009999')), f).to.equal(false);
        }
      } else {
        const db = rawDb({ PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' }, name);
        const all = await db.allDocs({ include_docs: true });
        await db.close();
        expect(all.rows.filter((r) => r.id.startsWith('m:'))).to.have.length(3);
        expect(JSON.stringify(all.rows)).to.not.include(NAME);
        expect(JSON.stringify(all.rows)).to.not.include('+2348000009999');
      }
    });

    it('when another writer moved the device doc (a second tab), calls fail and store nothing', async () => {
      const s = await openS();
      const a = ok(await s.mutate('patient.create', patient()));
      // Another writer on the same database: a second handle (it shares the backend, and closing
      // it would close the session's too, so it stays open until the wipe after the test).
      const other = rawDb({ PouchDB: NodePouch, adapter, prefix, tenant: 'north', owner: 'ada' }, await localDbName('north', 'ada'));
      const device = await other.get('_local/ferry-device');
      await other.put({ ...device, seq: (device as unknown as { seq: number }).seq + 1 });
      const outcomes = await Promise.allSettled([s.mutate('patient.create', patient()), s.mutate('patient.update', patient(), a.entity)]);
      expect(outcomes.map((o) => o.status)).to.deep.equal(['rejected', 'rejected']);
      expect(outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { status?: number }).status : 0))).to.deep.equal([409, 409]);
      expect((await other.allDocs({ startkey: 'm:', endkey: 'm:\uffff' })).rows.map((r) => r.id)).to.deep.equal([`m:ada:${a.mid}`]);
      expect(s.mutations().map((m) => m.mid)).to.deep.equal([a.mid]);
    });

    if (adapter === 'leveldb') {
      it('a call that resolved survives the process being killed right after (no write-behind)', async () => {
        const child = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'mutate-then-die.ts'), prefix], { encoding: 'utf8', timeout: 15_000 });
        expect(child.signal).to.equal('SIGKILL');
        const results = (JSON.parse(child.stdout.trim()) as MutateResult[]).map(ok);
        expect(results.map((r) => r.seq)).to.deep.equal([1, 2, 3, 4]);
        const s = await openS();
        for (const r of results) expect(s.mutation(r.mid)?.seq).to.equal(r.seq);
        const entity = results[0]!.entity;
        expect(s.entity(entity).history.map((m) => m.after)).to.deep.equal([null, results[0]!.mid, results[1]!.mid]);
        expect(ok(await s.mutate('patient.create', patient())).seq).to.equal(5);
      });
    }
  });
}
