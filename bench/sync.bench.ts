import { readdirSync, readFileSync } from 'node:fs';
import PouchDB from 'pouchdb';
import MemoryAdapter from 'pouchdb-adapter-memory';
import { cpuSecondsOf, procStatFields } from './cpu.ts';
import type { Report } from './run.ts';
import { mid, mutation } from '../test/sync/support.ts';
import { startStackProcess, type StackProcess } from '../test/sync/stack-process.ts';

// 1. Stock PouchDB push and pull of 10,000 docs (batch_size 500) through /sync/{tenant}, each beside
//    the same operation straight against the CouchDB server in the same run, as the gateway's own
//    CouchDB user (so the inbox's validate_doc_update runs in both). Fresh inboxes on each side:
//    push: direct → inbox_east,   gateway → /sync/north (checks, pending quota, then inbox_north)
//    pull: direct ← inbox_south (10,000 status docs), gateway ← /sync/north (the user's 10,000
//          status docs from the feed index)
//    The embedded CouchDB's CPU time per mutation pushed through /sync is read from /proc.
// 2. A user's first pull among other users' docs: 2,000 of the user's status docs in inbox_east
//    beside 20,000 of ten other users (and the 10,000 mutations pushed in 1), pulled by stock
//    PouchDB through /sync/east while other users' mutations keep arriving, against a raw
//    `_all_docs` range read of the same 2,000 docs straight from CouchDB; then one warm `_changes`
//    page of 500 rows against a raw `_all_docs` page of 500.
// The gateway runs in a child process (test/sync/stack-process.ts) and CouchDB in its own, so the
// PouchDB client here shares its event loop with neither: three processes, as device, edge and
// database are in production.

PouchDB.plugin(MemoryAdapter);

const DOCS = Number(process.env.BENCH_SYNC_DOCS ?? 10_000);
const BATCH = 500;
const OWNER = 'bench';
const MINE = Number(process.env.BENCH_SYNC_MINE ?? 2_000);
const OTHER_USERS = 10;
const OTHERS_EACH = Number(process.env.BENCH_SYNC_OTHERS_EACH ?? 2_000);

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

/** CPU seconds (user + system) used so far by the embedded CouchDB child of the stack process. */
function couchCpuSeconds(stackPid: number): number | null {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    // The parent pid is the second field after the command: state, ppid, …
    if (Number(procStatFields(Number(entry))?.[1]) !== stackPid) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('couchDir')) continue;
    } catch {
      continue;
    }
    return cpuSecondsOf(Number(entry));
  }
  return null;
}

/** Writes per second of other users' mutations during the first pull (a busy clinic's devices). */
const ALONGSIDE_PER_SECOND = Number(process.env.BENCH_SYNC_ALONGSIDE ?? 250);

/** Other users' mutations written straight to the inbox until `stop` resolves: an inbox that keeps changing. */
async function keepWriting(db: PouchDB.Database, tenant: string, stop: Promise<void>): Promise<number> {
  let done = false;
  void stop.then(() => (done = true));
  let written = 0;
  const started = Date.now();
  while (!done) {
    const docs = Array.from({ length: 50 }, (_, i) => mutation(`writer${i % OTHER_USERS}`, mid(), tenant));
    await db.bulkDocs(docs);
    written += docs.length;
    // Paced: unpaced, the old view-backed feed never caught up (its first pull hit the 60 s upstream timeout).
    const due = started + (written / ALONGSIDE_PER_SECOND) * 1000;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
  }
  return written;
}

