// The outbox: turns an app's change into an immutable mutation doc (DESIGN §4). The chain maths
// (`after`, `baseVersion`) is a pure function over what the device knows about the entity.

import type { OpDefinition } from '../validators/manifest.ts';
import { mutationDocId, mutationDocSchema, type MutationDoc } from '../validators/mutation.ts';
import { hasFailed, nextBaseVersion, type MutationInfo } from './reconcile.ts';

export type ChainResult =
  | { ok: true; after: string | null; baseVersion: number | null }
  | { ok: false; code: 'BASE_VERSION_UNKNOWN' };

export interface ChainInput {
  kind: OpDefinition['kind'];
  /** This device's earlier mutations on the entity, any order. */
  earlier: readonly MutationInfo[];
  /** Set by the caller when it knows better (a merge on a conflict's `current.version`). */
  baseVersion?: number | null;
  /** The version of the entity's record in the replica, if it holds one. */
  recordVersion?: number | null;
}

/**
 * - `after`: the latest earlier mutation on this entity from this device not known to have failed
 *   terminally (rejected, conflict, discarded).
 * - `baseVersion` (updates only): an explicit one wins; else `nextBaseVersion` (reconcile.ts):
 *   from a pending predecessor the version it will make, else the newest the server confirmed or
 *   the replica holds, so an update of a record registered elsewhere bases on the replica's version.
 */
export function chain({ kind, earlier, baseVersion, recordVersion }: ChainInput): ChainResult {
  const ordered = [...earlier].sort((a, b) => a.seq - b.seq);
  const live = ordered.filter((m) => !hasFailed(m.state));
  const after = live[live.length - 1]?.mid ?? null;
  if (kind === 'create') return { ok: true, after, baseVersion: null };
  if (baseVersion !== undefined && baseVersion !== null) return { ok: true, after, baseVersion };
  const next = nextBaseVersion(ordered, recordVersion ?? null);
  if (next !== null) return { ok: true, after, baseVersion: next };
  return { ok: false, code: 'BASE_VERSION_UNKNOWN' };
}

export interface MutationFields {
  tenant: string;
  owner: string;
  device: string;
  seq: number;
  mid: string;
  op: string;
  entity: string;
  after: string | null;
  resolves: string | null;
  baseVersion: number | null;
  payload: Record<string, unknown>;
  createdAt: string;
}

/**
 * The mutation doc exactly as DESIGN §4 has it, assembled from parts that are valid already (the
 * session checks each where it comes from: the payload against the op's schema, ids and versions
 * by format), so it is not parsed a second time.
 */
export function mutationDoc(f: MutationFields): MutationDoc {
  return {
    _id: mutationDocId(f.owner, f.mid),
    type: 'mutation',
    v: 1,
    tenant: f.tenant,
    owner: f.owner,
    device: f.device,
    seq: f.seq,
    op: f.op,
    entity: f.entity,
    after: f.after,
    resolves: f.resolves,
    baseVersion: f.baseVersion,
    payload: f.payload,
    createdAt: f.createdAt,
  };
}

/** `mutationDoc` checked against the shared schema, for callers whose parts are not checked yet. */
export function buildMutationDoc(f: MutationFields): MutationDoc {
  return mutationDocSchema.parse(mutationDoc(f));
}
