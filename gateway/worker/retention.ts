import { CouchError, encodeDocId, type CouchDb } from '../../couchdb/client.ts';
import type { Queryable } from '../../sql/database.ts';
import { ackOf } from '../../validators/acknowledgement.ts';
import { mutationDocId, statusDocId, STATUS_STATES, type StatusState } from '../../validators/mutation.ts';
import { LeaseLost, type Fence } from './lease.ts';
import { decideRepurge, decideRetention, DEFAULT_REPURGE_HORIZON_MS, type KeyLookupRow, type PurgedMutation, type RetentionPolicy, type RetentionVerdict } from './retention-rule.ts';
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
// 0. Before those, the re-purge guard: the mutations it purged (or purged again) within the
//    horizon (`policy.recheckMs`, a day by default), paged, are looked up in `_all_docs?keys`
//    without docs; `decideRepurge` (pure) says which ids are back, and those are purged again,
//    every leaf (fenced `repurged_at` first, so the horizon restarts and a crash retries).
//    A 3-node CouchDB 3.5.0 cluster re-inserted purged docs once (docs/DEPLOY.md).
// 5. `POST /{db}/_compact` once the pass purged (or purged again) anything (CouchDB compacts in the background; so
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
  /** Purged mutations looked up again by the re-purge guard. */
  rechecked: number;
  /** Of those, how many had a doc back, purged again. */
  repurged: number;
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
  const result: RetentionPassResult = { looked: 0, purged: 0, rechecked: 0, repurged: 0, kept: {}, compacted: false };
  await recheckPurged(deps, result);
  let cursor: Cursor | null = null;
  do {
    const { page, next } = await candidates(deps.db, deps.tenant, deps.policy.windowMs, deps.now, deps.batchSize, cursor);
    await retainPage(deps, page, result);
    cursor = next;
  } while (cursor !== null);
  if (result.purged > 0 || result.repurged > 0) {
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
  await purgeLeaves(deps.purger, request);
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

/** `POST /{db}/_purge`, at most 100 ids a request (CouchDB 3's `[purge] max_document_id_number`). */
async function purgeLeaves(purger: CouchDb, request: Record<string, string[]>): Promise<void> {
  const entries = Object.entries(request);
  for (let i = 0; i < entries.length; i += PURGE_IDS_PER_REQUEST) {
    const res = await purger.request('POST', '/_purge', Object.fromEntries(entries.slice(i, i + PURGE_IDS_PER_REQUEST)));
    if (res.status !== 201 && res.status !== 202) throw new CouchError(res.status, 'purge_failed', 'inbox purge failed');
    await res.body?.cancel();
  }
}

// ---- the re-purge guard ---------------------------------------------------------------------

/** Purged mutations looked up per `_all_docs` request (two keys each). */
const RECHECK_PAGE = 250;

interface RecheckCursor {
  since: string;
  owner: string;
  mid: string;
}

/** The mutations purged (or last purged again) within the horizon, a page at a time, oldest first. */
async function recentlyPurged(db: Queryable, tenant: string, horizonMs: number, now: number, upTo: string, after: RecheckCursor | null): Promise<{ page: PurgedMutation[]; next: RecheckCursor | null }> {
  const { rows } = await db.query<{ owner: string; mid: string; since: string }>(
    `SELECT owner, mid, COALESCE(repurged_at, purged_at)::text AS since FROM pending_mutations
     WHERE tenant = $1 AND purged_at IS NOT NULL AND COALESCE(repurged_at, purged_at) > to_timestamp($2::double precision / 1000)
       AND COALESCE(repurged_at, purged_at) <= $7::timestamptz
       AND ($4::text IS NULL OR (COALESCE(repurged_at, purged_at), owner, mid) > ($4::timestamptz, $5::text, $6::text))
     ORDER BY COALESCE(repurged_at, purged_at), owner, mid LIMIT $3`,
    [tenant, now - horizonMs, RECHECK_PAGE, after?.since ?? null, after?.owner ?? null, after?.mid ?? null, upTo],
  );
  const last = rows[rows.length - 1];
  return {
    page: rows.map((r) => ({ owner: r.owner, mid: r.mid, ids: [mutationDocId(r.owner, r.mid), statusDocId(r.owner, r.mid)] })),
    next: last && rows.length === RECHECK_PAGE ? { since: last.since, owner: last.owner, mid: last.mid } : null,
  };
}

async function lookUp(inbox: CouchDb, ids: string[]): Promise<Map<string, KeyLookupRow>> {
  const res = await inbox.request('POST', '/_all_docs', { keys: ids });
  if (!res.ok) throw new CouchError(res.status, 'read_failed', 'retention recheck failed');
  const body = (await res.json()) as { rows: KeyLookupRow[] };
  return new Map(body.rows.map((r) => [r.key, r]));
}

/**
 * Looks up what the horizon holds and purges again every doc that is back, with all its leaves
 * (`open_revs=all`: the ones that came back may be deleted ones). Ids that did not answer are
 * simply looked at again next pass; the page cursor moves on regardless, so one bad shard does not
 * stop the guard.
 */
async function recheckPurged(deps: RetentionDeps, result: RetentionPassResult): Promise<void> {
  const horizonMs = deps.policy.recheckMs ?? DEFAULT_REPURGE_HORIZON_MS;
  if (horizonMs <= 0) return;
  // What this pass purges again gets `repurged_at = now()`: the upper bound keeps it out of the
  // pages still to come, so every row is looked at once a pass.
  const { rows: [start] } = await deps.db.query<{ at: string }>('SELECT now()::text AS at');
  let cursor: RecheckCursor | null = null;
  do {
    const { page, next } = await recentlyPurged(deps.db, deps.tenant, horizonMs, deps.now, start!.at, cursor);
    cursor = next;
    result.rechecked += page.length;
    if (page.length === 0) break;
    const { back } = decideRepurge(page, await lookUp(deps.inbox, page.flatMap((m) => [...m.ids])));
    if (back.length === 0) continue;
    // Fenced first: only the lease holder purges, and the horizon restarts from now. Only rows
    // still marked purged: one the worker has meanwhile answered again (a re-push it replays,
    // which clears `purged_at`) is ordinary retention's again, not the guard's.
    const { lease } = deps;
    const marked = await deps.db.query<{ ok: number; owner: string | null; mid: string | null }>(
      `WITH held AS (SELECT 1 AS ok WHERE ${LEASE_HELD}),
       again AS (UPDATE pending_mutations p SET repurged_at = now(), repurges = p.repurges + 1 FROM held, unnest($4::text[], $5::text[]) AS u(owner, mid)
         WHERE p.tenant = $1::text AND p.owner = u.owner AND p.mid = u.mid AND p.purged_at IS NOT NULL RETURNING p.owner, p.mid)
       SELECT held.ok, again.owner, again.mid FROM held LEFT JOIN again ON true`,
      [lease.tenant, lease.holder, lease.fence, back.map((b) => b.mutation.owner), back.map((b) => b.mutation.mid)],
    );
    if (marked.rows.length === 0) throw new LeaseLost(lease.tenant);
    const still = new Set(marked.rows.flatMap((r) => (r.owner !== null && r.mid !== null ? [`${r.owner}\u0000${r.mid}`] : [])));
    const again = back.filter((b) => still.has(`${b.mutation.owner}\u0000${b.mutation.mid}`));
    if (again.length === 0) continue;
    const ids = again.flatMap((b) => b.ids);
    const found = await allLeaves(deps.inbox, ids);
    const request: Record<string, string[]> = {};
    for (const id of ids) {
      const revs = found.get(id);
      if (revs && revs.length > 0) request[id] = revs;
    }
    await purgeLeaves(deps.purger, request);
    result.repurged += again.length;
  } while (cursor !== null);
}
