import { acceptCorrelationId } from '../../../http/correlation.ts';
import { FerryError, type FieldError } from '../../../validators/codes.ts';
import type { Caller } from '../access.ts';
import { IDEMPOTENCY_KEY } from '../idempotency/decision.ts';
import { requestFingerprint } from '../idempotency/fingerprint.ts';
import { readCreate, readUpdate, type CreateInput, type UpdateInput } from '../patients/commands.ts';

// One mutation as the single routes and `POST /v1/batch` both carry it, read into plain data.
// Reading is pure: what cannot run (bad key, bad path, body too large, missing body) becomes a
// refusal that is answered but never stored under the key, as the single route does.

export const MAX_BATCH_ITEMS = 500;
export const ITEM_BODY_LIMIT_BYTES = 64 * 1024;

/** One item of a batch envelope, or the single route's request, before anything is checked. */
export interface MutationRequest {
  method: 'POST' | 'PUT';
  /** As sent, without a query: the fingerprint binds it. */
  path: string;
  idempotencyKey: string | undefined;
  ifMatch: string | undefined;
  correlationId: string | undefined;
  /** `Bearer …`; undefined: the batch's own caller. */
  authorization: string | undefined;
  /** Index of an earlier item that must answer 2xx for this one to run. */
  requires: number | null;
  body: unknown;
}

export type MutationCommand = { kind: 'create'; input: CreateInput } | { kind: 'update'; id: string; input: UpdateInput };

export type PreparedMutation =
  | { kind: 'refused'; requires: number | null; correlationId: string; error: FerryError }
  | {
      kind: 'ready';
      requires: number | null;
      correlationId: string;
      caller: Caller;
      key: string | null;
      fingerprint: string;
      command: MutationCommand;
    };

const ITEM_FIELDS = new Set(['method', 'path', 'idempotencyKey', 'ifMatch', 'correlationId', 'authorization', 'requires', 'body']);

function malformed(path: string, message: string): FerryError {
  return new FerryError('MALFORMED_REQUEST', { errors: [{ path, message }] });
}

/** The envelope `{ "items": [...] }`; a FerryError (400, 413) answers the whole request. */
export function readBatchEnvelope(body: unknown, maxItems: number = MAX_BATCH_ITEMS): MutationRequest[] {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new FerryError('MALFORMED_REQUEST');
  const keys = Object.keys(body);
  const items = (body as { items?: unknown }).items;
  if (!Array.isArray(items) || keys.some((k) => k !== 'items')) throw malformed('items', 'must be the only field, an array');
  if (items.length > maxItems) throw new FerryError('PAYLOAD_TOO_LARGE');
  const errors: FieldError[] = [];
  const requests = items.map((item: unknown, i): MutationRequest | null => {
    const at = (field: string) => `items.${i}${field ? `.${field}` : ''}`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      errors.push({ path: at(''), message: 'must be an object' });
      return null;
    }
    const o = item as Record<string, unknown>;
    const bad = (field: string, message: string) => {
      errors.push({ path: at(field), message });
      return null;
    };
    for (const k of Object.keys(o)) if (!ITEM_FIELDS.has(k)) return bad(k, 'is not an allowed field');
    if (o.method !== 'POST' && o.method !== 'PUT') return bad('method', 'must be POST or PUT');
    if (typeof o.path !== 'string') return bad('path', 'must be a string');
    for (const f of ['idempotencyKey', 'ifMatch', 'correlationId', 'authorization'] as const) {
      if (o[f] !== undefined && typeof o[f] !== 'string') return bad(f, 'must be a string');
    }
    if (o.requires !== undefined && !(Number.isSafeInteger(o.requires) && (o.requires as number) >= 0 && (o.requires as number) < i)) {
      return bad('requires', 'must be the index of an earlier item');
    }
    return {
      method: o.method,
      path: o.path,
      idempotencyKey: o.idempotencyKey as string | undefined,
      ifMatch: o.ifMatch as string | undefined,
      correlationId: o.correlationId as string | undefined,
      authorization: o.authorization as string | undefined,
      requires: (o.requires as number | undefined) ?? null,
      body: o.body,
    };
  });
  if (errors.length > 0) throw new FerryError('MALFORMED_REQUEST', { errors: errors.slice(0, 20) });
  return requests as MutationRequest[];
}

type Route = { kind: 'create' } | { kind: 'update'; id: string } | { kind: 'none' } | { kind: 'bad-encoding' };

/** Only the mutating routes; a trailing slash or other case is the same route, as Express routes it. */
function routeOf(method: 'POST' | 'PUT', path: string): Route {
  if (method === 'POST') return /^\/v1\/patients\/?$/i.test(path) ? { kind: 'create' } : { kind: 'none' };
  const m = /^\/v1\/patients\/([^/?#]+)\/?$/i.exec(path);
  if (!m) return { kind: 'none' };
  try {
    return { kind: 'update', id: decodeURIComponent(m[1]!) };
  } catch {
    return { kind: 'bad-encoding' };
  }
}

function bodyBytes(body: unknown): number {
  return Buffer.byteLength(JSON.stringify(body) ?? '');
}

/**
 * Reads one mutation for `caller` (or the authentication failure that stands in for it), in the
 * order the single route checks: who, size, route, key, body.
 */
export function prepareMutation(req: MutationRequest, caller: Caller | FerryError, bodyLimitBytes: number = ITEM_BODY_LIMIT_BYTES): PreparedMutation {
  const correlationId = acceptCorrelationId(req.correlationId);
  const refuse = (error: FerryError): PreparedMutation => ({ kind: 'refused', requires: req.requires, correlationId, error });
  if (caller instanceof FerryError) return refuse(caller);
  if (req.body !== undefined && bodyBytes(req.body) > bodyLimitBytes) return refuse(new FerryError('PAYLOAD_TOO_LARGE'));
  const route = routeOf(req.method, req.path);
  if (route.kind === 'none') return refuse(new FerryError('NOT_FOUND'));
  if (route.kind === 'bad-encoding') return refuse(new FerryError('MALFORMED_REQUEST'));
  const key = req.idempotencyKey ?? null;
  if (key !== null && !IDEMPOTENCY_KEY.test(key)) return refuse(malformed('Idempotency-Key', 'has an invalid format'));
  // The single route's JSON parser takes objects and arrays only (strict), and no body is malformed.
  if (req.body === null || typeof req.body !== 'object') return refuse(new FerryError('MALFORMED_REQUEST'));
  const fingerprint = requestFingerprint({ method: req.method, path: req.path, owner: caller.owner, ifMatch: req.ifMatch ?? null, body: req.body });
  const command: MutationCommand = route.kind === 'create' ? { kind: 'create', input: readCreate(req.body) } : { kind: 'update', id: route.id, input: readUpdate(req.ifMatch, req.body) };
  return { kind: 'ready', requires: req.requires, correlationId, caller, key, fingerprint, command };
}
