import type { NextFunction, Request, Response } from 'express';

// CORS for the clinician app when it is served from another origin. Only allow-listed origins are
// answered, credentials are never allowed (the app sends Bearer tokens, not cookies), and the
// operator cookie is SameSite=Strict, so cross-site pages get nothing either way.

const ALLOWED_HEADERS = 'authorization, content-type, accept, idempotency-key, if-match, x-correlation-id';
const EXPOSED_HEADERS = 'etag, idempotent-replayed, retry-after, x-correlation-id, location';

export function cors(opts: { origins: readonly string[] }) {
  const allowed = new Set(opts.origins);
  return function corsMiddleware(req: Request, res: Response, next: NextFunction): void {
    const origin = req.get('origin');
    if (!origin || !allowed.has(origin)) {
      if (req.method === 'OPTIONS' && origin) {
        res.status(403).end();
        return;
      }
      return next();
    }
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Vary', 'Origin');
    res.setHeader('Access-Control-Expose-Headers', EXPOSED_HEADERS);
    if (req.method === 'OPTIONS') {
      res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, OPTIONS');
      res.setHeader('Access-Control-Allow-Headers', ALLOWED_HEADERS);
      res.setHeader('Access-Control-Max-Age', '600');
      res.status(204).end();
      return;
    }
    next();
  };
}
