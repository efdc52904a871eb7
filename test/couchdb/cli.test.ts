import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { tempDir, type TempDir } from '../support/services.ts';

// `npm run ferry -- tenant …` end to end, on its own embedded data dir.

describe('scripts/ferry.ts tenant commands', function () {
  this.timeout(240_000);
  let dir: TempDir;

  before(() => {
    dir = tempDir('ferry-cli-');
  });
  after(() => dir?.remove());

  function ferry(...args: string[]) {
    const env: NodeJS.ProcessEnv = { ...process.env, FERRY_DATA_DIR: dir.path };
    delete env.COUCHDB_URL;
    delete env.DATABASE_URL;
    const res = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/ferry.ts', ...args], { env, encoding: 'utf8', timeout: 110_000 });
    return { code: res.status, out: res.stdout, err: res.stderr };
  }

  it('refuses a bad tenant id with a clear message', () => {
    const res = ferry('tenant', 'create', 'Bad_Id');
    expect(res.code).to.equal(2);
    expect(res.err).to.contain('tenant ids must match');
  });

  it('creates a tenant and lists it', () => {
    const created = ferry('tenant', 'create', 'west');
    expect(created).to.include({ code: 0 });
    expect(created.out).to.contain('inbox_west database created');
    const list = ferry('tenant', 'list');
    expect(list.code).to.equal(0);
    expect(list.out.trim().split('\n')).to.deep.equal(['west']);
  });

  it('prints usage for an unknown command', () => {
    const res = ferry('tenant', 'frob');
    expect(res.code).to.equal(2);
    expect(res.err).to.contain('usage:');
  });
});
