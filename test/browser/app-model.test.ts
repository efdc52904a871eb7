// The clinician app's pure rules, without a browser: the three-way merge, the form's checks and
// plain-language messages, the state indicator, the search box's queries, the catalogue, the shell's routes.

import { expect } from 'chai';
import { mergedPayload, threeWay, unresolvedFields } from '../../web/src/merge.ts';
import { checkForm, emptyForm, formFromPatient, payloadOf } from '../../web/src/patient-form.ts';
import { allConfirmed, reachOf } from '../../web/src/sync-status.ts';
import { matchesQuery, queriesOf } from '../../web/src/records.ts';
import { catalogue, initialLocale } from '../../web/src/i18n.ts';
import { isAppRoute } from '../../web/src/paths.ts';
import type { Patient } from '../../validators/patient.ts';

const base: Patient = { givenName: 'Ana', familyName: 'Zed', birthDate: '1980-01-02', sex: 'female', facility: 'north-hc-1', phone: '+254 700 000001' };

describe('clinician app: three-way merge', () => {
  it('takes one-sided changes on their own and asks only where both sides changed differently', () => {
    const mine = { ...base, givenName: 'Anna', phone: '+254 700 000002' };
    const server = { ...base, familyName: 'Zeta', phone: '+254 700 000003' };
    const fields = threeWay(base, mine, server);
    const outcome = Object.fromEntries(fields.map((f) => [f.field, f.outcome]));
    expect(outcome).to.include({ givenName: 'mine', familyName: 'server', phone: 'choose', birthDate: 'same', sex: 'same', facility: 'same' });
    expect(unresolvedFields(fields, {})).to.deep.equal(['phone']);
    expect(mergedPayload(fields, {})).to.equal(null);
    expect(mergedPayload(fields, { phone: 'server' })).to.deep.equal({ ...base, givenName: 'Anna', familyName: 'Zeta', phone: '+254 700 000003' });
  });
  it('settles a field both sides changed the same way, and compares identifiers regardless of key order', () => {
    const ids = [{ system: 'national-id', value: 'X1' }];
    const fields = threeWay(base, { ...base, identifiers: ids }, { ...base, identifiers: [{ value: 'X1', system: 'national-id' }] });
    expect(fields.find((f) => f.field === 'identifiers')!.outcome).to.equal('same');
  });
  it('without the base version, every difference is the clinician\'s choice', () => {
    const fields = threeWay(null, { ...base, givenName: 'Anna' }, base);
    expect(unresolvedFields(fields, {})).to.deep.equal(['givenName']);
  });
});

describe('clinician app: the patient form', () => {
  it('has no clinical default and reports each missing field in plain language', () => {
    const empty = emptyForm('north-hc-1');
    expect(empty.sex).to.equal('');
    const checked = checkForm(empty, null, 'create');
    expect(checked.ok).to.equal(false);
    if (checked.ok) return;
    expect(checked.errors).to.deep.equal({ givenName: 'err.givenName.required', familyName: 'err.familyName.required', birthDate: 'err.birthDate.required', sex: 'err.sex.required' });
    expect(checked.order).to.deep.equal(['givenName', 'familyName', 'birthDate', 'sex']);
  });
  it('tells a year before 1850, a future date and an impossible date apart', () => {
    const form = { ...formFromPatient(base) };
    const msg = (birthDate: string) => {
      const c = checkForm({ ...form, birthDate }, null, 'create');
      return c.ok ? null : c.errors.birthDate;
    };
    expect(msg('1849-12-31')).to.equal('err.birthDate.before1850');
    expect(msg('2999-01-01')).to.equal('err.birthDate.future');
    expect(msg('2001-02-30')).to.equal('err.birthDate.invalid');
    expect(msg('1850-01-01'), 'a valid date passes').to.equal(null);
  });
  it('keeps identifiers and the address it does not edit, and replaces the national id', () => {
    const p: Patient = { ...base, identifiers: [{ system: 'clinic', value: 'C-1' }, { system: 'national-id', value: 'N-1' }], address: { city: 'Kisumu' } };
    const payload = payloadOf({ ...formFromPatient(p), nationalId: 'N-2' }, p);
    expect(payload.identifiers).to.deep.equal([{ system: 'clinic', value: 'C-1' }, { system: 'national-id', value: 'N-2' }]);
    expect(payload.address).to.deep.equal({ city: 'Kisumu' });
  });
});

