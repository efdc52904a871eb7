import { LOCAL_ID } from './policy.ts';
import { TENANT_ID } from '../../validators/identity.ts';

// The allow-list of /sync (DESIGN §5), as data: a raw request path either resolves to exactly one
// of these routes or is 404. Nothing here depends on the order of other routes in the app.

export type SyncRoute =
  | { kind: 'root' }
  | { kind: 'db'; tenant: string }
  | { kind: 'local'; tenant: string; id: string }
  | { kind: 'revs_diff'; tenant: string }
  | { kind: 'bulk_docs'; tenant: string }
  | { kind: 'changes'; tenant: string }
  | { kind: 'bulk_get'; tenant: string }
  | { kind: 'all_docs'; tenant: string }
  | { kind: 'ensure_full_commit'; tenant: string }
  | { kind: 'doc'; tenant: string; id: string };

export type RouteKind = SyncRoute['kind'];

/** Methods each route answers; everything else is 404 like an unknown path. */
export const ALLOWED_METHODS: Record<RouteKind, readonly string[]> = {
  root: ['GET', 'HEAD'],
  db: ['GET', 'HEAD'],
  local: ['GET', 'HEAD', 'PUT', 'DELETE'],
  revs_diff: ['POST'],
  bulk_docs: ['POST'],
  changes: ['GET', 'POST'],
  bulk_get: ['POST'],
  all_docs: ['GET', 'POST'],
  ensure_full_commit: ['POST'],
  doc: ['GET', 'HEAD'],
};

const SPECIAL = new Map<string, RouteKind>([
  ['_revs_diff', 'revs_diff'],
  ['_bulk_docs', 'bulk_docs'],
  ['_changes', 'changes'],
  ['_bulk_get', 'bulk_get'],
  ['_all_docs', 'all_docs'],
  ['_ensure_full_commit', 'ensure_full_commit'],
]);

/** A tenant path segment: exactly a tenant id. */
export const TENANT_SEGMENT = TENANT_ID;

/** One percent-decoded path segment; null when it does not decode (a 404, not a crash). */
export function decodeSegment(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

/**
 * Resolves the raw path below `/sync` (query string removed) to a route, or null. Doc ids are
 * decoded here once and checked later against the caller; a decoded `/` can never become a path
 * separator because upstream URLs are rebuilt from canonical ids.
 */
export function resolveSyncRoute(rawPath: string, method: string): SyncRoute | null {
  const route = resolvePath(rawPath);
  if (!route) return null;
  return ALLOWED_METHODS[route.kind].includes(method) ? route : null;
}

function resolvePath(rawPath: string): SyncRoute | null {
  if (rawPath === '' || rawPath === '/') return { kind: 'root' };
  if (!rawPath.startsWith('/')) return null;
  const segments = rawPath.slice(1).split('/');
  // One trailing slash on the database (`/sync/north/`) is what some clients send.
  if (segments.length === 2 && segments[1] === '') segments.pop();
  const [tenant, first, second, ...rest] = segments;
  if (tenant === undefined || !TENANT_SEGMENT.test(tenant) || rest.length > 0) return null;
  if (first === undefined) return { kind: 'db', tenant };
  if (first === '_local') {
    if (second === undefined) return null;
    const id = decodeSegment(second);
    if (id === null || !LOCAL_ID.test(id) || /^\.+$/.test(id)) return null;
    return { kind: 'local', tenant, id };
  }
  if (second !== undefined) return null;
  const special = SPECIAL.get(first);
  if (special) return { kind: special, tenant } as SyncRoute;
  const id = decodeSegment(first);
  if (id === null || id === '' || id.startsWith('_')) return null;
  return { kind: 'doc', tenant, id };
}
