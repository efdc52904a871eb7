import { CouchError, encodeDocId, type CouchDb } from '../../couchdb/client.ts';
import type { Queryable } from '../../sql/database.ts';
import { ackOf } from '../../validators/acknowledgement.ts';
import { mutationDocId, statusDocId, STATUS_STATES, type StatusState } from '../../validators/mutation.ts';
import { LeaseLost, type Fence } from './lease.ts';
import { decideRetention, type RetentionPolicy, type RetentionVerdict } from './retention-rule.ts';
import { LEASE_HELD } from './schema.ts';

// One retention pass over a tenant's inbox, under the worker's lease (docs/SYNC.md "Retention").
// 1. Candidates from the platform database: terminal mutations past the window, not purged yet,
//    oldest first, with their status's feed counter (`pending_mutations` ⋈ `feed_index`).
// 2. What decides them: the docs (`_all_docs?keys`, with conflicts: state, revs, the owning
//    device), each owning device's acknowledgement (`_local/ferry-ack-{device}` in
//    `sync_local_docs`) and the worker's pending table (does a waiting mutation name it?).
// 3. `decideRetention` (pure) per candidate.
// 4. For those it purges: the tombstone state first (fenced), then `POST /{db}/_purge` with every
//    leaf of both docs, then the platform rows (fenced): `purged_at` set, the `feed_index` row
//    dropped. A crash between steps is healed by the next pass: a doc already gone is purged as
//    `[]`, and the rows are written again.
// 5. `POST /{db}/_compact` once the pass purged anything (CouchDB compacts in the background; so
//    does the embedded server, whose `_compact` also compacts the leveldb files).
// Only the documented CouchDB 3 API is used: `_all_docs`, `_purge`, `_compact`.

export interface RetentionDeps {
  tenant: string;
  lease: Fence;
  db: Queryable;
  /** Reads, as the worker. */
  inbox: CouchDb;
  /** `_purge` and `_compact`: a CouchDB admin of the inbox (both are admin-only in CouchDB 3). */
  purger: CouchDb;
  policy: RetentionPolicy;
  /** Candidates per pass. */
  batchSize: number;
  now: number;
}

export interface RetentionPassResult {
  looked: number;
  purged: number;
  kept: Partial<Record<Extract<RetentionVerdict, { kind: 'keep' }>['reason'], number>>;
  compacted: boolean;
}

interface Candidate {
  owner: string;
  mid: string;
  terminalAt: number;
  counter: number;
}

const PURGE_IDS_PER_REQUEST = 100;

type Row = { id?: string; key: string; value?: { rev: string; deleted?: boolean }; doc?: Record<string, unknown> & { _rev: string; _conflicts?: string[] }; error?: string };

/** Where a page of candidates ends: the next page starts after it (keyset paging, oldest first). */
interface Cursor {
  terminalAt: string;
  owner: string;
  mid: string;
}

async function candidates(db: Queryable, tenant: string, windowMs: number, now: number, limit: number, after: Cursor | null): Promise<{ page: Candidate[]; next: Cursor | null }> {
  const { rows } = await db.query<{ owner: string; mid: string; terminal_at: Date | string; at: string; counter: string | number }>(
    `SELECT p.owner, p.mid, p.terminal_at, p.terminal_at::text AS at, f.counter FROM pending_mutations p
     JOIN feed_index f ON f.tenant = p.tenant AND f.doc_id = 's:' || p.owner || ':' || p.mid
     WHERE p.tenant = $1 AND p.terminal AND p.purged_at IS NULL AND p.terminal_at <= to_timestamp($2::double precision / 1000)
       AND ($4::text IS NULL OR (p.terminal_at, p.owner, p.mid) > ($4::timestamptz, $5::text, $6::text))
     ORDER BY p.terminal_at, p.owner, p.mid LIMIT $3`,
    [tenant, now - windowMs, limit, after?.terminalAt ?? null, after?.owner ?? null, after?.mid ?? null],
  );
  const last = rows[rows.length - 1];
  return {
    page: rows.map((r) => ({ owner: r.owner, mid: r.mid, terminalAt: new Date(r.terminal_at).getTime(), counter: Number(r.counter) })),
    next: last && rows.length === limit ? { terminalAt: last.at, owner: last.owner, mid: last.mid } : null,
  };
}

