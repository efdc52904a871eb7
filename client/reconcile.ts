// Reconcile: what the device knows about each mutation and each entity. Pure functions over
// plain data plus one in-memory index; the session feeds it docs and emits what changed.

import { isTerminal, type MutationDoc, type StatusDoc } from '../validators/mutation.ts';
import type { ErrorCode, FieldError } from '../validators/codes.ts';
import { findOp } from '../validators/manifest.ts';
import type { Patient } from '../validators/patient.ts';
import type { ReplicaRecord } from './records/record-doc.ts';

/** A decision the device made itself, kept in an `l:{owner}:{mid}` doc (encrypted, never pushed). */
export interface LocalNoteDoc {
  _id: string;
  _rev?: string;
  type: 'local-status';
  mutation: string;
  kind: 'rejected' | 'discarded';
  code: ErrorCode | null;
  errors?: FieldError[];
  at: string;
}

export function localNoteId(owner: string, mid: string): string {
  return `l:${owner}:${mid}`;
}

/** Where one mutation stands, as far as this device knows. */
export type MutationState =
  | { kind: 'queued' }
  | { kind: 'waiting'; attempts: number }
  | { kind: 'retrying'; attempts: number }
  | { kind: 'committed'; response: { status: number; body: unknown } | null }
  | { kind: 'rejected'; code: ErrorCode | null; errors: FieldError[]; source: 'server' | 'device' }
  | { kind: 'conflict'; code: ErrorCode | null; current: unknown; candidates: string[] }
  | { kind: 'discarded'; was: 'rejected' | 'conflict' };

export type MutationStateKind = MutationState['kind'];

export function isPending(state: MutationState): boolean {
  return state.kind === 'queued' || state.kind === 'waiting' || state.kind === 'retrying';
}

/** Rejected, in conflict or discarded: it will never commit. */
export function hasFailed(state: MutationState): boolean {
  return state.kind === 'rejected' || state.kind === 'conflict' || state.kind === 'discarded';
}

/**
 * Combines the server's status (if any) with the device's own note (if any). A terminal server
 * status is the truth; a discard note lays over a failure; a device rejection beats a server
 * status that is not terminal yet (the device stopped sending, e.g. membership gone).
 */
export function mutationState(status: StatusDoc | undefined, note: LocalNoteDoc | undefined): MutationState {
  const server = status ? fromStatus(status) : undefined;
  if (server && isTerminal(status!.state)) {
    if (note?.kind === 'discarded' && (server.kind === 'rejected' || server.kind === 'conflict')) return { kind: 'discarded', was: server.kind };
    return server;
  }
  if (note?.kind === 'rejected') return { kind: 'rejected', code: note.code, errors: note.errors ?? [], source: 'device' };
  if (note?.kind === 'discarded') return { kind: 'discarded', was: 'rejected' };
  return server ?? { kind: 'queued' };
}

function fromStatus(s: StatusDoc): MutationState {
  switch (s.state) {
    case 'committed':
      return { kind: 'committed', response: s.response ?? null };
    case 'rejected':
      return { kind: 'rejected', code: s.code, errors: s.errors ?? [], source: 'server' };
    case 'conflict':
      return { kind: 'conflict', code: s.code, current: s.current ?? null, candidates: s.candidates ?? [] };
    case 'waiting':
      return { kind: 'waiting', attempts: s.attempts };
    case 'retrying':
      return { kind: 'retrying', attempts: s.attempts };
  }
}

/** One mutation with its state. `payload` is PHI: in memory only while unlocked. */
export interface MutationInfo {
  mid: string;
  entity: string;
  op: string;
  seq: number;
  createdAt: string;
  after: string | null;
  resolves: string | null;
  baseVersion: number | null;
  payload: Record<string, unknown>;
  state: MutationState;
  /** A later mutation that names this one in `resolves`. */
  resolvedBy: string | null;
}

export function mutationInfo(doc: MutationDoc, mid: string, state: MutationState, resolvedBy: string | null): MutationInfo {
  return {
    mid,
    entity: doc.entity,
    op: doc.op,
    seq: doc.seq,
    createdAt: doc.createdAt,
    after: doc.after,
    resolves: doc.resolves,
    baseVersion: doc.baseVersion,
    payload: doc.payload,
    state,
    resolvedBy,
  };
}

