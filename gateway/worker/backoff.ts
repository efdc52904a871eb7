import type { BackoffPolicy } from '../../retry/backoff.ts';

// The worker's retry timings; the delay maths itself is retry/backoff.ts.
export type RetryPolicy = BackoffPolicy;

export const DEFAULT_RETRY_POLICY: RetryPolicy = { baseMs: 1_000, maxMs: 5 * 60_000, jitter: 0.5 };
