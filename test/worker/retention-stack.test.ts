import { expect } from 'chai';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import { ackDocId, deviceVerdict, nextAck } from '../../validators/acknowledgement.ts';
import { isTerminal, type StatusState } from '../../validators/mutation.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';
import { mutationDoc, newEntity, patientPayload, waitUntil } from './fixture.ts';

// Steady load on the whole stack (gateway, worker, registration service, embedded CouchDB), with
// retention on (window 1 ms, a pass every 300 ms): a stock PouchDB device pushes, pulls its
// statuses, acknowledges them (`_local/ferry-ack-{device}`, what the Ferry client must do) and
// drops its own copies (`deviceVerdict`). The inbox's doc count and file size stay bounded round
// after round, the PHI leaves the files, and pulls after purges still work.

PouchDB.plugin(MemoryAdapter);

// Enough rounds to pass the purge log's 1,000 entries (80 per round), after which nothing grows.
const ROUNDS = 16;
const PER_ROUND = 40;
const DEVICE = 'dev-test';
const MARKER = 'Qzvxwsteadyjq';

type AnyDoc = PouchDB.Core.ExistingDocument<Record<string, unknown>>;

describe('retention under steady load on the whole stack', function () {
  this.timeout(300_000);
  let stack: TestStack;
  let token: string;

  const remote = () =>
    new PouchDB(`${stack.url}/sync/north`, {
      skip_setup: true,
      fetch: (url: string | Request, opts?: RequestInit) => {
        const headers = new Headers(opts?.headers);
        headers.set('Authorization', `Bearer ${token}`);
        return PouchDB.fetch(url, { ...opts, headers });
      },
    } as PouchDB.Configuration.RemoteDatabaseConfiguration);
  const inboxDir = () => join(stack.dir.path, 'couch', 'db', 'inbox_north');
  /** leveldb's data files (tables and write-ahead log); `LOG` and `MANIFEST-*` are its text log and version list, rewritten at each open. */
  const inboxBytes = () => readdirSync(inboxDir()).filter((f) => /\.(ldb|log)$/.test(f)).reduce((n, f) => n + statSync(join(inboxDir(), f)).size, 0);
  const onDisk = (marker: string) => readdirSync(inboxDir()).some((f) => readFileSync(join(inboxDir(), f)).includes(Buffer.from(marker)));
  const adminGet = async (path: string) => {
    const res = await fetch(`${stack.couch.identities.url}/inbox_north${path}`, {
      headers: { authorization: `Basic ${Buffer.from(`${stack.couch.identities.admin.username}:${stack.couch.identities.admin.password}`).toString('base64')}` },
    });
    return (await res.json()) as Record<string, unknown>;
  };

  before(async () => {
    stack = await startTestStack({ env: { FERRY_RETENTION_WINDOW_MS: '1', FERRY_RETENTION_INTERVAL_MS: '300' } });
    token = await stack.login('ada', 'north');
  });
  after(async () => {
    await stack?.stop();
  });

  it('keeps the inbox bounded while a device pushes, pulls, acknowledges and drops', async () => {
    const device = new PouchDB(`retention-device-${Date.now()}`, { adapter: 'memory' });
    // What the inbox holds besides mutations and statuses: the design doc and `feed:head`.
    const baseline = 2;
    const inboxDocs = async () => ((await adminGet('/_all_docs?startkey="m:"&endkey="s:\ufff0"')).rows as unknown[]).length;
    let acked: number | null = null;
    const figures: Array<{ round: number; peakDocs: number; docs: number; bytes: number }> = [];
    for (let round = 0; round < ROUNDS; round++) {
      const docs = Array.from({ length: PER_ROUND }, (_, i) =>
        mutationDoc({ owner: 'ada', tenant: 'north', entity: newEntity(), op: 'patient.create', payload: patientPayload({ givenName: `${MARKER}${round}x${i}` }) }),
      );
      for (const d of docs) d.device = DEVICE;
      await device.bulkDocs(docs);
      const pushed = await device.replicate.to(remote(), { batch_size: 500, filter: (d: { _deleted?: boolean }) => !d._deleted } as PouchDB.Replication.ReplicateOptions);
      expect(pushed.doc_write_failures).to.equal(0);
      const peakDocs = (await adminGet('')).doc_count as number;
      expect(peakDocs).to.be.greaterThan(baseline);

      // Pull until every status of this round is terminal on the device, then acknowledge.
      let lastSeq = 0;
      await waitUntil(async () => {
        const pulled = await device.replicate.from(remote(), { batch_size: 500 });
        lastSeq = Number(pulled.last_seq);
        const rows = await device.allDocs({ keys: docs.map((d) => `s:ada:${d.mid}`), include_docs: true });
        return rows.rows.every((r) => 'doc' in r && r.doc && isTerminal((r.doc as unknown as { state: StatusState }).state));
      }, 60_000, 200);
      const next = nextAck(acked, lastSeq);
      if (next !== null) {
        const ackRemote = remote();
        const id = `_local/${ackDocId(DEVICE)}`;
        const current = await ackRemote.get(id).catch(() => null);
        await ackRemote.put({ _id: id, ...(current ? { _rev: current._rev } : {}), type: 'ferry-ack', v: 1, device: DEVICE, counter: next });
        acked = next;
      }

      // The device drops its own acknowledged copies (a local removal the push never sends).
      const local = await device.allDocs({ startkey: 's:ada:', endkey: 's:ada:\uffff', include_docs: true });
      for (const row of local.rows) {
        const s = row.doc as unknown as AnyDoc & { state: StatusState; counter?: number; mutation: string };
        if (deviceVerdict({ state: s.state, counter: s.counter ?? null, awaitingUser: false, neededByQueued: false }, acked).kind !== 'drop') continue;
        const m = await device.get(`m:ada:${s.mutation}`).catch(() => null);
        if (m) await device.remove(m);
        await device.remove(s);
      }

      // The worker's retention purges them from the inbox and compacts it.
      await waitUntil(async () => (await inboxDocs()) === 0 && ((await adminGet('')).doc_count as number) <= baseline, 60_000, 200);
      await waitUntil(async () => (await adminGet('')).compact_running === false, 60_000, 200);
      figures.push({ round, peakDocs, docs: (await adminGet('')).doc_count as number, bytes: inboxBytes() });
    }
    console.log(`      inbox per round (docs at peak → after retention, bytes on disk): ${figures.map((f) => `${f.peakDocs}→${f.docs} ${f.bytes}`).join(' | ')}`);
    expect(figures.every((f) => f.docs <= baseline)).to.equal(true);
    // Bounded: once PouchDB's purge log (ids only, capped at 1,000 entries) is full, the files stop
    // growing: the last three rounds are flat (PER_ROUND × 2 docs a round would otherwise add).
    const last = figures.slice(-3).map((f) => f.bytes);
    expect(Math.max(...last) - Math.min(...last)).to.be.at.most(0.1 * Math.max(...last));
    expect(onDisk(MARKER), 'no purged patient name left in the inbox files').to.equal(false);

    // Pulls after the purges: the device's checkpoint points at purged rows and still works; a new
    // device starting from 0 gets nothing purged and no error.
    const again = await device.replicate.from(remote(), { batch_size: 500 });
    expect(again.ok).to.equal(true);
    expect(again.docs_written).to.equal(0);
    const fresh = new PouchDB(`retention-fresh-${Date.now()}`, { adapter: 'memory' });
    const first = await fresh.replicate.from(remote(), { batch_size: 500 });
    expect(first.ok).to.equal(true);
    expect(first.docs_written).to.equal(0);
    expect((await device.allDocs({ startkey: 'm:', endkey: 's:\uffff' })).rows).to.have.length(0);
    await fresh.destroy();
    await device.destroy();
  });
});
