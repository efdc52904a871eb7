import { expect } from 'chai';
// espree (eslint's parser, installed with it) checks that the source is plain ES5.
import { parse } from 'espree';
import { ferryDesignDoc, sameDesign, VDU_MESSAGES } from '../../couchdb/design/index.ts';
import { feedHead, MID, MID2, mutationDoc, statusDoc, type Doc } from './fixtures.ts';

// The design doc's functions evaluated in-process: the same source text CouchDB runs. The HTTP
// tests in provision.test.ts check that the embedded server enforces it too.

type UserCtx = { name: string | null; roles: string[] };
type Vdu = (newDoc: Doc, oldDoc: Doc | null, userCtx: UserCtx, secObj: unknown) => void;

const design = ferryDesignDoc('north');
const vdu = new Function(`return (${design.validate_doc_update});`)() as Vdu;

const GATEWAY: UserCtx = { name: 'ferry-gateway', roles: ['ferry-gateway'] };
const WORKER: UserCtx = { name: 'ferry-worker', roles: ['ferry-worker'] };
const ADMIN: UserCtx = { name: 'ferry-admin', roles: ['_admin'] };
const OTHER: UserCtx = { name: 'someone', roles: ['registrar'] };

/** null when accepted, else the forbidden message. */
function run(user: UserCtx, newDoc: Doc, oldDoc: Doc | null = null): string | null {
  try {
    vdu(newDoc, oldDoc, user, {});
    return null;
  } catch (err) {
    const forbidden = (err as { forbidden?: string }).forbidden;
    if (typeof forbidden !== 'string') throw err;
    return forbidden;
  }
}

const M = VDU_MESSAGES;

