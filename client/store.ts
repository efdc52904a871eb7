// The encrypted local store: one PouchDB per (tenant, owner), named without PHI, encrypted with
// crypto-pouch under a random data key that the keyring wraps (DESIGN §7). Everything that opens
// or closes the database lives here; what the docs mean lives in outbox/drafts/reconcile.

import CryptoPouch from 'crypto-pouch';
import { statusDocSchema, parseInboxDocId } from '../validators/mutation.ts';
import { ClientError } from './errors.ts';
import {
  DEFAULT_KDF_ITERATIONS,
  KEYRING_ID,
  generateDataKey,
  sha256Hex,
  toBase64,
  randomBytes,
  unwrapDataKey,
  wrapDataKey,
  type KeyringFields,
} from './keyring.ts';

export type PouchStatic = PouchDB.Static;
export type Db = PouchDB.Database;

export interface StoreConfig {
  /** A PouchDB constructor with the storage adapter, http, replication and crypto-pouch plugged in. */
  PouchDB: PouchStatic;
  /** `idb` in browsers, `leveldb` or `memory` in Node. */
  adapter: string;
  /** Prepended to the database name: a directory (with trailing slash) for leveldb. */
  prefix?: string;
  tenant: string;
  owner: string;
}

interface KeyringDoc extends KeyringFields {
  _id: typeof KEYRING_ID;
  _rev?: string;
  createdAt: string;
  updatedAt: string;
}

/** `ferry-` + 32 hex chars of SHA-256(tenant, owner): stable, distinct per (tenant, owner), no PHI. */
export async function localDbName(tenant: string, owner: string): Promise<string> {
  return `ferry-${(await sha256Hex(`ferry/v1\u0000${tenant}\u0000${owner}`)).slice(0, 32)}`;
}

/** The AES-GCM additional data that binds a keyring to its store. */
function keyringContext(name: string): string {
  return `ferry-keyring/v1/${name}`;
}

const withCrypto = new WeakSet<PouchStatic>();
interface CryptoDb {
  crypto(options: { password: string; ignore: string[] }): Promise<void>;
}

export function rawDb(config: StoreConfig, name: string): Db {
  if (!withCrypto.has(config.PouchDB)) {
    config.PouchDB.plugin(CryptoPouch as unknown as PouchDB.Plugin);
    withCrypto.add(config.PouchDB);
  }
  const opts: PouchDB.Configuration.DatabaseConfiguration = { adapter: config.adapter } as PouchDB.Configuration.DatabaseConfiguration;
  if (config.prefix) (opts as { prefix?: string }).prefix = config.prefix;
  return new config.PouchDB(name, opts);
}

async function readKeyring(db: Db): Promise<KeyringDoc | null> {
  try {
    return (await db.get(KEYRING_ID)) as unknown as KeyringDoc;
  } catch (err) {
    if ((err as { status?: number }).status === 404) return null;
    throw err;
  }
}

/**
 * crypto-pouch derives its own key from the password with argon2id (4 MiB, 100 passes) and keeps
 * the salt and parameters in `_local/crypto`. Our "password" is already a random 256-bit key, so
 * stretching it adds nothing; the passphrase is stretched once, in the keyring. Seeding
 * `_local/crypto` with one pass keeps opening fast (crypto-pouch 4.0.2 reads the parameters from
 * that doc: `[saltBase64, {saltLength, memorySize, iterations, parallelism}]`, base64 of JSON).
 */
async function seedCryptoParams(db: Db): Promise<void> {
  const exportString = btoa(JSON.stringify([toBase64(randomBytes(16)), { saltLength: 16, memorySize: 64, iterations: 1, parallelism: 1 }]));
  try {
    await db.put({ _id: '_local/crypto', exportString } as unknown as PouchDB.Core.PutDocument<object>);
  } catch (err) {
    if ((err as { status?: number }).status !== 409) throw err;
  }
}