export function versionOf(record: unknown): number | null {
  if (typeof record !== 'object' || record === null) return null;
  const v = (record as { version?: unknown }).version;
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 ? v : null;
}

/**
 * A patient as the device shows it: the demographics, and the server's own fields when the server
 * has the record. (Registration is the one module with entities; its payloads are patients.)
 */
export type PatientView = Patient & { id: string; tenant?: string; version?: number; createdAt?: string; updatedAt?: string };

/** An entity as the device sees it. */
export interface EntityView {
  entity: string;
  /** The newest record the server has confirmed to this device (commit answer or conflict `current`). */
  confirmed: { version: number; record: Record<string, unknown> } | null;
  /** The server's record from the replica (records in the user's facilities), if it holds one. */
  record: ReplicaRecord | null;
  /**
   * The newest server state known (the replica's record or `confirmed`, whichever is newer) with
   * every pending mutation laid over it, in device order; a pending create with nothing from the
   * server gives its payload; null if nothing is known.
   */
  current: PatientView | null;
  /** The `baseVersion` an update queued now would carry (null: unknown, pass one). */
  baseVersion: number | null;
  /** Mutations not terminal yet, in `seq` order. */
  pending: MutationInfo[];
  /** Rejections and conflicts nobody has resolved or discarded yet. */
  problems: MutationInfo[];
  /** Every mutation on this entity from this device, in `seq` order. */
  history: MutationInfo[];
}

const DEVICE_ONLY_FIELDS = ['confirmNotDuplicate'];

function asRecord(value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

/** The newest record the server confirmed to this device among these mutations. */
function newestConfirmed(history: readonly MutationInfo[]): EntityView['confirmed'] {
  let confirmed: EntityView['confirmed'] = null;
  for (const m of history) {
    const candidate = m.state.kind === 'committed' ? m.state.response?.body : m.state.kind === 'conflict' || (m.state.kind === 'discarded' && m.state.was === 'conflict') ? conflictCurrent(m) : undefined;
    const record = asRecord(candidate);
    const version = versionOf(record);
    if (record && version !== null && (!confirmed || version > confirmed.version)) confirmed = { version, record };
  }
  return confirmed;
}

/** The version the server will be at once `m` commits. */
function predecessorVersion(m: MutationInfo): number | null {
  if (m.state.kind === 'committed') return versionOf(m.state.response?.body);
  if (m.baseVersion === null) return findOp(m.op)?.kind === 'create' ? 1 : null;
  return m.baseVersion + 1;
}

/**
 * The `baseVersion` of an update queued after `earlier` (this device's mutations on the entity,
 * any order), null when unknown. From the latest predecessor not known to have failed: while it
 * is pending, the version it will make (1 after a create, its base + 1 after an update); once
 * committed, its version or the replica's, whichever is newer. Without one: the newest version
 * the server confirmed to this device or the replica's record holds.
 */
export function nextBaseVersion(earlier: readonly MutationInfo[], recordVersion: number | null = null): number | null {
  const ordered = [...earlier].sort((a, b) => a.seq - b.seq);
  const live = ordered.filter((m) => !hasFailed(m.state));
  const predecessor = live[live.length - 1] ?? null;
  const fromPredecessor = predecessor ? predecessorVersion(predecessor) : null;
  if (predecessor && fromPredecessor !== null) return isPending(predecessor.state) ? fromPredecessor : Math.max(fromPredecessor, recordVersion ?? 0);
  const known = Math.max(newestConfirmed(ordered)?.version ?? 0, recordVersion ?? 0);
  return known > 0 ? known : null;
}

/**
 * Builds an entity's view from its mutations (any order) and the replica's record. Payloads carry
 * the full representation (registration's create and update both do), so each pending one
 * replaces the demographic fields while the server's own fields (id, version, timestamps) stay.
 */
export function entityView(entity: string, infos: readonly MutationInfo[], record: ReplicaRecord | null = null): EntityView {
  const history = infos.filter((m) => m.entity === entity).sort((a, b) => a.seq - b.seq);
  const confirmed = newestConfirmed(history);
  const pending = history.filter((m) => isPending(m.state));
  const problems = history.filter((m) => (m.state.kind === 'rejected' || m.state.kind === 'conflict') && m.resolvedBy === null);
  let current: Record<string, unknown> | null = record && (!confirmed || record.version >= confirmed.version) ? { ...record.data } : confirmed ? { ...confirmed.record } : null;
  for (const m of pending) {
    const fields = { ...m.payload };
    for (const f of DEVICE_ONLY_FIELDS) delete fields[f];
    const system = current ? pickSystemFields(current) : { id: entity };
    current = { ...system, ...fields };
  }
  // Boundary: server records and payloads that passed the op's schema are patients.
  return { entity, confirmed, record, current: current as PatientView | null, baseVersion: nextBaseVersion(history, record?.version ?? null), pending, problems, history };
}

function conflictCurrent(m: MutationInfo): unknown {
  return m.state.kind === 'conflict' ? m.state.current : undefined;
}

const SYSTEM_FIELDS = ['id', 'tenant', 'version', 'createdAt', 'updatedAt'];
function pickSystemFields(record: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of SYSTEM_FIELDS) if (f in record) out[f] = record[f];
  return out;
}

