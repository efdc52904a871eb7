import { readdir, stat } from 'node:fs/promises';
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { join } from 'node:path';
import PouchDB from 'pouchdb';
import expressPouchDB, { type ExpressPouchApp, type Middleware, type WrappedDb } from 'express-pouchdb';
import type { CouchCredentials } from '../client.ts';
import { ensurePrivateDir } from '../secrets.ts';
import { installAuthCache } from './auth-cache.ts';
import { installCompiledValidation } from './compiled-validation.ts';
import { installDesignDocCache } from './design-cache.ts';
import { installKeyedReads } from './keyed-reads.ts';
import { createLevelRegistry, installPurgeAndCompact } from './purge.ts';
import { installSecurityBeforeRoutes } from './security-once.ts';
import { decideAfterAuth, decideBeforeAuth, type AccessDecision, type UserCtx } from './access.ts';

// The embedded CouchDB-compatible server: express-pouchdb on PouchDB 9 + leveldb, wrapped so that
// nothing anonymous reaches it, no CORS header ever leaves it and admin party is unreachable.

export interface EmbeddedAppOptions {
  /** `{dataDir}/couch`: leveldb files live in `db/`, the server log in `couch.log`. */
  couchDir: string;
  admin: CouchCredentials;
  /** Signs `AuthSession` cookies; persisted so sessions survive a restart. */
  cookieSecret: string;
  /** The server's stable uuid (`GET /`). */
  uuid: string;
}

/**
 * Parts of fullCouchDB mode that Ferry leaves out:
 * - `routes/special-test-auth` turns every header-less request into `_admin` once a config key is set;
 * - `replicator` and `routes/replicate` make the server fetch arbitrary URLs (Ferry never needs it);
 * - `routes/http-log` writes request headers, Basic credentials included, at debug level;
 * - `routes/vhosts`, `routes/rewrite`, `routes/cluster-rewrite` rewrite paths behind the guards' back;
 * - `routes/db-updates` is only a 400 "TODO" (STACK-NOTES trap 6);
 * - `disk-size` walks the database's directory on every `GET /{db}` (the gateway and the worker ask
 *   often); `installCachedDiskSize` reports a size computed at most once a minute, off the request.
 */
const EXCLUDED_PARTS = [
  'routes/special-test-auth',
  'replicator',
  'routes/replicate',
  'routes/http-log',
  'routes/vhosts',
  'routes/rewrite',
  'routes/cluster-rewrite',
  'routes/db-updates',
  'disk-size',
];

const DISK_SIZE_MAX_AGE_MS = 60_000;

/** Bytes of the files of one leveldb directory (flat: leveldb keeps no subdirectories). */
async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir)) {
    total += await stat(join(dir, name)).then(
      (s) => (s.isFile() ? s.size : 0),
      () => 0,
    );
  }
  return total;
}

/**
 * `disk_size` in db info without a walk per request: the last size measured, refreshed in the
 * background when older than a minute (absent until first measured). CouchDB clients do not read it;
 * Fauxton shows it.
 */
function installCachedDiskSize(app: ExpressPouchApp, dbDir: string): void {
  const sizes = new Map<string, { bytes: number | null; at: number; running: boolean }>();
  const refresh = (name: string) => {
    const entry = sizes.get(name) ?? { bytes: null, at: 0, running: false };
    sizes.set(name, entry);
    if (entry.running || Date.now() - entry.at < DISK_SIZE_MAX_AGE_MS) return entry;
    entry.running = true;
    directoryBytes(join(dbDir, name))
      .then((bytes) => (entry.bytes = bytes))
      .catch(() => undefined)
      .finally(() => {
        entry.running = false;
        entry.at = Date.now();
      });
    return entry;
  };
  app.dbWrapper.registerWrapper((name: string, db: WrappedDb, next: () => unknown) => {
    const info = db.info.bind(db);
    db.info = (...args: unknown[]) => {
      const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as (err: unknown, info?: unknown) => void) : null;
      const promise = info(...args).then((value) => {
        const { bytes } = refresh(name);
        return bytes === null ? value : { ...value, disk_size: bytes };
      });
      if (callback) promise.then((v) => callback(null, v), (err: unknown) => callback(err));
      return promise;
    };
    return next();
  });
}

type CouchRequest = IncomingMessage & { couchSession?: { userCtx?: UserCtx } };

