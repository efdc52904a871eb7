import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { patientCreateSchema, isCalendarDate, isNotInFuture } from '../../validators/patient.ts';
import { parseWith } from '../../validators/issues.ts';
import { findOp, manifestTable, MANIFESTS } from '../../validators/manifest.ts';
import { parseInboxDocId } from '../../validators/mutation.ts';

const valid = {
  givenName: 'Testa',
  familyName: 'Synthetica',
  birthDate: '1990-04-12',
  sex: 'female',
  identifiers: [{ system: 'national-id', value: 'SYN-000001' }],
  phone: '+2348000000000',
  facility: 'north-hc-1',
  address: { line: '1 Example Rd', city: 'Testville', country: 'NG' },
};

describe('validators', function () {
  describe('patient.create', function () {
    it('accepts the DESIGN §6 representation', function () {
      expect(parseWith(patientCreateSchema, valid).ok).to.equal(true);
      expect(parseWith(patientCreateSchema, { ...valid, confirmNotDuplicate: { reason: 'twins, checked ID cards' } }).ok).to.equal(true);
    });

    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['a date that does not exist', { birthDate: '1990-02-30' }, 'birthDate'],
      ['a date in the future', { birthDate: '2999-01-01' }, 'birthDate'],
      ['a non-FHIR sex code', { sex: 'F' }, 'sex'],
      ['a missing family name', { familyName: undefined }, 'familyName'],
      ['an unknown field', { nickname: 'Zed' }, '(root)'],
      ['a bad identifier', { identifiers: [{ system: '', value: 'x' }] }, 'identifiers.0.system'],
    ];
    for (const [what, patch, path] of cases) {
      it(`refuses ${what}, at path ${path}, without echoing the value`, function () {
        const input = { ...valid, ...patch };
        const result = parseWith(patientCreateSchema, input);
        expect(result.ok).to.equal(false);
        if (result.ok) return;
        expect(result.errors.map((e) => e.path)).to.include(path);
        const text = JSON.stringify(result.errors);
        for (const v of Object.values(patch)) if (typeof v === 'string') expect(text).to.not.include(v);
      });
    }

    it('judges calendar dates and the future', function () {
      expect(isCalendarDate('2024-02-29')).to.equal(true);
      expect(isCalendarDate('2023-02-29')).to.equal(false);
      expect(isCalendarDate('1990-4-12')).to.equal(false);
      const now = new Date('2026-11-25T12:00:00Z');
      expect(isNotInFuture('2026-11-25', now)).to.equal(true);
      expect(isNotInFuture('2026-11-26', now)).to.equal(true); // already today in UTC+14
      expect(isNotInFuture('2026-11-27', now)).to.equal(false);
    });
  });

  describe('module manifest', function () {
    it('maps each offline-capable workflow to an op with a request builder', function () {
      for (const m of MANIFESTS) {
        for (const w of m.workflows.filter((x) => x.capability === 'offline-capable')) {
          expect(findOp(w.op!), w.id).to.not.equal(undefined);
        }
      }
      const update = findOp('patient.update')!;
      const req = update.toRequest({ entity: 'pat_0190f000-0000-7000-8000-000000000001', payload: { a: 1 }, baseVersion: 3 });
      expect(req).to.deep.equal({
        method: 'PUT',
        path: '/v1/patients/pat_0190f000-0000-7000-8000-000000000001',
        headers: { 'if-match': '"3"' },
        body: { a: 1, baseVersion: 3 },
      });
      expect(findOp('patient.delete')).to.equal(undefined);
    });

    it('keeps docs/MODULES.md in step with the manifest', function () {
      const doc = readFileSync(new URL('../../docs/MODULES.md', import.meta.url), 'utf8');
      expect(doc).to.include(manifestTable());
    });
  });

  describe('inbox doc ids', function () {
    it('parses exactly m:/s: + owner + uuid', function () {
      expect(parseInboxDocId('m:ada:0190f000-0000-7000-8000-000000000001')).to.deep.equal({ kind: 'mutation', owner: 'ada', mid: '0190f000-0000-7000-8000-000000000001' });
      for (const bad of ['m:ada', 'm:ad:a:0190f000-0000-7000-8000-000000000001', 'x:ada:0190f000-0000-7000-8000-000000000001', 'm:ada:../0190f000-0000-7000-8000-0000000001', 'm:ada:0190f000-0000-7000-8000-000000000001/x', 'm:ada%2F:0190f000-0000-7000-8000-000000000001', 'm:ada:------------------------------------']) {
        expect(parseInboxDocId(bad), bad).to.equal(null);
      }
    });
  });
});
