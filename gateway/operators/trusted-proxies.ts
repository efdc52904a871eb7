import { isIP } from 'node:net';

// Behind a TLS-terminating proxy the gateway sees plain HTTP, so without trusting the proxy's
// X-Forwarded-Proto it can never tell that the browser used HTTPS, and the operator cookie would
// never be `Secure`. Only the proxies named here are believed; a client that sends the header
// itself is not.

/** express's names for address ranges (proxy-addr). */
const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** One entry: a named range, an IPv4/IPv6 address, or either with a CIDR prefix. Pure. */
export function isTrustedProxyEntry(entry: string): boolean {
  if (NAMED_RANGES.has(entry)) return true;
  const slash = entry.indexOf('/');
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return false;
  if (slash === -1) return true;
  const prefix = entry.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * `FERRY_TRUSTED_PROXIES`: a comma-separated list (e.g. `loopback` or `10.0.0.5, 10.1.0.0/16`),
 * handed to express as `trust proxy`. Unset or empty trusts nobody. A bad entry is a start-up error
 * that names the variable (`fail` makes it the caller's error type), never silently ignored.
 */
export function parseTrustedProxies(raw: string | undefined, fail: (message: string) => Error = (m) => new Error(m)): string[] {
  const entries = (raw ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (!entries.every(isTrustedProxyEntry)) {
    throw fail('FERRY_TRUSTED_PROXIES must be a comma-separated list of IP addresses, CIDR ranges, or loopback/linklocal/uniquelocal');
  }
  return entries;
}
