// Serves the built web app: static files at /app/ (the service worker's scope), and `/` sends
// browsers there. Everything is revalidated on each load (no-cache), so a new build is picked up;
// the service worker keeps its own app-shell cache for offline reloads (STACK-NOTES 11).

import express, { Router, type Request, type Response, type NextFunction } from 'express';
import { FerryError } from '../validators/codes.ts';
import { isAppRoute } from './src/paths.ts';

export interface WebAppOptions {
  /** The built folder (web/dist). */
  dir: string;
}

const CSP = [
  "default-src 'self'",
  // crypto-pouch compiles hash-wasm (WebAssembly); 'wasm-unsafe-eval' allows that and no JS eval.
  "script-src 'self' 'wasm-unsafe-eval'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function webAppRoutes(opts: WebAppOptions): Router {
  const router = Router();
  router.get('/', (req: Request, res: Response, next: NextFunction) => {
    // Only a page load (its Accept names text/html); JSON callers of `/` (CouchDB clients, Fauxton) go on.
    if (/\btext\/html\b/.test(req.get('accept') ?? '') && req.accepts(['html', 'json']) === 'html') return res.redirect(302, '/app/');
    next();
  });
  router.use(
    '/app',
    (_req: Request, res: Response, next: NextFunction) => {
      res.setHeader('Content-Security-Policy', CSP);
      res.setHeader('Cache-Control', 'no-cache');
      next();
    },
    spaFallback,
    express.static(opts.dir, { index: 'index.html', redirect: true, fallthrough: false, etag: true, dotfiles: 'deny' }),
    staticErrors,
  );
  return router;
}


function spaFallback(req: Request, _res: Response, next: NextFunction): void {
  if ((req.method === 'GET' || req.method === 'HEAD') && isAppRoute(req.path)) req.url = '/index.html';
  next();
}

/**
 * What serve-static's own errors mean, in the catalogue: an unknown file, a dotfile (403) and a
 * path that climbs out (403) are all the same 404, so none of them tells what exists; a path that
 * cannot be decoded is 400. Only something else is a 500.
 */
export function staticErrorCode(status: number | undefined): 'NOT_FOUND' | 'MALFORMED_REQUEST' | null {
  if (status === 404 || status === 403) return 'NOT_FOUND';
  if (status === 400) return 'MALFORMED_REQUEST';
  return null;
}

function staticErrors(err: unknown, _req: Request, _res: Response, next: NextFunction): void {
  const status = err !== null && typeof err === 'object' ? ((err as { status?: unknown }).status ?? (err as { statusCode?: unknown }).statusCode) : undefined;
  const code = staticErrorCode(typeof status === 'number' ? status : undefined);
  next(code ? new FerryError(code) : err);
}
