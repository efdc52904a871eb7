import { expect } from 'chai';
import { facilitiesSchema, facilityIdSchema, replicaScopeOf, scopeIncludes, type ReplicaScope, type ScopeInput } from '../../gateway/tenant/scope.ts';
import { parseWith } from '../../validators/issues.ts';

// The replica scope: which of a tenant's records a member's device may hold, decided from the
// membership's roles and facilities alone.

describe('replicaScopeOf: roles and facilities → the records a device may hold', function () {
  const cases: Array<{ name: string; membership: ScopeInput | null; scope: ReplicaScope }> = [
    { name: 'a registrar at one facility', membership: { roles: ['registrar'], facilities: ['north-hc-1'] }, scope: { kind: 'facilities', facilities: ['north-hc-1'] } },
    { name: 'a viewer at one facility', membership: { roles: ['viewer'], facilities: ['north-hc-1'] }, scope: { kind: 'facilities', facilities: ['north-hc-1'] } },
    { name: 'several facilities, sorted and each once', membership: { roles: ['registrar'], facilities: ['south-hc-1', 'north-hc-2', 'south-hc-1'] }, scope: { kind: 'facilities', facilities: ['north-hc-2', 'south-hc-1'] } },
    { name: 'a registrar with no facility sees nothing (fail closed)', membership: { roles: ['registrar'], facilities: [] }, scope: { kind: 'facilities', facilities: [] } },
    { name: 'a viewer with no facility sees nothing', membership: { roles: ['viewer'], facilities: [] }, scope: { kind: 'facilities', facilities: [] } },
    { name: 'no membership sees nothing', membership: null, scope: { kind: 'facilities', facilities: [] } },
    { name: 'a member with no roles sees only the named facilities', membership: { roles: [], facilities: ['north-hc-1'] }, scope: { kind: 'facilities', facilities: ['north-hc-1'] } },
    { name: 'an unknown role grants nothing beyond the facilities', membership: { roles: ['superuser', 'Admin'], facilities: ['north-hc-1'] }, scope: { kind: 'facilities', facilities: ['north-hc-1'] } },
    { name: 'a tenant admin sees every facility', membership: { roles: ['admin'], facilities: [] }, scope: { kind: 'all' } },
    { name: 'a platform-admin sees every facility', membership: { roles: ['platform-admin'], facilities: [] }, scope: { kind: 'all' } },
    { name: 'admin wins over named facilities', membership: { roles: ['registrar', 'admin'], facilities: ['north-hc-1'] }, scope: { kind: 'all' } },
    { name: 'the demo admin', membership: { roles: ['admin', 'platform-admin'], facilities: [] }, scope: { kind: 'all' } },
  ];
  for (const c of cases) {
    it(c.name, function () {
      expect(replicaScopeOf(c.membership)).to.deep.equal(c.scope);
    });
  }

  it('answers a list the caller cannot change, and leaves the input alone', function () {
    const facilities = ['b', 'a'];
    const scope = replicaScopeOf({ roles: ['registrar'], facilities });
    expect(facilities).to.deep.equal(['b', 'a']);
    if (scope.kind !== 'facilities') throw new Error('expected a facility scope');
    expect(Object.isFrozen(scope.facilities)).to.equal(true);
  });
});

describe('scopeIncludes: is a record at this facility in the scope', function () {
  const cases: Array<[ReplicaScope, string, boolean]> = [
    [{ kind: 'all' }, 'north-hc-1', true],
    [{ kind: 'all' }, 'anything', true],
    [{ kind: 'facilities', facilities: ['north-hc-1'] }, 'north-hc-1', true],
    [{ kind: 'facilities', facilities: ['north-hc-1'] }, 'north-hc-2', false],
    [{ kind: 'facilities', facilities: ['north-hc-1'] }, 'NORTH-HC-1', false],
    [{ kind: 'facilities', facilities: [] }, 'north-hc-1', false],
    [{ kind: 'facilities', facilities: [] }, '', false],
  ];
  for (const [scope, facility, included] of cases) {
    it(`${JSON.stringify(scope)} ∋ ${JSON.stringify(facility)}: ${included}`, function () {
      expect(scopeIncludes(scope, facility)).to.equal(included);
    });
  }
});

describe('facility ids of a membership: the shape of a patient\'s facility', function () {
  const cases: Array<{ input: unknown; out: string | null }> = [
    { input: 'north-hc-1', out: 'north-hc-1' },
    { input: '  north-hc-1\t', out: 'north-hc-1' },
    { input: 'x'.repeat(64), out: 'x'.repeat(64) },
    { input: 'x'.repeat(65), out: null },
    { input: '', out: null },
    { input: '   ', out: null },
    { input: 42, out: null },
    { input: null, out: null },
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c.input)?.slice(0, 20)} → ${c.out === null ? 'refused' : JSON.stringify(c.out.slice(0, 20))}`, function () {
      const parsed = facilityIdSchema.safeParse(c.input);
      expect(parsed.success ? parsed.data : null).to.equal(c.out);
    });
  }

  it('refuses more than 100 facilities, and names the bad one by path without echoing it', function () {
    expect(facilitiesSchema.safeParse(Array.from({ length: 100 }, (_, i) => `hc-${i}`)).success).to.equal(true);
    expect(facilitiesSchema.safeParse(Array.from({ length: 101 }, (_, i) => `hc-${i}`)).success).to.equal(false);
    const secret = `Mrs ${'Q'.repeat(70)}`;
    const parsed = parseWith(facilitiesSchema, ['north-hc-1', secret]);
    expect(parsed).to.deep.equal({ ok: false, errors: [{ path: '1', message: 'is too long or too large' }] });
  });
});
