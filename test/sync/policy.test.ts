import { expect } from 'chai';
import {
  HIGH,
  decideLocalWrite,
  decideMutationWrite,
  ownDocId,
  scopeChangesQuery,
  scopeRange,
  type Existing,
  type WriteDecision,
} from '../../gateway/sync/policy.ts';
import { createPendingEstimate } from '../../gateway/sync/quotas.ts';
import { createRateLimiter } from '../../gateway/edge/rate-limit.ts';
import { resolveSyncRoute } from '../../gateway/sync/routes.ts';
import { mutation } from './support.ts';

// The pure decisions of /sync, driven from case tables.

const ADA = { tenant: 'north', owner: 'ada' };
const MID = '0190f000-0000-7000-8000-000000000001';
const ID = `m:ada:${MID}`;
const REV = '1-0123456789abcdef0123456789abcdef';
const ABSENT: Existing = { kind: 'absent' };

describe('sync policy: ownDocId', function () {
  const cases: Array<[unknown, string | null]> = [
    [ID, ID],
    [`s:ada:${MID}`, `s:ada:${MID}`],
    [`m:ben:${MID}`, null],
    [`m:ad:${MID}`, null],
    [`m:adam:${MID}`, null],
    [`m:ada:${MID.toUpperCase()}`, null],
    [`m:ada:${MID}/x`, null],
    [`m:ada:../${MID}`, null],
    [`x:ada:${MID}`, null],
    ['_design/ferry', null],
    ['feed:head', null],
    [42, null],
    [null, null],
  ];
  for (const [raw, want] of cases) it(`${String(raw)} → ${want}`, () => expect(ownDocId(raw, 'ada')).to.equal(want));
});

describe('sync policy: decideMutationWrite', function () {
  const doc = mutation('ada', MID);
  const rep = { ...doc, _rev: REV, _revisions: { start: 1, ids: [REV.slice(2)] } };
  const present = (over: Partial<Extract<Existing, { kind: 'present' }>> = {}): Existing => ({ kind: 'present', rev: REV, deleted: false, doc: { ...doc, _rev: REV }, ...over });
  const cases: Array<[string, unknown, Existing, boolean, WriteDecision['kind'], string?]> = [
    ['new root, replication', rep, ABSENT, false, 'write'],
    ['new doc, interactive', doc, ABSENT, true, 'write'],
    ['identical re-push (replication)', rep, present(), false, 'noop'],
    ['identical re-push (interactive)', doc, present(), true, 'noop'],
    ['second root revision', { ...rep, _rev: '1-ffffffffffffffffffffffffffffffff', _revisions: undefined }, present(), false, 'forbidden', 'immutable'],
    ['same rev, other body', { ...rep, payload: { x: 1 } }, present(), false, 'forbidden', 'immutable'],
    ['later revision', { ...rep, _rev: '2-0123456789abcdef0123456789abcdef', _revisions: undefined }, present(), false, 'forbidden', 'immutable'],
    ['later revision on a new id', { ...rep, _rev: '2-0123456789abcdef0123456789abcdef', _revisions: undefined }, ABSENT, false, 'forbidden', 'badRev'],
    ['revisions history longer than one', { ...rep, _revisions: { start: 1, ids: ['a', 'b'] } }, ABSENT, false, 'forbidden', 'badRev'],
    ['interactive with a _rev', { ...doc, _rev: REV }, present(), true, 'forbidden', 'immutable'],
    ['tombstone', { _id: ID, _rev: REV, _deleted: true }, present(), false, 'forbidden', 'deleted'],
    ['attachment', { ...rep, _attachments: { a: { data: 'eA==' } } }, ABSENT, false, 'forbidden', 'attachments'],
    ['reserved field', { ...rep, _conflicts: [] }, ABSENT, false, 'forbidden', 'reservedField'],
    ['type status', { ...rep, type: 'status' }, ABSENT, false, 'forbidden', 'notMutation'],
    ['status id', { ...rep, _id: `s:ada:${MID}` }, ABSENT, false, 'forbidden', 'notMutation'],
    ['design doc', { _id: '_design/x', _rev: REV }, ABSENT, false, 'forbidden', 'notMutation'],
    ['foreign id', { ...rep, _id: `m:ben:${MID}` }, ABSENT, false, 'forbidden', 'notOwn'],
    ['owner mismatch', { ...rep, owner: 'ben' }, ABSENT, false, 'forbidden', 'ownerMismatch'],
    ['tenant mismatch', { ...rep, tenant: 'south' }, ABSENT, false, 'forbidden', 'ownerMismatch'],
    ['bad shape', { ...rep, seq: 'one' }, ABSENT, false, 'forbidden', 'shape'],
    ['too large', { ...rep, payload: { blob: 'x'.repeat(70_000) } }, ABSENT, false, 'forbidden', 'tooLarge'],
    ['not an object', 'm:ada', ABSENT, false, 'forbidden', 'shape'],
    ['re-push over a tombstone', rep, present({ deleted: true }), false, 'forbidden', 'immutable'],
  ];
  for (const [name, raw, existing, newEdits, kind, reason] of cases) {
    it(name, function () {
      const d = decideMutationWrite(raw, ADA, existing, newEdits);
      expect(d.kind).to.equal(kind);
      if (reason) expect((d as { reason: string }).reason).to.equal(reason);
    });
  }
});

