import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { NodePouch, openNodeSession, type Session } from '../client/node.ts';
import { createAuthFetch } from '../client/auth-fetch.ts';
import { FakeTokens, startGateway } from '../test/client/support.ts';
import { collectGarbage } from '../test/support/gc.ts';
import { newPatientId, recordDoc } from '../test/client/records-fixtures.ts';
import type { Report } from './run.ts';

// The records replica on one device (client/records/), Node + leveldb, encrypted store:
//   1. a fresh device's first pull of N records through a CouchDB-protocol stand-in for
//      `/replica/{tenant}` (express-pouchdb behind the token check, test/client/support.ts),
//      beside plain PouchDB (no encryption, no guard, no index) pulling the same endpoint;
//   2. offline search p50/p95 over N records (goal: p95 ≤ 50 ms), by name, identifier, birth date;
//      and the sorted list's first page;
//   3. device memory with N records: heap and RSS after a full GC, before opening and after unlock;
//   4. time to open (unlock) a store holding N records: a reopen (PBKDF2 at the default 600,000
//      iterations, decrypting every record, building the index), and the index load alone.
// The full-stack pull (gateway + projection) is the replica-server bench's.

const N = Number(process.env.BENCH_REPLICA_RECORDS ?? 10_000);
const QUERIES = 300;
const PASSPHRASE = 'a long device passphrase';