type AnyFn = (...args: unknown[]) => unknown;
// Library boundary: pouchdb-wrappers keeps the unwrapped methods on `_originals`.
interface Wrapped {
  _originals?: Record<string, AnyFn>;
  get: AnyFn;
  bulkGet: AnyFn;
  bulkDocs: AnyFn;
}

/**
 * crypto-pouch stores its ciphertext in a top-level field named `payload`, and transform-pouch
 * decrypts every doc that has one. PouchDB's `get(id, {open_revs})` calls the (wrapped) `get` once
 * per revision and `bulkGet` is built on that, so transform-pouch decrypts those docs twice. A doc
 * whose own data has a `payload` field — every Ferry mutation doc — then fails the second
 * decryption and push replication stops with "There was a problem getting docs".
 * The fix: route `open_revs` reads and `bulkGet` to PouchDB's own implementations, which reach the
 * transformed single-revision `get` exactly once per doc.
 */
function decryptOnce(db: Db): void {
  const w = db as unknown as Wrapped;
  const originals = w._originals;
  if (!originals?.get || !originals.bulkGet) throw new Error('crypto-pouch/transform-pouch layout changed: cannot harden reads');
  const transformedGet = w.get;
  const coreGet = originals.get;
  w.get = function get(...args: unknown[]) {
    const opts = args[1];
    const openRevs = typeof opts === 'object' && opts !== null && (opts as { open_revs?: unknown }).open_revs;
    return (openRevs ? coreGet : transformedGet).apply(db, args);
  };
  w.bulkGet = originals.bulkGet;
}

export interface PullGuardReport {
  dropped: number;
}

/**
 * Decides what a pull may store: the doc to write (the pulled one, or a reduced form of it), or
 * null to drop it.
 */
export type PullAdmit = (doc: unknown) => object | null;

/**
 * Defence in depth for pull (DESIGN §7 "nothing pulled for B ever lands in A's database"): the
 * replicator writes pulled docs with `bulkDocs(..., new_edits: false)`. Only what `admit` lets
 * through is stored (for the outbox store: this owner's status docs for this tenant, with an id
 * that matches their body; for the replica: this tenant's record docs); everything else is
 * dropped before it is encrypted and stored. This sits in front of crypto-pouch, so it sees the
 * pulled docs in clear and adds no parameter to the wire (a replication `filter` function would
 * make PouchDB ask for `include_docs=true`).
 */
function guardPulls(db: Db, admit: PullAdmit, onDrop: (report: PullGuardReport) => void, onStored: (ids: string[]) => void): void {
  const w = db as unknown as Wrapped;
  const inner = w.bulkDocs;
  w.bulkDocs = function bulkDocs(...args: unknown[]) {
    const [first, second] = args;
    const body = first as { docs?: unknown[]; new_edits?: boolean } | unknown[];
    const docs = Array.isArray(body) ? body : body?.docs;
    const newEdits = Array.isArray(body) ? (second as { new_edits?: boolean } | undefined)?.new_edits : (body?.new_edits ?? (second as { new_edits?: boolean } | undefined)?.new_edits);
    if (newEdits !== false || !Array.isArray(docs)) return inner.apply(db, args);
    const kept = docs.flatMap((doc) => admit(doc) ?? []);
    if (kept.length !== docs.length) onDrop({ dropped: docs.length - kept.length });
    const callback = args.find((a) => typeof a === 'function') as ((err: unknown, res?: unknown) => void) | undefined;
    if (kept.length === 0) {
      if (callback) {
        callback(null, []);
        return undefined;
      }
      return Promise.resolve([]);
    }
    // Told only once the write has landed, so whoever reads the ids finds the docs stored.
    const ids = kept.map((doc) => (doc as { _id: string })._id);
    const told = (err: unknown, res?: unknown): void => {
      if (!err) onStored(ids);
      callback!(err, res);
    };
    const rest = args.slice(1).map((a) => (a === callback ? told : a));
    const result = inner.apply(db, [Array.isArray(body) ? kept : { ...body, docs: kept }, ...rest]);
    if (callback) return result;
    return (result as Promise<unknown>).then((res) => {
      onStored(ids);
      return res;
    });
  };
}

