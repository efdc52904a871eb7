// Sign-in against the gateway's identity routes, the token provider the device library calls, and
// the little the app keeps between visits. PHI rules: localStorage holds only the last user's
// opaque id, user name, tenant ids, roles and facility ids (no patient data); sessionStorage holds
// the rotating refresh token (a credential, not PHI) so a reload in the same tab can sync again.

import type { TokenProvider } from '../../client/browser.ts';

const LAST_KEY = 'ferry.last';
const REFRESH_KEY = 'ferry.refresh';

export interface Membership {
  tenant: string;
  roles: string[];
  facilities: string[];
}

/** Who used this device last, in which tenant: what the unlock screen needs when offline. */
export interface Last {
  owner: string;
  username: string;
  tenant: string;
  memberships: Membership[];
}

interface TokenAnswer {
  access_token: string;
  refresh_token: string;
  user: { id: string; tenant: string; roles: string[] };
}

export function readLast(): Last | null {
  try {
    const v = JSON.parse(localStorage.getItem(LAST_KEY) ?? 'null') as Last | null;
    return v && typeof v.tenant === 'string' && typeof v.owner === 'string' && Array.isArray(v.memberships) ? v : null;
  } catch {
    return null;
  }
}

export function saveLast(last: Last | null): void {
  if (last) localStorage.setItem(LAST_KEY, JSON.stringify(last));
  else localStorage.removeItem(LAST_KEY);
}

export function membershipOf(last: Last | null): Membership | null {
  return last?.memberships.find((m) => m.tenant === last.tenant) ?? null;
}

/** Registration's write role (services/registration/access.ts): a viewer or an admin only reads. */
export function canRegister(m: Membership | null): boolean {
  return m?.roles.includes('registrar') ?? false;
}

export type SignInOutcome =
  | { ok: true; owner: string; tenant: string; roles: string[] }
  | { ok: false; reason: 'wrong' | 'not-member' | 'unreachable' | 'failed' };

/** Access token in memory, refresh token in sessionStorage, one refresh at a time. */
export class AppTokens implements TokenProvider {
  private access: string | null = null;
  private inflight: Promise<string> | null = null;
  /** Called when refresh says the user is no longer a member (403) or the session ended (401). */
  onEnded: ((reason: 'revoked' | 'expired') => void) | null = null;

  constructor(private readonly origin: string) {}

  get signedIn(): boolean {
    return this.access !== null || sessionStorage.getItem(REFRESH_KEY) !== null;
  }

  async signIn(username: string, password: string, tenant?: string): Promise<SignInOutcome> {
    let res: Response;
    try {
      res = await fetch(`${this.origin}/auth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(tenant ? { username, password, tenant } : { username, password }),
      });
    } catch {
      return { ok: false, reason: 'unreachable' };
    }
    if (res.status === 401) return { ok: false, reason: 'wrong' };
    if (res.status === 403) return { ok: false, reason: 'not-member' };
    if (!res.ok) return { ok: false, reason: 'failed' };
    const answer = (await res.json()) as TokenAnswer;
    this.adopt(answer);
    return { ok: true, owner: answer.user.id, tenant: answer.user.tenant, roles: answer.user.roles };
  }

  /** The signed-in user's tenants, roles and facilities (GET /auth/memberships). */
  async memberships(): Promise<Membership[]> {
    const res = await fetch(`${this.origin}/auth/memberships`, { headers: { authorization: `Bearer ${await this.getToken()}` } });
    if (!res.ok) throw new Error(`MEMBERSHIPS_${res.status}`);
    return ((await res.json()) as { memberships: Membership[] }).memberships;
  }

  private adopt(answer: TokenAnswer): void {
    this.access = answer.access_token;
    sessionStorage.setItem(REFRESH_KEY, answer.refresh_token);
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
    const res = await fetch(`${this.origin}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }) });
    if (res.status === 401 || res.status === 403) {
      this.forget();
      this.onEnded?.(res.status === 403 ? 'revoked' : 'expired');
    }
    if (!res.ok) throw new Error(`REFRESH_${res.status}`);
    const answer = (await res.json()) as TokenAnswer;
    this.adopt(answer);
    return answer.access_token;
  }

  /** Ends the server session of a token this tab no longer needs (a sign-in to pick a tenant). */
  async revokeCurrent(): Promise<void> {
    const token = this.revocationToken();
    this.forget();
    if (!token) return;
    await fetch(`${this.origin}/auth/revoke`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) }).catch(() => undefined);
  }

  forget(): void {
    this.access = null;
    sessionStorage.removeItem(REFRESH_KEY);
  }

  /** What sign-out revokes on the server: the refresh token ends the whole session. */
  revocationToken(): string | null {
    return sessionStorage.getItem(REFRESH_KEY) ?? this.access;
  }

  clear(): void {
    this.forget();
  }
}
