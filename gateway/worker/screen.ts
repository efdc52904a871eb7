import { findOp, type OpDefinition } from '../../validators/manifest.ts';
import { mutationDocSchema, type MutationDoc, type StatusOutcome } from '../../validators/mutation.ts';
import { parseWith } from '../../validators/issues.ts';

// First look at a mutation doc, before any ordering or service call: is it whole, is it where it
// claims to be, does it validate, is its op known? Pure; DESIGN §4 outcome table rows that need
// no service answer.

export interface ScreenInput {
  /** The tenant whose inbox the doc came from. */
  inboxTenant: string;
  /** Owner and mid parsed from `_id` (the owner is taken from the id, never from the body). */
  owner: string;
  mid: string;
  doc: unknown;
  /** The doc has more than one leaf revision. */
  conflicted: boolean;
  deleted: boolean;
}

export type Screened = { kind: 'ok'; mutation: MutationDoc; op: OpDefinition } | { kind: 'reject'; outcome: StatusOutcome };

const reject = (code: StatusOutcome['code'], path: string, message: string): Screened => ({
  kind: 'reject',
  outcome: { state: 'rejected', code, errors: [{ path, message }] },
});

function field(doc: unknown, name: string): unknown {
  return doc !== null && typeof doc === 'object' ? (doc as Record<string, unknown>)[name] : undefined;
}

export function screen(input: ScreenInput): Screened {
  if (input.deleted) return reject('VALIDATION_FAILED', '_deleted', 'the mutation document was deleted');
  if (input.conflicted) return reject('VALIDATION_FAILED', '_rev', 'the mutation document has conflicting revisions');

  const tenant = field(input.doc, 'tenant');
  if (typeof tenant === 'string' && tenant !== input.inboxTenant) return reject('TENANT_MISMATCH', 'tenant', 'does not match the inbox');
  const owner = field(input.doc, 'owner');
  if (typeof owner === 'string' && owner !== input.owner) return reject('TENANT_MISMATCH', 'owner', 'does not match the document id');

  const parsed = parseWith(mutationDocSchema, input.doc);
  if (!parsed.ok) return { kind: 'reject', outcome: { state: 'rejected', code: 'VALIDATION_FAILED', errors: parsed.errors } };
  const mutation = parsed.value;
  if (mutation.after === input.mid) return reject('VALIDATION_FAILED', 'after', 'must not name the mutation itself');
  if (mutation.resolves === input.mid) return reject('VALIDATION_FAILED', 'resolves', 'must not name the mutation itself');

  const op = findOp(mutation.op);
  if (!op) return { kind: 'reject', outcome: { state: 'rejected', code: 'UNKNOWN_OP' } };
  if (!mutation.entity.startsWith(`${op.entityPrefix}_`)) return reject('VALIDATION_FAILED', 'entity', 'does not fit the operation');

  const payload = parseWith(op.schema, mutation.payload);
  if (!payload.ok) return { kind: 'reject', outcome: { state: 'rejected', code: 'VALIDATION_FAILED', errors: payload.errors } };
  return { kind: 'ok', mutation, op };
}
