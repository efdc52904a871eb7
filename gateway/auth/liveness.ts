import { FerryError } from '../../validators/codes.ts';
import type { AccessClaims } from '../../validators/identity.ts';
import type { Queryable } from '../../sql/database.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';

// Revocation that bites: an access token is a signed JWT that lives 5 minutes, so on its own it
// would outlive a revoked session, a removed membership or a changed role by that long. Every
// request on /sync and /v1 therefore also asks the platform database whether the token's session
// is still open and which roles its user holds in the tenant now. The answer is cached per session
// for a short TTL (2 s by default), so a busy device costs one query per TTL, not one per request;
// a change this process makes drops the cached answer at once, a change made elsewhere (another
// gateway, the `ferry` CLI) is seen within the TTL.

export const DEFAULT_SESSION_CHECK_TTL_MS = 2_000;

/** What the platform database says about a token's session and its user, right now. */
export interface LiveState {
  /** The refresh session behind the token is open (not revoked, not expired) and is this user's in this tenant. */
  sessionActive: boolean;
  /** The user's roles in the tenant; null when not a member. */
  roles: readonly string[] | null;
}

export type LiveDecision = { kind: 'live'; roles: readonly string[] } | { kind: 'revoked' } | { kind: 'not-member' };

/** Session first: a revoked session is 401 whatever the membership says, so the device signs in again. */
export function decideLiveness(state: LiveState): LiveDecision {
  if (!state.sessionActive) return { kind: 'revoked' };
  if (!state.roles) return { kind: 'not-member' };
  return { kind: 'live', roles: state.roles };
}

/** The three claims the check needs; `tid` and `owner` come from the verified token. */
export type LiveKey = Pick<AccessClaims, 'sid' | 'tid' | 'owner'>;

export type LiveLoader = (key: LiveKey) => Promise<LiveState>;

export interface Liveness {
  /**
   * The caller's live roles in the token's tenant. Throws `UNAUTHENTICATED` (401, the code of any
   * invalid or expired token) when the session is gone, and `TENANT_MISMATCH` (403, what any
   * non-member gets, so removal is no oracle) when the user is no longer a member.
   */
  check(claims: LiveKey): Promise<readonly string[]>;
  /** This process revoked the session: forget what was cached for it. */
  sessionRevoked(sid: string): void;
  /** This process changed or removed a membership: forget the user's cached answers in that tenant. */
  membershipChanged(tenant: string, userId: string): void;
  readonly ttlMs: number;
}

export interface LivenessOptions {
  load: LiveLoader;
  /** How long an answer is trusted; `FERRY_SESSION_CHECK_TTL_MS`. */
  ttlMs?: number;
  /** Most sessions remembered; the oldest is forgotten first. */
  maxEntries?: number;
  now?: () => number;
}

interface Entry {
  tenant: string;
  owner: string;
  /** Until it settles, concurrent requests of one session share the one lookup. */
  decision: Promise<LiveDecision>;
  /** Past this the answer is loaded again; infinite while the lookup is in flight. */
  freshUntil: number;
}

/**
 * The cache is keyed by `sid`: a session belongs to exactly one user in one tenant, so sid alone
 * names the (session, tenant, user) the answer is about; the entry also records tenant and owner
 * and is only used for the same pair.
 */
export function createLiveness(opts: LivenessOptions): Liveness {
  const ttlMs = opts.ttlMs ?? DEFAULT_SESSION_CHECK_TTL_MS;
  const maxEntries = opts.maxEntries ?? 50_000;
  const now = opts.now ?? (() => Date.now());
  // An invalidation deletes the entry, in flight or not: a lookup that began before it answers only
  // the requests already waiting on it and never refills the cache.
  const cache = new Map<string, Entry>();

  function lookup(key: LiveKey): Promise<LiveDecision> {
    const hit = cache.get(key.sid);
    if (hit && hit.tenant === key.tid && hit.owner === key.owner && now() < hit.freshUntil) return hit.decision;
    if (hit) cache.delete(key.sid);
    const entry: Entry = {
      tenant: key.tid,
      owner: key.owner,
      decision: opts.load(key).then(decideLiveness),
      freshUntil: Number.POSITIVE_INFINITY,
    };
    cache.set(key.sid, entry);
    if (cache.size > maxEntries) cache.delete(cache.keys().next().value!);
    entry.decision.then(
      () => {
        entry.freshUntil = now() + ttlMs;
      },
      () => {
        // A failed lookup (database down) is not remembered: the next request asks again.
        if (cache.get(key.sid) === entry) cache.delete(key.sid);
      },
    );
    return entry.decision;
  }

  return {
    ttlMs,
    async check(claims) {
      let decision: LiveDecision;
      try {
        decision = await lookup(claims);
      } catch {
        // Fail closed, but as "retry later": the token may well be fine.
        throw new FerryError('UNAVAILABLE');
      }
      if (decision.kind === 'revoked') throw new FerryError('UNAUTHENTICATED');
      if (decision.kind === 'not-member') throw new FerryError('TENANT_MISMATCH');
      return decision.roles;
    },
    sessionRevoked(sid) {
      cache.delete(sid);
    },
    membershipChanged(tenant, userId) {
      for (const [sid, entry] of cache) if (entry.tenant === tenant && entry.owner === userId) cache.delete(sid);
    },
  };
}

/**
 * One query per cache miss: is the session open and this user's in this tenant, and which roles
 * does the user hold there. A sid that names no session at all (or someone else's) is not active.
 */
export function platformLiveLoader(db: Queryable): LiveLoader {
  return async function loadLiveState(key) {
    const { rows } = await db.query<{ active: boolean; roles: string[] | null }>(
      `SELECT EXISTS (SELECT 1 FROM refresh_sessions s
                       WHERE s.sid = $1 AND s.user_id = $2 AND s.tenant_id = $3
                         AND s.revoked_at IS NULL AND s.expires_at > now()) AS active,
              (SELECT m.roles FROM memberships m WHERE m.tenant_id = $3 AND m.user_id = $2) AS roles`,
      [key.sid, key.owner, key.tid],
    );
    const row = rows[0];
    return { sessionActive: row?.active === true, roles: row?.roles ?? null };
  };
}

/** The membership directory, telling `liveness` about every change it writes, so this process sees it at once. */
export function invalidatingMemberships(inner: MembershipDirectory, liveness: Pick<Liveness, 'membershipChanged'>): MembershipDirectory {
  return {
    ...inner,
    // Every argument passed on, so a parameter added to `set` (facilities) is never dropped here.
    async set(...args) {
      await inner.set(...args);
      liveness.membershipChanged(args[0], args[1]);
    },
    async remove(tenant, userId) {
      await inner.remove(tenant, userId);
      liveness.membershipChanged(tenant, userId);
    },
  };
}
