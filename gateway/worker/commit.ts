import type { TokenIssuer } from '../../identity/tokens.ts';
import type { MembershipDirectory } from '../tenant/membership.ts';
import type { CommitAnswer, CommitPlan } from './plan.ts';

// Calls the owning service on behalf of the mutation's owner (DESIGN §3 "Delegated calls"):
// roles from the membership directory at commit time, `Idempotency-Key` = mid. A round's commits
// go as one `POST /v1/batch` per module (services/registration/README.md): each item carries its
// owner's delegated token, and a chained item names the earlier item it `requires`.

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

/** The batch route every owning service offers beside its single-item routes. */
export const BATCH_PATH = '/v1/batch';

interface BatchItemAnswer {
  status?: unknown;
  body?: unknown;
  skipped?: unknown;
}

/** The answer for each commit, in order. A batch that fails as a whole answers every item as a network error. */
export async function commitBatch(deps: CommitDeps, tenant: string, commits: readonly CommitPlan[]): Promise<CommitAnswer[]> {
  const answers: CommitAnswer[] = commits.map(() => ({ kind: 'network-error' }));
  const byModule = new Map<string, number[]>();
  commits.forEach((c, i) => {
    const list = byModule.get(c.op.module);
    if (list) list.push(i);
    else byModule.set(c.op.module, [i]);
  });
  await Promise.all(
    [...byModule].map(async ([module, indexes]) => {
      const base = deps.services[module];
      // A module without a configured service is a deployment problem: try again later, lose nothing.
      if (!base) return;
      const position = new Map(indexes.map((ci, n) => [ci, n]));
      const tokens = new Map<string, string>();
      for (const ci of indexes) {
        const c = commits[ci]!;
        if (!tokens.has(c.owner)) tokens.set(c.owner, await delegatedToken(deps, tenant, c.owner, c.roles));
      }
      const items = indexes.map((ci) => {
        const c = commits[ci]!;
        const req = c.op.toRequest(c.mutation);
        const ifMatch = req.headers['if-match'];
        // A chain never crosses modules (an entity belongs to one); one that did would just not be chained.
        const requires = c.requires !== null ? position.get(c.requires) : undefined;
        return {
          method: req.method,
          path: req.path,
          idempotencyKey: c.mid,
          correlationId: c.mid,
          authorization: `Bearer ${tokens.get(c.owner)!}`,
          ...(ifMatch !== undefined ? { ifMatch } : {}),
          ...(requires !== undefined ? { requires } : {}),
          body: req.body,
        };
      });
      try {
        const res = await deps.fetch(`${base.replace(/\/$/, '')}${BATCH_PATH}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json', authorization: items[0]!.authorization },
          body: JSON.stringify({ items }),
          signal: AbortSignal.timeout(deps.timeoutMs),
        });
        const text = await res.text();
        if (res.status !== 200) return; // the batch as a whole did not run: every item is retried
        const parsed = JSON.parse(text) as { items?: unknown };
        if (!Array.isArray(parsed.items) || parsed.items.length !== items.length) return;
        (parsed.items as BatchItemAnswer[]).forEach((a, n) => {
          const ci = indexes[n]!;
          if (a.skipped === true) answers[ci] = { kind: 'skipped' };
          else if (typeof a.status === 'number') answers[ci] = { kind: 'response', status: a.status, body: a.body ?? null };
        });
      } catch {
        // network error, timeout or an unreadable answer: every item of this module is retried
      }
    }),
  );
  return answers;
}
