import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

const VALID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Takes a well-formed inbound X-Correlation-Id or mints one; echoes it on the answer. */
export function correlationId() {
  return function correlationIdMiddleware(req: Request, res: Response, next: NextFunction): void {
    const inbound = req.get('x-correlation-id');
    const id = inbound && VALID.test(inbound) ? inbound : randomUUID();
    res.locals.correlationId = id;
    res.setHeader('X-Correlation-Id', id);
    next();
  };
}

export function correlationOf(res: Response): string | undefined {
  return typeof res.locals.correlationId === 'string' ? res.locals.correlationId : undefined;
}
