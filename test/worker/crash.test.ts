import { expect } from 'chai';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLeaseStore } from '../../gateway/worker/lease.ts';
import { requirePostgres } from '../support/services.ts';
import { mutationDoc, newEntity, patientPayload, serviceCounts, startEnv, waitUntil, type Env, type MutationFixture } from './fixture.ts';
import { killAllWorkers, spawnWorker } from './processes.ts';

// Crash safety (issue item 4): kill -9 mid-batch, and two worker processes on the same tenants.

/** `entities` patients, each a create and `updates` chained updates, in order. */
function chains(tenant: string, owner: string, entities: number, updates: number): { docs: MutationFixture[]; entities: string[] } {
  const docs: MutationFixture[] = [];
  const ids: string[] = [];
  for (let e = 0; e < entities; e++) {
    const entity = newEntity();
    ids.push(entity);
    let prev = mutationDoc({ owner, tenant, entity, op: 'patient.create', payload: patientPayload() });
    docs.push(prev);
    for (let v = 1; v <= updates; v++) {
      prev = mutationDoc({ owner, tenant, entity, op: 'patient.update', after: prev.mid, baseVersion: v, payload: patientPayload({ facility: `fac-${v}` }) });
      docs.push(prev);
    }
  }
  return { docs, entities: ids };
}

async function statesOf(env: Env, tenant: string): Promise<Map<string, { state: string; conflicts: number }>> {
  const res = await env.workerCouch.db(`inbox_${tenant}`).request('GET', '/_all_docs', undefined, { startkey: 's:', endkey: 's:\ufff0', include_docs: 'true', conflicts: 'true' });
  const body = (await res.json()) as { rows: Array<{ id: string; doc: { state: string; _conflicts?: string[] } }> };
  return new Map(body.rows.map((r) => [r.id, { state: r.doc.state, conflicts: r.doc._conflicts?.length ?? 0 }]));
}

let lastSummary = '';
async function allCommitted(env: Env, tenant: string, docs: readonly MutationFixture[]): Promise<boolean> {
  const states = await statesOf(env, tenant);
  const tally = new Map<string, number>();
  for (const d of docs) {
    const st = states.get(`s:${d.owner as string}:${d.mid}`)?.state ?? 'none';
    tally.set(st, (tally.get(st) ?? 0) + 1);
  }
  const summary = `${tenant}: ${JSON.stringify(Object.fromEntries(tally))}`;
  if (summary !== lastSummary && process.env.FERRY_TEST_WORKER_LOG) console.log(summary);
  lastSummary = summary;
  return tally.get('committed') === docs.length;
}

async function expectExactlyOnce(env: Env, tenant: string, docs: readonly MutationFixture[], entities: readonly string[], updates: number) {
  const states = await statesOf(env, tenant);
  for (const d of docs) expect(states.get(`s:${d.owner as string}:${d.mid}`), d.mid).to.deep.equal({ state: 'committed', conflicts: 0 });
  for (const e of entities) expect((await serviceCounts(env.serviceDb, e)).version, e).to.equal(updates + 1);
}