describe('couchdb/design: validate_doc_update (in-process)', () => {
  it('is ES5 source (CouchDB runs it in its own engine)', () => {
    for (const src of [design.validate_doc_update, ...Object.values(design.views).map((v) => v.map)]) {
      expect(() => parse(`(${src})`, { ecmaVersion: 5 })).not.to.throw();
      expect(() => parse('(function () { var f = () => 1; })', { ecmaVersion: 5 })).to.throw();
    }
  });

  const cases: Array<[string, UserCtx, Doc, Doc | null, string | null]> = [
    // mutation docs
    ['m: from gateway', GATEWAY, mutationDoc(), null, null],
    ['m: from admin', ADMIN, mutationDoc(), null, null],
    ['m: from worker', WORKER, mutationDoc(), null, M.mutationRole],
    ['m: from another user', OTHER, mutationDoc(), null, M.mutationRole],
    ['m: with chained after/baseVersion', GATEWAY, mutationDoc({ after: MID2, resolves: MID2, baseVersion: 3 }), null, null],
    ['m: owner differs from id', GATEWAY, mutationDoc({ owner: 'ben' }), null, M.owner],
    ['m: other tenant', GATEWAY, mutationDoc({ tenant: 'south' }), null, M.tenant],
    ['m: wrong type', GATEWAY, mutationDoc({ type: 'status' }), null, M.mutationShape],
    ['m: wrong v', GATEWAY, mutationDoc({ v: 2 }), null, M.mutationShape],
    ['m: seq not an integer', GATEWAY, mutationDoc({ seq: '1' }), null, M.mutationShape],
    ['m: seq negative', GATEWAY, mutationDoc({ seq: -1 }), null, M.mutationShape],
    ['m: missing device', GATEWAY, mutationDoc({ device: undefined }), null, M.mutationShape],
    ['m: missing after', GATEWAY, mutationDoc({ after: undefined }), null, M.mutationShape],
    ['m: payload is an array', GATEWAY, mutationDoc({ payload: [] }), null, M.mutationShape],
    ['m: baseVersion fractional', GATEWAY, mutationDoc({ baseVersion: 1.5 }), null, M.mutationShape],
    ['m: createdAt missing', GATEWAY, mutationDoc({ createdAt: undefined }), null, M.mutationShape],
    ['m: attachments', GATEWAY, mutationDoc({ _attachments: { a: {} } }), null, M.attachments],
    ['m: identical rewrite', GATEWAY, mutationDoc({ _rev: '2-b' }), mutationDoc({ _rev: '1-a' }), null],
    ['m: changed rewrite', GATEWAY, mutationDoc({ seq: 2 }), mutationDoc(), M.mutationImmutable],
    ['m: added field', GATEWAY, mutationDoc({ extra: 1 }), mutationDoc(), M.mutationImmutable],
    ['m: changed payload', GATEWAY, mutationDoc({ payload: { givenName: 'X' } }), mutationDoc(), M.mutationImmutable],
    ['m: changed by admin', ADMIN, mutationDoc({ seq: 2 }), mutationDoc(), M.mutationImmutable],
    ['m: deletion', GATEWAY, { _id: mutationDoc()._id, _deleted: true }, mutationDoc(), M.mutationDeleted],
    ['m: deletion by admin', ADMIN, { _id: mutationDoc()._id, _deleted: true }, mutationDoc(), M.mutationDeleted],
    ['m: recreate over a deleted doc', GATEWAY, mutationDoc(), { _id: mutationDoc()._id, _deleted: true }, null],
    // status docs
    ['s: from worker', WORKER, statusDoc(), null, null],
    ['s: from admin', ADMIN, statusDoc(), null, null],
    ['s: from gateway', GATEWAY, statusDoc(), null, M.statusRole],
    ['s: owner differs from id', WORKER, statusDoc({ owner: 'ben' }), null, M.owner],
    ['s: other tenant', WORKER, statusDoc({ tenant: 'south' }), null, M.tenant],
    ['s: mutation differs from id', WORKER, statusDoc({ mutation: MID2 }), null, M.mutationRef],
    ['s: unknown state', WORKER, statusDoc({ state: 'done' }), null, M.statusShape],
    ['s: no fence', WORKER, statusDoc({ fence: undefined }), null, M.statusShape],
    ['s: fractional fence', WORKER, statusDoc({ fence: 1.5 }), null, M.statusShape],
    ['s: counter not an integer', WORKER, statusDoc({ counter: 'x' }), null, M.statusShape],
    ['s: errors not an array', WORKER, statusDoc({ errors: {} }), null, M.statusShape],
    ['s: full committed doc', WORKER, statusDoc({ state: 'committed', counter: 3, response: { status: 201, body: {} }, candidates: [], errors: [] }), null, null],
    ['s: update, same fence', WORKER, statusDoc({ state: 'committed' }), statusDoc(), null],
    ['s: update, higher fence', WORKER, statusDoc({ state: 'retrying', fence: 6 }), statusDoc(), null],
    ['s: update, lower fence', WORKER, statusDoc({ state: 'committed', fence: 4 }), statusDoc(), M.staleFence],
    ['s: terminal to terminal', WORKER, statusDoc({ state: 'rejected' }), statusDoc({ state: 'committed' }), null],
    ['s: terminal downgraded', WORKER, statusDoc({ state: 'retrying', fence: 9 }), statusDoc({ state: 'conflict' }), M.downgrade],
    ['s: deletion with fence', WORKER, { _id: statusDoc()._id, _deleted: true, fence: 5 }, statusDoc(), null],
    ['s: deletion without fence', WORKER, { _id: statusDoc()._id, _deleted: true }, statusDoc(), M.statusShape],
    ['s: deletion with stale fence', WORKER, { _id: statusDoc()._id, _deleted: true, fence: 4 }, statusDoc(), M.staleFence],
    ['s: deletion by gateway', GATEWAY, { _id: statusDoc()._id, _deleted: true, fence: 9 }, statusDoc(), M.statusRole],
    // feed head
    ['feed:head from worker', WORKER, feedHead(), null, null],
    ['feed:head from gateway', GATEWAY, feedHead(), null, M.feedRole],
    ['feed:head counter up', WORKER, feedHead({ counter: 11 }), feedHead(), null],
    ['feed:head counter down', WORKER, feedHead({ counter: 9 }), feedHead(), M.counterDecrease],
    ['feed:head fence down', WORKER, feedHead({ counter: 11, fence: 4 }), feedHead(), M.staleFence],
    ['feed:head wrong type', WORKER, feedHead({ type: 'status' }), null, M.feedShape],
    ['feed:head deleted', WORKER, { _id: 'feed:head', _deleted: true }, feedHead(), M.feedDeleted],
    // everything else
    ['plain id', ADMIN, { _id: 'hello' }, null, M.unknownId],
    ['m: id with bad uuid', GATEWAY, mutationDoc({ _id: 'm:ada:not-a-uuid' }), null, M.unknownId],
    ['m: id with bad owner', GATEWAY, mutationDoc({ _id: `m:a/b:${MID}`, owner: 'a/b' }), null, M.unknownId],
    ['x: prefix', WORKER, { _id: `x:ada:${MID}` }, null, M.unknownId],
  ];

  for (const [name, user, newDoc, oldDoc, expected] of cases) {
    it(`${name} → ${expected ?? 'accepted'}`, () => {
      expect(run(user, newDoc, oldDoc)).to.equal(expected);
    });
  }

  it('never echoes document values in its messages', () => {
    const secret = 'SECRET-VALUE-123';
    const docs = [mutationDoc({ owner: secret }), mutationDoc({ tenant: secret }), statusDoc({ state: secret }), { _id: secret }];
    for (const d of docs) expect(run(GATEWAY, d) ?? '').not.to.contain(secret);
  });

  it('bakes the tenant in per inbox', () => {
    const south = new Function(`return (${ferryDesignDoc('south').validate_doc_update});`)() as Vdu;
    expect(() => south(mutationDoc(), null, GATEWAY, {})).to.throw();
    expect(() => south(mutationDoc({ tenant: 'south' }), null, GATEWAY, {})).not.to.throw();
    expect(() => ferryDesignDoc('Bad')).to.throw('invalid tenant id');
  });

  it('compares design content ignoring _rev', () => {
    expect(sameDesign({ ...ferryDesignDoc('north'), _rev: '3-x' }, ferryDesignDoc('north'))).to.equal(true);
    expect(sameDesign(ferryDesignDoc('south') as unknown as Record<string, unknown>, ferryDesignDoc('north'))).to.equal(false);
  });
});