/** Each (owner, device)'s acknowledged counter, from the owners' `_local` docs. */
async function acknowledgements(db: Queryable, tenant: string, owners: string[]): Promise<Map<string, number>> {
  const { rows } = await db.query<{ owner: string; doc_id: string; body: string }>(
    `SELECT owner, doc_id, body FROM sync_local_docs WHERE tenant_id = $1 AND owner = ANY($2::text[]) AND doc_id LIKE 'ferry-ack-%'`,
    [tenant, owners],
  );
  const out = new Map<string, number>();
  for (const r of rows) {
    let body: unknown;
    try {
      body = JSON.parse(r.body);
    } catch {
      continue;
    }
    const ack = ackOf(r.doc_id, body);
    if (ack) out.set(`${r.owner}\u0000${ack.device}`, ack.counter);
  }
  return out;
}

async function awaitedMids(db: Queryable, tenant: string, mids: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ owner: string; after: string }>('SELECT owner, after FROM worker_pending WHERE tenant = $1 AND after = ANY($2::text[])', [tenant, mids]);
  return new Set(rows.map((r) => `${r.owner}\u0000${r.after}`));
}

async function readDocs(inbox: CouchDb, ids: string[]): Promise<Map<string, Row>> {
  const res = await inbox.request('POST', '/_all_docs', { keys: ids }, { include_docs: 'true', conflicts: 'true' });
  if (!res.ok) throw new CouchError(res.status, 'read_failed', 'retention read failed');
  const body = (await res.json()) as { rows: Row[] };
  return new Map(body.rows.map((r) => [r.key, r]));
}

/**
 * Every leaf of each status doc, deleted ones included (`GET /{db}/{id}?open_revs=all`): the worker
 * closes a losing conflict branch by deleting it with the winner's body, so a deleted leaf can hold
 * PHI, and `_all_docs` lists only live leaves. Mutation docs never have deleted leaves (the gateway
 * and the VDU refuse deleting them), so their live leaves are all of them.
 */
async function allLeaves(inbox: CouchDb, ids: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < ids.length; i += LEAF_READS_AT_ONCE) {
    await Promise.all(
      ids.slice(i, i + LEAF_READS_AT_ONCE).map(async (id) => {
        // `open_revs=all` unquoted: CouchDB reads a quoted value as a JSON rev list.
        const res = await inbox.request('GET', `/${encodeDocId(id)}?open_revs=all`);
        if (res.status === 404) return void (await res.body?.cancel());
        if (!res.ok) throw new CouchError(res.status, 'read_failed', 'retention leaf read failed');
        const body = (await res.json()) as Array<{ ok?: { _rev?: string } }>;
        out.set(id, body.flatMap((r) => (r.ok?._rev ? [r.ok._rev] : [])));
      }),
    );
  }
  return out;
}
const LEAF_READS_AT_ONCE = 8;

const leaves = (row: Row | undefined): string[] => (row?.doc ? [row.doc._rev, ...(row.doc._conflicts ?? [])] : []);

async function fenced(db: Queryable, lease: Fence, sql: string, params: unknown[]): Promise<void> {
  const res = await db.query<{ ok: number }>(`WITH held AS (SELECT 1 AS ok WHERE ${LEASE_HELD}) ${sql} SELECT ok FROM held`, [lease.tenant, lease.holder, lease.fence, ...params]);
  if (res.rows.length !== 1) throw new LeaseLost(lease.tenant);
}

/**
 * Pages through every candidate (kept ones do not hold up newer ones: an abandoned device's
 * statuses are looked at again each pass, which costs what that device holds), purging page by
 * page, then asks for one compaction if anything went.
 */
export async function runRetentionPass(deps: RetentionDeps): Promise<RetentionPassResult> {
  const result: RetentionPassResult = { looked: 0, purged: 0, kept: {}, compacted: false };
  let cursor: Cursor | null = null;
  do {
    const { page, next } = await candidates(deps.db, deps.tenant, deps.policy.windowMs, deps.now, deps.batchSize, cursor);
    await retainPage(deps, page, result);
    cursor = next;
  } while (cursor !== null);
  if (result.purged > 0) {
    const compact = await deps.purger.request('POST', '/_compact', {});
    await compact.body?.cancel();
    result.compacted = compact.status === 202;
  }
  return result;
}