export function isOwnStatus(doc: unknown, tenant: string, owner: string): boolean {
  if (typeof doc !== 'object' || doc === null) return false;
  const d = doc as Record<string, unknown>;
  const ref = typeof d._id === 'string' ? parseInboxDocId(d._id) : null;
  if (!ref || ref.kind !== 'status' || ref.owner !== owner) return false;
  if (d._deleted === true) return false;
  const { _revisions: _r, ...body } = d;
  const parsed = statusDocSchema.safeParse(body);
  return parsed.success && parsed.data.tenant === tenant && parsed.data.owner === owner && parsed.data.mutation === ref.mid;
}

export interface OpenedStore {
  db: Db;
  name: string;
  /** The replica's store (`records` was given): same data key, its own pull guard. */
  records: Db | null;
}

/** How pulled docs reach a store: what may be stored, and who is told. */
export interface PullGuard {
  admit: PullAdmit;
  onDropped(report: PullGuardReport): void;
  /** Ids a pull has just stored (after the write). */
  onStored(ids: string[]): void;
}

export interface OpenStoreOptions {
  passphrase: string;
  /** PBKDF2 iterations for a new keyring. Existing keyrings keep their own. */
  kdfIterations?: number;
  onPullDropped?: (report: PullGuardReport) => void;
  /**
   * Ids of status docs a pull has just stored (after the write). Pull is the only way status docs
   * arrive, so this replaces a live local changes feed, which cost every local write a changes
   * query.
   */
  onPulled?: (ids: string[]) => void;
  /** Also open the replica's store (`recordsDbName`), encrypted with the same data key. */
  records?: PullGuard;
  now?: () => Date;
}

/**
 * The replica's store: a second database next to the outbox store, `ferry-r-` + 32 hex chars of
 * SHA-256(tenant, owner). Its own name, so its pull guard, its checkpoints and its lifetime
 * (dropped wholesale when the membership goes) are its own; the same data key encrypts it.
 */
export async function recordsDbName(tenant: string, owner: string): Promise<string> {
  return `ferry-r-${(await sha256Hex(`ferry/records/v1\u0000${tenant}\u0000${owner}`)).slice(0, 32)}`;
}

/** crypto-pouch under the data key, `_revisions` in clear (STACK-NOTES trap 1), reads decrypted once. */
async function encryptWith(db: Db, dataKey: string): Promise<void> {
  await seedCryptoParams(db);
  // Object form with `_revisions` in clear: STACK-NOTES trap 1.
  await (db as unknown as CryptoDb).crypto({ password: dataKey, ignore: ['_revisions'] });
  decryptOnce(db);
}

/**
 * Opens (creating on first use) the encrypted store. A wrong passphrase closes the handle and
 * throws `ClientError('WRONG_PASSPHRASE')`; nothing on disk is touched.
 */
