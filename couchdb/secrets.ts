import { chmodSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

// Small secret files under `{dataDir}/couch/`: generated at random on first use, kept with mode
// 0600 in a 0700 directory, and read back on every later start.

export function couchDir(dataDir: string): string {
  return join(dataDir, 'couch');
}

export function randomSecret(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

/** Creates `dir` (and parents) with mode 0700 when missing. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/**
 * Reads the JSON object in `file`, or writes `create()` there (atomically, mode 0600) when the
 * file does not exist yet. `isValid` guards against a truncated or hand-edited file: an invalid
 * file is an error, never silently replaced, because the secrets in it are already in use.
 */
export function loadOrCreateSecretFile<T>(file: string, create: () => T, isValid: (value: unknown) => value is T): T {
  ensurePrivateDir(dirname(file));
  const existing = readSecretFile(file, isValid);
  if (existing !== null) return existing;
  const value = create();
  const tmp = `${file}.${process.pid}.${randomSecret(6)}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  try {
    // link() fails when another process created the file first: then its secrets win.
    linkSync(tmp, file);
    return value;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const winner = readSecretFile(file, isValid);
    if (winner === null) throw err;
    return winner;
  } finally {
    unlinkSync(tmp);
  }
}

function readSecretFile<T>(file: string, isValid: (value: unknown) => value is T): T | null {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  const value: unknown = JSON.parse(raw);
  if (!isValid(value)) throw new Error(`${file} is not a valid Ferry secrets file`);
  return value;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function hasStrings<K extends string>(value: unknown, keys: readonly K[]): value is Record<K, string> {
  return isRecord(value) && keys.every((k) => typeof value[k] === 'string' && value[k] !== '');
}
