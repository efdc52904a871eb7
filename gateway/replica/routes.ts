import { LOCAL_ID } from '../sync/policy.ts';
import { decodeSegment, TENANT_SEGMENT } from '../sync/routes.ts';

// The allow-list of /replica/{tenant} (DESIGN §8), as data. A raw request path and method resolve
// to exactly one route, to `read-only` (a write to the records: 403 READ_ONLY), or to nothing (404).
// Nothing depends on the order of routes in the app.

export type ReplicaRoute =
  | { kind: 'root' }
  | { kind: 'db'; tenant: string }
  | { kind: 'local'; tenant: string; id: string }
  | { kind: 'revs_diff'; tenant: string }
  | { kind: 'changes'; tenant: string }
  | { kind: 'bulk_get'; tenant: string }
  | { kind: 'all_docs'; tenant: string }
  | { kind: 'ensure_full_commit'; tenant: string }
  | { kind: 'doc'; tenant: string; id: string }
  /** A write to the records (POST db, `_bulk_docs`, PUT/DELETE/COPY of a doc). */
  | { kind: 'read-only'; tenant: string };

export type ReplicaRouteKind = ReplicaRoute['kind'];

const READS: Record<Exclude<ReplicaRouteKind, 'read-only'>, readonly string[]> = {
  root: ['GET', 'HEAD'],
  db: ['GET', 'HEAD'],
  local: ['GET', 'HEAD', 'PUT', 'DELETE'],
  revs_diff: ['POST'],
  changes: ['GET', 'POST'],
  bulk_get: ['POST'],
  all_docs: ['GET', 'POST'],
  ensure_full_commit: ['POST'],
  doc: ['GET', 'HEAD'],
};

/** Methods that write a doc: on a record (or `_bulk_docs`, or a POST to the db) they are refused as read-only. */
const DOC_WRITES = ['PUT', 'DELETE', 'COPY'];

const SPECIAL = new Map<string, Exclude<ReplicaRouteKind, 'read-only'>>([
  ['_revs_diff', 'revs_diff'],
  ['_changes', 'changes'],
  ['_bulk_get', 'bulk_get'],
  ['_all_docs', 'all_docs'],
  ['_ensure_full_commit', 'ensure_full_commit'],
]);

/** Resolves the raw path below `/replica` (query string removed) and the method; null is 404. */
export function resolveReplicaRoute(rawPath: string, method: string): ReplicaRoute | null {
  if (rawPath === '' || rawPath === '/') return method === 'GET' || method === 'HEAD' ? { kind: 'root' } : null;
  if (!rawPath.startsWith('/')) return null;
  const segments = rawPath.slice(1).split('/');
  if (segments.length === 2 && segments[1] === '') segments.pop();
  const [tenant, first, second, ...rest] = segments;
  if (tenant === undefined || !TENANT_SEGMENT.test(tenant) || rest.length > 0) return null;
  const allow = (route: Exclude<ReplicaRoute, { kind: 'read-only' }>): ReplicaRoute | null => (READS[route.kind].includes(method) ? route : null);
  if (first === undefined) return method === 'POST' ? { kind: 'read-only', tenant } : allow({ kind: 'db', tenant });
  if (first === '_local') {
    if (second === undefined) return null;
    const id = decodeSegment(second);
    if (id === null || !LOCAL_ID.test(id) || /^\.+$/.test(id)) return null;
    return allow({ kind: 'local', tenant, id });
  }
  if (second !== undefined) return null;
  if (first === '_bulk_docs') return method === 'POST' ? { kind: 'read-only', tenant } : null;
  const special = SPECIAL.get(first);
  if (special) return allow({ kind: special, tenant } as Exclude<ReplicaRoute, { kind: 'read-only' }>);
  const id = decodeSegment(first);
  if (id === null || id === '' || id.startsWith('_')) return null;
  if (DOC_WRITES.includes(method)) return { kind: 'read-only', tenant };
  return allow({ kind: 'doc', tenant, id });
}