export async function openStore(config: StoreConfig, options: OpenStoreOptions): Promise<OpenedStore> {
  if (!options.passphrase) throw new ClientError('INVALID_ARGUMENT', 'A passphrase or PIN is required.');
  const name = await localDbName(config.tenant, config.owner);
  const db = rawDb(config, name);
  const now = options.now ?? (() => new Date());
  let records: Db | null = null;
  try {
    let keyring = await readKeyring(db);
    let dataKey = '';
    if (!keyring) {
      dataKey = generateDataKey();
      const fields = await wrapDataKey(dataKey, options.passphrase, keyringContext(name), options.kdfIterations ?? DEFAULT_KDF_ITERATIONS);
      const at = now().toISOString();
      try {
        await db.put({ _id: KEYRING_ID, ...fields, createdAt: at, updatedAt: at } as unknown as PouchDB.Core.PutDocument<object>);
      } catch (err) {
        // Another handle (a second tab) created the store first: use its keyring.
        if ((err as { status?: number }).status !== 409) throw err;
        keyring = await readKeyring(db);
      }
    }
    if (keyring) {
      // An existing store (or one another handle just created): unwrap its key.
      const unwrapped = await unwrapDataKey(keyring, options.passphrase, keyringContext(name));
      if (!unwrapped.ok) throw new ClientError(unwrapped.reason === 'corrupt' ? 'KEYRING_CORRUPT' : 'WRONG_PASSPHRASE');
      dataKey = unwrapped.dataKey;
    }
    if (!dataKey) throw new ClientError('KEYRING_CORRUPT');
    await encryptWith(db, dataKey);
    if (options.records) {
      records = rawDb(config, await recordsDbName(config.tenant, config.owner));
      await encryptWith(records, dataKey);
      guardPulls(records, options.records.admit, options.records.onDropped, options.records.onStored);
    }
    dataKey = '';
    guardPulls(db, (doc) => (isOwnStatus(doc, config.tenant, config.owner) ? (doc as object) : null), options.onPullDropped ?? (() => undefined), options.onPulled ?? (() => undefined));
    return { db, name, records };
  } catch (err) {
    await db.close().catch(() => undefined);
    await records?.close().catch(() => undefined);
    throw err;
  }
}

/**
 * Re-wraps the data key under a new passphrase, through the open store's handle (a second handle
 * on the same name would close the shared backend when it closes). The data itself is not touched.
 */
export async function changePassphrase(db: Db, name: string, oldPassphrase: string, newPassphrase: string, opts: { kdfIterations?: number; now?: () => Date } = {}): Promise<void> {
  if (!newPassphrase) throw new ClientError('INVALID_ARGUMENT', 'The new passphrase must not be empty.');
  const keyring = await readKeyring(db);
  if (!keyring) throw new ClientError('KEYRING_CORRUPT');
  const unwrapped = await unwrapDataKey(keyring, oldPassphrase, keyringContext(name));
  if (!unwrapped.ok) throw new ClientError(unwrapped.reason === 'corrupt' ? 'KEYRING_CORRUPT' : 'WRONG_PASSPHRASE');
  const fields = await wrapDataKey(unwrapped.dataKey, newPassphrase, keyringContext(name), opts.kdfIterations ?? keyring.kdf.iterations);
  const next: KeyringDoc = { ...keyring, ...fields, updatedAt: (opts.now ?? (() => new Date()))().toISOString() };
  await db.put(next as unknown as PouchDB.Core.PutDocument<object>);
}

/** Reads docs by id prefix, decrypted (the store must be open), stale `_revisions` stripped. */
export async function readPrefix<T>(db: Db, prefix: string): Promise<T[]> {
  const res = await db.allDocs({ include_docs: true, startkey: prefix, endkey: `${prefix}\uffff` });
  const out: T[] = [];
  for (const row of res.rows) {
    if (!('doc' in row) || !row.doc) continue;
    out.push(stripRevisions(row.doc) as T);
  }
  return out;
}

export function stripRevisions<T extends object>(doc: T): T {
  if ('_revisions' in doc) {
    const { _revisions: _r, ...rest } = doc as T & { _revisions?: unknown };
    return rest as T;
  }
  return doc;
}

/** `_local` docs are never replicated and not encrypted by crypto-pouch: ids and counters only. */
export async function getLocal<T extends object>(db: Db, id: string): Promise<(T & { _id: string; _rev?: string }) | null> {
  try {
    return (await db.get(id)) as unknown as T & { _id: string; _rev?: string };
  } catch (err) {
    if ((err as { status?: number }).status === 404) return null;
    throw err;
  }
}