async function retainPage(deps: RetentionDeps, found: Candidate[], result: RetentionPassResult): Promise<void> {
  const { tenant, lease, db, policy, now } = deps;
  result.looked += found.length;
  if (found.length === 0) return;
  const ids = found.flatMap((c) => [mutationDocId(c.owner, c.mid), statusDocId(c.owner, c.mid)]);
  const [docs, acks, awaited] = await Promise.all([
    readDocs(deps.inbox, ids),
    acknowledgements(db, tenant, [...new Set(found.map((c) => c.owner))]),
    awaitedMids(db, tenant, found.map((c) => c.mid)),
  ]);
  const purge: Array<{ c: Candidate; state: StatusState; m: Row | undefined; s: Row | undefined }> = [];
  for (const c of found) {
    const m = docs.get(mutationDocId(c.owner, c.mid));
    const s = docs.get(statusDocId(c.owner, c.mid));
    const device = typeof m?.doc?.device === 'string' ? m.doc.device : null;
    const state = STATUS_STATES.find((x) => x === s?.doc?.state) ?? null;
    const verdict = decideRetention(
      {
        state,
        terminalAt: c.terminalAt,
        counter: c.counter,
        acked: device === null ? null : (acks.get(`${c.owner}\u0000${device}`) ?? null),
        awaited: awaited.has(`${c.owner}\u0000${c.mid}`),
        conflicted: (s?.doc?._conflicts?.length ?? 0) > 0,
      },
      policy,
      now,
    );
    if (verdict.kind === 'purge' && state !== null) purge.push({ c, state, m, s });
    else if (verdict.kind === 'keep') result.kept[verdict.reason] = (result.kept[verdict.reason] ?? 0) + 1;
  }
  if (purge.length === 0) return;

  // The tombstone state first: from now on a mutation naming one of these in `after` finds its state.
  await fenced(
    db,
    lease,
    `, marked AS (UPDATE pending_mutations p SET purged_state = u.state FROM held, unnest($4::text[], $5::text[], $6::text[]) AS u(owner, mid, state)
       WHERE p.tenant = $1::text AND p.owner = u.owner AND p.mid = u.mid)`,
    [purge.map((p) => p.c.owner), purge.map((p) => p.c.mid), purge.map((p) => p.state)],
  );
  const request: Record<string, string[]> = {};
  const statusLeaves = await allLeaves(deps.inbox, purge.map((p) => statusDocId(p.c.owner, p.c.mid)));
  for (const p of purge) {
    request[mutationDocId(p.c.owner, p.c.mid)] = leaves(p.m);
    const id = statusDocId(p.c.owner, p.c.mid);
    request[id] = [...new Set([...leaves(p.s), ...(statusLeaves.get(id) ?? [])])];
  }
  // CouchDB 3 takes at most 100 ids per purge request (`[purge] max_document_id_number`).
  const entries = Object.entries(request);
  for (let i = 0; i < entries.length; i += PURGE_IDS_PER_REQUEST) {
    const res = await deps.purger.request('POST', '/_purge', Object.fromEntries(entries.slice(i, i + PURGE_IDS_PER_REQUEST)));
    if (res.status !== 201 && res.status !== 202) throw new CouchError(res.status, 'purge_failed', 'inbox purge failed');
    await res.body?.cancel();
  }
  await fenced(
    db,
    lease,
    `, done AS (UPDATE pending_mutations p SET purged_at = now() FROM held, unnest($4::text[], $5::text[]) AS u(owner, mid)
       WHERE p.tenant = $1::text AND p.owner = u.owner AND p.mid = u.mid),
     unlisted AS (DELETE FROM feed_index f USING held WHERE f.tenant = $1::text AND f.doc_id = ANY($6::text[]))`,
    [purge.map((p) => p.c.owner), purge.map((p) => p.c.mid), purge.map((p) => statusDocId(p.c.owner, p.c.mid))],
  );
  result.purged += purge.length;
}
