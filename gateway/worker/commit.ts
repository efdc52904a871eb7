import type { TokenIssuer } from '../../identity/tokens.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';
import type { MutationDoc } from '../../validators/mutation.ts';
import type { OpDefinition } from '../../validators/manifest.ts';
import type { ServiceAnswer } from './outcome.ts';

// Calls the owning service on behalf of the mutation's owner (DESIGN §3 "Delegated calls"):
// roles from the membership directory at commit time, `Idempotency-Key` = mid.

export interface CommitDeps {
  /** Base URL per module, e.g. `{ registration: 'http://127.0.0.1:8081' }`. */
  services: Readonly<Record<string, string>>;
  issuer: TokenIssuer;
  memberships: MembershipDirectory;
  fetch: typeof fetch;
  timeoutMs: number;
  /** Delegated tokens reused while well inside their lifetime, per (tenant, owner, roles). */
  tokenCache?: Map<string, { token: string; until: number }>;
}

/** How long a minted delegated token is reused; it lives 120 s by default. */
const TOKEN_REUSE_MS = 30_000;

async function delegatedToken(deps: CommitDeps, tenant: string, owner: string, roles: readonly string[]): Promise<string> {
  const key = `${tenant}|${owner}|${[...roles].sort().join(',')}`;
  const hit = deps.tokenCache?.get(key);
  if (hit && hit.until > Date.now()) return hit.token;
  const token = await deps.issuer.mintDelegated({ sub: owner, owner, tid: tenant, roles });
  if (deps.tokenCache) {
    if (deps.tokenCache.size > 10_000) deps.tokenCache.clear();
    deps.tokenCache.set(key, { token, until: Date.now() + TOKEN_REUSE_MS });
  }
  return token;
}

export type CommitResult = { kind: 'answer'; answer: ServiceAnswer } | { kind: 'not-member' };

export async function commitMutation(deps: CommitDeps, tenant: string, owner: string, mid: string, m: MutationDoc, op: OpDefinition): Promise<CommitResult> {
  const roles = await deps.memberships.rolesOf(tenant, owner);
  if (roles === null) return { kind: 'not-member' };
  const base = deps.services[op.module];
  // A module without a configured service is a deployment problem: try again later, lose nothing.
  if (!base) return { kind: 'answer', answer: { kind: 'network-error' } };
  // Roles are read at commit time, every time; only the signature over them is reused.
  const token = await delegatedToken(deps, tenant, owner, roles);
  const req = op.toRequest(m);
  try {
    const res = await deps.fetch(`${base.replace(/\/$/, '')}${req.path}`, {
      method: req.method,
      headers: {
        ...req.headers,
        'content-type': 'application/json',
        accept: 'application/json',
        'idempotency-key': mid,
        authorization: `Bearer ${token}`,
        'x-correlation-id': mid,
      },
      body: JSON.stringify(req.body),
      signal: AbortSignal.timeout(deps.timeoutMs),
    });
    const text = await res.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    return { kind: 'answer', answer: { kind: 'response', status: res.status, body } };
  } catch {
    return { kind: 'answer', answer: { kind: 'network-error' } };
  }
}
