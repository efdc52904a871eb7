import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// One Ferry process per data directory. PGlite is single-process: a second process on the same
// FERRY_DATA_DIR would open the same database files, take every worker lease while the first
// still claims them, and corrupt what both write. `ferry.lock` in the data dir names the holder;
// it is written whole to a temp file and then hard-linked into place, which fails if the name
// exists: of two processes starting at once exactly one gets it, and nobody ever reads a
// half-written lock. A lock whose holder is gone (crash, kill -9, a container restarted with the same pid) is stale and
// is taken over: the holder is identified by pid *and* the kernel's start time of that pid, so a
// recycled pid does not keep the lock alive.

export const LOCK_FILE = 'ferry.lock';

export interface LockHolder {
  pid: number;
  /** What holds it: `server` (npm start, the gateway), `cli` (a ferry command). */
  component: string;
  /** ISO time the lock was taken. */
  since: string;
}

interface LockRecord extends LockHolder {
  /** /proc start time of the holder's pid (clock ticks since boot); null where there is no /proc. */
  started: string | null;
  token: string;
}

export interface DataDirLock {
  readonly path: string;
  readonly holder: LockHolder;
  /** Removes the lock if it is still this one's; safe to call twice. */
  release(): void;
}

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
  constructor(
    readonly dataDir: string,
    readonly holder: LockHolder,
  ) {
    super(
      `FERRY_DATA_DIR ${dataDir} is in use by another Ferry process (${holder.component}, pid ${holder.pid}, since ${holder.since}); ` +
        'stop it first, or set FERRY_DATA_DIR to another directory (a second stack also needs its own FERRY_PORT)',
    );
  }
}

/** The kernel's start time of `pid`, or null when it cannot be read (no such process, no /proc). */
function startTimeOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the parenthesised command name, which may itself hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pure: does the record name a process that is still the one that took the lock? */
export function holderIsLive(record: Pick<LockRecord, 'pid' | 'started'>, alive: (pid: number) => boolean, startTime: (pid: number) => string | null): boolean {
  if (!Number.isInteger(record.pid) || record.pid <= 0 || !alive(record.pid)) return false;
  const now = startTime(record.pid);
  // Without /proc on either side, a live pid is all there is to go on.
  if (record.started === null || now === null) return true;
  return now === record.started;
}

function readRecord(path: string): LockRecord | null | 'unreadable' {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? null : 'unreadable';
  }
  try {
    const v = JSON.parse(raw) as Partial<LockRecord>;
    if (typeof v.pid !== 'number' || typeof v.token !== 'string') return 'unreadable';
    return { pid: v.pid, component: String(v.component ?? 'unknown'), since: String(v.since ?? ''), started: typeof v.started === 'string' ? v.started : null, token: v.token };
  } catch {
    // A half-written file from a crash between create and write.
    return 'unreadable';
  }
}

/** The live holder of the data dir's lock, if any (for the CLI's messages, and to find the running server). */
export function readDataDirLock(dataDir: string): LockHolder | null {
  const record = readRecord(join(dataDir, LOCK_FILE));
  if (record === null || record === 'unreadable') return null;
  if (!holderIsLive(record, pidAlive, startTimeOf)) return null;
  return { pid: record.pid, component: record.component, since: record.since };
}

/** Takes the data dir's lock or throws DataDirLockedError naming the holder. */
export function acquireDataDirLock(dataDir: string, component: string): DataDirLock {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, LOCK_FILE);
  const record: LockRecord = {
    pid: process.pid,
    component,
    since: new Date().toISOString(),
    started: startTimeOf(process.pid),
    token: randomBytes(12).toString('hex'),
  };
  const temp = `${path}.${record.token}`;
  writeFileSync(temp, JSON.stringify(record), { mode: 0o600 });
  try {
    return take(dataDir, path, temp, record);
  } finally {
    rmSync(temp, { force: true });
  }
}

function take(dataDir: string, path: string, temp: string, record: LockRecord): DataDirLock {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      linkSync(temp, path);
      let released = false;
      return {
        path,
        holder: { pid: record.pid, component: record.component, since: record.since },
        release() {
          if (released) return;
          released = true;
          const now = readRecord(path);
          // Never remove a lock someone else took over after ours was judged stale.
          if (now !== null && now !== 'unreadable' && now.token === record.token) unlinkSync(path);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const other = readRecord(path);
    if (other === null) continue; // released in between: try again
    if (other !== 'unreadable' && holderIsLive(other, pidAlive, startTimeOf)) {
      throw new DataDirLockedError(dataDir, { pid: other.pid, component: other.component, since: other.since });
    }
    removeStale(path, temp, other);
  }
  const holder = readDataDirLock(dataDir);
  throw new DataDirLockedError(dataDir, holder ?? { pid: 0, component: 'unknown', since: '' });
}

/**
 * Removes the stale lock `seen` under a takeover guard (`ferry.lock.takeover`, taken by the same
 * hard-link trick), so two processes that both found it stale can never remove each other's fresh
 * lock: the one holding the guard re-reads the lock and removes it only if it is still `seen`.
 * The other finds the guard taken and simply races for the lock name again.
 */
function removeStale(path: string, temp: string, seen: LockRecord | 'unreadable'): void {
  const guard = `${path}.takeover`;
  try {
    linkSync(temp, guard);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const holder = readRecord(guard);
    // A guard is held for a few system calls; one whose holder is gone was left by a crash.
    if (holder === null || (holder !== 'unreadable' && holderIsLive(holder, pidAlive, startTimeOf))) return;
    rmSync(guard, { force: true });
    return;
  }
  try {
    const again = readRecord(path);
    const same = seen === 'unreadable' ? again === 'unreadable' : again !== null && again !== 'unreadable' && again.token === seen.token;
    if (same) rmSync(path, { force: true });
  } finally {
    rmSync(guard, { force: true });
  }
}
