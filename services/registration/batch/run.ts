import type { Database, Queryable } from '../../../sql/database.ts';
import { PATIENT_ID } from '../../../validators/patient.ts';
import { appendEventsAndAudits } from '../events/outbox.ts';
import type { StoredAnswer } from '../idempotency/decision.ts';
import { loadAnswers, storeAnswers, tryLockKeys } from '../idempotency/store.ts';
import type { Licensing } from '../licensing.ts';
import { identifierKey } from '../patients/matching.ts';
import { repeatedIdentifiers } from '../patients/commands.ts';
import {
  duplicateKeyOf,
  identifierHolderRows,
  insertPatients,
  lockDuplicateKeys,
  lockPatientsForUpdate,
  nameMatches,
  takenIds,
  updatePatients,
  writeIdentifiers,
  type DuplicateKey,
} from '../patients/store.ts';
import { BatchPatientView } from '../patients/view.ts';
import type { PreparedMutation } from './items.ts';
import { answeredWithoutWork, planBatch, type ItemAnswer } from './plan.ts';

// Runs a batch of mutations (one item for the single routes) in one transaction with a constant
// number of set-based statements, whatever the batch's size: take the keys' in-flight markers,
// load what the items need, decide them in memory (plan.ts), write the outcome.

export interface MutationDeps {
  db: Database;
  licensing: Licensing;
  now: () => Date;
  retentionMs: number;
  /** Test hook: the transaction's Queryable, e.g. to fail a chosen statement. */
  wrapTransaction?: (tx: Queryable) => Queryable;
}

/**
 * A concurrent writer took an id or an identifier between our reads and our writes, or two
 * transactions deadlocked. The whole batch is rolled back and run again; the rerun's reads see
 * the winner and answer as sequential calls would.
 */
export class RaceLost extends Error {
  override name = 'RaceLost';
}

const MAX_TRIES = 3;

export interface BatchResult {
  answers: ItemAnswer[];
  /** How many events were committed: the relay has work. */
  events: number;
}

/** All ready items share one tenant: the batch's (callers of other tenants were refused). */
export async function runMutations(deps: MutationDeps, tenant: string, items: readonly PreparedMutation[]): Promise<BatchResult> {
  const ready = items.filter((i) => i.kind === 'ready');
  const keys = [...new Set(ready.flatMap((i) => (i.key === null ? [] : [i.key])))];
  // Fast path for retries: stored answers never change until they expire, so a batch whose every
  // item replays (or was refused) needs neither the locks nor a transaction.
  const early = await loadAnswers(deps.db, tenant, keys);
  const now = deps.now();
  if (answeredWithoutWork(items, early, now)) {
    const plan = planBatch(items, { stored: early, holdsKey: () => false, licensed: false, view: new BatchPatientView(emptyLoad()), now, retentionMs: deps.retentionMs });
    return { answers: plan.answers, events: 0 };
  }
  for (let tries = 1; ; tries++) {
    try {
      return await deps.db.transaction((tx) => attempt(deps, deps.wrapTransaction ? deps.wrapTransaction(tx) : tx, tenant, items, keys));
    } catch (err) {
      const deadlock = (err as { code?: string }).code === '40P01';
      if (!(err instanceof RaceLost || deadlock) || tries >= MAX_TRIES) throw err;
    }
  }
}

function emptyLoad() {
  return { takenIds: [], records: [], nameMatches: [], identifiers: [] };
}

/** What the items that may run need loaded, from their bodies as read (a live stored answer replays: nothing to load or lock). */
function lookupsOf(items: readonly PreparedMutation[], stored: ReadonlyMap<string, StoredAnswer>, now: Date) {
  const createIds = new Set<string>();
  const updateIds = new Set<string>();
  const duplicateKeys: DuplicateKey[] = [];
  const pairs = new Map<string, { system: string; valueKey: string }>();
  for (const item of items) {
    if (item.kind !== 'ready') continue;
    const answer = item.key === null ? undefined : stored.get(item.key);
    if (answer && answer.expiresAt.getTime() > now.getTime()) continue;
    const { command } = item;
    const parsed = command.kind === 'create' ? command.input : command.input.parsed;
    if (!parsed.ok || repeatedIdentifiers(parsed.value).length > 0) continue;
    if (command.kind === 'create') {
      if (command.input.ok && command.input.value.id) createIds.add(command.input.value.id);
      duplicateKeys.push(duplicateKeyOf(parsed.value));
    } else if (PATIENT_ID.test(command.id)) {
      updateIds.add(command.id);
    }
    for (const i of parsed.value.identifiers ?? []) {
      const valueKey = identifierKey(i.value);
      pairs.set(`${i.system}|${valueKey}`, { system: i.system, valueKey });
    }
  }
  return { createIds: [...createIds], updateIds: [...updateIds].sort(), duplicateKeys, pairs: [...pairs.values()] };
}

async function attempt(deps: MutationDeps, tx: Queryable, tenant: string, items: readonly PreparedMutation[], keys: string[]): Promise<BatchResult> {
  const now = deps.now();
  // PGlite runs one transaction at a time: no concurrent writer can hold a key or race a create.
  const serialised = deps.db.kind === 'pglite';
  const held = serialised ? null : await tryLockKeys(tx, tenant, keys);
  const stored = await loadAnswers(tx, tenant, keys);
  const licensed = await deps.licensing.isLicensed(tenant, tx);
  const need = lookupsOf(items, stored, now);
  // Before the reads that detection relies on, so a concurrent create of the same person waits.
  if (!serialised) await lockDuplicateKeys(tx, tenant, need.duplicateKeys);
  const records = await lockPatientsForUpdate(tx, tenant, need.updateIds);
  const view = new BatchPatientView({
    takenIds: await takenIds(tx, tenant, need.createIds),
    records,
    nameMatches: await nameMatches(tx, tenant, need.duplicateKeys),
    identifiers: await identifierHolderRows(tx, tenant, need.pairs),
  });
  const plan = planBatch(items, { stored, holdsKey: (k) => held === null || held.has(k), licensed, view, now, retentionMs: deps.retentionMs });

  if ((await insertPatients(tx, plan.inserts)) !== plan.inserts.length) throw new RaceLost();
  if ((await updatePatients(tx, plan.updates)) !== plan.updates.length) throw new RaceLost();
  const replaced = plan.updates.map((u) => u.id);
  if (!(await writeIdentifiers(tx, tenant, replaced, [...plan.inserts, ...plan.updates]))) throw new RaceLost();
  await appendEventsAndAudits(tx, plan.entries);
  await storeAnswers(tx, tenant, plan.store, now, deps.retentionMs);
  return { answers: plan.answers, events: plan.entries.length };
}
