import { expect } from 'chai';
import { join } from 'node:path';
import { openPlatform, type Platform } from '../../gateway/platform/open.ts';
import { PLATFORM_MIGRATIONS } from '../../gateway/platform/schema.ts';
import { createMembershipDirectory } from '../../gateway/tenant/membership.ts';
import { DEMO_MEMBERSHIPS, seedDemo } from '../../gateway/tenant/demo.ts';
import { parseAdminRequest, runAdmin, type AdminDeps } from '../../gateway/tenant/admin.ts';
import { replicaScopeOf } from '../../gateway/tenant/scope.ts';
import { FerryError } from '../../validators/codes.ts';
import { openDatabase } from '../../sql/database.ts';
import { migrate } from '../../sql/migrate.ts';
import { tempDir } from '../support/services.ts';

// Facilities in the membership directory: the migration on a database that already has members,
// the directory's reads and writes (through the platform as the server opens it), the operator
// command that sets them, and the demo seed's scope.

describe('membership directory: the facilities migration on an existing database', function () {
  this.timeout(60_000);

  it('adds facilities to a platform database made before them; existing members keep their roles and serve none', async function () {
    const dir = tempDir('ferry-facilities-migration-');
    try {
      // A platform database as the previous release left it: every migration but the facilities one.
      const before = PLATFORM_MIGRATIONS.slice(0, -1);
      expect(PLATFORM_MIGRATIONS.at(-1)).to.contain('facilities');
      const old = await openDatabase({ dataDir: join(dir.path, 'pg', 'platform') });
      await migrate(old, 'platform', before);
      await old.query(`INSERT INTO tenants (id) VALUES ('north')`);
      await old.query(`INSERT INTO users (id, username) VALUES ('ada', 'ada'), ('dee', 'dee')`);
      await old.query(`INSERT INTO memberships (tenant_id, user_id, roles) VALUES ('north', 'ada', '{registrar}'), ('north', 'dee', '{viewer}')`);
      await old.close();

      const platform = await openPlatform({ dataDir: dir.path });
      try {
        const { rows } = await platform.db.query<{ version: number }>(`SELECT version FROM schema_migrations WHERE component = 'platform' ORDER BY version`);
        expect(rows.map((r) => Number(r.version))).to.deep.equal(PLATFORM_MIGRATIONS.map((_, i) => i + 1));
        expect(await platform.memberships.rolesOf('north', 'ada')).to.deep.equal(['registrar']);
        expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal([]);
        expect(await platform.memberships.membersOf('north')).to.deep.equal([
          { userId: 'ada', roles: ['registrar'], facilities: [] },
          { userId: 'dee', roles: ['viewer'], facilities: [] },
        ]);
        // Fail closed: a member from before facilities existed sees no records until given one.
        expect(replicaScopeOf(await platform.memberships.membershipOf('north', 'ada'))).to.deep.equal({ kind: 'facilities', facilities: [] });
        expect(await platform.memberships.setFacilities('north', 'ada', ['north-hc-1'])).to.equal(true);
      } finally {
        await platform.close();
      }
      // Opening again applies nothing twice and keeps what was written.
      const again = await openPlatform({ dataDir: dir.path });
      try {
        expect(await again.memberships.facilitiesOf('north', 'ada')).to.deep.equal(['north-hc-1']);
      } finally {
        await again.close();
      }
    } finally {
      dir.remove();
    }
  });
});

