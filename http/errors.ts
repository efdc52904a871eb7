import type { NextFunction, Request, Response } from 'express';
import { FerryError } from '../validators/codes.ts';
import { correlationOf } from './correlation.ts';
import { loggableError, type Logger } from './log.ts';

/** Maps anything thrown to a FerryError; body-parser's own errors keep their meaning. */
export function toFerryError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number };
  if (e && typeof e === 'object') {
    if (e.type === 'entity.too.large') return new FerryError('PAYLOAD_TOO_LARGE');
    if (e.type === 'entity.parse.failed' || e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') {
      return new FerryError('MALFORMED_REQUEST');
    }
    const status = e.status ?? e.statusCode;
    if (status === 400) return new FerryError('MALFORMED_REQUEST');
  }
  return new FerryError('INTERNAL');
}

/** The one place errors become HTTP: a JSON body from the catalogue, never a stack trace. */
export function errorHandler(logger: Logger) {
  return function ferryErrorHandler(err: unknown, req: Request, res: Response, _next: NextFunction): void {
    const ferry = toFerryError(err);
    const correlationId = correlationOf(res);
    if (ferry.status >= 500) {
      logger.error({ correlationId, method: req.method, route: req.route?.path, err: loggableError(err) }, 'request failed');
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    res.status(ferry.status).json(ferry.toBody(correlationId));
  };
}

/** 404 in the catalogue's shape for anything no route took. */
export function notFound() {
  return function notFoundHandler(_req: Request, res: Response): void {
    res.status(404).json(new FerryError('NOT_FOUND').toBody(correlationOf(res)));
  };
}
