import { backoffDelay } from '../retry/backoff.ts';

// Delay maths for retries, kept apart from the retry loop (STYLE "Device library" 3).

export interface BackoffOptions {
  /** Delay before the first retry, in ms (before jitter). */
  base: number;
  /** Upper bound on any delay, in ms. */
  cap: number;
  /** Uniform random number in [0, 1). */
  random?: () => number;
}

export const DEFAULT_BACKOFF: Readonly<Required<Omit<BackoffOptions, 'random'>>> = { base: 1_000, cap: 60_000 };

/**
 * Delay before retry number `attempt` (1 = first retry after a failure; 0 = no failure yet → 0).
 * Exponential with "equal jitter": the ceiling is min(cap, base · 2^(attempt−1)) and the delay is
 * uniform in [ceiling/2, ceiling], so it never exceeds `cap` and never collapses to zero.
 */
export function nextDelay(attempt: number, { base, cap, random = Math.random }: BackoffOptions): number {
  return backoffDelay(attempt, { baseMs: base, maxMs: cap }, random);
}
