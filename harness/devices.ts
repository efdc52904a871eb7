// Simulated devices: the real client library (client/node.ts) on the memory adapter, each talking
// to the gateway through its own lane of the fault proxy. A device logs in with the dev identity
// provider, captures synthetic patients, goes offline and online, and can be handed an expired
// access token (minted with the platform's signing key) so that it must hit 401 and refresh.

import { NodePouch, openSession, switchTenant, localDbName, type OnlineSource, type Session, type SessionOptions, type TokenProvider, type MutationInfo } from '../client/node.ts';
import { createTokenIssuer, type TokenIssuer } from '../identity/tokens.ts';
import type { SigningKey } from '../identity/keys.ts';
import type { FinalState, MutationRecord } from './invariants.ts';

/** Low PBKDF2 cost: the harness exercises sync, not the keyring. */
const KDF_ITERATIONS = 1_000;

interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  user: { id: string };
}

export interface TokenStats {
  logins: number;
  refreshes: number;
  expiredHanded: number;
  /** Refreshes asked for while the device held an expired token: the 401 → refresh path ran. */
  refreshedAfterExpiry: number;
  /** A refresh token was refused (rotated away by a lost answer, or the gateway restarted mid-rotation): logged in again. */
  reLogins: number;
}

function claimsOf(token: string): { sub: string; tid: string; owner: string; roles: string[]; sid: string } {
  const part = token.split('.')[1] ?? '';
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as { sub: string; tid: string; owner: string; roles: string[]; sid: string };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The device's token provider: real `/auth/token` and `/auth/refresh` on the gateway (not through the proxy). */
export class DeviceTokens implements TokenProvider {
  private answer: TokenAnswer | null = null;
  private expired: string | null = null;
  constructor(
    private readonly gatewayUrl: string,
    private readonly user: { id: string; password: string },
    readonly tenant: string,
    private readonly pastIssuer: TokenIssuer,
    readonly stats: TokenStats,
    private readonly isStopping: () => boolean,
  ) {}

  get owner(): string {
    return this.answer?.user.id ?? this.user.id;
  }

  private async post(path: string, body: unknown): Promise<{ status: number; body: TokenAnswer | null }> {
    const res = await fetch(`${this.gatewayUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
    const text = await res.text();
    return { status: res.status, body: res.ok ? (JSON.parse(text) as TokenAnswer) : null };
  }

  /** Logs in, retrying while the gateway is down (it is killed during the run). */
  async login(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await this.post('/auth/token', { username: this.user.id, password: this.user.password, tenant: this.tenant });
        if (r.body) {
          this.answer = r.body;
          this.stats.logins++;
          return;
        }
        if (r.status === 401 || r.status === 403) throw new Error(`login refused (${r.status})`);
      } catch (err) {
        if (err instanceof Error && err.message.startsWith('login refused')) throw err;
      }
      if (this.isStopping() || attempt > 120) throw new Error('gateway unreachable for login');
      await sleep(Math.min(2_000, 200 * 2 ** Math.min(attempt, 4)));
    }
  }

  /** The next requests carry an access token that expired an hour ago, until the device refreshes. */
  async expireNow(): Promise<void> {
    if (!this.answer) return;
    const c = claimsOf(this.answer.access_token);
    this.expired = await this.pastIssuer.mintAccess({ sub: c.sub, tid: c.tid, owner: c.owner, roles: c.roles, sid: c.sid });
    this.stats.expiredHanded++;
  }

  async getToken(): Promise<string> {
    if (this.expired) return this.expired;
    if (!this.answer) await this.login();
    return this.answer!.access_token;
  }

  async refresh(): Promise<string> {
    if (this.expired) {
      this.stats.refreshedAfterExpiry++;
      this.expired = null;
    }
    this.stats.refreshes++;
    if (!this.answer) {
      await this.login();
      return this.answer!.access_token;
    }
    let r: { status: number; body: TokenAnswer | null };
    try {
      r = await this.post('/auth/refresh', { refresh_token: this.answer.refresh_token });
    } catch {
      // The gateway is down: the request fails, replication backs off and asks again.
      throw new Error('refresh: gateway unreachable');
    }
    if (r.body) {
      this.answer = r.body;
      return r.body.access_token;
    }
    if (r.status === 401) {
      this.stats.reLogins++;
      await this.login();
      return this.answer!.access_token;
    }
    throw new Error(`refresh answered ${r.status}`);
  }
}

/** Online/offline as the platform would report it; the harness flips it together with the proxy lane. */
class SimulatedNetwork implements OnlineSource {
  private listeners = new Set<(online: boolean) => void>();
  private up = true;
  online(): boolean {
    return this.up;
  }
  subscribe(listener: (online: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  set(online: boolean): void {
    if (online === this.up) return;
    this.up = online;
    for (const l of this.listeners) l(online);
  }
}

export interface DeviceDeps {
  name: string;
  user: { id: string; password: string };
  gatewayUrl: string;
  /** This device's lane through the fault proxy. */
  proxyUrl: string;
  setProxyOffline(offline: boolean): void;
  key: SigningKey;
  issuer: string;
  /** Half the devices are told about offline spells (browser events); the others find out by failing. */
  reportsOnline: boolean;
  records: Map<string, MutationRecord>;
  onChange(): void;
}

const TERMINAL = new Set(['committed', 'rejected', 'conflict']);

function finalOf(info: MutationInfo): { state: FinalState; code: string | null; version: number | null } {
  const s = info.state;
  switch (s.kind) {
    case 'committed': {
      const body = s.response?.body as { version?: unknown } | undefined;
      return { state: 'committed', code: null, version: typeof body?.version === 'number' ? body.version : null };
    }
    case 'rejected':
    case 'conflict':
      return { state: s.kind, code: s.code, version: null };
    default:
      return { state: s.kind, code: null, version: null };
  }
}

export class SimDevice {
  session: Session | null = null;
  readonly tokenStats: TokenStats = { logins: 0, refreshes: 0, expiredHanded: 0, refreshedAfterExpiry: 0, reLogins: 0 };
  /** Every tenant this device opened a store for (the switching device has two). */
  readonly tenantsOpened = new Set<string>();
  guardDropped = 0;
  private tokens: DeviceTokens | null = null;
  private readonly network = new SimulatedNetwork();
  private offlineDepth = 0;
  private forcedOffline = false;
  private stopping = false;
  private unsubscribe: Array<() => void> = [];
  private readonly pastIssuer: TokenIssuer;

  constructor(private readonly deps: DeviceDeps) {
    this.pastIssuer = createTokenIssuer({ key: deps.key, issuer: deps.issuer, now: () => Date.now() - 3600_000 });
  }

  get name(): string {
    return this.deps.name;
  }
  get owner(): string {
    return this.deps.user.id;
  }
  get tenant(): string {
    return this.session?.tenant ?? '';
  }

  private async sessionOptions(tenant: string): Promise<SessionOptions> {
    this.tokens = new DeviceTokens(this.deps.gatewayUrl, this.deps.user, tenant, this.pastIssuer, this.tokenStats, () => this.stopping);
    await this.tokens.login();
    return {
      gatewayUrl: this.deps.proxyUrl,
      tenant,
      owner: this.tokens.owner,
      passphrase: `harness passphrase for ${this.deps.name}`,
      tokens: this.tokens,
      PouchDB: NodePouch,
      adapter: 'memory',
      kdfIterations: KDF_ITERATIONS,
      backoff: { base: 250, cap: 4_000 },
      idleTimeoutMs: null,
      online: this.deps.reportsOnline ? this.network : null,
    };
  }

  private attach(session: Session): void {
    for (const u of this.unsubscribe) u();
    this.session = session;
    this.tenantsOpened.add(session.tenant);
    this.unsubscribe = [
      session.on('status', (info) => this.observe(session.tenant, info)),
      session.on('warning', (w) => {
        if (w.code === 'PULL_GUARD_DROPPED') this.guardDropped += w.count;
      }),
    ];
  }

  private observe(tenant: string, info: MutationInfo): void {
    const rec = this.deps.records.get(info.mid);
    if (!rec || rec.tenant !== tenant) return;
    const f = finalOf(info);
    rec.state = f.state;
    rec.code = f.code;
    rec.version = f.version;
    if (TERMINAL.has(f.state) && rec.terminalAt === null) rec.terminalAt = Date.now();
    this.deps.onChange();
  }

  async open(tenant: string): Promise<void> {
    const options = await this.sessionOptions(tenant);
    this.attach(await openSession(options));
  }

  /** Tears down this tenant's replication and opens the other tenant's store (DESIGN §7). */
  async switchTo(tenant: string): Promise<{ leftQueued: number }> {
    const current = this.session!;
    this.refreshRecords();
    const options = await this.sessionOptions(tenant);
    const { session, leftQueued } = await switchTenant(current, options);
    this.attach(session);
    return { leftQueued };
  }

  /** Captures a mutation and records it for the checks. Throws if the library refuses it (a harness bug). */
  async capture(op: 'patient.create' | 'patient.update', payload: Record<string, unknown>, target: { entity?: string; baseVersion?: number } = {}, expect: MutationRecord['expect'] = 'commit'): Promise<MutationRecord> {
    const session = this.session!;
    const capturedAt = Date.now();
    const r = await session.mutate(op, payload, target);
    if (!r.ok) throw new Error(`the client refused a harness mutation: ${r.code} ${r.errors.map((e) => e.path).join(',')}`);
    return this.record(session, r.mid, capturedAt, expect);
  }

  /** Resolves a version conflict by merging: the server's current record with this device's contact details. */
  async resolveByMerge(mid: string): Promise<MutationRecord> {
    const session = this.session!;
    const conflict = session.conflicts().find((c) => c.mid === mid);
    if (!conflict?.current) throw new Error(`no open version conflict for ${mid}`);
    const keep = ['givenName', 'familyName', 'birthDate', 'sex', 'identifiers', 'phone', 'facility', 'address'];
    const merged: Record<string, unknown> = {};
    for (const k of keep) if (conflict.current[k] !== undefined) merged[k] = conflict.current[k];
    merged.phone = conflict.mine.phone;
    merged.address = conflict.mine.address;
    const capturedAt = Date.now();
    const r = await session.resolve(mid, { kind: 'merge', payload: merged });
    if (!r.ok || !('mid' in r)) throw new Error(`merge refused: ${'code' in r ? r.code : 'unknown'}`);
    return this.record(session, r.mid, capturedAt, 'commit');
  }

  private record(session: Session, mid: string, capturedAt: number, expect: MutationRecord['expect']): MutationRecord {
    const info = session.mutation(mid)!;
    const rec: MutationRecord = {
      mid,
      device: this.deps.name,
      tenant: session.tenant,
      owner: session.owner,
      entity: info.entity,
      op: info.op as MutationRecord['op'],
      seq: info.seq,
      after: info.after,
      resolves: info.resolves,
      capturedAt,
      terminalAt: null,
      state: 'queued',
      code: null,
      version: null,
      expect,
    };
    this.deps.records.set(mid, rec);
    this.observe(session.tenant, info);
    return rec;
  }

  /** Copies the current session's view of every mutation into the records. */
  refreshRecords(): void {
    const s = this.session;
    if (!s || s.closed) return;
    for (const info of s.mutations()) this.observe(s.tenant, info);
  }

  state(mid: string): FinalState | null {
    return this.deps.records.get(mid)?.state ?? null;
  }

  /** Offline spells may overlap; the lane is offline while any is on, or while a scenario forces it. */
  spell(offline: boolean): void {
    this.offlineDepth = Math.max(0, this.offlineDepth + (offline ? 1 : -1));
    this.applyNetwork();
  }
  forceOffline(offline: boolean): void {
    this.forcedOffline = offline;
    this.applyNetwork();
  }
  allOnline(): void {
    this.offlineDepth = 0;
    this.forcedOffline = false;
    this.applyNetwork();
  }
  get offline(): boolean {
    return this.offlineDepth > 0 || this.forcedOffline;
  }
  private applyNetwork(): void {
    const offline = this.offlineDepth > 0 || this.forcedOffline;
    this.deps.setProxyOffline(offline);
    this.network.set(!offline);
  }

  expireToken(): Promise<void> {
    return this.tokens?.expireNow() ?? Promise.resolve();
  }

  /** Stops sync and closes the store (kept in memory), so the checks can read its raw ids. */
  async close(): Promise<void> {
    this.stopping = true;
    const s = this.session;
    if (!s || s.closed) return;
    this.refreshRecords();
    await s.sync.stop();
    await s.close({ confirm: true });
  }

  /** The raw `_id`s of this device's local database for `tenant` (ids are clear text; bodies stay encrypted). */
  async localIds(tenant: string): Promise<string[]> {
    const db = new NodePouch(await localDbName(tenant, this.owner), { adapter: 'memory' });
    try {
      const all = await db.allDocs();
      return all.rows.map((r) => r.id);
    } finally {
      await db.close();
    }
  }
}
