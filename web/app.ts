// The clinician web app: sign in (dev IdP), unlock the encrypted store with a passphrase, register
// patients offline or online, watch every mutation's status, resolve conflicts, lock and wipe.
// Plain TypeScript and DOM on the device library (client/browser.ts); bundled by web/build.ts.
//
// PHI rules here: patient data lives only in the encrypted IndexedDB store (through the library)
// and on screen. It is never put in a URL, a log line, localStorage or sessionStorage.
// localStorage holds only the last tenant and the user's opaque owner id; sessionStorage holds the
// rotating refresh token (a credential, not PHI) so a reload in the same tab can sync again.

import { openBrowserSession, isPending, type Conflict, type MutationInfo, type Session, type SyncState, type TokenProvider } from '../client/browser.ts';
import { patientCreateSchema } from '../validators/patient.ts';
import { parseWith } from '../validators/issues.ts';
import type { FieldError } from '../validators/codes.ts';

const LAST_KEY = 'ferry.last';
const REFRESH_KEY = 'ferry.refresh';
const origin = location.origin;

interface Last {
  tenant: string;
  owner: string;
  username: string;
}

interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  user: { id: string; tenant: string; roles: string[] };
}

// ---------- small DOM helpers (textContent only: nothing is parsed as HTML) ----------

type Child = Node | string | null | undefined | false;
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}
function button(label: string, onClick: () => void | Promise<void>, attrs: Record<string, string> = {}): HTMLButtonElement {
  const b = h('button', { type: 'button', ...attrs }, label);
  b.addEventListener('click', () => void Promise.resolve(onClick()).catch(showFailure));
  return b;
}
function field(label: string, name: string, attrs: Record<string, string> = {}): HTMLLabelElement {
  return h('label', {}, label, h('input', { name, ...attrs }));
}
const root = document.getElementById('root')!;
function render(...children: Child[]): void {
  root.replaceChildren(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
}
function showFailure(err: unknown): void {
  // Error names and library codes only; never a message that could carry data.
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : err instanceof Error ? err.name : 'error';
  const box = document.getElementById('failure') ?? root.insertBefore(h('p', { id: 'failure', class: 'error', role: 'alert' }), root.firstChild);
  box.textContent = `Something went wrong (${code}).`;
}

// ---------- storage of non-PHI state ----------

function readLast(): Last | null {
  try {
    const v = JSON.parse(localStorage.getItem(LAST_KEY) ?? 'null') as Last | null;
    return v && typeof v.tenant === 'string' && typeof v.owner === 'string' ? v : null;
  } catch {
    return null;
  }
}

// ---------- tokens: dev IdP sign-in and single-flight refresh ----------

class AppTokens implements TokenProvider {
  private access: string | null = null;
  private inflight: Promise<string> | null = null;
  /** Called when the IdP says the user is no longer a member (refresh answers 403). */
  onRevoked: (() => void) | null = null;

  adopt(answer: TokenAnswer): void {
    this.access = answer.access_token;
    sessionStorage.setItem(REFRESH_KEY, answer.refresh_token);
  }

  get signedIn(): boolean {
    return this.access !== null || sessionStorage.getItem(REFRESH_KEY) !== null;
  }

  async getToken(): Promise<string> {
    return this.access ?? this.refresh();
  }

  refresh(): Promise<string> {
    // One refresh at a time: reusing a rotated refresh token would revoke the session.
    this.inflight ??= this.doRefresh().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async doRefresh(): Promise<string> {
    const refreshToken = sessionStorage.getItem(REFRESH_KEY);
    if (!refreshToken) throw new Error('SIGNED_OUT');
    const res = await fetch(`${origin}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }) });
    if (res.status === 403) this.onRevoked?.();
    if (res.status === 401 || res.status === 403) {
      this.forget();
      renderHeader();
    }
    if (!res.ok) throw new Error(`REFRESH_${res.status}`);
    const answer = (await res.json()) as TokenAnswer;
    this.adopt(answer);
    return answer.access_token;
  }

  forget(): void {
    this.access = null;
    sessionStorage.removeItem(REFRESH_KEY);
  }

  /** What sign-out revokes on the server (POST /auth/revoke): the refresh token ends the whole session. */
  revocationToken(): string | null {
    return sessionStorage.getItem(REFRESH_KEY) ?? this.access;
  }

  clear(): void {
    this.forget();
  }
}

const tokens = new AppTokens();
let session: Session | null = null;
let last: Last | null = readLast();
let syncState: SyncState = { kind: 'stopped' };
let unsubscribe: Array<() => void> = [];

// ---------- header: online/offline and sync state ----------

function renderHeader(): void {
  const net = document.getElementById('net')!;
  const online = navigator.onLine;
  net.dataset.state = online ? 'online' : 'offline';
  net.textContent = online ? 'online' : 'offline';
  const sync = document.getElementById('sync')!;
  sync.textContent = `sync: ${syncState.kind}${syncState.kind === 'backoff' ? ` (retry in ${Math.round(syncState.delayMs / 1000)} s)` : ''}${!tokens.signedIn && session ? ' · sign in to sync' : ''}`;
  sync.dataset.state = syncState.kind;
  document.getElementById('who')!.textContent = last ? `${last.username || last.owner} @ ${last.tenant}${session?.locked ? ' (locked)' : ''}` : '';
}
addEventListener('online', renderHeader);
addEventListener('offline', renderHeader);

// ---------- screens ----------

function signInScreen(message?: string): void {
  const form = h(
    'form',
    { class: 'grid', id: 'signin' },
    field('User', 'username', { autocomplete: 'username', required: '', value: last?.username ?? '' }),
    field('Password', 'password', { type: 'password', autocomplete: 'current-password', required: '' }),
    field('Tenant', 'tenant', { required: '', value: last?.tenant ?? 'north' }),
    h('button', { type: 'submit' }, 'Sign in'),
  );
  const error = h('p', { class: 'error', role: 'alert' }, message ?? '');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { username: String(data.get('username') ?? ''), password: String(data.get('password') ?? ''), tenant: String(data.get('tenant') ?? '') };
    void (async () => {
      const res = await fetch(`${origin}/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!res.ok) {
        error.textContent = res.status === 401 ? 'Wrong user or password.' : res.status === 403 ? 'You are not a member of that tenant.' : `Sign-in failed (${res.status}).`;
        return;
      }
      const answer = (await res.json()) as TokenAnswer;
      tokens.adopt(answer);
      last = { tenant: answer.user.tenant, owner: answer.user.id, username: body.username };
      localStorage.setItem(LAST_KEY, JSON.stringify(last));
      renderHeader();
      if (session && !session.closed && (session.tenant !== last.tenant || session.owner !== last.owner)) {
        // Another tenant or user: tear the old store's replication down first (its queue stays).
        await session.close({ confirm: true });
        session = null;
      }
      if (session && !session.closed && !session.locked) {
        session.sync.start();
        mainScreen();
      } else unlockScreen();
    })().catch(showFailure);
  });
  const offline = last ? h('p', { class: 'note' }, 'Offline? ', button('Unlock the local store without signing in', () => unlockScreen())) : null;
  render(h('section', {}, h('h2', {}, 'Sign in'), form, error, offline));
}