async function firstPullAmongOthers(report: Report, s: StackProcess, open: (db: PouchDB.Database) => PouchDB.Database): Promise<void> {
  const tenant = 'east';
  const owner = 'mine';
  for (let u = 0; u < OTHER_USERS; u++) await s.writeStatuses(tenant, `other${u}`, OTHERS_EACH);
  await s.writeStatuses(tenant, owner, MINE);
  const mint = () => s.token(owner, tenant);
  const direct = open(remote(`${s.couchUrl}/inbox_${tenant}`, basic(s.gatewayAuth)));

  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  const writer = keepWriting(direct, tenant, stopped);
  const db = new PouchDB(`bench-first-${mid()}`, { adapter: 'memory' });
  let firstPage = 0;
  const started = process.hrtime.bigint();
  const seconds = await timed(async () => {
    const rep = db.replicate.from(open(remote(`${s.url}/sync/${tenant}`, bearer(mint))), { batch_size: BATCH, batches_limit: 5 });
    rep.on('change', () => {
      if (firstPage === 0) firstPage = Number(process.hrtime.bigint() - started) / 1e6;
    });
    const r = await rep;
    if (r.docs_written !== MINE) throw new Error(`first pull wrote ${r.docs_written} of ${MINE}`);
  }).finally(stop);
  const alongside = await writer;
  await db.destroy();

  // The same 2,000 docs, read raw from CouchDB by key range (warm, as the gateway's reads are now).
  const rawSeconds = await timed(async () => {
    let startkey = `s:${owner}:`;
    let skip = 0;
    let got = 0;
    for (;;) {
      const page = await direct.allDocs({ startkey, endkey: `s:${owner}:\ufff0`, include_docs: true, limit: BATCH, skip });
      got += page.rows.length;
      if (page.rows.length < BATCH) break;
      startkey = page.rows[page.rows.length - 1]!.id;
      skip = 1;
    }
    if (got !== MINE) throw new Error(`raw read ${got} of ${MINE}`);
  });
  report.figure(`raw _all_docs of the user's ${MINE} docs`, MINE / rawSeconds, 'docs/s');
  report.figure(`first pull of ${MINE} own statuses among ${OTHER_USERS * OTHERS_EACH} others', inbox being written`, MINE / seconds, 'docs/s', {
    baseline: `raw _all_docs of the user's ${MINE} docs`,
  });
  report.figure('first pull: time to the first change', firstPage, 'ms');

  // One warm page of the user's feed (500 rows, as PouchDB asks) against a raw page of the same size.
  const token = await mint();
  const pages = 4;
  const rawPage = await timed(async () => {
    for (let i = 0; i < pages; i++) await direct.allDocs({ startkey: `s:${owner}:`, endkey: `s:${owner}:\ufff0`, limit: BATCH });
  });
  report.figure(`raw _all_docs page of ${BATCH} (no docs)`, (rawPage / pages) * 1000, 'ms');
  const feedPage = await timed(async () => {
    let since = 0;
    for (let i = 0; i < pages; i++) {
      const res = await fetch(`${s.url}/sync/${tenant}/_changes?style=all_docs&since=${since}&limit=${BATCH}`, { headers: { authorization: `Bearer ${token}` } });
      const page = (await res.json()) as { last_seq: number };
      since = page.last_seq;
    }
  });
  report.figure(`_changes page of ${BATCH} through /sync (warm)`, (feedPage / pages) * 1000, 'ms', { baseline: `raw _all_docs page of ${BATCH} (no docs)` });
  report.note(`first pull: ${alongside} other users' mutations were written to inbox_${tenant} while it ran (paced at ${ALONGSIDE_PER_SECOND}/s)`);
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
    const cpuBefore = couchCpuSeconds(s.pid);
    const gatewayPush = await push(open(remote(`${s.url}/sync/north`, bearer(mint))), 'north');
    const cpuAfter = couchCpuSeconds(s.pid);
    report.figure('push through /sync', gatewayPush, 'docs/s', { baseline: 'push direct to CouchDB' });
    if (cpuBefore !== null && cpuAfter !== null) report.figure('embedded CouchDB CPU per mutation pushed through /sync', ((cpuAfter - cpuBefore) / DOCS) * 1e6, 'µs');

    await s.writeStatuses('south', OWNER, DOCS);
    await s.writeStatuses('north', OWNER, DOCS);
    // Warm the inbox (the gateway's first read of a freshly written inbox pays for loading it).
    await fetch(`${s.url}/sync/north/_changes?limit=1`, { headers: { authorization: `Bearer ${await mint()}` } }).then((r) => r.text());
    // The direct side pulls the design doc and feed:head too.
    const directPull = await pull(open(remote(`${s.couchUrl}/inbox_south`, basic(gatewayUser))), DOCS);
    report.figure('pull direct from CouchDB', directPull, 'docs/s');
    const gatewayPull = await pull(open(remote(`${s.url}/sync/north`, bearer(mint))), DOCS);
    report.figure('pull through /sync', gatewayPull, 'docs/s', { baseline: 'pull direct from CouchDB' });
    report.note(`${DOCS} docs of ~500 B, PouchDB memory adapter, batch_size ${BATCH}; client, gateway and embedded CouchDB (express-pouchdb) in three processes on loopback; aim ≥ 0.8×`);

    await firstPullAmongOthers(report, s, open);
  } finally {
    for (const r of remotes) await r.close().catch(() => undefined);
    // PouchDB may still have an info request in flight; let it settle before the servers go.
    await new Promise((r) => setTimeout(r, 500));
    await stack?.close();
  }
}
