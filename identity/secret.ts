import { timingSafeEqual } from 'node:crypto';

/** Constant-time comparison of a presented secret (a bearer token) with the expected one. */
export function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
