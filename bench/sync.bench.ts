import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import type { Report } from './run.ts';
import { mid, mutation } from '../test/sync/support.ts';
import { startStackProcess, type StackProcess } from '../test/sync/stack-process.ts';

// Stock PouchDB push and pull of 10,000 docs (batch_size 500) through /sync/{tenant}, each beside
// the same operation straight against the CouchDB server in the same run, as the gateway's own
// CouchDB user (so the inbox's validate_doc_update runs in both). Fresh inboxes on each side:
//   push: direct → inbox_east,   gateway → /sync/north (checks, pending quota, then inbox_north)
//   pull: direct ← inbox_south (10,000 status docs only), gateway ← /sync/north (the user's 10,000
//         status docs from the view-backed feed; the view is warmed first, as live traffic keeps it)
// The gateway runs in a child process (test/sync/stack-process.ts) and CouchDB in its own, so the
// PouchDB client here shares its event loop with neither: three processes, as device, edge and
// database are in production.

PouchDB.plugin(MemoryAdapter);

const DOCS = Number(process.env.BENCH_SYNC_DOCS ?? 10_000);
const BATCH = 500;
const OWNER = 'bench';

/** A Bearer fetch that mints a fresh token every minute, as the device library refreshes (tokens live 5 min). */
function bearer(mint: () => Promise<string>) {
  let token: Promise<string> | null = null;
  let at = 0;
  return async (url: string | Request, opts?: RequestInit) => {
    if (!token || Date.now() - at > 60_000) {
      token = mint();
      at = Date.now();
    }
    const headers = new Headers(opts?.headers);
    headers.set('Authorization', `Bearer ${await token}`);
    return PouchDB.fetch(url, { ...opts, headers });
  };
}

function basic(user: { username: string; password: string }) {
  const value = `Basic ${Buffer.from(`${user.username}:${user.password}`).toString('base64')}`;
  return (url: string | Request, opts?: RequestInit) => {
    const headers = new Headers(opts?.headers);
    headers.set('Authorization', value);
    return PouchDB.fetch(url, { ...opts, headers });
  };
}

function remote(url: string, fetchFn: (url: string | Request, opts?: RequestInit) => Promise<Response>): PouchDB.Database {
  return new PouchDB(url, { skip_setup: true, fetch: fetchFn } as PouchDB.Configuration.RemoteDatabaseConfiguration);
}

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function push(target: PouchDB.Database, tenant: string): Promise<number> {
  const db = new PouchDB(`bench-push-${mid()}`, { adapter: 'memory' });
  const docs = Array.from({ length: DOCS }, () => mutation(OWNER, mid(), tenant));
  for (let i = 0; i < docs.length; i += 1000) await db.bulkDocs(docs.slice(i, i + 1000));
  const seconds = await timed(async () => {
    const r = await db.replicate.to(target, { batch_size: BATCH, batches_limit: 5 });
    if (r.docs_written !== DOCS) throw new Error(`push wrote ${r.docs_written} of ${DOCS}`);
  });
  await db.destroy();
  return DOCS / seconds;
}

async function pull(source: PouchDB.Database, expected: number): Promise<number> {
  const db = new PouchDB(`bench-pull-${mid()}`, { adapter: 'memory' });
  const seconds = await timed(async () => {
    const r = await db.replicate.from(source, { batch_size: BATCH, batches_limit: 5 });
    if (r.docs_written < expected) throw new Error(`pull wrote ${r.docs_written} of ${expected}`);
  });
  await db.destroy();
  return expected / seconds;
}

export default async function syncBench(report: Report): Promise<void> {
  let stack: StackProcess | undefined;
  const remotes: PouchDB.Database[] = [];
  const open = (db: PouchDB.Database) => {
    remotes.push(db);
    return db;
  };
  try {
    stack = await startStackProcess({ quotas: { maxPending: 10 * DOCS, writesPerSecond: 1000, writeBurst: 1000 } });
    const s = stack;
    const gatewayUser = s.gatewayAuth;
    const mint = () => s.token(OWNER);

    const directPush = await push(open(remote(`${s.couchUrl}/inbox_east`, basic(gatewayUser))), 'east');
    report.figure('push direct to CouchDB', directPush, 'docs/s');
    const gatewayPush = await push(open(remote(`${s.url}/sync/north`, bearer(mint))), 'north');
    report.figure('push through /sync', gatewayPush, 'docs/s', { baseline: 'push direct to CouchDB' });

    await s.writeStatuses('south', OWNER, DOCS);
    await s.writeStatuses('north', OWNER, DOCS);
    // Warm the feed view (live pulls keep it current; a one-off 10,000-doc backlog is not the steady state).
    await fetch(`${s.url}/sync/north/_changes?limit=1`, { headers: { authorization: `Bearer ${await mint()}` } }).then((r) => r.text());
    // The direct side pulls the design doc and feed:head too.
    const directPull = await pull(open(remote(`${s.couchUrl}/inbox_south`, basic(gatewayUser))), DOCS);
    report.figure('pull direct from CouchDB', directPull, 'docs/s');
    const gatewayPull = await pull(open(remote(`${s.url}/sync/north`, bearer(mint))), DOCS);
    report.figure('pull through /sync', gatewayPull, 'docs/s', { baseline: 'pull direct from CouchDB' });
    report.note(`${DOCS} docs of ~500 B, PouchDB memory adapter, batch_size ${BATCH}; client, gateway and embedded CouchDB (express-pouchdb) in three processes on loopback; aim ≥ 0.8×`);
  } finally {
    for (const r of remotes) await r.close().catch(() => undefined);
    // PouchDB may still have an info request in flight; let it settle before the servers go.
    await new Promise((r) => setTimeout(r, 500));
    await stack?.close();
  }
}