describe('membership directory: facilities per (tenant, user)', function () {
  this.timeout(60_000);
  let platform: Platform;

  before(async function () {
    platform = await openPlatform({});
    for (const t of ['north', 'south']) await platform.tenants.record(t);
    for (const u of ['ada', 'cy', 'eve']) await platform.users.ensureExternal(u);
  });
  after(async () => {
    await platform?.close();
  });

  it('sets facilities with the roles, each once and sorted, and answers them from facilitiesOf, membershipOf and membersOf', async function () {
    await platform.memberships.set('north', 'ada', ['registrar'], ['north-hc-2', 'north-hc-1', 'north-hc-2']);
    expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal(['north-hc-1', 'north-hc-2']);
    expect(await platform.memberships.membershipOf('north', 'ada')).to.deep.equal({ roles: ['registrar'], facilities: ['north-hc-1', 'north-hc-2'] });
    expect(await platform.memberships.membersOf('north')).to.deep.equal([{ userId: 'ada', roles: ['registrar'], facilities: ['north-hc-1', 'north-hc-2'] }]);
  });

  it('replaces them: set with facilities, setFacilities, and an empty list removes them all', async function () {
    await platform.memberships.set('north', 'ada', ['viewer'], ['north-hc-3']);
    expect(await platform.memberships.membershipOf('north', 'ada')).to.deep.equal({ roles: ['viewer'], facilities: ['north-hc-3'] });
    expect(await platform.memberships.setFacilities('north', 'ada', ['north-hc-1'])).to.equal(true);
    expect(await platform.memberships.membershipOf('north', 'ada')).to.deep.equal({ roles: ['viewer'], facilities: ['north-hc-1'] });
    expect(await platform.memberships.setFacilities('north', 'ada', [])).to.equal(true);
    expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal([]);
  });

  it('set without facilities changes roles only: an existing member keeps theirs, a new member serves none', async function () {
    await platform.memberships.set('north', 'ada', ['registrar'], ['north-hc-1']);
    await platform.memberships.set('north', 'ada', ['registrar', 'viewer']);
    expect(await platform.memberships.membershipOf('north', 'ada')).to.deep.equal({ roles: ['registrar', 'viewer'], facilities: ['north-hc-1'] });
    await platform.memberships.set('south', 'eve', ['registrar']);
    expect(await platform.memberships.facilitiesOf('south', 'eve')).to.deep.equal([]);
    await platform.memberships.remove('south', 'eve');
  });

  it('keeps each tenant\'s facilities apart', async function () {
    await platform.memberships.set('north', 'cy', ['registrar'], ['north-hc-2']);
    await platform.memberships.set('south', 'cy', ['registrar'], ['south-hc-1']);
    expect(await platform.memberships.facilitiesOf('north', 'cy')).to.deep.equal(['north-hc-2']);
    expect(await platform.memberships.facilitiesOf('south', 'cy')).to.deep.equal(['south-hc-1']);
    expect(await platform.memberships.setFacilities('south', 'cy', ['south-hc-2'])).to.equal(true);
    expect(await platform.memberships.facilitiesOf('north', 'cy')).to.deep.equal(['north-hc-2']);
  });

  it('answers null for a non-member, and setFacilities writes nothing for one', async function () {
    expect(await platform.memberships.facilitiesOf('south', 'ada')).to.equal(null);
    expect(await platform.memberships.membershipOf('south', 'ada')).to.equal(null);
    expect(await platform.memberships.setFacilities('south', 'ada', ['south-hc-1'])).to.equal(false);
    expect(await platform.memberships.rolesOf('south', 'ada')).to.equal(null);
    expect(await platform.memberships.facilitiesOf('nowhere', 'ada')).to.equal(null);
  });

  it('remove drops the facilities with the membership; a later membership starts with none', async function () {
    await platform.memberships.set('north', 'eve', ['registrar'], ['north-hc-1']);
    await platform.memberships.remove('north', 'eve');
    expect(await platform.memberships.facilitiesOf('north', 'eve')).to.equal(null);
    await platform.memberships.set('north', 'eve', ['registrar']);
    expect(await platform.memberships.facilitiesOf('north', 'eve')).to.deep.equal([]);
    await platform.memberships.remove('north', 'eve');
  });

  it('reads afresh on every call: a change written by another directory on the same database shows at once', async function () {
    const other = createMembershipDirectory(platform.db);
    await platform.memberships.set('north', 'ada', ['registrar'], ['north-hc-1']);
    expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal(['north-hc-1']);
    await other.setFacilities('north', 'ada', ['north-hc-2']);
    expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal(['north-hc-2']);
    await other.remove('north', 'ada');
    expect(await platform.memberships.membershipOf('north', 'ada')).to.equal(null);
  });
});