function unlockScreen(message?: string): void {
  if (!last) return signInScreen();
  const current = last;
  const form = h('form', { class: 'grid', id: 'unlock' }, field('Passphrase', 'passphrase', { type: 'password', autocomplete: 'off', required: '', minlength: '8' }), h('button', { type: 'submit' }, 'Unlock'));
  const error = h('p', { class: 'error', role: 'alert' }, message ?? '');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const passphrase = String(new FormData(form).get('passphrase') ?? '');
    void (async () => {
      error.textContent = 'Unlocking…';
      try {
        if (session && !session.closed) await session.unlock(passphrase);
        else {
          session = await openBrowserSession({ gatewayUrl: origin, tenant: current.tenant, owner: current.owner, passphrase, tokens, autoSync: tokens.signedIn });
          wire(session);
        }
      } catch (err) {
        error.textContent = (err as { code?: string }).code === 'WRONG_PASSPHRASE' ? 'Wrong passphrase.' : 'Could not open the local store.';
        return;
      }
      mainScreen();
    })().catch(showFailure);
  });
  render(
    h('section', {}, h('h2', {}, 'Unlock this device'), h('p', { class: 'note' }, 'Patient data on this device is encrypted; the passphrase unlocks it. A new store is created on first use.'), form, error),
    tokens.signedIn ? null : h('p', { class: 'note' }, 'Not signed in: changes are kept on this device until you ', button('sign in', () => signInScreen()), '.'),
  );
}

function wire(s: Session): void {
  for (const u of unsubscribe) u();
  unsubscribe = [
    s.on('status', () => scheduleRefresh()),
    s.on('conflict', () => scheduleRefresh()),
    s.on('sync', (state) => {
      syncState = state;
      renderHeader();
    }),
    s.on('lock', ({ locked }) => {
      renderHeader();
      if (locked) unlockScreen('Locked after inactivity or on request.');
    }),
  ];
  tokens.onRevoked = () => void s.membershipRevoked().then(scheduleRefresh, showFailure);
}
// Activity keeps the store unlocked (the library locks it after its idle timeout).
for (const type of ['pointerdown', 'keydown']) {
  addEventListener(type, () => (session && !session.locked && !session.closed ? session.touch() : undefined), { passive: true });
}

