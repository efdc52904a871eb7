import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDataDirPrivate } from '../../scripts/data-dir.ts';
import { requireNats, tempDir } from '../support/services.ts';
import { startTestStack } from '../support/stack.ts';

// Every file and folder under FERRY_DATA_DIR is private to the service user (issue 10, "Files"):
// PGlite's files and WAL, the embedded CouchDB's leveldb, keys and logs included.

/**
 * Paths under `dir` with group or other bits. With `reachableOnly`, only those another local user
 * can actually reach: a folder nobody else may enter hides what is inside it (PGlite gives the
 * files it creates mode 0666 or 0644 whatever the umask; in private folders they stay private).
 */
function exposed(dir: string, opts: { reachableOnly?: boolean } = {}): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return;
    if ((st.mode & 0o077) !== 0) out.push(`${p.slice(dir.length) || '/'} ${(st.mode & 0o777).toString(8)}`);
    const enter = st.isDirectory() && (!opts.reachableOnly || (st.mode & 0o011) !== 0);
    if (enter) for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(dir);
  return out;
}

describe('data directory: private files', function () {
  this.timeout(120_000);
  const umask = process.umask();
  after(() => {
    process.umask(umask);
  });

  it('tightens what an older version left readable, and everything written afterwards is private', () => {
    const dir = tempDir('ferry-private-');
    try {
      process.umask(0);
      mkdirSync(join(dir.path, 'pg', 'base'), { recursive: true, mode: 0o755 });
      writeFileSync(join(dir.path, 'pg', 'base', 'rows'), 'x', { mode: 0o666 });
      chmodSync(dir.path, 0o755);
      expect(exposed(dir.path)).to.have.length(4);
      expect(makeDataDirPrivate(dir.path)).to.equal(4);
      expect(exposed(dir.path)).to.deep.equal([]);
      writeFileSync(join(dir.path, 'later'), 'y');
      mkdirSync(join(dir.path, 'later-dir'));
      expect(exposed(dir.path)).to.deep.equal([]);
    } finally {
      dir.remove();
    }
  });

  it('a whole stack on embedded defaults leaves nothing under its data directory for other users', async function () {
    await requireNats(this);
    process.umask(0o022); // the usual default, under which PGlite and leveldb wrote world-readable files
    const stack = await startTestStack();
    try {
      // A registration, so PGlite and the inbox have written rows.
      const token = await stack.login('ada', 'north');
      const res = await fetch(`${stack.url}/v1/patients`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': 'data-dir-1' },
        body: JSON.stringify({ givenName: 'Tovanu', familyName: 'Quelari', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1' }),
      });
      expect(res.status).to.equal(201);
      expect(exposed(stack.dir.path, { reachableOnly: true })).to.deep.equal([]);
      // Folders are private everywhere, and so is every file but those PGlite creates (see `exposed`).
      expect(exposed(stack.dir.path).filter((p) => !/^\/pg\/.+ 6[0-7][0-7]$/.test(p))).to.deep.equal([]);
    } finally {
      await stack.stop();
    }
  });

  it('the ferry CLI on a fresh data directory leaves nothing there for other users', async function () {
    const dir = tempDir('ferry-cli-private-');
    try {
      // The umask of a usual shell, under which PGlite wrote a 0755 pg/ folder.
      const env = { ...process.env, FERRY_DATA_DIR: dir.path, DATABASE_URL: '', COUCHDB_URL: '' };
      const code = await new Promise<number | null>((resolve, reject) => {
        const child = spawn('/bin/sh', ['-c', `umask 022 && exec "${process.execPath}" --import tsx scripts/ferry.ts tenant list`], { env, stdio: 'ignore' });
        child.once('error', reject);
        child.once('exit', resolve);
      });
      expect(code).to.equal(0);
      expect(exposed(dir.path, { reachableOnly: true })).to.deep.equal([]);
      expect(exposed(dir.path).filter((p) => !/^\/pg\/.+ 6[0-7][0-7]$/.test(p))).to.deep.equal([]);
    } finally {
      dir.remove();
    }
  });
});
