// The invariants the harness proves at the end of a run, as pure checks over plain data: what the
// devices captured and saw, what the service database holds, what JetStream carries, what the
// inboxes hold and what the logs say. Each check returns violations that name ids only, never PHI.
// Tested from case tables in test/harness/invariants.test.ts.

export const INVARIANTS = [
  'terminal-status',
  'expected-outcome',
  'one-server-effect',
  'one-event',
  'entity-order',
  'tenant-isolation',
  'no-phi-in-logs',
] as const;
export type InvariantName = (typeof INVARIANTS)[number];

export interface Violation {
  invariant: InvariantName;
  /** Mutation, patient, device or log ids: never a name, date or identifier value. */
  ids: string[];
  detail: string;
}

export type FinalState = 'queued' | 'waiting' | 'retrying' | 'committed' | 'rejected' | 'conflict' | 'discarded';
const TERMINAL: ReadonlySet<FinalState> = new Set(['committed', 'rejected', 'conflict']);

/** One mutation a device captured, with what the device finally knows about it. */
export interface MutationRecord {
  mid: string;
  device: string;
  tenant: string;
  owner: string;
  entity: string;
  op: 'patient.create' | 'patient.update';
  seq: number;
  after: string | null;
  resolves: string | null;
  capturedAt: number;
  terminalAt: number | null;
  state: FinalState;
  code: string | null;
  /** The version the service answered with, for a committed mutation. */
  version: number | null;
  /** 'commit': must commit. 'contested': one of a contested pair (exactly one commits, one conflicts). */
  expect: 'commit' | 'contested';
}

export interface ServerPatient {
  id: string;
  tenant: string;
  version: number;
}

/** A row of the service's audit log or outbox, reduced to what identifies the effect. */
export interface ServerEffect {
  patientId: string;
  version: number;
}

export interface StreamEvent {
  seq: number;
  subject: string;
  patientId: string;
  version: number;
  tenant: string;
}

export interface InboxDoc {
  /** The tenant whose inbox holds the doc. */
  inbox: string;
  id: string;
  /** The `tenant` field of the doc. */
  tenant: string | null;
  /** For a terminal status doc: when the worker wrote it (ms), i.e. when the server's answer was final. */
  settledAt?: number | null;
}

export interface DeviceLocal {
  device: string;
  tenant: string;
  owner: string;
  /** Raw `_id`s of the device's local database for this tenant (readable without the key). */
  ids: string[];
  /** Docs the client's pull guard dropped (`warning` PULL_GUARD_DROPPED): foreign docs that reached the device. */
  guardDropped: number;
}

export interface LogText {
  name: string;
  text: string;
}

export interface Facts {
  tenants: string[];
  mutations: MutationRecord[];
  /** Patients in the run's tenants. */
  patients: ServerPatient[];
  audit: ServerEffect[];
  outbox: ServerEffect[];
  /** Stream events whose patient id is one of the run's (or lies in a run tenant). */
  events: StreamEvent[];
  inbox: InboxDoc[];
  devices: DeviceLocal[];
  logs: LogText[];
  /** PHI values and the patient each belongs to. */
  phi: Array<{ value: string; patient: string }>;
}

const MAX_IDS = 20;
function v(invariant: InvariantName, ids: string[], detail: string): Violation {
  const shown = ids.slice(0, MAX_IDS);
  return { invariant, ids: shown, detail: ids.length > MAX_IDS ? `${detail} (${ids.length} ids, first ${MAX_IDS} shown)` : detail };
}

function groupBy<T, K>(items: readonly T[], key: (t: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const i of items) {
    const k = key(i);
    const list = m.get(k);
    if (list) list.push(i);
    else m.set(k, [i]);
  }
  return m;
}

export function checkTerminal(f: Pick<Facts, 'mutations'>): Violation[] {
  const open = f.mutations.filter((m) => !TERMINAL.has(m.state));
  return open.length ? [v('terminal-status', open.map((m) => m.mid), `${open.length} mutation(s) without a terminal status on their device (${[...new Set(open.map((m) => m.state))].join(', ')})`)] : [];
}

/** Every planned mutation commits; of a contested pair exactly one commits and the other is a VERSION_CONFLICT. */
export function checkExpectedOutcome(f: Pick<Facts, 'mutations'>): Violation[] {
  const out: Violation[] = [];
  for (const [state, list] of groupBy(
    f.mutations.filter((m) => m.expect === 'commit' && TERMINAL.has(m.state) && m.state !== 'committed'),
    (m) => `${m.state}/${m.code ?? '-'}`,
  )) {
    out.push(v('expected-outcome', list.map((m) => m.mid), `${list.length} valid mutation(s) ended ${state} instead of committed`));
  }
  for (const [entity, pair] of groupBy(f.mutations.filter((m) => m.expect === 'contested'), (m) => m.entity)) {
    if (pair.some((m) => !TERMINAL.has(m.state))) continue;
    const committed = pair.filter((m) => m.state === 'committed').length;
    const conflicts = pair.filter((m) => m.state === 'conflict' && m.code === 'VERSION_CONFLICT').length;
    if (committed !== 1 || conflicts !== pair.length - 1) {
      out.push(v('expected-outcome', [entity, ...pair.map((m) => m.mid)], `concurrent edits from one base version: ${committed} committed, ${conflicts} VERSION_CONFLICT (want exactly 1 and ${pair.length - 1})`));
    }
  }
  return out;
}