let refreshQueued = false;
function scheduleRefresh(): void {
  if (refreshQueued) return;
  refreshQueued = true;
  requestAnimationFrame(() => {
    refreshQueued = false;
    if (session && !session.locked && !session.closed && document.getElementById('main')) mainScreen();
  });
}

const SEXES = ['female', 'male', 'other', 'unknown'];

function registerForm(s: Session): HTMLElement {
  const sex = h('select', { name: 'sex' }, ...SEXES.map((v) => h('option', { value: v }, v)));
  const form = h(
    'form',
    { class: 'grid', id: 'register', autocomplete: 'off' },
    field('Given name', 'givenName', { required: '' }),
    field('Family name', 'familyName', { required: '' }),
    field('Birth date', 'birthDate', { type: 'date', required: '' }),
    h('label', {}, 'Sex', sex),
    field('Facility', 'facility', { required: '', value: `${s.tenant}-hc-1` }),
    field('Phone (optional)', 'phone'),
    field('National id (optional)', 'nationalId'),
    h('button', { type: 'submit' }, 'Register'),
  );
  const errors = h('ul', { class: 'error', id: 'register-errors' });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const d = new FormData(form);
    const text = (k: string) => String(d.get(k) ?? '').trim();
    const payload: Record<string, unknown> = { givenName: text('givenName'), familyName: text('familyName'), birthDate: text('birthDate'), sex: text('sex'), facility: text('facility') };
    if (text('phone')) payload.phone = text('phone');
    if (text('nationalId')) payload.identifiers = [{ system: 'national-id', value: text('nationalId') }];
    // The same zod schema the worker and the service use; the library checks again before queueing.
    const parsed = parseWith(patientCreateSchema, payload);
    if (!parsed.ok) return showErrors(errors, parsed.errors);
    void s.mutate('patient.create', parsed.value).then((r) => {
      if (!r.ok) return showErrors(errors, r.errors);
      form.reset();
      errors.replaceChildren();
      mainScreen();
    }, showFailure);
  });
  return h('section', {}, h('h2', {}, 'Register a patient'), form, errors);
}

function showErrors(list: HTMLElement, errors: FieldError[]): void {
  list.replaceChildren(...errors.map((e) => h('li', {}, `${e.path} ${e.message}`)));
}

function stateLabel(m: MutationInfo): string {
  const st = m.state;
  switch (st.kind) {
    case 'rejected':
      return `rejected${st.code ? ` · ${st.code}` : ''}${st.source === 'device' ? ' (device)' : ''}`;
    case 'conflict':
      return `conflict${st.code ? ` · ${st.code}` : ''}`;
    case 'waiting':
    case 'retrying':
      return `${st.kind} · attempt ${st.attempts}`;
    case 'discarded':
      return `discarded (was ${st.was})`;
    default:
      return st.kind;
  }
}

function patientsTable(s: Session): HTMLElement {
  const entities = [...new Set(s.mutations().map((m) => m.entity))];
  const rows = entities.map((id) => {
    const view = s.entity(id);
    const latest = view.history.at(-1)!;
    // A create that never reached the server (conflict, rejected) still shows what was captured.
    const rec = view.current ?? latest.payload;
    return h(
      'tr',
      { 'data-entity': id },
      h('td', {}, `${String(rec.givenName ?? '')} ${String(rec.familyName ?? '')}`),
      h('td', {}, String(rec.birthDate ?? '')),
      h('td', {}, view.confirmed ? `v${view.confirmed.version}` : 'not on server yet'),
      h('td', { class: `state state-${latest.state.kind}` }, stateLabel(latest)),
      h('td', {}, view.pending.length ? `${view.pending.length} pending` : ''),
    );
  });
  return h(
    'section',
    {},
    h('h2', {}, `Patients on this device (${entities.length})`),
    h('table', { id: 'patients' }, h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Birth date'), h('th', {}, 'Server'), h('th', {}, 'Last change'), h('th', {}, ''))), h('tbody', {}, ...rows)),
  );
}

function mutationsTable(s: Session): HTMLElement {
  const rows = s
    .mutations()
    .slice()
    .reverse()
    .map((m) => h('tr', { 'data-mid': m.mid, 'data-state': m.state.kind }, h('td', {}, String(m.seq)), h('td', {}, m.op), h('td', { title: m.entity }, `…${m.entity.slice(-8)}`), h('td', { class: `state state-${m.state.kind}` }, stateLabel(m)), h('td', {}, new Date(m.createdAt).toLocaleString())));
  return h(
    'section',
    {},
    h('h2', {}, 'Changes (outbox and statuses)'),
    h('table', { id: 'mutations' }, h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'Operation'), h('th', {}, 'Entity'), h('th', {}, 'Status'), h('th', {}, 'Captured'))), h('tbody', {}, ...rows)),
  );
}