const SYLLABLES = ['a', 'ba', 'ko', 'ri', 'zu', 'me', 'ndi', 'la', 'jo', 'se', 'ta', 'vy', 'qu', 'ul', 'oxe', 'ñe', 'çi', 'é'];
function syntheticName(): string {
  const bytes = randomBytes(4);
  const word = Array.from(bytes, (b) => SYLLABLES[b % SYLLABLES.length]).join('');
  return word[0]!.toUpperCase() + word.slice(1);
}
function syntheticDate(): string {
  const [a, b, c] = randomBytes(3);
  return `${1930 + (a! % 90)}-${String(1 + (b! % 12)).padStart(2, '0')}-${String(1 + (c! % 28)).padStart(2, '0')}`;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function memory(): { heap: number; rss: number } {
  collectGarbage();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

export default async function deviceReplica(report: Report): Promise<void> {
  const gw = await startGateway();
  const dir = mkdtempSync(join(tmpdir(), 'ferry-bench-replica-'));
  const sessions: Session[] = [];
  try {
    // The caller's scope on the server: N synthetic records.
    const server = gw.records('north', 'bench');
    const people: { given: string; family: string; birthDate: string; identifier: string }[] = [];
    for (let i = 0; i < N; i += 500) {
      const docs = [];
      for (let j = i; j < Math.min(N, i + 500); j++) {
        const p = { given: syntheticName(), family: syntheticName(), birthDate: syntheticDate(), identifier: `NB-${String(100000 + j)}` };
        people.push(p);
        docs.push(recordDoc({ id: newPatientId(), patient: { givenName: p.given, familyName: p.family, birthDate: p.birthDate, identifiers: [{ system: 'nin', value: p.identifier }], phone: '+2348000000000' } }));
      }
      await server.bulkDocs(docs as PouchDB.Core.PutDocument<object>[]);
    }
    const tokens = new FakeTokens(gw, 'north', 'bench');
    const options = { gatewayUrl: gw.url, tenant: 'north', owner: 'bench', passphrase: PASSPHRASE, tokens, adapter: 'leveldb' as const, prefix: `${dir}/`, autoSync: false, idleTimeoutMs: null };

    // 1. First pull, beside plain PouchDB on the same endpoint.
    const plain = new NodePouch(`${dir}/plain`, { adapter: 'leveldb' } as PouchDB.Configuration.DatabaseConfiguration);
    const remote = new NodePouch(`${gw.url}/replica/north`, { skip_setup: true, fetch: createAuthFetch({ fetch: (i, init) => globalThis.fetch(i, init), tokens, tenant: 'north', owner: 'bench' }) } as PouchDB.Configuration.RemoteDatabaseConfiguration);
    let t = performance.now();
    await plain.replicate.from(remote, { batch_size: 500 });
    const plainSeconds = (performance.now() - t) / 1000;
    await remote.close();
    await plain.destroy();
    report.figure(`plain PouchDB first pull of ${N} records (leveldb, stand-in /replica)`, plainSeconds, 's');

    const before = memory();
    const s = await openNodeSession(options);
    sessions.push(s);
    t = performance.now();
    const pulled = await s.records.pull();
    const pullSeconds = (performance.now() - t) / 1000;
    if (pulled.kind !== 'ok' || s.records.state.count !== N) throw new Error(`pull: ${JSON.stringify(pulled)}, ${s.records.state.count} records`);
    report.figure(`device first pull of ${N} records (encrypted, guarded, indexed)`, pullSeconds, 's', { baseline: `plain PouchDB first pull of ${N} records (leveldb, stand-in /replica)` });

    // 3. Memory with N records held (after a reopen, so only what unlock builds is counted).
    await s.close();
    const t0 = performance.now();
    const again = await openNodeSession(options);
    const openMs = performance.now() - t0;
    sessions.push(again);
    if (again.records.state.count !== N) throw new Error(`reopen: ${again.records.state.count} records`);
    const after = memory();
    report.figure(`heap with ${N} records unlocked (delta)`, (after.heap - before.heap) / 2 ** 20, 'MiB');
    report.figure(`RSS with ${N} records unlocked (delta)`, (after.rss - before.rss) / 2 ** 20, 'MiB');
    // 4. Opening the store.
    report.figure(`open (unlock) a store with ${N} records, PBKDF2 600k included`, openMs, 'ms');
    const e0 = performance.now();
    const empty = await openNodeSession({ ...options, owner: 'bench-empty', tokens: new FakeTokens(gw, 'north', 'bench-empty') });
    const emptyMs = performance.now() - e0;
    await empty.wipe({ confirm: true });
    report.figure('open (unlock) an empty store, PBKDF2 600k included', emptyMs, 'ms');
    report.figure(`of which reading and indexing ${N} records`, Math.max(0, openMs - emptyMs), 'ms');

    // 2. Offline search: a mix of name prefixes, two-word names, identifiers and birth dates.
    gw.setDown(true);
    const queries: Parameters<Session['records']['search']>[0][] = [];
    for (let i = 0; i < QUERIES; i++) {
      const p = people[(i * 7919) % people.length]!;
      switch (i % 5) {
        case 0:
          queries.push({ text: p.family.slice(0, 3) });
          break;
        case 1:
          queries.push({ text: `${p.given} ${p.family}` });
          break;
        case 2:
          queries.push({ identifier: p.identifier.slice(0, 7) });
          break;
        case 3:
          queries.push({ birthDate: p.birthDate.slice(0, 4), text: p.family.slice(0, 2) });
          break;
        default:
          queries.push({ birthDate: p.birthDate });
      }
    }
    for (const q of queries.slice(0, 20)) again.records.search(q); // warm-up
    const times: number[] = [];
    let hits = 0;
    for (const q of queries) {
      const q0 = performance.now();
      hits += again.records.search(q).length;
      times.push(performance.now() - q0);
    }
    report.figure(`offline search p50 over ${N} records`, percentile(times, 50), 'ms');
    report.figure(`offline search p95 over ${N} records (goal ≤ 50 ms)`, percentile(times, 95), 'ms', { note: `${QUERIES} queries, ${hits} hits` });
    const listTimes: number[] = [];
    for (let i = 0; i < 50; i++) {
      const l0 = performance.now();
      again.records.list({ limit: 50, offset: i * 50 });
      listTimes.push(performance.now() - l0);
    }
    report.figure(`list page (50) p95 over ${N} records`, percentile(listTimes, 95), 'ms');
  } finally {
    gw.setDown(false);
    for (const s of sessions) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
    await gw.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