/** Exactly one server effect per mutation: one patient per committed create, version = 1 + committed updates, one audit and outbox row per version. */
export function checkServerEffects(f: Pick<Facts, 'mutations' | 'patients' | 'audit' | 'outbox'>): Violation[] {
  const out: Violation[] = [];
  const committed = f.mutations.filter((m) => m.state === 'committed');
  const creates = new Map(committed.filter((m) => m.op === 'patient.create').map((m) => [m.entity, m]));
  const patients = groupBy(f.patients, (p) => p.id);

  const missing = [...creates.values()].filter((m) => !patients.has(m.entity));
  if (missing.length) out.push(v('one-server-effect', missing.map((m) => m.entity), 'committed create(s) without a patient row'));
  const wrongTenant = [...creates.values()].filter((m) => patients.get(m.entity)?.some((p) => p.tenant !== m.tenant));
  if (wrongTenant.length) out.push(v('one-server-effect', wrongTenant.map((m) => m.entity), 'patient row(s) in another tenant than their create'));
  const extra = f.patients.filter((p) => !creates.has(p.id));
  if (extra.length) out.push(v('one-server-effect', extra.map((p) => p.id), 'patient row(s) that no committed create accounts for (duplicate from replay?)'));

  const updates = groupBy(committed.filter((m) => m.op === 'patient.update'), (m) => m.entity);
  const badVersion: string[] = [];
  for (const [id, rows] of patients) {
    const want = 1 + (updates.get(id)?.length ?? 0);
    if (rows.length !== 1 || rows[0]!.version !== want) badVersion.push(id);
  }
  if (badVersion.length) out.push(v('one-server-effect', badVersion, 'patient version differs from 1 + committed updates'));

  // Each committed mutation claims a distinct version of its entity.
  const claims = groupBy(committed.filter((m) => m.version !== null), (m) => `${m.entity}@${m.version}`);
  for (const [key, list] of claims) if (list.length > 1) out.push(v('one-server-effect', [key.split('@')[0]!, ...list.map((m) => m.mid)], `${list.length} committed mutations answered with the same version ${key.split('@')[1]}`));

  for (const [name, rows] of [
    ['audit', f.audit],
    ['outbox', f.outbox],
  ] as const) {
    const counts = groupBy(rows, (r) => `${r.patientId}@${r.version}`);
    const wrong: string[] = [];
    for (const [id, p] of patients) {
      for (let ver = 1; ver <= p[0]!.version; ver++) if ((counts.get(`${id}@${ver}`)?.length ?? 0) !== 1) wrong.push(`${id}@${ver}`);
    }
    for (const [key] of counts) if (!patients.has(key.split('@')[0]!)) wrong.push(key);
    if (wrong.length) out.push(v('one-server-effect', wrong, `${name} rows per patient version are not exactly one`));
  }
  return out;
}

/** Exactly one JetStream event per committed create and update, on the right subject. */
export function checkEvents(f: Pick<Facts, 'mutations' | 'events'>): Violation[] {
  const out: Violation[] = [];
  const committed = f.mutations.filter((m) => m.state === 'committed' && m.version !== null);
  const want = new Map(committed.map((m) => [`${m.entity}@${m.version}`, m]));
  const got = groupBy(f.events, (e) => `${e.patientId}@${e.version}`);
  const missing = [...want.entries()].filter(([k]) => !got.has(k)).map(([, m]) => m);
  if (missing.length) out.push(v('one-event', missing.map((m) => `${m.entity}@${m.version}:${m.mid}`), 'committed mutation(s) with no JetStream event'));
  const dup = [...got.entries()].filter(([, list]) => list.length > 1);
  if (dup.length) out.push(v('one-event', dup.map(([k, list]) => `${k}×${list.length}`), 'more than one JetStream event for one committed change'));
  const stray = [...got.keys()].filter((k) => !want.has(k));
  if (stray.length) out.push(v('one-event', stray, 'JetStream event(s) for a change no committed mutation made'));
  const subject = f.events.filter((e) => e.subject !== (e.version === 1 ? 'REGISTRATION.patient.created' : 'REGISTRATION.patient.updated'));
  if (subject.length) out.push(v('one-event', subject.map((e) => `${e.patientId}@${e.version}`), 'event on the wrong subject'));
  return out;
}

