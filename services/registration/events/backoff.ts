// Delay before the relay's next attempt after `failures` failures in a row: exponential, capped,
// with full jitter so that many relays coming back together do not stampede NATS. Pure.

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export function backoffDelay(failures: number, opts: BackoffOptions, random: () => number = Math.random): number {
  if (failures <= 0) return 0;
  const ceiling = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(failures - 1, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
