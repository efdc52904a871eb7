import { expect } from 'chai';
import { FerryError } from '../../validators/codes.ts';
import { prepareMutation, readBatchEnvelope, type MutationRequest } from '../../services/registration/batch/items.ts';
import { planBatch, type PlanState } from '../../services/registration/batch/plan.ts';
import { BatchPatientView } from '../../services/registration/patients/view.ts';
import type { Caller } from '../../services/registration/access.ts';

// The batch's pure parts, without a server or a database: reading items and deciding them in order.

const ada: Caller = { tenant: 'north', owner: 'ada', roles: ['registrar'], actor: 'ada' };
const dee: Caller = { tenant: 'north', owner: 'dee', roles: ['viewer'], actor: 'dee' };
const NOW = new Date('2026-06-01T08:00:00.000Z');
const ID = 'pat_0190a0b0-0000-7000-8000-000000000001';
const patient = (over: Record<string, unknown> = {}) => ({ givenName: 'Abena', familyName: 'Kora', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1', ...over });

function request(over: Partial<MutationRequest>): MutationRequest {
  return { method: 'POST', path: '/v1/patients', idempotencyKey: undefined, ifMatch: undefined, correlationId: '0190a0b0-0000-7000-8000-0000000000c1', authorization: undefined, requires: null, body: patient(), ...over };
}

function state(over: Partial<PlanState> = {}): PlanState {
  return { stored: new Map(), holdsKey: () => true, licensed: true, view: new BatchPatientView({ takenIds: [], records: [], nameMatches: [], identifiers: [] }), now: NOW, retentionMs: 3600_000, ...over };
}

describe('registration batch decisions', () => {
  describe('readBatchEnvelope', () => {
    const bad: [string, unknown][] = [
      ['not an object', []],
      ['no items', {}],
      ['another top-level field', { items: [], more: 1 }],
      ['an item that is not an object', { items: [1] }],
      ['a method other than POST/PUT', { items: [{ method: 'DELETE', path: '/v1/patients/x' }] }],
      ['a path that is not a string', { items: [{ method: 'POST', path: 1 }] }],
      ['an unknown field', { items: [{ method: 'POST', path: '/v1/patients', idempotency_key: 'k' }] }],
      ['requires naming itself', { items: [{ method: 'POST', path: '/v1/patients', requires: 0 }] }],
      ['requires not an integer', { items: [{ method: 'POST', path: '/v1/patients' }, { method: 'POST', path: '/v1/patients', requires: 0.5 }] }],
    ];
    for (const [what, body] of bad) it(`400 for ${what}`, () => expect(() => readBatchEnvelope(body)).to.throw(FerryError).with.property('code', 'MALFORMED_REQUEST'));
    it('413 above the item limit', () => expect(() => readBatchEnvelope({ items: [{}, {}, {}] }, 2)).to.throw(FerryError).with.property('code', 'PAYLOAD_TOO_LARGE'));
  });

  describe('prepareMutation', () => {
    const cases: [string, Partial<MutationRequest>, Caller | FerryError, string][] = [
      ['a failed token', {}, new FerryError('UNAUTHENTICATED'), 'refused:UNAUTHENTICATED'],
      ['POST to an item path', { path: `/v1/patients/${ID}` }, ada, 'refused:NOT_FOUND'],
      ['PUT to the collection', { method: 'PUT' }, ada, 'refused:NOT_FOUND'],
      ['a bad key', { idempotencyKey: 'has space' }, ada, 'refused:MALFORMED_REQUEST'],
      ['no body', { body: undefined }, ada, 'refused:MALFORMED_REQUEST'],
      ['a string body', { body: 'x' }, ada, 'refused:MALFORMED_REQUEST'],
      ['a body over the limit', { body: patient({ givenName: 'x'.repeat(70_000) }) }, ada, 'refused:PAYLOAD_TOO_LARGE'],
      ['a create', {}, ada, 'ready:create'],
      ['an update, trailing slash', { method: 'PUT', path: `/v1/patients/${ID}/` }, ada, 'ready:update'],
    ];
    for (const [what, over, caller, expected] of cases) {
      it(`${what} → ${expected}`, () => {
        const p = prepareMutation(request(over), caller);
        expect(p.kind === 'refused' ? `refused:${p.error.code}` : `ready:${p.command.kind}`).to.equal(expected);
      });
    }
    // Correlation ids reach audit rows and events: only an opaque UUID is kept (in lower case).
    const kept: Array<[string, string]> = [
      ['a UUIDv7 (the worker sends mids)', '0190a0b0-0000-7000-8000-0000000000c1'],
      ['a UUIDv4', '9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5e'],
      ['upper case, kept in lower case', '9B2F4C1E-3D5A-4B6C-8D7E-0F1A2B3C4D5E'],
    ];
    for (const [what, id] of kept) {
      it(`keeps ${what}`, () => {
        expect(prepareMutation(request({ correlationId: id }), ada).correlationId).to.equal(id.toLowerCase());
      });
    }
    const replaced: Array<[string, string]> = [
      ['free text', 'abc-1'],
      ['PHI-like text', 'Amina Okafor 1990-04-12'],
      ['a forged log line', '0190a0b0-0000-7000-8000-0000000000c1\n{"level":50}'],
      ['braces', '{9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5e}'],
      ['a urn', 'urn:uuid:9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5e'],
      ['no dashes', '9b2f4c1e3d5a4b6c8d7e0f1a2b3c4d5e'],
      ['a non-hex digit', '9b2f4c1e-3d5a-4b6c-8d7e-0f1a2b3c4d5g'],
      ['empty', ''],
    ];
    for (const [what, id] of replaced) {
      it(`replaces ${what} with a fresh UUID`, () => {
        const got = prepareMutation(request({ correlationId: id }), ada).correlationId;
        expect(got).to.not.equal(id);
        expect(got).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      });
    }
  });

  describe('planBatch', () => {
    const plan = (items: Partial<MutationRequest>[], callers: Caller[] = [], s: Partial<PlanState> = {}) =>
      planBatch(
        items.map((o, i) => prepareMutation(request(o), callers[i] ?? ada)),
        state(s),
      );
    const outcomes = (p: ReturnType<typeof plan>) => p.answers.map((a) => `${a.status}${a.replayed ? ' replayed' : ''}${a.skipped ? ' skipped' : ''}:${String((JSON.parse(a.body) as { code?: string }).code ?? '')}`);

    it('create, then update of it, then a stale update: 201, 200, 409; one insert at version 2, two events', () => {
      const p = plan([{ body: patient({ id: ID }) }, { method: 'PUT', path: `/v1/patients/${ID}`, ifMatch: '"1"' }, { method: 'PUT', path: `/v1/patients/${ID}`, ifMatch: '"1"' }]);
      expect(outcomes(p)).to.deep.equal(['201:', '200:', '409:VERSION_CONFLICT']);
      expect(p.inserts.map((w) => [w.id, w.version])).to.deep.equal([[ID, 2]]);
      expect(p.updates).to.have.length(0);
      expect(p.entries.map((e) => `${e.event.type}@${e.event.version}`)).to.deep.equal(['patient.created@1', 'patient.updated@2']);
    });

    it('the second of two likely duplicates is DUPLICATE_DETECTED naming the first; confirmed it goes in', () => {
      const p = plan([{ body: patient({ id: ID }) }, { body: patient({ givenName: 'KORA', familyName: 'abena' }) }, { body: patient({ confirmNotDuplicate: { reason: 'seen in person' } }) }]);
      expect(outcomes(p)).to.deep.equal(['201:', '409:DUPLICATE_DETECTED', '201:']);
      expect(JSON.parse(p.answers[1]!.body).candidates).to.deep.equal([ID]);
    });

    it('one key twice: replay of the first; with another body: reused; a key in flight: 409; none of these stored', () => {
      const p = plan(
        [
          { idempotencyKey: 'k1', body: patient({ id: ID }) },
          { idempotencyKey: 'k1', body: patient({ id: ID }) },
          { idempotencyKey: 'k1', body: patient() },
          { idempotencyKey: 'busy', body: patient({ givenName: 'Lemi' }) },
        ],
        [],
        { holdsKey: (k) => k !== 'busy' },
      );
      expect(outcomes(p)).to.deep.equal(['201:', '201 replayed:', '422:IDEMPOTENCY_KEY_REUSED', '409:IDEMPOTENCY_IN_PROGRESS']);
      expect(p.answers[1]!.body).to.equal(p.answers[0]!.body);
      expect(p.store.map((s) => s.key)).to.deep.equal(['k1']);
    });

    it('requires: skipped after a failed item, not stored; runs after a 2xx', () => {
      const p = plan(
        [
          { body: patient({ id: ID }) },
          { method: 'PUT', path: `/v1/patients/${ID}`, ifMatch: '"1"', requires: 0, idempotencyKey: 'u1' },
          { body: patient({ givenName: 'Nuri' }) },
          { method: 'PUT', path: `/v1/patients/${ID}`, ifMatch: '"2"', requires: 2, idempotencyKey: 'u2' },
        ],
        [dee, ada, dee, ada],
      );
      expect(outcomes(p)).to.deep.equal(['403:FORBIDDEN', '422 skipped:DEPENDENCY_FAILED', '403:FORBIDDEN', '422 skipped:DEPENDENCY_FAILED']);
      expect(p.store).to.have.length(0);
      expect(p.entries).to.have.length(0);
    });

    it('a missing precondition is 428 and not stored; an unlicensed tenant is a stored 403', () => {
      expect(outcomes(plan([{ method: 'PUT', path: `/v1/patients/${ID}`, idempotencyKey: 'p' }]))).to.deep.equal(['428:PRECONDITION_REQUIRED']);
      const unlicensed = plan([{ idempotencyKey: 'l' }], [], { licensed: false });
      expect(outcomes(unlicensed)).to.deep.equal(['403:MODULE_NOT_LICENSED']);
      expect(unlicensed.store.map((s) => s.status)).to.deep.equal([403]);
    });
  });
});
