import { z } from 'zod';
import { ownerIdSchema, tenantIdSchema } from './identity.ts';
import { ERROR_CODES, type ErrorCode, type FieldError } from './codes.ts';

// Wire format of the inbox (DESIGN §4). Doc ids never carry PHI: only the owner's opaque id and
// a device-minted UUIDv7.

export const MUTATION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const ENTITY_ID = /^[a-z]{2,8}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** `m:{owner}:{mid}` / `s:{owner}:{mid}`, as the gateway checks them. */
export const INBOX_DOC_ID = /^([ms]):([A-Za-z0-9_-]{1,64}):([0-9a-f-]{36})$/;

export const mutationIdSchema = z.string().regex(MUTATION_ID);

export function mutationDocId(owner: string, mid: string): string {
  return `m:${owner}:${mid}`;
}
export function statusDocId(owner: string, mid: string): string {
  return `s:${owner}:${mid}`;
}

export type InboxDocKind = 'mutation' | 'status';
export interface InboxDocRef {
  kind: InboxDocKind;
  owner: string;
  mid: string;
}

/** Parses an inbox doc id; null for anything that is not exactly `m:`/`s:` + owner + uuid. */
export function parseInboxDocId(id: string): InboxDocRef | null {
  const m = INBOX_DOC_ID.exec(id);
  if (!m || !MUTATION_ID.test(m[3]!)) return null;
  return { kind: m[1] === 'm' ? 'mutation' : 'status', owner: m[2]!, mid: m[3]! };
}

export const mutationDocSchema = z.object({
  _id: z.string(),
  _rev: z.string().optional(),
  type: z.literal('mutation'),
  v: z.literal(1),
  tenant: tenantIdSchema,
  owner: ownerIdSchema,
  device: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  seq: z.number().int().min(0),
  op: z.string().regex(/^[a-z][a-zA-Z0-9]*\.[a-z][a-zA-Z0-9]*$/),
  entity: z.string().regex(ENTITY_ID),
  after: mutationIdSchema.nullable(),
  resolves: mutationIdSchema.nullable(),
  baseVersion: z.number().int().min(1).nullable(),
  payload: z.record(z.string(), z.unknown()),
  createdAt: z.iso.datetime(),
});
export type MutationDoc = z.infer<typeof mutationDocSchema>;

export const STATUS_STATES = ['committed', 'rejected', 'conflict', 'waiting', 'retrying'] as const;
export type StatusState = (typeof STATUS_STATES)[number];
export const TERMINAL_STATES: readonly StatusState[] = ['committed', 'rejected', 'conflict'];

export function isTerminal(state: StatusState): boolean {
  return TERMINAL_STATES.includes(state);
}

export const statusDocSchema = z.object({
  _id: z.string(),
  _rev: z.string().optional(),
  type: z.literal('status'),
  v: z.literal(1),
  tenant: tenantIdSchema,
  owner: ownerIdSchema,
  mutation: mutationIdSchema,
  state: z.enum(STATUS_STATES),
  code: z.enum(ERROR_CODES as [ErrorCode, ...ErrorCode[]]).nullable(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  response: z.object({ status: z.number().int(), body: z.unknown() }).optional(),
  current: z.unknown().optional(),
  candidates: z.array(z.string()).optional(),
  attempts: z.number().int().min(0),
  updatedAt: z.iso.datetime(),
  /** Per-tenant counter stamped by the worker, for the view-backed pull feed (DESIGN §4). */
  counter: z.number().int().min(0).optional(),
});
export type StatusDoc = z.infer<typeof statusDocSchema>;

export interface StatusOutcome {
  state: StatusState;
  code: ErrorCode | null;
  errors?: FieldError[];
  response?: { status: number; body: unknown };
  current?: unknown;
  candidates?: string[];
}