describe('operator command member.add with facilities (gateway/tenant/admin.ts)', function () {
  this.timeout(60_000);
  let platform: Platform;
  let deps: AdminDeps;

  before(async function () {
    platform = await openPlatform({});
    await platform.tenants.record('north');
    await platform.users.ensureExternal('ben');
    // Only the member commands run here: they never provision or license.
    const unused = () => Promise.reject(new Error('not used by member commands'));
    deps = { tenants: platform.tenants, memberships: platform.memberships, users: platform.users, provision: unused, licensing: unused };
  });
  after(async () => {
    await platform?.close();
  });

  const run = (raw: unknown) => runAdmin(deps, parseAdminRequest(raw));

  it('stores the facilities trimmed and each once, answers them, and lists them', async function () {
    const added = await run({ command: 'member.add', tenant: 'north', owner: 'ada', roles: ['registrar'], facilities: [' north-hc-2 ', 'north-hc-1', 'north-hc-2'] });
    expect(added).to.deep.equal({ command: 'member.add', tenant: 'north', owner: 'ada', roles: ['registrar'], facilities: ['north-hc-1', 'north-hc-2'] });
    expect(await run({ command: 'member.list', tenant: 'north' })).to.deep.equal({
      command: 'member.list',
      tenant: 'north',
      members: [{ userId: 'ada', roles: ['registrar'], facilities: ['north-hc-1', 'north-hc-2'] }],
    });
  });

  it('an add is the member\'s whole set: it replaces the facilities, and one without facilities leaves none', async function () {
    await run({ command: 'member.add', tenant: 'north', owner: 'ada', roles: ['registrar'], facilities: ['north-hc-3'] });
    expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal(['north-hc-3']);
    const bare = await run({ command: 'member.add', tenant: 'north', owner: 'ada', roles: ['viewer'] });
    expect(bare).to.include({ command: 'member.add' }).and.deep.include({ facilities: [] });
    expect(await platform.memberships.membershipOf('north', 'ada')).to.deep.equal({ roles: ['viewer'], facilities: [] });
  });

  const bad: Array<{ name: string; facilities: unknown; paths: string[] }> = [
    { name: 'an empty id', facilities: [''], paths: ['facilities.0'] },
    { name: 'an id of blanks only', facilities: ['north-hc-1', '   '], paths: ['facilities.1'] },
    { name: 'an id over 64 characters', facilities: ['x'.repeat(65)], paths: ['facilities.0'] },
    { name: 'a number', facilities: [7], paths: ['facilities.0'] },
    { name: 'a string instead of a list', facilities: 'north-hc-1', paths: ['facilities'] },
    { name: 'more than 100 facilities', facilities: Array.from({ length: 101 }, (_, i) => `hc-${i}`), paths: ['facilities'] },
  ];
  for (const c of bad) {
    it(`refuses ${c.name} with VALIDATION_FAILED naming the path, and writes nothing`, async function () {
      await platform.memberships.set('north', 'ben', ['registrar'], ['north-hc-1']);
      let caught: unknown;
      try {
        await run({ command: 'member.add', tenant: 'north', owner: 'ben', roles: ['registrar'], facilities: c.facilities });
      } catch (err) {
        caught = err;
      }
      expect(caught).to.be.instanceOf(FerryError);
      const err = caught as FerryError;
      expect(err.code).to.equal('VALIDATION_FAILED');
      expect(err.errors?.map((e) => e.path)).to.deep.equal(c.paths);
      // The catalogue message only: nothing submitted comes back.
      expect(JSON.stringify(err.toBody())).to.not.contain('xxxxxxxx').and.not.contain('hc-100');
      expect(await platform.memberships.facilitiesOf('north', 'ben')).to.deep.equal(['north-hc-1']);
    });
  }
});

describe('the demo seed\'s facilities', function () {
  this.timeout(60_000);
  let platform: Platform;

  before(async function () {
    platform = await openPlatform({});
    await seedDemo(platform);
  });
  after(async () => {
    await platform?.close();
  });

  it('scopes the demo users as the README lists them', async function () {
    const scopes: Record<string, unknown> = {};
    for (const m of DEMO_MEMBERSHIPS) scopes[`${m.user}@${m.tenant}`] = replicaScopeOf(await platform.memberships.membershipOf(m.tenant, m.user));
    const at = (...facilities: string[]) => ({ kind: 'facilities', facilities });
    expect(scopes).to.deep.equal({
      'ada@north': at('north-hc-1'),
      'ben@north': at('north-hc-1'),
      'dee@north': at('north-hc-1'),
      'cy@north': at('north-hc-2'),
      'cy@south': at('south-hc-1'),
      'cy@east': at('east-hc-1'),
      'admin@north': { kind: 'all' },
      'admin@south': { kind: 'all' },
      'admin@east': { kind: 'all' },
    });
  });

  it('puts the demo facilities back at the next seed, as it does roles', async function () {
    await platform.memberships.setFacilities('north', 'ada', []);
    await seedDemo(platform);
    expect(await platform.memberships.facilitiesOf('north', 'ada')).to.deep.equal(['north-hc-1']);
  });
});
