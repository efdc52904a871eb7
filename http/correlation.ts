import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

// Correlation ids end up in audit rows, NATS events and logs, so an inbound one must be opaque:
// free text could carry PHI, forged log lines or another request's id pattern. Only a UUID is
// taken (any version, canonical 8-4-4-4-12 form, either case); everything Ferry mints is one
// (randomUUID here, the device's UUIDv7 mutation ids in the worker's batch calls).

/** A UUID of any version in canonical form, either case. Nothing else is accepted. */
export const CORRELATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The inbound id in lower case when it is a UUID, else a fresh one: the one decision every entry point uses. */
export function acceptCorrelationId(inbound: unknown): string {
  return typeof inbound === 'string' && CORRELATION_ID.test(inbound) ? inbound.toLowerCase() : randomUUID();
}

/** Takes a well-formed inbound X-Correlation-Id or mints one; echoes it on the answer. */
export function correlationId() {
  return function correlationIdMiddleware(req: Request, res: Response, next: NextFunction): void {
    const id = acceptCorrelationId(req.get('x-correlation-id'));
    res.locals.correlationId = id;
    res.setHeader('X-Correlation-Id', id);
    next();
  };
}

export function correlationOf(res: Response): string | undefined {
  return typeof res.locals.correlationId === 'string' ? res.locals.correlationId : undefined;
}
