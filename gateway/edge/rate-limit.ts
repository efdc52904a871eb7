import type { NextFunction, Request, Response } from 'express';
import { FerryError } from '../../validators/codes.ts';

// Token buckets, decided by a pure function and kept in memory per gateway process. With several
// gateway processes each enforces its own share; that bounds abuse without a shared store.

export interface Bucket {
  tokens: number;
  at: number;
}

export interface RateLimit {
  /** Tokens added per second. */
  rate: number;
  /** Bucket size: how many requests may come at once. */
  burst: number;
}

export type Take = { kind: 'allow'; bucket: Bucket } | { kind: 'limited'; bucket: Bucket; retryAfterSeconds: number };

/** Takes one token from `bucket` at time `now` (ms); a missing bucket starts full. */
export function takeToken(bucket: Bucket | undefined, now: number, limit: RateLimit): Take {
  const current = bucket ? Math.min(limit.burst, bucket.tokens + ((now - bucket.at) / 1000) * limit.rate) : limit.burst;
  if (current >= 1) return { kind: 'allow', bucket: { tokens: current - 1, at: now } };
  const retryAfterSeconds = Math.max(1, Math.ceil((1 - current) / limit.rate));
  return { kind: 'limited', bucket: { tokens: current, at: now }, retryAfterSeconds };
}

export interface RateLimiter {
  take(key: string): Take;
}

export function createRateLimiter(limit: RateLimit, opts: { now?: () => number; maxKeys?: number } = {}): RateLimiter {
  const now = opts.now ?? (() => Date.now());
  const maxKeys = opts.maxKeys ?? 100_000;
  const buckets = new Map<string, Bucket>();
  return {
    take(key) {
      const result = takeToken(buckets.get(key), now(), limit);
      buckets.delete(key);
      // Map order is insertion order: re-inserting keeps the most recent keys and drops the oldest.
      buckets.set(key, result.bucket);
      if (buckets.size > maxKeys) buckets.delete(buckets.keys().next().value as string);
      return result;
    },
  };
}

/** Express middleware: 429 RATE_LIMITED with Retry-After when `keyOf(req)`'s bucket is empty. */
export function rateLimit(opts: { limiter: RateLimiter; keyOf: (req: Request) => string | null; code?: 'RATE_LIMITED' | 'QUOTA_EXCEEDED' }) {
  return function rateLimitMiddleware(req: Request, res: Response, next: NextFunction): void {
    const key = opts.keyOf(req);
    if (key === null) return next();
    const result = opts.limiter.take(key);
    if (result.kind === 'allow') return next();
    res.setHeader('Retry-After', String(result.retryAfterSeconds));
    next(new FerryError(opts.code ?? 'RATE_LIMITED'));
  };
}
