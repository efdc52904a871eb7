// Inbox docs for the couchdb tests: valid by default, overridable field by field.

export const MID = '0190f000-0000-7000-8000-000000000001';
export const MID2 = '0190f000-0000-7000-8000-000000000002';

export type Doc = Record<string, unknown> & { _id: string };

export function mutationDoc(over: Record<string, unknown> = {}, owner = 'ada', mid = MID): Doc {
  return {
    _id: `m:${owner}:${mid}`,
    type: 'mutation',
    v: 1,
    tenant: 'north',
    owner,
    device: 'dev-3f9c',
    seq: 1,
    op: 'patient.create',
    entity: 'pat_0190f000-0000-7000-8000-0000000000aa',
    after: null,
    resolves: null,
    baseVersion: null,
    payload: { givenName: 'Amina' },
    createdAt: '2026-11-25T10:00:00.000Z',
    ...over,
  };
}

export function statusDoc(over: Record<string, unknown> = {}, owner = 'ada', mid = MID): Doc {
  return {
    _id: `s:${owner}:${mid}`,
    type: 'status',
    v: 1,
    tenant: 'north',
    owner,
    mutation: mid,
    state: 'waiting',
    code: null,
    attempts: 0,
    fence: 5,
    updatedAt: '2026-11-25T10:00:01.000Z',
    ...over,
  };
}

export function feedHead(over: Record<string, unknown> = {}): Doc {
  return { _id: 'feed:head', type: 'feed-head', counter: 10, fence: 5, ...over };
}
