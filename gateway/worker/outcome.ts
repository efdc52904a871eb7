import { isErrorCode, type ErrorCode, type FieldError } from '../../validators/codes.ts';
import type { StatusOutcome } from '../../validators/mutation.ts';

// The CLOSED outcome table of DESIGN §4: what a service answer means for a mutation. Nothing
// outside this function maps service answers to states.

export type ServiceAnswer = { kind: 'response'; status: number; body: unknown } | { kind: 'network-error' };

export type Outcome = StatusOutcome;

const RETRY: Outcome = { state: 'retrying', code: null };

/** The code for a 4xx whose body names no code of ours; still a catalogue code, never free text. */
function fallbackCode(status: number): ErrorCode {
  switch (status) {
    case 401:
      return 'UNAUTHENTICATED';
    case 403:
      return 'FORBIDDEN';
    case 404:
      return 'NOT_FOUND';
    case 413:
      return 'PAYLOAD_TOO_LARGE';
    case 428:
      return 'PRECONDITION_REQUIRED';
    default:
      return 'VALIDATION_FAILED';
  }
}

function record(body: unknown): Record<string, unknown> {
  return body !== null && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
}

/** Field errors as the service gave them, keeping only `{path, message}` strings (fixed catalogue). */
export function fieldErrorsOf(body: unknown): FieldError[] | undefined {
  const errors = record(body).errors;
  if (!Array.isArray(errors)) return undefined;
  const out = errors
    .map((e) => record(e))
    .filter((e) => typeof e.path === 'string' && typeof e.message === 'string')
    .map((e) => ({ path: (e.path as string).slice(0, 200), message: (e.message as string).slice(0, 200) }));
  return out.length ? out : undefined;
}

/** Candidate ids only: a duplicate answer may list ids or records; only ids are kept. */
export function candidateIdsOf(body: unknown): string[] {
  const raw = record(body).candidates;
  if (!Array.isArray(raw)) return [];
  return raw
    .map((c) => (typeof c === 'string' ? c : record(c).id))
    .filter((id): id is string => typeof id === 'string' && id.length <= 100);
}

function rejected(code: ErrorCode, errors?: FieldError[]): Outcome {
  return errors ? { state: 'rejected', code, errors } : { state: 'rejected', code };
}

export function outcomeOf(answer: ServiceAnswer): Outcome {
  if (answer.kind === 'network-error') return RETRY;
  const { status, body } = answer;
  const code = record(body).code;
  const known = isErrorCode(code) ? code : null;

  if (status >= 200 && status < 300) return { state: 'committed', code: null, response: { status, body } };
  if (status === 429 || status >= 500) return RETRY;
  if (status < 400) return RETRY; // 1xx/3xx are not answers a service gives; try again later.

  if (status === 409) {
    switch (known) {
      case 'VERSION_CONFLICT':
        return { state: 'conflict', code: 'VERSION_CONFLICT', current: record(body).current ?? null };
      case 'DUPLICATE_DETECTED':
        return { state: 'conflict', code: 'DUPLICATE_DETECTED', candidates: candidateIdsOf(body) };
      case 'IDEMPOTENCY_IN_PROGRESS':
        return RETRY;
      case 'ID_CONFLICT':
        return rejected('ID_CONFLICT');
      default:
        return rejected(known ?? 'VALIDATION_FAILED');
    }
  }
  if (status === 400 || status === 422) {
    // Validation answers (and malformed bodies) are VALIDATION_FAILED; any other named 4xx code
    // (e.g. IDEMPOTENCY_KEY_REUSED, UNKNOWN_OP) is "any other 4xx": the service's code.
    if (known === null || known === 'VALIDATION_FAILED' || known === 'MALFORMED_REQUEST') {
      return rejected('VALIDATION_FAILED', fieldErrorsOf(body));
    }
    return rejected(known, fieldErrorsOf(body));
  }
  if (status === 403) {
    return rejected(known === 'MODULE_NOT_LICENSED' || known === 'TENANT_MISMATCH' ? known : 'FORBIDDEN');
  }
  if (status === 404) return rejected('NOT_FOUND');
  return rejected(known ?? fallbackCode(status));
}
