// The Ferry device library, runtime-neutral core. Storage adapters are passed in: use `node.ts`
// (memory, leveldb) or `browser.ts` (IndexedDB) for a ready-made PouchDB.

export { openSession, switchTenant } from './session.ts';
export type { Session, SessionOptions, SessionEvents, MutateResult, MutateOptions, CloseResult, ResolveResult, SignOutResult } from './session.ts';
export { revokeOnServer } from './sign-out.ts';
export type { TokenProvider, FetchLike, TenantMismatchSource } from './auth-fetch.ts';
export { createAuthFetch, peekClaims } from './auth-fetch.ts';
export type { SyncState, SyncOnceResult, Scheduler, OnlineSource } from './sync.ts';
export { ConnectionLoop, browserOnlineSource, realScheduler } from './sync.ts';
export { nextDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.ts';
export type { MutationInfo, MutationState, EntityView, PatientView } from './reconcile.ts';
export { entityView, mutationState, isPending, hasFailed, nextBaseVersion } from './reconcile.ts';
export { chain, buildMutationDoc } from './outbox.ts';
export { planResolution, toConflict, describeCandidates, type Conflict, type DuplicateCandidate, type Resolution, type ResolutionPlan } from './conflicts.ts';
export type { RecordsControls, RecordsState } from './records/replica.ts';
export type { ReplicaRecord } from './records/record-doc.ts';
export type { PatientHit, PatientQuery } from './records/patient-search.ts';
export { normaliseText, nameParts } from './records/patient-search.ts';
export type { Patient } from '../validators/patient.ts';
export type { Draft, DraftInput } from './drafts.ts';
export { ClientError, isClientError, type ClientErrorCode } from './errors.ts';
export { localDbName } from './store.ts';