describe('sync policy: scopeChangesQuery', function () {
  const ok = (q: Record<string, unknown>, body?: unknown) => {
    const d = scopeChangesQuery(q, body, 'ada');
    if (d.kind !== 'ok') throw new Error('expected ok');
    return d.request;
  };
  const bad = (q: Record<string, unknown>, body?: unknown) => expect(scopeChangesQuery(q, body, 'ada').kind).to.equal('bad-request');

  it('PouchDB’s pull query', () =>
    expect(ok({ style: 'all_docs', since: '12', limit: '100' })).to.include({ feed: 'normal', since: 12, limit: 100, includeDocs: false, docIds: null }));
  it('live pull: longpoll, heartbeat', () => expect(ok({ feed: 'longpoll', heartbeat: '10000', since: '0' })).to.include({ feed: 'longpoll', heartbeatMs: 10000, timeoutMs: 60000 }));
  it('replicator: continuous with timeout', () => expect(ok({ feed: 'continuous', timeout: '10000', since: '3' })).to.include({ feed: 'continuous', timeoutMs: 10000 }));
  it('since=now', () => expect(ok({ since: 'now' }).since).to.equal('now'));
  it('doc_ids are ANDed with own status ids', () =>
    expect(ok({ filter: '_doc_ids' }, { doc_ids: [`s:ada:${MID}`, `s:ben:${MID}`, ID, 'x'] }).docIds).to.deep.equal([`s:ada:${MID}`]));
  it('doc_ids in the query string', () => expect(ok({ filter: '_doc_ids', doc_ids: JSON.stringify([`s:ada:${MID}`]) }).docIds).to.deep.equal([`s:ada:${MID}`]));
  for (const [name, q, body] of [
    ['filter function', { filter: 'ddoc/f' }, undefined],
    ['_selector', { filter: '_selector' }, { selector: {} }],
    ['_view', { filter: '_view', view: 'ferry/feed' }, undefined],
    ['selector without filter', {}, { selector: {} }],
    ['doc_ids without filter', { doc_ids: '[]' }, undefined],
    ['since not a counter', { since: '1-abc' }, undefined],
    ['negative since', { since: '-1' }, undefined],
    ['bad feed', { feed: 'eventsource' }, undefined],
    ['bad limit', { limit: 'ten' }, undefined],
    ['bad style', { style: 'x' }, undefined],
    ['too many doc_ids', { filter: '_doc_ids' }, { doc_ids: Array.from({ length: 1001 }, () => 'x') }],
  ] as Array<[string, Record<string, unknown>, unknown]>) {
    it(`refuses ${name}`, () => bad(q, body));
  }
});

describe('sync policy: scopeRange (ANDed with m:ada: and s:ada:)', function () {
  const asc = (start?: string, end?: string, inclusiveEnd = true) => scopeRange({ start, end, descending: false, inclusiveEnd }, 'ada');
  it('no range → both prefixes', () =>
    expect(asc()).to.deep.equal([
      { lo: 'm:ada:', hi: `m:ada:${HIGH}`, hiInclusive: true },
      { lo: 's:ada:', hi: `s:ada:${HIGH}`, hiInclusive: true },
    ]));
  it('ben’s range → nothing', () => expect(asc('m:ben:', `m:ben:${HIGH}`)).to.deep.equal([]));
  it('prefix without colon (m:ad) → only m:ada: … inside it', () => expect(asc('m:ad', 'm:ad\uffff')).to.deep.equal([{ lo: 'm:ada:', hi: `m:ada:${HIGH}`, hiInclusive: true }]));
  it('narrow inside own', () => expect(asc(`m:ada:0`, `m:ada:5`, false)).to.deep.equal([{ lo: 'm:ada:0', hi: 'm:ada:5', hiInclusive: false }]));
  it('descending flips the bounds', () =>
    expect(scopeRange({ start: `s:ada:${HIGH}`, end: 's:ada:', descending: true, inclusiveEnd: true }, 'ada')).to.deep.equal([{ lo: 's:ada:', hi: `s:ada:${HIGH}`, hiInclusive: true }]));
  it('empty when start > end', () => expect(asc('s:', 'm:')).to.deep.equal([]));
});

