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
}

export type CommitResult = { kind: 'answer'; answer: ServiceAnswer } | { kind: 'not-member' };

export async function commitMutation(deps: CommitDeps, tenant: string, owner: string, mid: string, m: MutationDoc, op: OpDefinition): Promise<CommitResult> {
  const roles = await deps.memberships.rolesOf(tenant, owner);
  if (roles === null) return { kind: 'not-member' };
  const base = deps.services[op.module];
  // A module without a configured service is a deployment problem: try again later, lose nothing.
  if (!base) return { kind: 'answer', answer: { kind: 'network-error' } };
  const token = await deps.issuer.mintDelegated({ sub: owner, owner, tid: tenant, roles });
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
