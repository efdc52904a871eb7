// Pure parts of the replica on the device, by case tables: name, identifier and birth-date
// matching, the base version with a replica record, the overlay of pending changes on a record,
// the pull guard's decisions, and duplicate candidates named from the replica.
import { expect } from 'chai';
import { compileQuery, matches, nameParts, normaliseIdentifier, searchTerms } from '../../client/records/patient-search.ts';
import { admitRecordDoc, parseRecordDoc, storedRecord } from '../../client/records/record-doc.ts';
import { entityView, nextBaseVersion, type MutationInfo, type MutationState } from '../../client/reconcile.ts';
import { chain } from '../../client/outbox.ts';
import { describeCandidates } from '../../client/conflicts.ts';
import { recordDoc } from './records-fixtures.ts';
import { noLongerServed, startsFromScratch } from '../../client/records/scope-sweep.ts';

const ENTITY = 'pat_0190f000-0000-7000-8000-0000000000aa';
const mid = (n: number) => `0190f000-0000-7000-8000-${String(n).padStart(12, '0')}`;
const queued: MutationState = { kind: 'queued' };
const committed = (version: number): MutationState => ({ kind: 'committed', response: { status: 200, body: { id: ENTITY, version } } });
const conflicted = (version: number): MutationState => ({ kind: 'conflict', code: 'VERSION_CONFLICT', current: { id: ENTITY, version }, candidates: [] });

function info(n: number, op: 'create' | 'update', state: MutationState, baseVersion: number | null, payload: Record<string, unknown> = {}): MutationInfo {
  return { mid: mid(n), entity: ENTITY, op: `patient.${op}`, seq: n, createdAt: '2026-01-01T00:00:00.000Z', after: null, resolves: null, baseVersion, payload, state, resolvedBy: null };
}

describe('client/records: matching', () => {
  it('splits names into normalised parts in any script', () => {
    const cases: [string, string[]][] = [
      ['José María', ['jose', 'maria']],
      ['NÚÑEZ-García', ['nunez', 'garcia']],
      ["O'Brien", ['o', 'brien']],
      ['مُحَمَّد', ['محمد']],
      ['عـبـد', ['عبد']], // tatweel
      ['שִׁירָה', ['שירה']],
      ['Ｆｕｌｌ', ['full']], // full-width, NFKD
      ['  ', []],
    ];
    for (const [text, parts] of cases) expect(nameParts(text), text).to.deep.equal(parts);
  });

  it('identifiers ignore case, spaces and dashes', () => {
    expect(normaliseIdentifier(' ng-4471 0093 ')).to.equal('ng44710093');
  });

  it('every criterion must hold; words begin name parts; identifiers match a beginning; birth date exact or year', () => {
    const terms = searchTerms({ id: ENTITY, givenName: 'Ngozi Ada', familyName: 'Okonkwo', birthDate: '1990-04-12', identifiers: [{ system: 'nin', value: 'AB-123' }] });
    const table: [Parameters<typeof compileQuery>[0], boolean][] = [
      [{ text: 'ngo' }, true],
      [{ text: 'ada okon' }, true],
      [{ text: 'gozi' }, false],
      [{ text: 'ngozi smith' }, false],
      [{ identifier: 'ab123' }, true],
      [{ identifier: 'AB-1' }, true],
      [{ identifier: '123' }, false],
      [{ birthDate: '1990' }, true],
      [{ birthDate: '1990-04-12' }, true],
      [{ birthDate: '1990-04-13' }, false],
      [{ birthDate: '1991' }, false],
      [{ text: 'ada', birthDate: '1990', identifier: 'ab' }, true],
      [{ text: 'ada', birthDate: '1989' }, false],
    ];
    for (const [q, want] of table) expect(matches(terms, compileQuery(q)!), JSON.stringify(q)).to.equal(want);
    expect(compileQuery({})).to.equal(null);
    expect(compileQuery({ text: ' - ' })).to.equal(null);
    expect(() => compileQuery({ birthDate: '12/04/1990' })).to.throw(/YYYY/);
  });
});

describe('client/records: base version with a replica record', () => {
  const cases: { name: string; earlier: MutationInfo[]; record: number | null; expected: number | null }[] = [
    { name: 'nothing known', earlier: [], record: null, expected: null },
    { name: 'a record registered elsewhere, nothing from this device', earlier: [], record: 4, expected: 4 },
    { name: 'pending update on the record: its base + 1', earlier: [info(1, 'update', queued, 4)], record: 4, expected: 5 },
    { name: 'the replica moved past this device’s commit (another device)', earlier: [info(1, 'update', committed(5), 4)], record: 7, expected: 7 },
    { name: 'this device’s commit is newer than a lagging replica', earlier: [info(1, 'update', committed(5), 4)], record: 4, expected: 5 },
    { name: 'a pending predecessor wins over the replica (its own chain)', earlier: [info(1, 'update', queued, 4)], record: 5, expected: 5 },
    { name: 'a conflict’s current against a newer replica', earlier: [info(1, 'update', conflicted(6), 4)], record: 8, expected: 8 },
    { name: 'a pending create with no record', earlier: [info(1, 'create', queued, null)], record: null, expected: 1 },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(nextBaseVersion(c.earlier, c.record)).to.equal(c.expected);
      const chained = chain({ kind: 'update', earlier: c.earlier, recordVersion: c.record });
      expect(chained).to.deep.equal(c.expected === null ? { ok: false, code: 'BASE_VERSION_UNKNOWN' } : { ok: true, after: c.earlier.some((m) => m.state.kind !== 'conflict') ? mid(1) : null, baseVersion: c.expected });
      expect(entityView(ENTITY, c.earlier, c.record === null ? null : parseRecordDoc(recordDoc({ id: ENTITY, version: c.record }), 'north')).baseVersion).to.equal(c.expected);
    });
  }
});

