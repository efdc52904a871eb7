import type { Request, Response } from 'express';
import { FerryError, type ErrorCode } from '../../validators/codes.ts';
import type { Caller } from './policy.ts';
import type { FeedIndex } from './feed.ts';
import type { Inbox } from './upstream.ts';

// What every /sync handler gets: the caller (from the verified token), its tenant inbox, the feed
// index, and the request. Handlers are thin: load, decide with a pure policy function, answer.

export interface SyncContext {
  caller: Caller;
  inbox: Inbox;
  /** The tenant's pull-feed index (platform database). */
  feed: FeedIndex;
  req: Request;
  res: Response;
  /** Aborts when the client goes away, so upstream work stops with it. */
  signal: AbortSignal;
}

/** A CouchDB-style answer `{error, reason}` with the Ferry code beside it, from the one error type. */
export function couchError(code: ErrorCode, opts: { status?: number; retryAfterSeconds?: number } = {}): FerryError {
  return new FerryError(code, {
    ...(opts.status !== undefined ? { status: opts.status } : {}),
    ...(opts.retryAfterSeconds !== undefined ? { details: { retryAfter: opts.retryAfterSeconds } } : {}),
  });
}

export const COUCH_ERROR_NAMES: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'too_large',
  415: 'bad_content_type',
  429: 'too_many_requests',
  500: 'internal_server_error',
  503: 'service_unavailable',
};

/** 404 exactly as CouchDB says it for a missing doc, so "foreign" and "absent" look the same. */
export function missing(): FerryError {
  return new FerryError('NOT_FOUND', { message: 'missing' });
}

export function badRequest(): FerryError {
  return new FerryError('MALFORMED_REQUEST');
}

export function sendJson(res: Response, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.status(status);
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Cache-Control', 'must-revalidate');
  res.end(text);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Query-string values as plain strings (express may hand us arrays for repeated keys: refuse those). */
export function flatQuery(req: Request): Record<string, string> {
  const out: Record<string, string> = {};
  const q = req.query as Record<string, unknown>;
  for (const [k, v] of Object.entries(q)) {
    if (typeof v !== 'string') throw badRequest();
    out[k] = v;
  }
  return out;
}
