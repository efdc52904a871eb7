// Who may reach the embedded server, decided as a pure function over plain data (STYLE 8) so it
// can be tested with a table. The server is loopback-only behind the gateway; these rules make
// sure that even a local caller gets nothing without a valid account (STACK-NOTES traps 4, 5).

export interface UserCtx {
  name: string | null;
  roles: string[];
}

export type AccessDecision = { kind: 'allow' } | { kind: 'deny'; status: 400 | 401 | 403 | 503; error: string; reason: string };

const ALLOW: AccessDecision = { kind: 'allow' };
const UNAUTHORIZED: AccessDecision = { kind: 'deny', status: 401, error: 'unauthorized', reason: 'Authentication required.' };
const ADMIN_ONLY: AccessDecision = { kind: 'deny', status: 403, error: 'forbidden', reason: 'Server admin only.' };

/** Server-level endpoints an authenticated non-admin may use; everything else under `/_` is admin-only. */
const NON_ADMIN_SERVER_PATHS = new Set(['', '_session', '_uuids']);

export interface RequestFacts {
  method: string;
  /** The raw request path, without the query string. */
  path: string;
  /** True if the request carries a Basic `Authorization` header or an `AuthSession` cookie. */
  hasCredentials: boolean;
}

/** Splits a raw path into decoded segments; null when the encoding is malformed. */
export function pathSegments(path: string): string[] | null {
  try {
    // Decode, then split again, so `%2F` inside a segment counts as a separator.
    return path
      .split('/')
      .map((s) => decodeURIComponent(s))
      .join('/')
      .split('/')
      .filter((s) => s !== '');
  } catch {
    return null;
  }
}

function isLogin(method: string, segments: string[]): boolean {
  return segments.length === 1 && segments[0] === '_session' && (method === 'POST' || method === 'DELETE');
}

/**
 * Before express-pouchdb sees the request: nothing without credentials passes, except a login
 * (`POST /_session` checks the password itself). This alone keeps upstream crash #374 (anonymous
 * `PUT /{db}`) out of reach.
 */
export function decideBeforeAuth(facts: RequestFacts): AccessDecision {
  const segments = pathSegments(facts.path);
  if (!segments) return { kind: 'deny', status: 400, error: 'bad_request', reason: 'Malformed path.' };
  if (facts.hasCredentials || isLogin(facts.method, segments)) return ALLOW;
  return UNAUTHORIZED;
}

/**
 * After express-pouchdb authenticated the request. `adminsConfigured` false means the server
 * would be in "admin party": then nothing is served at all. An anonymous session (no or bad
 * credentials) is refused, so admin party can never be reached even in principle. Non-admins only
 * get the root, their session, uuids, and databases (where `_security` and the VDU decide).
 */
export function decideAfterAuth(facts: Omit<RequestFacts, 'hasCredentials'>, userCtx: UserCtx, adminsConfigured: boolean): AccessDecision {
  if (!adminsConfigured) return { kind: 'deny', status: 503, error: 'service_unavailable', reason: 'Server is not configured.' };
  const segments = pathSegments(facts.path);
  if (!segments) return { kind: 'deny', status: 400, error: 'bad_request', reason: 'Malformed path.' };
  if (isLogin(facts.method, segments)) return ALLOW;
  if (!userCtx.name) return UNAUTHORIZED;
  if (userCtx.roles.includes('_admin')) return ALLOW;
  const first = segments[0] ?? '';
  if (first.startsWith('_')) return NON_ADMIN_SERVER_PATHS.has(first) ? ALLOW : ADMIN_ONLY;
  if (first === '') return ALLOW;
  // Creating or deleting a database is for server admins (as in CouchDB).
  if (segments.length === 1 && facts.method !== 'GET' && facts.method !== 'HEAD') return ADMIN_ONLY;
  // Design docs, `_security` and server-admin db endpoints are for admins; members keep the rest.
  const second = segments[1] ?? '';
  if (second === '_design' && facts.method !== 'GET' && facts.method !== 'HEAD' && !isViewQuery(segments)) return ADMIN_ONLY;
  if (second === '_security' && facts.method !== 'GET' && facts.method !== 'HEAD') return ADMIN_ONLY;
  if (['_compact', '_view_cleanup', '_purge', '_temp_view'].includes(second)) return ADMIN_ONLY;
  return ALLOW;
}

/** `POST /{db}/_design/{ddoc}/_view/{view}` (a view query with `keys`) is a read. */
function isViewQuery(segments: string[]): boolean {
  return segments.length === 5 && segments[1] === '_design' && segments[3] === '_view';
}