const SYSTEM_FIELDS = ['id', 'tenant', 'version', 'createdAt', 'updatedAt'];
function demographics(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).filter(([k]) => !SYSTEM_FIELDS.includes(k)));
}
function pretty(record: Record<string, unknown> | null): string {
  return record ? JSON.stringify(demographics(record), null, 2) : '(not available)';
}

function conflictCard(s: Session, c: Conflict): HTMLElement {
  const result = h('p', { class: 'error' });
  const done = (r: { ok: boolean }) => {
    if (!r.ok) result.textContent = 'That resolution does not apply here.';
    else mainScreen();
  };
  const actions = h('div', { class: 'actions' });
  if (c.code === 'VERSION_CONFLICT' && c.current) {
    const current = c.current;
    // Module policy (registration): the server's record with this device's changes laid over it.
    actions.append(button('Merge (server record + my changes)', async () => done(await s.resolve(c.mid, { kind: 'merge', payload: { ...demographics(current), ...demographics(c.mine) } }))));
  }
  if (c.code === 'DUPLICATE_DETECTED') {
    const reason = h('input', { name: 'reason', placeholder: 'Why this is not a duplicate', minlength: '3' });
    actions.append(reason, button('Create anyway', async () => done(await s.resolve(c.mid, { kind: 'create-anyway', reason: reason.value.trim() }))));
  }
  actions.append(button('Discard my change', async () => done(await s.resolve(c.mid, { kind: 'discard' }))));
  return h(
    'section',
    { class: 'conflict', 'data-conflict': c.mid },
    h('h2', {}, `Conflict: ${c.code ?? 'unknown'} on ${c.op}`),
    h(
      'div',
      { class: 'cols' },
      h('div', {}, h('strong', {}, 'My change'), h('pre', {}, pretty(c.mine))),
      c.code === 'DUPLICATE_DETECTED'
        ? h('div', {}, h('strong', {}, 'Possible duplicates on the server'), h('ul', {}, ...c.candidates.map((id) => h('li', {}, id))))
        : h('div', {}, h('strong', {}, `Server version ${String(c.current?.version ?? '?')}`), h('pre', {}, pretty(c.current))),
    ),
    actions,
    result,
  );
}

function deviceControls(s: Session): HTMLElement {
  const message = h('p', { class: 'note', id: 'device-message' });
  // Sign-out and wipe both end the session on the server too (POST /auth/revoke), so a token
  // left on a lost or shared device stops working at once.
  const confirmIfUnsynced = async (what: 'wipe' | 'close'): Promise<void> => {
    const wipe = what === 'wipe';
    const first = await s.signOut({ wipe });
    if (!first.ok) {
      if (!confirm(`${first.unsynced} change(s) have not reached the server yet and will be lost from this device. ${wipe ? 'Wipe' : 'Sign out'} anyway?`)) {
        message.textContent = `Kept: ${first.unsynced} unsynced change(s).`;
        return;
      }
      await s.signOut({ wipe, confirm: true });
    }
    session = null;
    syncState = { kind: 'stopped' };
    tokens.forget();
    renderHeader();
    signInScreen(wipe ? 'The local store was wiped.' : 'Signed out.');
  };
  return h(
    'section',
    {},
    h('h2', {}, 'This device'),
    h(
      'div',
      { class: 'actions' },
      button('Sync now', () => (tokens.signedIn ? s.sync.start() : signInScreen()), { id: 'sync-now' }),
      button('Retry now', () => s.sync.kick()),
      button('Lock', () => s.lock(), { id: 'lock' }),
      button('Sign out', () => confirmIfUnsynced('close'), { id: 'signout' }),
      button('Wipe local data', () => confirmIfUnsynced('wipe'), { id: 'wipe' }),
    ),
    message,
  );
}

function mainScreen(): void {
  const s = session;
  if (!s || s.closed) return signInScreen();
  if (s.locked) return unlockScreen();
  const pending = s.mutations().filter((m) => isPending(m.state)).length;
  renderHeader();
  render(
    h('div', { id: 'main' }, h('p', { class: 'note', id: 'unsynced' }, `${pending} change(s) not yet confirmed by the server.`)),
    ...s.conflicts().map((c) => conflictCard(s, c)),
    registerForm(s),
    patientsTable(s),
    mutationsTable(s),
    deviceControls(s),
  );
}

// ---------- start ----------

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' }).catch(() => undefined);
}
renderHeader();
if (last) unlockScreen();
else signInScreen();