describe('worker: crash safety', function () {
  this.timeout(240_000);
  let env: Env;

  before(async function () {
    this.timeout(120_000);
    await requirePostgres(this);
    env = await startEnv({ tenants: ['north', 'south'] });
  });
  afterEach(async () => {
    await killAllWorkers();
  });
  after(async () => {
    await killAllWorkers();
    await env?.close();
  });

  it('kill -9 mid-batch, restart: every mutation committed once, correct status docs', async () => {
    const before = await serviceCounts(env.serviceDb);
    const { docs, entities } = chains('north', 'ada', 30, 9);
    // Small batches, so the kill lands while the chains are still being committed.
    const a = await spawnWorker(env, 'crash-a', { FERRY_WORKER_BATCH_SIZE: '10' });
    await env.push('north', docs);
    await waitUntil(async () => (await serviceCounts(env.serviceDb)).events - before.events >= 40, 60_000, 20);
    await a.kill();
    const mid = (await serviceCounts(env.serviceDb)).events - before.events;
    expect(mid).to.be.below(docs.length);
    await spawnWorker(env, 'crash-b');
    await waitUntil(() => allCommitted(env, 'north', docs), 120_000, 200);
    await expectExactlyOnce(env, 'north', docs, entities, 9);
    const after = await serviceCounts(env.serviceDb);
    expect(after.patients - before.patients).to.equal(30);
    expect(after.events - before.events).to.equal(docs.length);
  });

  it('kill -9 after the service committed a batch but before the worker read its answer: the next worker replays it, exactly once', async () => {
    const before = await serviceCounts(env.serviceDb);
    const { docs, entities } = chains('south', 'cy', 12, 4);
    // Between the worker and the service: passes every call on, but swallows the answer to the
    // first batch, which the service has committed by then.
    let signalHeld!: () => void;
    const held = new Promise<void>((r) => (signalHeld = r));
    let holding = true;
    let heldMids: string[] = [];
    const proxy = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', async () => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host' && k !== 'content-length' && k !== 'connection') headers[k] = v;
        const answer = await fetch(`${env.service.url}${req.url ?? '/'}`, { method: req.method ?? 'GET', headers, ...(body ? { body } : {}) });
        const text = await answer.text();
        if (holding && req.url === '/v1/batch') {
          holding = false;
          heldMids = (JSON.parse(body) as { items: Array<{ idempotencyKey: string }> }).items.map((i) => i.idempotencyKey);
          signalHeld();
          return; // never answered
        }
        res.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
        res.end(text);
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const a = await spawnWorker(env, 'mid-batch-a', { FERRY_REGISTRATION_URL: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, FERRY_WORKER_BATCH_SIZE: '20' });
      await env.push('south', docs);
      await held;
      await a.kill();
      expect(heldMids).to.have.length.above(0);
      const { rows } = await env.serviceDb.query<{ n: string }>('SELECT count(*) AS n FROM idempotency_keys WHERE key = ANY($1::text[])', [heldMids]);
      expect(Number(rows[0]!.n), 'the service committed the held batch').to.equal(heldMids.length);
      const states = await statesOf(env, 'south');
      expect(heldMids.filter((m) => states.get(`s:cy:${m}`)?.state === 'committed'), 'no status for what the worker never heard').to.deep.equal([]);
      await spawnWorker(env, 'mid-batch-b');
      await waitUntil(() => allCommitted(env, 'south', docs), 120_000, 200);
      await expectExactlyOnce(env, 'south', docs, entities, 4);
      const after = await serviceCounts(env.serviceDb);
      expect(after.patients - before.patients).to.equal(12);
      expect(after.events - before.events).to.equal(docs.length);
    } finally {
      proxy.closeAllConnections();
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });

  it('two workers: one holds each lease, the other stands by and takes over when the holder dies; exactly once', async () => {
    const leases = createLeaseStore(env.platform.db);
    const before = await serviceCounts(env.serviceDb);
    const a = await spawnWorker(env, 'pair-a');
    await waitUntil(async () => (await leases.holderOf('north'))?.holder === 'pair-a' && (await leases.holderOf('north'))!.live, 30_000);
    const b = await spawnWorker(env, 'pair-b');
    const north = chains('north', 'ada', 20, 9);
    const south = chains('south', 'cy', 10, 4);
    await env.push('north', north.docs);
    await env.push('south', south.docs);
    await waitUntil(async () => (await serviceCounts(env.serviceDb)).events - before.events >= 30, 60_000, 20);
    // While both run, north stays with its holder; the other only stands by.
    const held = await leases.holderOf('north');
    expect(held!.holder).to.equal('pair-a');
    const [victim, survivor] = held!.holder === a.id ? [a, b] : [b, a];
    await victim.kill();
    await waitUntil(async () => (await leases.holderOf('north'))?.holder === survivor.id, 30_000);
    expect((await leases.holderOf('north'))!.fence).to.be.above(held!.fence);
    await waitUntil(async () => (await allCommitted(env, 'north', north.docs)) && (await allCommitted(env, 'south', south.docs)), 120_000, 200);
    await expectExactlyOnce(env, 'north', north.docs, north.entities, 9);
    await expectExactlyOnce(env, 'south', south.docs, south.entities, 4);
    const after = await serviceCounts(env.serviceDb);
    expect(after.events - before.events).to.equal(north.docs.length + south.docs.length);
    expect(after.patients - before.patients).to.equal(30);
  });
});
