// How a mutation's state and a server code read to a clinician (never `patient.create` or a raw code).

import type { MutationInfo } from '../../client/browser.ts';
import { findOp } from '../../validators/manifest.ts';
import type { MessageKey } from './i18n.ts';

export function stateKey(m: MutationInfo): MessageKey {
  if (m.resolvedBy !== null && (m.state.kind === 'conflict' || m.state.kind === 'rejected')) return 'state.resolved';
  switch (m.state.kind) {
    case 'queued':
      return 'state.queued';
    case 'waiting':
    case 'retrying':
      return 'state.sent';
    case 'committed':
      return 'state.committed';
    case 'rejected':
      return m.state.source === 'device' ? 'state.rejectedDevice' : 'state.rejected';
    case 'conflict':
      return 'state.conflict';
    case 'discarded':
      return 'state.discarded';
  }
}

export function opKey(op: string): MessageKey {
  const kind = findOp(op)?.kind;
  return kind === 'create' ? 'op.create' : kind === 'update' ? 'op.update' : 'op.other';
}

const KNOWN_CODES = ['VERSION_CONFLICT', 'DUPLICATE_DETECTED', 'IDENTIFIER_CONFLICT', 'VALIDATION_FAILED', 'FORBIDDEN', 'TENANT_MISMATCH', 'NOT_FOUND'] as const;

export function codeKey(code: string | null): MessageKey {
  return code && (KNOWN_CODES as readonly string[]).includes(code) ? (`code.${code}` as MessageKey) : 'code.other';
}

export function problemCode(m: MutationInfo): string | null {
  return m.state.kind === 'conflict' || m.state.kind === 'rejected' ? m.state.code : null;
}

/** When the server confirmed a committed mutation: its answer's `updatedAt`. */
export function committedAt(m: MutationInfo): string | null {
  if (m.state.kind !== 'committed') return null;
  const body = m.state.response?.body;
  const at = body && typeof body === 'object' ? (body as { updatedAt?: unknown }).updatedAt : undefined;
  return typeof at === 'string' ? at : null;
}
