import { expect } from 'chai';
import { alreadyProjected, decideDocWrite, indexChangesOf, targetsOf, type IndexedRecord } from '../../gateway/replica/decide.ts';
import { decideRead, missingRevs } from '../../gateway/replica/policy.ts';
import { nameRevision, revOf, revisionsOf, tombstoneOf, tombstoneRevOf } from '../../gateway/replica/revisions.ts';
import { resolveReplicaRoute } from '../../gateway/replica/routes.ts';
import { formatPosition, parseSince, planFeed, positionAfter, scopeTag } from '../../gateway/replica/seq.ts';
import { recordIdRange } from '../../gateway/replica/read.ts';
import { parseRecordDoc, patientIdOfRecordDoc, recordDocOf } from '../../validators/record.ts';

// The replica's pure decisions, from case tables.

const P1 = 'pat_0190f000-0000-7000-8000-000000000001';
const P2 = 'pat_0190f000-0000-7000-8000-000000000002';
const key = { secret: 's'.repeat(64), tenant: 'north', patientId: P1 };

describe('replica: pure decisions', () => {
  describe('targetsOf (events → record versions)', () => {
    const ev = (patientId: string, version: number, extra: Record<string, unknown> = {}) => ({ v: 1, type: 'patient.updated', tenant: 'north', patientId, version, ...extra });
    const cases: Array<[string, unknown[], Array<[string, number]>]> = [
      ['one event', [ev(P1, 1)], [[P1, 1]]],
      ['duplicates collapse', [ev(P1, 2), ev(P1, 2)], [[P1, 2]]],
      ['the highest version wins, whatever the order', [ev(P1, 3), ev(P1, 1), ev(P1, 2)], [[P1, 3]]],
      ['records apart', [ev(P1, 1), ev(P2, 4)], [[P1, 1], [P2, 4]]],
      ['malformed payloads are left out', [null, 'x', ev('not-an-id', 1), ev(P1, 0), ev(P1, 1.5), ev(P1, 1, { type: 'other' }), ev(P1, 1, { tenant: 'BAD' })], []],
    ];
    for (const [what, input, want] of cases) {
      it(what, () => expect(targetsOf(input).map((t) => [t.patientId, t.version])).to.deep.equal(want));
    }
  });

  describe('alreadyProjected / decideDocWrite', () => {
    const cases: Array<[number | undefined, number, boolean]> = [
      [undefined, 1, false],
      [1, 2, false],
      [2, 2, true],
      [3, 2, true],
    ];
    for (const [indexed, incoming, skip] of cases) {
      it(`indexed ${indexed}, event ${incoming}: ${skip ? 'skip' : 'project'}`, () => {
        expect(alreadyProjected({ tenant: 'north', patientId: P1, version: incoming }, indexed)).to.equal(skip);
        expect(decideDocWrite(indexed ?? null, incoming)).to.equal(skip ? 'skip' : 'write');
      });
    }
  });

  describe('indexChangesOf', () => {
    const at = (facility: string, version: number, id = P1): IndexedRecord => ({ id, facility, version });
    const cases: Array<[string, IndexedRecord[], IndexedRecord[], Array<[string, number, string | null]>]> = [
      ['a new record', [], [at('a', 1)], [['a', 1, null]]],
      ['a newer version, same facility', [at('a', 1)], [at('a', 2)], [['a', 2, null]]],
      ['a move leaves a departure', [at('a', 1)], [at('b', 2)], [['b', 2, 'a']]],
      ['never back to an older version', [at('b', 3)], [at('a', 2)], []],
      ['the same version again is nothing', [at('a', 2)], [at('a', 2)], []],
    ];
    for (const [what, current, incoming, want] of cases) {
      it(what, () => {
        const got = indexChangesOf(new Map(current.map((r) => [r.id, r])), incoming);
        expect(got.map((c) => [c.facility, c.version, c.from])).to.deep.equal(want);
      });
    }
  });

  describe('revisions', () => {
    it('are fixed by (tenant, patient, version) and chain to every earlier version', () => {
      expect(revOf(key, 3)).to.equal(revOf({ ...key }, 3));
      expect(revOf(key, 3)).to.not.equal(revOf({ ...key, patientId: P2 }, 3));
      expect(revOf(key, 3)).to.not.equal(revOf({ ...key, secret: 't'.repeat(64) }, 3));
      const r = revisionsOf(key, 3);
      expect(r.start).to.equal(3);
      expect(r.ids.map((h, i) => `${3 - i}-${h}`)).to.deep.equal([revOf(key, 3), revOf(key, 2), revOf(key, 1)]);
    });
    it('a tombstone is a deleted child of its version', () => {
      const t = tombstoneOf(key, `r:patient:${P1}`, 2);
      expect(t._rev).to.equal(tombstoneRevOf(key, 2));
      expect(t._rev.startsWith('3-')).to.equal(true);
      expect(t._revisions.ids.slice(1)).to.deep.equal(revisionsOf(key, 2).ids);
    });
    const cases: Array<[string, string, number, string]> = [
      ['its own version', revOf(key, 2), 3, 'version'],
      ['a version not yet reached', revOf(key, 4), 3, 'unknown'],
      ['a tombstone of a version reached', tombstoneRevOf(key, 3), 3, 'tombstone'],
      ['another record\'s revision', revOf({ ...key, patientId: P2 }, 1), 3, 'unknown'],
      ['garbage', 'x', 3, 'unknown'],
    ];
    for (const [what, rev, current, kind] of cases) it(`nameRevision: ${what}`, () => expect(nameRevision(key, rev, current).kind).to.equal(kind));
  });

  describe('decideRead', () => {
    const cases: Array<[string, { version: number; inScope: boolean } | null, ReturnType<typeof nameRevision> | null, string]> = [
      ['unknown record', null, { kind: 'version', version: 1 }, 'missing'],
      ['in scope', { version: 2, inScope: true }, null, 'fetch'],
      ['in scope, a named tombstone', { version: 2, inScope: true }, { kind: 'tombstone', version: 1 }, 'tombstone'],
      ['out of scope, nothing named', { version: 2, inScope: false }, null, 'missing'],
      ['out of scope, an unknown rev', { version: 2, inScope: false }, { kind: 'unknown' }, 'missing'],
      ['out of scope, a version it held', { version: 2, inScope: false }, { kind: 'version', version: 1 }, 'tombstone'],
    ];
    for (const [what, record, named, kind] of cases) it(what, () => expect(decideRead(record, named).kind).to.equal(kind));
    it('_revs_diff: out of scope every rev is missing; in scope only unknown ones', () => {
      const name = (r: string) => nameRevision(key, r, 2);
      expect(missingRevs([revOf(key, 1), 'x'], false, name)).to.deep.equal([revOf(key, 1), 'x']);
      expect(missingRevs([revOf(key, 1), revOf(key, 3)], true, name)).to.deep.equal([revOf(key, 3)]);
    });
  });

  describe('positions', () => {
    const tag = scopeTag({ kind: 'facilities', facilities: ['a'] });
    const other = scopeTag({ kind: 'facilities', facilities: ['b'] });
    it('tags: the same scope, the same tag, whatever the order', () => {
      expect(scopeTag({ kind: 'facilities', facilities: ['b', 'a'] })).to.equal(scopeTag({ kind: 'facilities', facilities: ['a', 'b'] }));
      expect(scopeTag({ kind: 'all' })).to.not.equal(tag);
    });
    const parses: Array<[string | undefined, ReturnType<typeof parseSince>]> = [
      [undefined, { cursor: 0, base: 0, tag: null, catchUp: false }],
      ['0', { cursor: 0, base: 0, tag: null, catchUp: false }],
      ['now', 'now'],
      [`12-${tag}`, { cursor: 12, base: 12, tag, catchUp: false }],
      [`"12-${tag}"`, { cursor: 12, base: 12, tag, catchUp: false }],
      [`3-12-${tag}`, { cursor: 3, base: 12, tag, catchUp: true }],
      ['-1', null],
      ['12-xyz', null],
      [`1-2-3-${tag}`, null],
      ['abc', null],
    ];
    for (const [raw, want] of parses) it(`parseSince(${String(raw)})`, () => expect(parseSince(raw)).to.deep.equal(want));
    it('format is the inverse of parse', () => {
      for (const p of [{ cursor: 5, base: 5, tag, catchUp: false }, { cursor: 5, base: 5, tag, catchUp: true }, { cursor: 0, base: 9, tag, catchUp: true }]) {
        expect(parseSince(formatPosition(p))).to.deep.equal(p);
      }
    });
    const plans: Array<[string, Parameters<typeof planFeed>[0], ReturnType<typeof planFeed>]> = [
      ['no tag: the current scope', { cursor: 7, base: 7, tag: null, catchUp: false }, { kind: 'normal', after: 7 }],
      ['the current tag', { cursor: 7, base: 7, tag, catchUp: false }, { kind: 'normal', after: 7 }],
      ['another tag starts a catch-up from its beginning', { cursor: 7, base: 7, tag: other, catchUp: false }, { kind: 'catch-up', fromTag: other, base: 7, cursor: 0 }],
      ['a catch-up continues', { cursor: 3, base: 7, tag: other, catchUp: true }, { kind: 'catch-up', fromTag: other, base: 7, cursor: 3 }],
    ];
    for (const [what, pos, want] of plans) it(`planFeed: ${what}`, () => expect(planFeed(pos, tag)).to.deep.equal(want));
    it('positionAfter: a full catch-up page continues it; a short one ends it at max(reached, base) under the current tag', () => {
      const plan = { kind: 'catch-up', fromTag: other, base: 7, cursor: 0 } as const;
      expect(positionAfter(plan, tag, 3, true)).to.deep.equal({ cursor: 3, base: 7, tag: other, catchUp: true });
      expect(positionAfter(plan, tag, 3, false)).to.deep.equal({ cursor: 7, base: 7, tag, catchUp: false });
      expect(positionAfter(plan, tag, 9, false)).to.deep.equal({ cursor: 9, base: 9, tag, catchUp: false });
      expect(positionAfter({ kind: 'normal', after: 4 }, tag, null, false)).to.deep.equal({ cursor: 4, base: 4, tag, catchUp: false });
    });
  });

  describe('routes', () => {
    const cases: Array<[string, string, string | null]> = [
      ['GET', '/', 'root'],
      ['GET', '/north', 'db'],
      ['GET', '/north/', 'db'],
      ['PUT', '/north', null],
      ['POST', '/north', 'read-only'],
      ['POST', '/north/_bulk_docs', 'read-only'],
      ['GET', '/north/_bulk_docs', null],
      ['PUT', '/north/r:patient:x', 'read-only'],
      ['DELETE', '/north/r:patient:x', 'read-only'],
      ['GET', '/north/r:patient:x', 'doc'],
      ['GET', '/north/_changes', 'changes'],
      ['POST', '/north/_bulk_get', 'bulk_get'],
      ['POST', '/north/_revs_diff', 'revs_diff'],
      ['GET', '/north/_all_docs', 'all_docs'],
      ['PUT', '/north/_local/abc', 'local'],
      ['GET', '/north/_design/x', null],
      ['GET', '/north/_local/..', null],
      ['GET', '/north/a%2Fb', 'doc'],
      ['GET', '/north/a/b', null],
      ['GET', '/NORTH', null],
      ['DELETE', '/north', null],
    ];
    for (const [method, path, kind] of cases) it(`${method} ${path} → ${kind ?? '404'}`, () => expect(resolveReplicaRoute(path, method)?.kind ?? null).to.equal(kind));
  });

  describe('record docs and id ranges', () => {
    it('a record doc from a patient record parses back', () => {
      const data = { id: P1, tenant: 'north', version: 2, givenName: 'A', familyName: 'B', birthDate: '1990-01-01', sex: 'female' as const, facility: 'north-hc-1', createdAt: 'x', updatedAt: 'y' };
      const doc = recordDocOf(data);
      expect(doc).to.include({ _id: `r:patient:${P1}`, type: 'record', v: 1, resource: 'patient', version: 2, facility: 'north-hc-1', updatedAt: 'y' });
      expect(parseRecordDoc(doc).ok).to.equal(true);
      expect(parseRecordDoc({ ...doc, _id: 'r:patient:x' }).ok).to.equal(false);
      expect(patientIdOfRecordDoc(doc._id)).to.equal(P1);
      expect(patientIdOfRecordDoc(`s:x:${P1}`)).to.equal(null);
    });
    const ranges: Array<[string | undefined, string | undefined, boolean, ReturnType<typeof recordIdRange>]> = [
      [undefined, undefined, true, { lo: '', hi: '\uffff', hiInclusive: true }],
      ['r:patient:pat_1', 'r:patient:pat_2', false, { lo: 'pat_1', hi: 'pat_2', hiInclusive: false }],
      ['_design/', 'a', true, null],
      ['s', undefined, true, null],
    ];
    for (const [start, end, inc, want] of ranges) it(`recordIdRange(${String(start)}, ${String(end)})`, () => expect(recordIdRange(start, end, inc)).to.deep.equal(want));
  });
});