describe('client/records: overlay on a record', () => {
  const record = parseRecordDoc(recordDoc({ id: ENTITY, version: 3, patient: { givenName: 'Server', phone: '+2348000000001' } }), 'north')!;
  it('the record alone', () => {
    expect(entityView(ENTITY, [], record).current).to.include({ id: ENTITY, version: 3, givenName: 'Server', phone: '+2348000000001' });
  });
  it('pending payloads replace the demographics, the server fields stay', () => {
    const v = entityView(ENTITY, [info(1, 'update', queued, 3, { givenName: 'Mine', familyName: 'X', birthDate: '1990-01-01', sex: 'male', facility: 'north-hc-1' })], record);
    expect(v.current).to.include({ id: ENTITY, version: 3, givenName: 'Mine', createdAt: '2026-01-01T00:00:00.000Z' });
    expect(v.current).to.not.have.property('phone');
    expect(v.record).to.equal(record);
  });
  it('a commit answer newer than the replica is the base', () => {
    const v = entityView(ENTITY, [{ ...info(1, 'update', { kind: 'committed', response: { status: 200, body: { id: ENTITY, version: 4, givenName: 'Newer' } } }, 3) }], record);
    expect(v.current).to.include({ version: 4, givenName: 'Newer' });
  });
  it('a replica at least as new as the commit answer is the base', () => {
    const v = entityView(ENTITY, [{ ...info(1, 'update', { kind: 'committed', response: { status: 200, body: { id: ENTITY, version: 2, givenName: 'Older' } } }, 1) }], record);
    expect(v.current).to.include({ version: 3, givenName: 'Server' });
  });
});

describe('client/records: pull guard and stored records', () => {
  const admit = admitRecordDoc('north');
  it('admits this tenant’s record docs as they are', () => {
    const doc = { ...recordDoc(), _rev: '1-a', _revisions: { start: 1, ids: ['a'] } };
    expect(admit(doc)).to.equal(doc);
  });
  it('keeps a deletion as a bare tombstone', () => {
    const doc = { ...recordDoc(), _rev: '2-b', _deleted: true, _revisions: { start: 2, ids: ['b', 'a'] } };
    expect(admit(doc)).to.deep.equal({ _id: doc._id, _rev: '2-b', _deleted: true, _revisions: { start: 2, ids: ['b', 'a'] } });
  });
  it('drops other tenants, mismatched ids, other kinds of doc and junk', () => {
    const good = recordDoc();
    const drops: unknown[] = [
      recordDoc({ tenant: 'south' }),
      { ...good, _id: 'r:patient:pat_0190f000-0000-7000-8000-0000000000ff' },
      { ...good, data: { ...(good.data as object), tenant: 'south' } },
      { ...good, data: { ...(good.data as object), id: 'pat_0190f000-0000-7000-8000-0000000000ff' } },
      { ...good, type: 'status' },
      { _id: 's:ada:x', type: 'status' },
      { _id: 'r:patient:not-an-id', _deleted: true },
      null,
      'junk',
    ];
    for (const d of drops) expect(admit(d), JSON.stringify(d)).to.equal(null);
  });
  it('a stored record gets a structural check', () => {
    expect(storedRecord(recordDoc({ id: ENTITY }), 'north')).to.include({ id: ENTITY, version: 1 });
    expect(storedRecord(recordDoc({ id: ENTITY }), 'south')).to.equal(null);
    expect(storedRecord({ ...recordDoc({ id: ENTITY }), data: null }, 'north')).to.equal(null);
  });
});

describe('client/records: duplicate candidates', () => {
  it('names in-scope candidates from the replica, and only ids otherwise', () => {
    const record = parseRecordDoc(recordDoc({ id: ENTITY, version: 2, patient: { givenName: 'Halima', familyName: 'Yusuf', birthDate: '1988-08-08' } }), 'north')!;
    const other = 'pat_0190f000-0000-7000-8000-0000000000bb';
    expect(describeCandidates([ENTITY, other], (id) => (id === ENTITY ? record : null))).to.deep.equal([
      { id: ENTITY, inScope: true, givenName: 'Halima', familyName: 'Yusuf', birthDate: '1988-08-08', facility: 'north-hc-1', version: 2 },
      { id: other, inScope: false, givenName: null, familyName: null, birthDate: null, facility: null, version: null },
    ]);
  });
});

describe('client/records: the scope sweep after a pull from the beginning', () => {
  const cases: Array<[string, boolean]> = [
    ['http://gw/replica/north/_changes?style=all_docs&since=0&limit=500', true],
    ['http://gw/replica/north/_changes?feed=longpoll&limit=500', true],
    ['http://gw/replica/north/_changes?since=12-ab12cd34ef56&limit=500', false],
    ['http://gw/replica/north/_changes?since=now', false],
    ['http://gw/replica/north/_bulk_get?revs=true', false],
    ['http://gw/replica/north/_local/abc', false],
    ['/replica/north/_changes?since=0', true],
  ];
  for (const [url, expected] of cases) {
    it(`${url} ${expected ? 'starts' : 'does not start'} from the beginning`, () => {
      expect(startsFromScratch(url)).to.equal(expected);
    });
  }
  it('drops what the endpoint does not serve (not found, deleted) and keeps what it serves', () => {
    expect(
      noLongerServed([
        { key: 'r:patient:a', value: { deleted: false } },
        { key: 'r:patient:b', error: 'not_found' },
        { key: 'r:patient:c', value: { deleted: true } },
        { key: 'r:patient:d', value: {} },
      ]),
    ).to.deep.equal(['r:patient:b', 'r:patient:c']);
    expect(noLongerServed([])).to.deep.equal([]);
  });
});
