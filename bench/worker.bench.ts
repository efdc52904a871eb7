import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mutationDoc, newEntity, patientPayload, startEnv, type MutationFixture } from '../test/worker/fixture.ts';
import { cpuSecondsOf } from './cpu.ts';
import { rawBulkDocsRate } from './raw.ts';
import type { Report } from './run.ts';
import { valueOf, histogramOf } from '../gateway/metrics/registry.ts';

// Inbox-to-committed-status throughput of the worker: 10,000 mutations over 100 entities in
// 2 tenants (per entity one create, then chained updates), already in the inboxes when the
// worker starts; timed until every status doc is `committed`. Beside it, the raw `_bulk_docs`
// write rate of the same CouchDB server (batches of 500), measured in the same run.
// Real registration service and platform database, on PGlite (the embedded default) and on
// PostgreSQL (127.0.0.1:5432); then an instant stub service, to show the worker's own ceiling.

const MUTATIONS = Number(process.env.BENCH_WORKER_MUTATIONS ?? 10_000);
const ENTITIES = 100;
const TENANTS = ['north', 'south'] as const;
const OWNERS: Record<(typeof TENANTS)[number], string> = { north: 'ada', south: 'cy' };

/** A service that answers every batch item at once, to show the worker's own ceiling. */
async function instantService(): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (text += c));
    req.on('end', () => {
      const { items } = JSON.parse(text) as { items: Array<{ method: string; path: string }> };
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ items: items.map((i) => ({ status: i.method === 'POST' ? 201 : 200, headers: {}, body: { id: decodeURIComponent(i.path.split('/').pop() ?? ''), version: 1 } })) }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

export default async function workerBench(report: Report): Promise<void> {
  report.note(`loadavg at start ${(await import('node:os')).loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  await run(report, 'registration service on PGlite');
  await run(report, 'registration service on PostgreSQL');
  await run(report, 'instant stub service');
}

type Against = 'registration service on PGlite' | 'registration service on PostgreSQL' | 'instant stub service';

async function run(report: Report, against: Against): Promise<void> {
  const env = await startEnv({ tenants: [...TENANTS], backend: against === 'registration service on PGlite' ? 'pglite' : 'postgres' });
  const stub = against === 'instant stub service' ? await instantService() : null;
  const raw = `raw _bulk_docs write rate (batches of 500), ${against} run`;
  try {
    report.figure(raw, await rawBulkDocsRate(env.admin, MUTATIONS), 'docs/s');

    const perEntity = Math.max(1, Math.floor(MUTATIONS / ENTITIES));
    const byTenant = new Map<string, MutationFixture[]>();
    for (let e = 0; e < ENTITIES; e++) {
      const tenant = TENANTS[e % TENANTS.length]!;
      const owner = OWNERS[tenant];
      const entity = newEntity();
      const list = byTenant.get(tenant) ?? [];
      let prev = mutationDoc({ owner, tenant, entity, op: 'patient.create', payload: patientPayload() });
      list.push(prev);
      for (let v = 1; v < perEntity; v++) {
        prev = mutationDoc({ owner, tenant, entity, op: 'patient.update', after: prev.mid, baseVersion: v, payload: patientPayload({ facility: `f-${v}` }) });
        list.push(prev);
      }
      byTenant.set(tenant, list);
    }
    // Interleave entities in the inbox, as many devices uploading at once would.
    let total = 0;
    for (const [tenant, list] of byTenant) {
      const rounds = new Map<string, MutationFixture[]>();
      for (const d of list) rounds.set(d.entity, [...(rounds.get(d.entity) ?? []), d]);
      const interleaved: MutationFixture[] = [];
      for (let i = 0; i < perEntity; i++) for (const chain of rounds.values()) if (chain[i]) interleaved.push(chain[i]!);
      await env.push(tenant, interleaved);
      total += interleaved.length;
    }

    const started = process.hrtime.bigint();
    const cpuBefore = process.cpuUsage();
    const childBefore = cpuSecondsOf(env.couch.pid()) ?? 0;
    const worker = await env.startWorker({ leaseTtlMs: 15_000, tickMs: 500, ...(stub ? { services: { registration: stub.url } } : {}) });
    const committed = async () => {
      let n = 0;
      for (const t of TENANTS) n += await valueOf(worker.metrics.outcomes, { tenant: t, state: 'committed', code: 'none' });
      return n;
    };
    const deadline = Date.now() + 30 * 60_000;
    while ((await committed()) < total) {
      if (Date.now() > deadline) throw new Error(`only ${await committed()} of ${total} committed in time`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = process.cpuUsage(cpuBefore);
    const childCpuSeconds = (cpuSecondsOf(env.couch.pid()) ?? childBefore) - childBefore;
    report.figure(`worker inbox → committed status, ${against}`, total / seconds, 'mutations/s', {
      baseline: raw,
      note: `${total} mutations, ${ENTITIES} entities, ${TENANTS.length} tenants`,
    });
    const latency = await Promise.all(TENANTS.map((t) => histogramOf(worker.metrics.commitLatency, { tenant: t, module: 'registration' })));
    const calls = latency.reduce((n, l) => n + l.count, 0);
    // CPU time per mutation is steadier than the rate on a shared machine: it is what to cut.
    report.note(`${against}: CPU per mutation ${((cpu.user + cpu.system) / total).toFixed(0)} µs in the worker's process (worker${stub ? '' : ' + service'}), ${((childCpuSeconds / total) * 1e6).toFixed(0)} µs in the CouchDB child`);
    report.note(`${against}: mean service batch ${((latency.reduce((s, l) => s + l.sum, 0) / calls) * 1000).toFixed(1)} ms as seen by each of ${calls} commits; ${total} status docs`);
  } finally {
    // The worker goes first: with the stub gone, in-flight calls would only turn into retries.
    await env.close();
    await stub?.close();
  }
}
