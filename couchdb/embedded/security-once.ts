import type { ExpressPouchApp, Middleware, WrappedDb } from 'express-pouchdb';

// express-pouchdb loads a database's `_security` for a request (`req.couchSecurityObj`, which it
// hands to the security and validation plugins as `secObj`) in a middleware it registers after
// the `_bulk_docs`, `_bulk_get`, `_all_docs`, `_changes` and `_revs_diff` routes. Those routes pass
// `secObj: undefined`, so pouchdb-security reads `_local/_security` again for every doc of a
// `_bulk_docs` (and pouchdb-validation hands `validate_doc_update` an empty `secObj` instead of
// the database's). This loads it once per request, before any database route runs: the same read
// express-pouchdb makes, moved ahead of the routes that missed it.

type SecurityRequest = Parameters<Middleware>[0] & { db?: WrappedDb & { getSecurity(): Promise<unknown> }; couchSecurityObj?: unknown };

/** The first route that used to miss the security object; the guard goes right before it. */
const FIRST_DB_ROUTE = '/:db/_bulk_docs';

export const loadSecurityOnce: Middleware = function ferrySecurityOnce(req, _res, next) {
  const r = req as SecurityRequest;
  if (!r.db || r.couchSecurityObj !== undefined) return next();
  r.db.getSecurity().then(
    (secObj) => {
      r.couchSecurityObj = secObj;
      next();
    },
    (err: unknown) => next(err),
  );
};

/** Fails closed when the stack does not look as expected: the server would rather not start. */
export function installSecurityBeforeRoutes(app: ExpressPouchApp): void {
  const stack = app._router.stack;
  // express-pouchdb's own loaders (for `/:db/*` and `/:db`) would read it a second time; they now
  // step aside when it is already there.
  const theirs = stack.filter((layer) => layer.handle.toString().includes('req.couchSecurityObj = secObj'));
  if (theirs.length === 0) throw new Error("express-pouchdb: its security loader was not found");
  for (const layer of theirs) {
    const load = layer.handle;
    layer.handle = function ferrySecurityLoadedAlready(req, res, next) {
      if ((req as SecurityRequest).couchSecurityObj !== undefined) return next();
      load(req, res, next);
    };
  }
  const at = stack.findIndex((layer) => (layer as { route?: { path?: unknown } }).route?.path === FIRST_DB_ROUTE);
  if (at === -1) throw new Error('express-pouchdb: the _bulk_docs route was not found');
  app.use(loadSecurityOnce);
  const layer = stack.pop();
  if (!layer || layer.handle !== loadSecurityOnce) throw new Error('express-pouchdb: could not install the security loader');
  stack.splice(at, 0, layer);
}
