// Optimistic versions (DESIGN §6): a PUT names the version it expects with `If-Match: "<n>"` or
// the body's `baseVersion`. Pure, so each case is a table row.

export type Precondition =
  | { kind: 'missing' }
  | { kind: 'malformed' }
  /** If-Match and baseVersion both given and different. */
  | { kind: 'mismatch' }
  /** baseVersion present but not a version; validation reports it. */
  | { kind: 'invalid' }
  | { kind: 'expects'; version: number };

const IF_MATCH = /^(?:W\/)?"([1-9][0-9]{0,9})"$/;

export function readPrecondition(ifMatch: string | undefined, body: unknown): Precondition {
  const raw = body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>).baseVersion : undefined;
  const hasBase = raw !== undefined && raw !== null;
  const baseOk = typeof raw === 'number' && Number.isSafeInteger(raw) && raw >= 1;
  let header: number | null = null;
  if (ifMatch !== undefined) {
    const m = IF_MATCH.exec(ifMatch.trim());
    if (!m) return { kind: 'malformed' };
    header = Number(m[1]);
  }
  if (header === null && !hasBase) return { kind: 'missing' };
  if (hasBase && !baseOk) return { kind: 'invalid' };
  if (header !== null && hasBase && header !== raw) return { kind: 'mismatch' };
  return { kind: 'expects', version: header ?? (raw as number) };
}

export type VersionCheck = { kind: 'current' } | { kind: 'stale' };

export function checkVersion(current: number, expected: number): VersionCheck {
  return current === expected ? { kind: 'current' } : { kind: 'stale' };
}

/** The strong ETag of a version, the form If-Match takes. */
export function etagOf(version: number): string {
  return `"${version}"`;
}
