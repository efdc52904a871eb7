import { expect } from 'chai';
import { canonicalJson, requestFingerprint } from '../../services/registration/idempotency/fingerprint.ts';
import { decideIdempotency, type StoredAnswer } from '../../services/registration/idempotency/decision.ts';
import { checkVersion, readPrecondition } from '../../services/registration/patients/versions.ts';
import { duplicateCandidates, identifierKey, nameKey, type ExistingPatient } from '../../services/registration/patients/matching.ts';
import { callerOf, decideAccess } from '../../services/registration/access.ts';
import { backoffDelay } from '../../retry/backoff.ts';
import { subsumes } from '../../services/registration/events/stream.ts';
import { readPatientQuery } from '../../services/registration/patients/query.ts';
import type { Patient } from '../../validators/patient.ts';

// The pure decisions of the registration service, driven by case tables.

describe('registration decisions', () => {
  describe('canonicalJson', () => {
    const cases: [unknown, string][] = [
      [{ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } }, '{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}'],
      [[1, 'x', true], '[1,"x",true]'],
      [{ a: undefined, b: 2 }, '{"b":2}'],
      ['é"', '"é\\""'],
      [null, 'null'],
    ];
    for (const [input, expected] of cases) {
      it(`${JSON.stringify(input) ?? 'undefined'} → ${expected}`, () => expect(canonicalJson(input)).to.equal(expected));
    }
  });

  describe('requestFingerprint', () => {
    const base: Parameters<typeof requestFingerprint>[0] = { method: 'POST', path: '/v1/patients', owner: 'ada', ifMatch: null, body: { a: 1, b: [1, 2] } };
    it('ignores key order and method case', () => {
      expect(requestFingerprint({ ...base, method: 'post', body: { b: [1, 2], a: 1 } })).to.equal(requestFingerprint(base));
    });
    const differing: [string, Partial<typeof base>][] = [
      ['body', { body: { a: 2, b: [1, 2] } }],
      ['array order', { body: { a: 1, b: [2, 1] } }],
      ['path', { path: '/v1/patients/x' }],
      ['method', { method: 'PUT' }],
      ['owner', { owner: 'ben' }],
      ['If-Match', { ifMatch: '"1"' }],
    ];
    for (const [what, change] of differing) {
      it(`changes with the ${what}`, () => expect(requestFingerprint({ ...base, ...change })).to.not.equal(requestFingerprint(base)));
    }
  });

  describe('decideIdempotency', () => {
    const now = new Date('2026-01-10T00:00:00Z');
    const stored: StoredAnswer = { fingerprint: 'f1', status: 201, body: '{"id":"x"}', expiresAt: new Date('2026-02-01T00:00:00Z') };
    const cases: [string, StoredAnswer | null, string, ReturnType<typeof decideIdempotency>][] = [
      ['nothing stored', null, 'f1', { kind: 'proceed', discardExpired: false }],
      ['same request', stored, 'f1', { kind: 'replay', status: 201, body: '{"id":"x"}' }],
      ['different request', stored, 'f2', { kind: 'reused' }],
      ['expired, same request', { ...stored, expiresAt: new Date('2026-01-09T00:00:00Z') }, 'f1', { kind: 'proceed', discardExpired: true }],
      ['expired, other request', { ...stored, expiresAt: now }, 'f2', { kind: 'proceed', discardExpired: true }],
    ];
    for (const [name, s, fp, expected] of cases) it(name, () => expect(decideIdempotency(s, fp, now)).to.deep.equal(expected));
  });

  describe('readPrecondition', () => {
    const cases: [string | undefined, unknown, ReturnType<typeof readPrecondition>][] = [
      [undefined, {}, { kind: 'missing' }],
      [undefined, { baseVersion: null }, { kind: 'missing' }],
      [undefined, null, { kind: 'missing' }],
      ['"3"', {}, { kind: 'expects', version: 3 }],
      ['W/"3"', {}, { kind: 'expects', version: 3 }],
      [undefined, { baseVersion: 2 }, { kind: 'expects', version: 2 }],
      ['"2"', { baseVersion: 2 }, { kind: 'expects', version: 2 }],
      ['"2"', { baseVersion: 3 }, { kind: 'mismatch' }],
      ['3', {}, { kind: 'malformed' }],
      ['"0"', {}, { kind: 'malformed' }],
      ['*', {}, { kind: 'malformed' }],
      [undefined, { baseVersion: '2' }, { kind: 'invalid' }],
      [undefined, { baseVersion: 0 }, { kind: 'invalid' }],
    ];
    for (const [ifMatch, body, expected] of cases) {
      it(`If-Match ${ifMatch ?? '(none)'} + ${JSON.stringify(body)} → ${expected.kind}`, () => expect(readPrecondition(ifMatch, body)).to.deep.equal(expected));
    }
    it('checkVersion', () => {
      expect(checkVersion(2, 2).kind).to.equal('current');
      expect(checkVersion(3, 2).kind).to.equal('stale');
      expect(checkVersion(2, 3).kind).to.equal('stale');
    });
  });

  describe('duplicate candidates', () => {
    const incoming: Patient = {
      givenName: 'Ámina',
      familyName: 'Okafor-Eze',
      birthDate: '1990-04-12',
      sex: 'female',
      facility: 'f',
      identifiers: [{ system: 'national-id', value: 'ni 123' }],
    };
    const row = (id: string, o: Partial<ExistingPatient>): ExistingPatient => ({ id, nameKey: 'x', birthDate: '2000-01-01', sex: 'male', identifiers: [], ...o });
    const cases: [string, ExistingPatient, boolean][] = [
      ['same normalised name, date, sex', row('a', { nameKey: nameKey('amina', 'OKAFOR EZE'), birthDate: '1990-04-12', sex: 'female' }), true],
      ['swapped given/family', row('b', { nameKey: nameKey('Okafor Eze', 'Amina'), birthDate: '1990-04-12', sex: 'female' }), true],
      ['other birth date', row('c', { nameKey: nameKey('Amina', 'Okafor-Eze'), birthDate: '1990-04-13', sex: 'female' }), false],
      ['other sex', row('d', { nameKey: nameKey('Amina', 'Okafor-Eze'), birthDate: '1990-04-12', sex: 'male' }), false],
      ['same identifier, other spelling', row('e', { identifiers: [{ system: 'national-id', valueKey: identifierKey('NI123') }] }), true],
      ['same value, other system', row('f', { identifiers: [{ system: 'passport', valueKey: identifierKey('NI123') }] }), false],
    ];
    for (const [name, existing, match] of cases) {
      it(`${name} → ${match ? 'candidate' : 'no candidate'}`, () => expect(duplicateCandidates(incoming, [existing])).to.deep.equal(match ? [existing.id] : []));
    }
    it('returns each id once, sorted', () => {
      const a = row('z', { nameKey: nameKey('Amina', 'Okafor-Eze'), birthDate: '1990-04-12', sex: 'female' });
      expect(duplicateCandidates(incoming, [a, a, { ...a, id: 'b' }])).to.deep.equal(['b', 'z']);
    });
  });

  describe('decideAccess', () => {
    const cases: [string[], 'read' | 'write', boolean, string][] = [
      [['registrar'], 'write', true, 'allow'],
      [['registrar'], 'read', true, 'allow'],
      [['viewer'], 'read', true, 'allow'],
      [['viewer'], 'write', true, 'FORBIDDEN'],
      [['admin'], 'read', true, 'allow'],
      [['admin'], 'write', true, 'FORBIDDEN'],
      [['platform-admin'], 'read', true, 'FORBIDDEN'],
      [[], 'read', true, 'FORBIDDEN'],
      [['registrar'], 'write', false, 'MODULE_NOT_LICENSED'],
      [['viewer'], 'write', false, 'MODULE_NOT_LICENSED'],
    ];
    for (const [roles, action, licensed, expected] of cases) {
      it(`${roles.join(',') || '(none)'} ${action} licensed=${licensed} → ${expected}`, () => {
        const d = decideAccess({ roles }, action, licensed);
        expect(d.kind === 'allow' ? 'allow' : d.code).to.equal(expected);
      });
    }
    it('a delegated token acts as its end user, with the worker as actor', () => {
      const caller = callerOf({ sub: 'ada', tid: 'north', owner: 'ada', roles: ['viewer'], sid: 's', exp: 1, act: { sub: 'ferry-worker' } });
      expect(caller).to.deep.include({ owner: 'ada', actor: 'ferry-worker' });
      expect(decideAccess(caller, 'write', true)).to.deep.equal({ kind: 'deny', code: 'FORBIDDEN' });
    });
  });

  describe('backoffDelay', () => {
    const opts = { baseMs: 100, maxMs: 1000 };
    const cases: [number, number, number][] = [
      [0, 0.5, 0],
      [1, 0, 50],
      [1, 1, 100],
      [3, 1, 400],
      [10, 1, 1000],
      [10, 0, 500],
    ];
    for (const [failures, r, expected] of cases) it(`after ${failures} failures, random ${r} → ${expected} ms`, () => expect(backoffDelay(failures, opts, () => r)).to.equal(expected));
  });

  describe('NATS subject subsumption', () => {
    const cases: [string, string, boolean][] = [
      ['REGISTRATION.>', 'REGISTRATION.patient.created', true],
      ['REGISTRATION.>', 'REGISTRATION.>', true],
      ['REGISTRATION.>', 'REGISTRATION', false],
      ['REGISTRATION.*.created', 'REGISTRATION.patient.created', true],
      ['REGISTRATION.*', 'REGISTRATION.patient.created', false],
      ['REGISTRATION.patient.created', 'REGISTRATION.>', false],
      ['>', 'REGISTRATION.>', true],
      ['REGISTRATION.*', 'REGISTRATION.>', false],
    ];
    for (const [pattern, subject, expected] of cases) it(`${pattern} ⊇ ${subject}: ${expected}`, () => expect(subsumes(pattern, subject)).to.equal(expected));
  });

  describe('search query', () => {
    it('reads a name into normalised tokens', () => expect(readPatientQuery({ name: ' Ámina  OKA ' })).to.deep.equal({ ok: true, value: { nameTokens: ['amina', 'oka'], identifier: null } }));
    it('reads system|value', () => expect(readPatientQuery({ identifier: 'national-id|NI|7' })).to.deep.equal({ ok: true, value: { nameTokens: [], identifier: { system: 'national-id', value: 'NI|7' } } }));
    const bad: Record<string, unknown>[] = [{}, { name: 'a' }, { name: ['x', 'y'] }, { identifier: 'novalue' }, { identifier: '|x' }];
    for (const q of bad) it(`refuses ${JSON.stringify(q)}`, () => expect(readPatientQuery(q).ok).to.equal(false));
  });
});
