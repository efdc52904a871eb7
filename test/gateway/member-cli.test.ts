import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { openPlatform } from '../../gateway/platform/open.ts';
import { tempDir, type TempDir } from '../support/services.ts';

// `npm run ferry -- member …` with facilities, with no server running: the CLI opens the embedded
// platform database itself (tests/gateway/operator-api.test.ts covers the path through a running server).

describe('scripts/ferry.ts member commands with facilities, no server running', function () {
  this.timeout(240_000);
  let dir: TempDir;

  before(async function () {
    dir = tempDir('ferry-member-cli-');
    // The tenant is recorded straight in the platform database: `tenant create` would start CouchDB,
    // which nothing here needs. Closed again before any CLI runs (PGlite is single-process).
    const platform = await openPlatform({ dataDir: dir.path });
    await platform.tenants.record('north');
    await platform.close();
  });
  after(() => dir?.remove());

  function ferry(...args: string[]) {
    const env: NodeJS.ProcessEnv = { ...process.env, FERRY_DATA_DIR: dir.path };
    delete env.COUCHDB_URL;
    delete env.DATABASE_URL;
    const res = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/ferry.ts', ...args], { env, encoding: 'utf8', timeout: 110_000 });
    return { code: res.status, out: res.stdout, err: res.stderr };
  }

  it('adds members with --role and repeated --facility, lists them with their facilities, replaces and removes', function () {
    const ada = ferry('member', 'add', 'north', 'ada', '--role', 'registrar', '--facility', 'north-hc-2', '--facility', ' north-hc-1 ');
    expect(ada, ada.err).to.include({ code: 0, out: 'member ada of north: registrar; facilities north-hc-1,north-hc-2\n' });
    // The older form (roles comma-separated) still works; without --facility the member sees no records.
    expect(ferry('member', 'add', 'north', 'dee', 'viewer')).to.include({ code: 0, out: 'member dee of north: viewer; no facility (sees no records)\n' });
    expect(ferry('member', 'add', 'north', 'admin', '--role', 'admin', '--role', 'platform-admin')).to.include({
      code: 0,
      out: 'member admin of north: admin,platform-admin; all facilities (admin)\n',
    });
    expect(ferry('member', 'list', 'north')).to.include({ code: 0, out: 'ada\tregistrar\tnorth-hc-1,north-hc-2\nadmin\tadmin,platform-admin\t(all facilities)\ndee\tviewer\t(no facility)\n' });

    // An add is the member's whole set: this one replaces ada's two facilities with one.
    expect(ferry('member', 'add', 'north', 'ada', '--role', 'registrar', '--facility', 'north-hc-3')).to.include({ code: 0 });
    // A facility id that is not a plain token is printed quoted, so it cannot pass for two.
    expect(ferry('member', 'add', 'north', 'dee', 'viewer', '--facility', 'North HC, annex')).to.include({ code: 0 });
    expect(ferry('member', 'list', 'north').out).to.equal('ada\tregistrar\tnorth-hc-3\nadmin\tadmin,platform-admin\t(all facilities)\ndee\tviewer\t"North HC, annex"\n');

    expect(ferry('member', 'remove', 'north', 'dee')).to.include({ code: 0, out: 'member dee removed from north\n' });
    expect(ferry('member', 'list', 'north').out).to.equal('ada\tregistrar\tnorth-hc-3\nadmin\tadmin,platform-admin\t(all facilities)\n');
  });

  it('refuses a bad facility id with a structured error, exit 2, and changes nothing', function () {
    const long = ferry('member', 'add', 'north', 'ada', '--role', 'registrar', '--facility', 'north-hc-1', '--facility', 'x'.repeat(65));
    expect(long.code).to.equal(2);
    expect(long.err).to.contain('error: VALIDATION_FAILED: The request did not pass validation.').and.contain('facilities.1 is too long or too large');
    expect(long.err).to.not.contain('xxxxxxxx');
    const blank = ferry('member', 'add', 'north', 'ada', '--role', 'registrar', '--facility', '  ');
    expect(blank.code).to.equal(2);
    expect(blank.err).to.contain('error: VALIDATION_FAILED').and.contain('facilities.0 is too short or too small');
    expect(ferry('member', 'list', 'north').out).to.contain('ada\tregistrar\tnorth-hc-3\n');
  });

  it('refuses bad usage: no role, an unknown role, an unknown option, --facility without a value, options on list, a missing or extra argument', function () {
    for (const args of [
      ['member', 'add', 'north', 'ada', '--facility', 'north-hc-1'],
      ['member', 'add', 'north', 'ada', '--role', 'root'],
      ['member', 'add', 'north', 'ada', '--role', 'registrar', '--facilty', 'north-hc-1'],
      ['member', 'add', 'north', 'ada', '--role', 'registrar', '--facility'],
      ['member', 'list', 'north', '--facility', 'north-hc-1'],
      ['member', 'add', 'north', '--role', 'registrar'],
      ['member', 'remove', 'north', 'ada', 'extra'],
    ]) {
      const res = ferry(...args);
      expect(res.code, args.join(' ')).to.equal(2);
      expect(res.err, args.join(' ')).to.contain('usage:');
    }
  });
});
