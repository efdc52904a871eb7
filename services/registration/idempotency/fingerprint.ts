import { createHash } from 'node:crypto';

// The fingerprint a stored answer is matched against (DESIGN §6). Canonical JSON makes two
// bodies that differ only in key order or whitespace the same request.

/** JSON with object keys sorted at every level; arrays keep their order. `undefined` members are dropped, as JSON.stringify does. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const text = JSON.stringify(value);
    // JSON.stringify(undefined) is undefined; inside arrays it becomes null, as in JSON.
    return text === undefined ? 'null' : text;
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

export interface FingerprintInput {
  method: string;
  /** The request path without its query, e.g. `/v1/patients/pat_…`. */
  path: string;
  /**
   * The acting user. Keys are scoped by tenant; binding the owner too means another user of the
   * same tenant who reuses a key gets IDEMPOTENCY_KEY_REUSED instead of someone else's answer.
   */
  owner: string;
  /** `If-Match` as sent (PUT); null when absent. */
  ifMatch: string | null;
  body: unknown;
}

export function requestFingerprint(input: FingerprintInput): string {
  const canonical = canonicalJson({
    method: input.method.toUpperCase(),
    path: input.path,
    owner: input.owner,
    ifMatch: input.ifMatch,
    body: input.body ?? null,
  });
  return createHash('sha256').update(canonical).digest('hex');
}
