import type { NextFunction, Request, Response } from 'express';
import { correlationOf } from '../../http/correlation.ts';
import type { Logger } from '../../http/log.ts';

// One structured line per request: method, path, status, duration, correlation id and, once a
// token was read, tenant. Never the query string (a name search carries PHI there), never bodies,
// never headers. Paths hold only ids, and Ferry's ids carry no PHI by design (DESIGN §4).

/** The path without its query string. */
export function loggablePath(originalUrl: string): string {
  const q = originalUrl.indexOf('?');
  return q === -1 ? originalUrl : originalUrl.slice(0, q);
}

export function requestLog(logger: Logger) {
  return function requestLogMiddleware(req: Request, res: Response, next: NextFunction): void {
    const started = performance.now();
    res.on('finish', () => {
      const tenant = typeof res.locals.tenant === 'string' ? res.locals.tenant : undefined;
      logger.info(
        {
          correlationId: correlationOf(res),
          method: req.method,
          path: loggablePath(req.originalUrl),
          status: res.statusCode,
          ms: Math.round(performance.now() - started),
          ...(tenant ? { tenant } : {}),
        },
        'request',
      );
    });
    next();
  };
}