describe('couchdb/design: views (in-process)', () => {
  function mapRows(view: string, docs: Doc[]): Array<[unknown, unknown, string]> {
    const rows: Array<[unknown, unknown, string]> = [];
    let current = '';
    const emit = (k: unknown, v: unknown) => rows.push([k, v, current]);
    const map = new Function('emit', `return (${design.views[view]!.map});`)(emit) as (doc: Doc) => void;
    for (const d of docs) {
      current = d._id;
      map(d);
    }
    return rows;
  }

  const docs = [
    mutationDoc(),
    mutationDoc({ seq: 2, after: MID }, 'ada', MID2),
    statusDoc({ state: 'committed', counter: 7 }),
    statusDoc({ state: 'waiting', counter: 8 }, 'ada', MID2),
    statusDoc({ state: 'retrying' }, 'ben'),
    feedHead(),
  ];

  it('only by_entity: the feed and the pending quota are indexed in the platform database', () => {
    expect(Object.keys(design.views)).to.deep.equal(['by_entity']);
  });

  it('by_entity: [owner, entity, seq] → after', () => {
    const entity = mutationDoc().entity;
    expect(mapRows('by_entity', docs).map((r) => [r[0], r[1]])).to.deep.equal([
      [['ada', entity, 1], null],
      [['ada', entity, 2], MID],
    ]);
  });
});
