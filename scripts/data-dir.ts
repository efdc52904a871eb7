import { chmodSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

// FERRY_DATA_DIR holds patient rows (PGlite's files and WAL), the inboxes (leveldb), signing keys,
// sessions and logs: nothing in it is for any other local user. The process umask makes what
// every component writes from now on private (child processes inherit it: the embedded CouchDB,
// PGlite's files, logs), and a walk takes group and other bits off what an older version left.

const PRIVATE_UMASK = 0o077;

/** Private from here on, for this process and its children; returns how many existing entries were tightened. */
export function makeDataDirPrivate(dir: string): number {
  process.umask(PRIVATE_UMASK);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return tighten(dir);
}

function tighten(path: string): number {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st || st.isSymbolicLink()) return 0;
  let changed = 0;
  if ((st.mode & PRIVATE_UMASK) !== 0) {
    chmodSync(path, st.mode & 0o7777 & ~PRIVATE_UMASK);
    changed++;
  }
  if (st.isDirectory()) for (const name of readdirSync(path)) changed += tighten(join(path, name));
  return changed;
}
