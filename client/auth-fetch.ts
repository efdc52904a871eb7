// The transport PouchDB replicates through: adds the current bearer token, refreshes it once
// (single-flight) on a 401 and retries the very same request, so the same mutation ids go out
// again. Refuses to send with a token bound to another tenant or user, and reports a gateway 403
// TENANT_MISMATCH, so a queue bound to tenant A is never flushed with a tenant-B token.

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface TokenProvider {
  /** The current access token (the provider caches it; called before every request). */
  getToken(): Promise<string>;
  /** Get a new access token (e.g. `POST /auth/refresh`). Called at most once per expired token. */
  refresh(): Promise<string>;
  /** The current refresh token, which `session.signOut()` revokes on the server. Optional: without it the access token is sent. */
  revocationToken?(): string | null | Promise<string | null>;
  /** Forget every token held (called by `session.signOut()`). */
  clear?(): void | Promise<void>;
}

/** Where the mismatch was seen: the token's claims, the gateway's 403, or the app (membership gone). */
export type TenantMismatchSource = 'token-tenant' | 'token-owner' | 'server' | 'membership';

export interface AuthFetchOptions {
  fetch: FetchLike;
  tokens: TokenProvider;
  tenant: string;
  owner: string;
  onTenantMismatch?(source: TenantMismatchSource): void;
  /** true after any HTTP answer, false when the network failed. */
  onReachability?(reachable: boolean): void;
}

export interface AuthFetch extends FetchLike {
  /** Single-flight refresh, shared with the 401 path. */
  refreshAfter(failedToken: string | null): Promise<string>;
}

/** The unverified claims of a JWT, or null for an opaque token. The gateway verifies; this only stops mistakes early. */
export function peekClaims(token: string): { tid?: unknown; owner?: unknown } | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1]!.replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const claims: unknown = JSON.parse(json);
    return typeof claims === 'object' && claims !== null ? (claims as { tid?: unknown; owner?: unknown }) : null;
  } catch {
    return null;
  }
}

function tenantMismatchResponse(): Response {
  return new Response(JSON.stringify({ code: 'TENANT_MISMATCH', message: 'The access token belongs to another tenant or user; nothing was sent.' }), {
    status: 403,
    headers: { 'content-type': 'application/json' },
  });
}

export function createAuthFetch(opts: AuthFetchOptions): AuthFetch {
  let inflight: Promise<string> | null = null;
  let lastRefresh: { from: string | null; token: string } | null = null;

  function refreshAfter(failedToken: string | null): Promise<string> {
    if (inflight) return inflight;
    // Another request already refreshed past the token that failed here: reuse its result.
    if (lastRefresh && lastRefresh.from === failedToken) return Promise.resolve(lastRefresh.token);
    inflight = opts.tokens
      .refresh()
      .then((token) => {
        lastRefresh = { from: failedToken, token };
        return token;
      })
      .finally(() => {
        inflight = null;
      });
    return inflight;
  }

  function mismatch(token: string): TenantMismatchSource | null {
    const claims = peekClaims(token);
    if (!claims) return null;
    if (typeof claims.tid === 'string' && claims.tid !== opts.tenant) return 'token-tenant';
    if (typeof claims.owner === 'string' && claims.owner !== opts.owner) return 'token-owner';
    return null;
  }

  async function send(input: string | URL | Request, init: RequestInit | undefined, token: string): Promise<Response> {
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set('Authorization', `Bearer ${token}`);
    try {
      const res = await opts.fetch(input, { ...init, headers });
      opts.onReachability?.(true);
      return res;
    } catch (err) {
      if (!(err instanceof Error && err.name === 'AbortError')) opts.onReachability?.(false);
      throw err;
    }
  }

  const authFetch = async function authFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    let token = await opts.tokens.getToken();
    // A refresh that finished after this token was handed out wins.
    if (inflight) token = await inflight;
    else if (lastRefresh && lastRefresh.from === token) token = lastRefresh.token;
    const wrong = mismatch(token);
    if (wrong) {
      opts.onTenantMismatch?.(wrong);
      return tenantMismatchResponse();
    }
    let res = await send(input, init, token);
    if (res.status === 401) {
      const fresh = await refreshAfter(token);
      const wrongAfter = mismatch(fresh);
      if (wrongAfter) {
        opts.onTenantMismatch?.(wrongAfter);
        return tenantMismatchResponse();
      }
      res = await send(input, init, fresh);
    }
    if (res.status === 403) {
      const code = await res
        .clone()
        .json()
        .then((b: unknown) => (typeof b === 'object' && b !== null ? (b as { code?: unknown }).code : undefined))
        .catch(() => undefined);
      if (code === 'TENANT_MISMATCH') opts.onTenantMismatch?.('server');
    }
    return res;
  } as AuthFetch;
  authFetch.refreshAfter = refreshAfter;
  return authFetch;
}
