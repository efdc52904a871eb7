// "Next delay after failure k": bounded exponential backoff with jitter (STYLE-EXAMPLES 3).

export interface RetryPolicy {
  /** Delay after the first failure. */
  baseMs: number;
  /** Upper bound of any delay. */
  maxMs: number;
  /** Fraction of the delay that is randomised away, 0..1 ("equal jitter" at 0.5). */
  jitter: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { baseMs: 1_000, maxMs: 5 * 60_000, jitter: 0.5 };

/** Delay before attempt `attempts + 1`, given `attempts` failed attempts so far (≥ 1). */
export function nextDelay(attempts: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
  const jitter = Math.min(1, Math.max(0, policy.jitter));
  return Math.round(exp * (1 - jitter) + exp * jitter * random());
}