function send(res: ServerResponse, decision: Exclude<AccessDecision, { kind: 'allow' }>): void {
  const body = JSON.stringify({ error: decision.error, reason: decision.reason });
  res.writeHead(decision.status, { 'content-type': 'application/json', 'cache-control': 'must-revalidate' });
  res.end(body);
}

function rawPath(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

function hasCredentials(req: IncomingMessage): boolean {
  const auth = req.headers.authorization;
  if (auth !== undefined) return /^Basic\s+\S+/i.test(auth);
  return /(?:^|;\s*)AuthSession=[^;]+/.test(req.headers.cookie ?? '');
}

/** Drops every `Access-Control-*` header, whoever sets it (STACK-NOTES trap 5). */
function withoutCors(res: ServerResponse): void {
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name: string, value: number | string | readonly string[]) =>
    name.toLowerCase().startsWith('access-control-') ? res : setHeader(name, value);
}

function setConfig(app: ExpressPouchApp, section: string, key: string, value: unknown): Promise<void> {
  return new Promise((resolve, reject) => app.couchConfig.set(section, key, value, (err) => (err ? reject(err) : resolve())));
}

function adminsConfigured(app: ExpressPouchApp): boolean {
  return Object.keys(app.couchConfig.getSection('admins')).length > 0;
}

/**
 * Puts `guard` right after express-pouchdb's authentication middleware (which follows
 * cookie-parser), so it sees `req.couchSession` before any route runs. Fails closed if the stack
 * does not look as expected.
 */
function insertAfterAuthentication(app: ExpressPouchApp, guard: Middleware): void {
  const stack = app._router.stack;
  const cookieParser = stack.findIndex((layer) => layer.name === 'cookieParser');
  if (cookieParser === -1 || cookieParser + 1 >= stack.length) throw new Error('express-pouchdb: authentication middleware not found');
  app.use(guard);
  const layer = stack.pop();
  if (!layer || layer.handle !== guard) throw new Error('express-pouchdb: could not install the access guard');
  stack.splice(cookieParser + 2, 0, layer);
}

/** Builds the request listener. Admin credentials are in the config before this resolves. */
export async function createEmbeddedApp(opts: EmbeddedAppOptions): Promise<RequestListener> {
  const dbDir = join(opts.couchDir, 'db');
  ensurePrivateDir(dbDir);
  // The leveldb handles `_purge` and `_compact` need (purge.ts) are recorded as each database opens.
  const levels = createLevelRegistry();
  const Pouch = PouchDB.defaults({ prefix: `${dbDir}/`, ...levels.options } as PouchDB.Configuration.DatabaseConfiguration);
  const app = expressPouchDB(Pouch, {
    mode: 'fullCouchDB',
    // The config lives in memory: admin and settings are set again below at every start (trap 19).
    inMemoryConfig: true,
    logPath: join(opts.couchDir, 'couch.log'),
    overrideMode: { exclude: EXCLUDED_PARTS },
  });

  const afterAuth: Middleware = function ferryAccessAfterAuth(req, res, next) {
    const userCtx = (req as CouchRequest).couchSession?.userCtx ?? { name: null, roles: [] };
    const decision = decideAfterAuth({ method: req.method ?? 'GET', path: rawPath(req) }, userCtx, adminsConfigured(app));
    if (decision.kind === 'allow') return next();
    send(res, decision);
  };
  insertAfterAuthentication(app, afterAuth);
  installAuthCache(app);
  installCachedDiskSize(app, dbDir);
  installDesignDocCache(app);
  installCompiledValidation();
  installKeyedReads(app);
  installSecurityBeforeRoutes(app);
  installPurgeAndCompact(app, levels, dbDir);

  await setConfig(app, 'log', 'level', 'warning');
  await setConfig(app, 'couch_httpd_auth', 'secret', opts.cookieSecret);
  await setConfig(app, 'couchdb', 'uuid', opts.uuid);
  await setConfig(app, 'admins', opts.admin.username, opts.admin.password);
  if (!adminsConfigured(app)) throw new Error('embedded CouchDB: admin credentials were not applied');

  return function ferryEmbeddedCouch(req: IncomingMessage, res: ServerResponse) {
    withoutCors(res);
    const decision = decideBeforeAuth({ method: req.method ?? 'GET', path: rawPath(req), hasCredentials: hasCredentials(req) });
    if (decision.kind !== 'allow') return send(res, decision);
    app(req, res);
  };
}
