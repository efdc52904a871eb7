import type { Request, Response } from 'express';
import type { Caller } from '../sync/policy.ts';
import type { Inbox } from '../sync/upstream.ts';
import type { ReplicaScope } from '../tenant/scope.ts';
import type { RevisionKey } from './revisions.ts';
import type { ReplicaStore } from './store.ts';

// What every /replica handler gets: the caller, the scope decided for this very request (so a
// membership change reaches the next pull), the tenant's records database (as `ferry-gateway`,
// read only), the index, and the request.

export interface ReplicaContext {
  caller: Caller;
  scope: ReplicaScope;
  /** `scopeTag(scope)`, the tag the caller's positions carry. */
  tag: string;
  records: Inbox;
  store: ReplicaStore;
  /** The deployment's revision secret (revisions.ts). */
  secret: string;
  req: Request;
  res: Response;
  signal: AbortSignal;
}

export function revisionKey(ctx: Pick<ReplicaContext, 'secret' | 'caller'>, patientId: string): RevisionKey {
  return { secret: ctx.secret, tenant: ctx.caller.tenant, patientId };
}