describe('clinician app: the state indicator', () => {
  it('follows server reachability, not the network flag', () => {
    expect(reachOf({ kind: 'idle' }, true)).to.equal('online');
    expect(reachOf({ kind: 'backoff', attempt: 2, delayMs: 800, reachable: false }, true)).to.equal('offline');
    expect(reachOf({ kind: 'backoff', attempt: 2, delayMs: 800, reachable: true }, true)).to.equal('retrying');
    expect(reachOf({ kind: 'stopped' }, false)).to.equal('signed-out');
  });
  it('says everything is confirmed only when caught up with nothing waiting and nothing to decide', () => {
    expect(allConfirmed({ kind: 'idle' }, 0, 0)).to.equal(true);
    expect(allConfirmed({ kind: 'idle' }, 1, 0)).to.equal(false);
    expect(allConfirmed({ kind: 'idle' }, 0, 1)).to.equal(false);
    expect(allConfirmed({ kind: 'active' }, 0, 0)).to.equal(false);
  });
});

describe('clinician app: search box and catalogue', () => {
  it('reads a date or year as a birth date, digits as an identifier, words as name parts', () => {
    expect(queriesOf('1983-07-29')).to.deep.equal([{ birthDate: '1983-07-29' }, { identifier: '1983-07-29' }]);
    expect(queriesOf('NID-42')).to.deep.equal([{ identifier: 'NID-42' }, { text: 'NID-42' }]);
    expect(queriesOf('  ana ')).to.deep.equal([{ text: 'ana' }]);
    expect(queriesOf('')).to.deep.equal([]);
    const p: Patient = { ...base, givenName: 'Éloïse', identifiers: [{ system: 'national-id', value: 'NID-42-4242' }] };
    expect(matchesQuery(p, { text: 'elo ze' })).to.equal(true);
    expect(matchesQuery(p, { text: 'loi' })).to.equal(false);
    expect(matchesQuery(p, { identifier: 'nid 42' })).to.equal(true);
    expect(matchesQuery(p, { birthDate: '1980' })).to.equal(true);
  });
  it('has every English message in French, with the same placeholders', () => {
    const en = catalogue('en');
    const fr = catalogue('fr');
    const placeholders = (s: string) => (s.match(/\{\w+\}/g) ?? []).sort();
    for (const key of Object.keys(en) as Array<keyof typeof en>) {
      expect(fr[key], key).to.be.a('string').and.not.equal('');
      expect(placeholders(fr[key]), key).to.deep.equal(placeholders(en[key]));
    }
    expect(initialLocale(null, ['fr-FR', 'en'])).to.equal('fr');
    expect(initialLocale('en', ['fr-FR'])).to.equal('en');
    expect(initialLocale(null, ['sw'])).to.equal('en');
  });
  it('serves the shell for the app\'s routes and files as files', () => {
    expect(isAppRoute('/patients/pat_1/edit')).to.equal(true);
    expect(isAppRoute('/device')).to.equal(true);
    expect(isAppRoute('/app.js')).to.equal(false);
    expect(isAppRoute('/')).to.equal(true);
    expect(isAppRoute('/problems/m_1')).to.equal(true);
    // Only the app's own routes get the shell; anything else is the same 404 as an unknown file.
    for (const other of ['/empty/', '//etc/passwd', '/patients/', '/patients/a/b', '/index.html/', '/nosuch', `/patients/${'a'.repeat(200)}`]) {
      expect(isAppRoute(other), other).to.equal(false);
    }
  });
});