/** Within an entity, committed versions increase with the device's seq and along each `after` chain. */
export function checkOrder(f: Pick<Facts, 'mutations'>): Violation[] {
  const out: Violation[] = [];
  const byMid = new Map(f.mutations.map((m) => [m.mid, m]));
  const committed = f.mutations.filter((m) => m.state === 'committed' && m.version !== null);
  const bad: string[] = [];
  for (const [, list] of groupBy(committed, (m) => `${m.device}|${m.tenant}|${m.entity}`)) {
    const sorted = [...list].sort((a, b) => a.seq - b.seq);
    for (let i = 1; i < sorted.length; i++) if (sorted[i]!.version! <= sorted[i - 1]!.version!) bad.push(sorted[i]!.mid);
  }
  if (bad.length) out.push(v('entity-order', bad, 'committed version not above that of an earlier mutation (by seq) on the same entity from the same device'));
  const chain: string[] = [];
  for (const m of committed) {
    const prev = m.after ? byMid.get(m.after) : undefined;
    if (prev && prev.state === 'committed' && prev.version !== null && prev.version >= m.version!) chain.push(m.mid);
    if (prev && prev.state !== 'committed' && m.resolves !== prev.mid && TERMINAL.has(prev.state)) chain.push(m.mid);
  }
  if (chain.length) out.push(v('entity-order', chain, 'committed out of order with its `after` predecessor (or past a failed predecessor it does not resolve)'));
  return out;
}

const DOC_ID = /^([msl]):([A-Za-z0-9_-]{1,64}):([0-9a-f-]{36})$/;

/** No doc of one tenant in another tenant's inbox or on a device session bound to another tenant. */
export function checkTenantIsolation(f: Pick<Facts, 'mutations' | 'inbox' | 'devices' | 'tenants'>): Violation[] {
  const out: Violation[] = [];
  const tenantOf = new Map(f.mutations.map((m) => [m.mid, m.tenant]));
  const inboxBad: string[] = [];
  for (const d of f.inbox) {
    const m = DOC_ID.exec(d.id);
    if (!m) continue; // design docs and the like
    const mid = m[3]!;
    const home = tenantOf.get(mid);
    if (d.tenant !== d.inbox || (home !== undefined && home !== d.inbox)) inboxBad.push(`${d.inbox}:${mid}`);
  }
  if (inboxBad.length) out.push(v('tenant-isolation', inboxBad, 'inbox holds a doc of another tenant'));
  const unknown = f.inbox.filter((d) => {
    const m = DOC_ID.exec(d.id);
    return m && f.tenants.includes(d.inbox) && !tenantOf.has(m[3]!);
  });
  if (unknown.length) out.push(v('tenant-isolation', unknown.map((d) => `${d.inbox}:${DOC_ID.exec(d.id)![3]}`), 'run inbox holds a doc no device of the run captured'));

  const captured = new Map<string, Set<string>>();
  for (const m of f.mutations) {
    const key = `${m.device}|${m.tenant}`;
    if (!captured.has(key)) captured.set(key, new Set());
    captured.get(key)!.add(m.mid);
  }
  for (const d of f.devices) {
    const mine = captured.get(`${d.device}|${d.tenant}`) ?? new Set<string>();
    const foreign: string[] = [];
    for (const id of d.ids) {
      const m = DOC_ID.exec(id);
      if (!m) continue; // drafts (d:…) and _local docs
      if (m[2] !== d.owner || !mine.has(m[3]!)) foreign.push(`${d.device}:${m[3]}`);
    }
    if (foreign.length) out.push(v('tenant-isolation', foreign, `device store for tenant ${d.tenant} holds docs it did not capture there`));
    if (d.guardDropped > 0) out.push(v('tenant-isolation', [d.device], `${d.guardDropped} foreign doc(s) reached the device (dropped by its pull guard)`));
  }
  return out;
}

/** No generated name, birth date, identifier, phone or address in any log. Names the log and the patient, never the value. */
export function checkLogs(f: Pick<Facts, 'logs' | 'phi'>): Violation[] {
  const out: Violation[] = [];
  for (const log of f.logs) {
    const hits = new Set<string>();
    for (const { value, patient } of f.phi) if (value.length >= 6 && log.text.includes(value)) hits.add(patient);
    if (hits.size) out.push(v('no-phi-in-logs', [log.name, ...hits], `PHI of ${hits.size} patient(s) in log ${log.name}`));
  }
  return out;
}

export function checkAll(f: Facts): Violation[] {
  return [
    ...checkTerminal(f),
    ...checkExpectedOutcome(f),
    ...checkServerEffects(f),
    ...checkEvents(f),
    ...checkOrder(f),
    ...checkTenantIsolation(f),
    ...checkLogs(f),
  ];
}
