// "Next delay after failure k" (STYLE-EXAMPLES 3): bounded exponential backoff with jitter, the one
// place this maths lives. The device's sync loop, the worker's retries and the event relay all
// use it; each keeps its own loop and resets its attempt count after a success.

export interface BackoffPolicy {
  /** Delay ceiling after the first failure, in ms. */
  baseMs: number;
  /** Upper bound of any delay, in ms. */
  maxMs: number;
  /** Share of the ceiling that is randomised, 0..1. Default 0.5 ("equal jitter"): never zero, never a stampede. */
  jitter?: number;
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/**
 * Delay before retry number `attempt` (1 = the first retry after a failure; 0 = no failure → 0).
 * The ceiling is min(maxMs, baseMs · 2^(attempt−1)); the delay is uniform in
 * [ceiling · (1 − jitter), ceiling].
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  if (!Number.isFinite(attempt) || attempt <= 0) return 0;
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt - 1, 40));
  const jitter = clamp(policy.jitter ?? 0.5, 0, 1);
  return Math.round(ceiling * (1 - jitter) + ceiling * jitter * clamp(random(), 0, 1));
}