describe('sync policy: decideLocalWrite', function () {
  const limits = { maxDocs: 2, maxBytes: 100 };
  const cases: Array<[string, string, unknown, number | null, number, string]> = [
    ['first write', 'cp', { a: 1 }, null, 0, 'write'],
    ['update with current rev', 'cp', { _rev: '0-3', a: 1 }, 3, 1, 'write'],
    ['stale rev', 'cp', { _rev: '0-2', a: 1 }, 3, 1, 'conflict'],
    ['missing rev on existing', 'cp', { a: 1 }, 3, 1, 'conflict'],
    ['body _id names another doc (trap 16)', 'cp', { _id: '_local/other' }, null, 0, 'bad-request'],
    ['body _id matches', 'cp', { _id: '_local/cp' }, null, 0, 'write'],
    ['reserved field', 'cp', { _deleted: true }, null, 0, 'bad-request'],
    ['bad id', 'a/b', { a: 1 }, null, 0, 'bad-request'],
    ['too many docs', 'new', { a: 1 }, null, 2, 'quota'],
    ['too large', 'cp', { a: 'x'.repeat(200) }, null, 0, 'quota'],
    ['not an object', 'cp', [1], null, 0, 'bad-request'],
  ];
  for (const [name, id, body, current, count, kind] of cases) {
    it(name, () => expect(decideLocalWrite(id, body, current, count, limits).kind).to.equal(kind));
  }
});

describe('sync routes: the allow-list', function () {
  const cases: Array<[string, string, string | null]> = [
    ['GET', '/', 'root'],
    ['GET', '/north', 'db'],
    ['GET', '/north/', 'db'],
    ['HEAD', '/north', 'db'],
    ['PUT', '/north', null],
    ['DELETE', '/north', null],
    ['POST', '/north', null],
    ['GET', '/north/_local/abc', 'local'],
    ['PUT', '/north/_local/abc', 'local'],
    ['GET', '/north/_local/..', null],
    ['GET', '/north/_local/a%2Fb', null],
    ['POST', '/north/_revs_diff', 'revs_diff'],
    ['GET', '/north/_revs_diff', null],
    ['POST', '/north/_bulk_docs', 'bulk_docs'],
    ['GET', '/north/_changes', 'changes'],
    ['POST', '/north/_changes', 'changes'],
    ['POST', '/north/_bulk_get', 'bulk_get'],
    ['GET', '/north/_all_docs', 'all_docs'],
    ['POST', '/north/_ensure_full_commit', 'ensure_full_commit'],
    ['GET', `/north/${encodeURIComponent(ID)}`, 'doc'],
    ['PUT', `/north/${encodeURIComponent(ID)}`, null],
    ['DELETE', `/north/${encodeURIComponent(ID)}`, null],
    ['GET', '/north/_design/ferry', null],
    ['GET', '/north/_security', null],
    ['GET', '/north/_find', null],
    ['GET', '/north/constructor', 'doc'],
    ['GET', '/north/a/b', null],
    ['GET', '/north/%E0%A4%A', null],
    ['GET', '/_all_dbs', null],
    ['GET', '/North', null],
    ['GET', '/../north', null],
  ];
  for (const [method, path, kind] of cases) {
    it(`${method} ${path} → ${kind ?? '404'}`, () => expect(resolveSyncRoute(path, method)?.kind ?? null).to.equal(kind));
  }
});

describe('sync quotas', function () {
  it('token bucket: burst, then Retry-After until refilled', function () {
    let t = 0;
    const limiter = createRateLimiter({ rate: 2, burst: 3 }, { now: () => t });
    expect([1, 2, 3].map(() => limiter.take('a').kind)).to.deep.equal(['allow', 'allow', 'allow']);
    expect(limiter.take('a')).to.include({ kind: 'limited', retryAfterSeconds: 1 });
    expect(limiter.take('b').kind).to.equal('allow');
    t = 500;
    expect(limiter.take('a').kind).to.equal('allow');
  });

  it('pending estimate counts exactly (the ledger) only near the limit or when stale', async function () {
    let t = 0;
    let asked = 0;
    let exact = 0;
    const est = createPendingEstimate({ max: 10, maxAgeMs: 1000, now: () => t });
    const ask = async () => {
      asked++;
      return exact;
    };
    expect(await est.reserve('k', 4, ask)).to.not.equal(null);
    expect(await est.reserve('k', 4, ask)).to.not.equal(null);
    expect(asked).to.equal(1);
    exact = 2; // the worker finished some
    expect(await est.reserve('k', 4, ask)).to.not.equal(null); // 8 + 4 > 10 → exact 2 + 4
    expect(asked).to.equal(2);
    exact = 9;
    t = 2000;
    expect(await est.reserve('k', 2, ask)).to.equal(null);
  });
});