/**
 * The in-memory index of the open store: mutations, server statuses and local notes by mid.
 * Built from the docs on unlock, dropped on lock.
 */
export class LocalIndex {
  private readonly mutations = new Map<string, MutationDoc>();
  private readonly statuses = new Map<string, StatusDoc>();
  private readonly notes = new Map<string, LocalNoteDoc>();
  private readonly byEntity = new Map<string, string[]>();
  private readonly resolvers = new Map<string, string>();

  addMutation(doc: MutationDoc, mid: string): void {
    if (this.mutations.has(mid)) return;
    this.mutations.set(mid, doc);
    const list = this.byEntity.get(doc.entity) ?? [];
    list.push(mid);
    this.byEntity.set(doc.entity, list);
    if (doc.resolves) this.resolvers.set(doc.resolves, mid);
  }

  /**
   * Returns false when nothing changes: the same revision again (a pulled batch that only added a
   * losing branch), or a downgrade of a terminal status (never happens with a correct worker).
   */
  setStatus(doc: StatusDoc): boolean {
    const existing = this.statuses.get(doc.mutation);
    if (existing?._rev !== undefined && existing._rev === doc._rev) return false;
    if (existing && isTerminal(existing.state) && !isTerminal(doc.state)) return false;
    this.statuses.set(doc.mutation, doc);
    return true;
  }

  setNote(doc: LocalNoteDoc): void {
    this.notes.set(doc.mutation, doc);
  }

  note(mid: string): LocalNoteDoc | undefined {
    return this.notes.get(mid);
  }

  has(mid: string): boolean {
    return this.mutations.has(mid);
  }

  info(mid: string): MutationInfo | undefined {
    const doc = this.mutations.get(mid);
    if (!doc) return undefined;
    return mutationInfo(doc, mid, mutationState(this.statuses.get(mid), this.notes.get(mid)), this.resolvers.get(mid) ?? null);
  }

  forEntity(entity: string): MutationInfo[] {
    return (this.byEntity.get(entity) ?? []).map((mid) => this.info(mid)!).sort((a, b) => a.seq - b.seq);
  }

  all(): MutationInfo[] {
    return [...this.mutations.keys()].map((mid) => this.info(mid)!).sort((a, b) => a.seq - b.seq);
  }

  /** The highest `seq` of the mutations held (0 for none). */
  highestSeq(): number {
    let max = 0;
    for (const doc of this.mutations.values()) if (doc.seq > max) max = doc.seq;
    return max;
  }

  entities(): string[] {
    return [...this.byEntity.keys()];
  }

  /** Entities with at least one mutation not terminal yet. */
  pendingEntities(): Set<string> {
    const out = new Set<string>();
    for (const [mid, doc] of this.mutations) {
      if (out.has(doc.entity)) continue;
      if (isPending(mutationState(this.statuses.get(mid), this.notes.get(mid)))) out.add(doc.entity);
    }
    return out;
  }

  clear(): void {
    this.mutations.clear();
    this.statuses.clear();
    this.notes.clear();
    this.byEntity.clear();
    this.resolvers.clear();
  }
}
