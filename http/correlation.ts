import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

/** What an inbound correlation id may look like; anything else is replaced by a fresh one. */
export const CORRELATION_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Takes a well-formed inbound X-Correlation-Id or mints one; echoes it on the answer. */
export function correlationId() {
  return function correlationIdMiddleware(req: Request, res: Response, next: NextFunction): void {
    const inbound = req.get('x-correlation-id');
    const id = inbound && CORRELATION_ID.test(inbound) ? inbound : randomUUID();
    res.locals.correlationId = id;
    res.setHeader('X-Correlation-Id', id);
    next();
  };
}

export function correlationOf(res: Response): string | undefined {
  return typeof res.locals.correlationId === 'string' ? res.locals.correlationId : undefined;
}
