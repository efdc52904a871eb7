// The closed set of error codes Ferry speaks (DESIGN §4, §5, §6), each with its HTTP status and
// a fixed message. Messages come from this catalogue only, so they can never echo submitted values.

export const ERROR_CATALOGUE = {
  VALIDATION_FAILED: { status: 422, message: 'The request did not pass validation.' },
  MALFORMED_REQUEST: { status: 400, message: 'The request could not be parsed.' },
  UNAUTHENTICATED: { status: 401, message: 'A valid access token is required.' },
  INVALID_CREDENTIALS: { status: 401, message: 'The username or password is wrong.' },
  FORBIDDEN: { status: 403, message: 'The caller is not allowed to do this.' },
  MODULE_NOT_LICENSED: { status: 403, message: 'This tenant does not license the module.' },
  TENANT_MISMATCH: { status: 403, message: 'The request does not belong to the caller\'s tenant.' },
  READ_ONLY: { status: 403, message: 'The replica is read-only; changes go through /sync.' },
  NOT_FOUND: { status: 404, message: 'No such resource.' },
  VERSION_CONFLICT: { status: 409, message: 'The record has changed since the version given.' },
  DUPLICATE_DETECTED: { status: 409, message: 'A likely duplicate of this patient already exists.' },
  ID_CONFLICT: { status: 409, message: 'The id is already taken.' },
  IDENTIFIER_CONFLICT: { status: 409, message: 'The identifier value is already used by another patient.' },
  IDEMPOTENCY_IN_PROGRESS: { status: 409, message: 'A request with this Idempotency-Key is still being processed.' },
  IDEMPOTENCY_KEY_REUSED: { status: 422, message: 'This Idempotency-Key was already used with a different request.' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  DOC_TOO_COMPLEX: { status: 400, message: 'The document is nested too deeply or has too many keys.' },
  TOO_MANY_IDS: { status: 400, message: 'The request names too many document ids.' },
  PRECONDITION_REQUIRED: { status: 428, message: 'An If-Match header or baseVersion is required.' },
  RATE_LIMITED: { status: 429, message: 'Too many requests; retry later.' },
  QUOTA_EXCEEDED: { status: 429, message: 'A quota was exceeded; retry later.' },
  UNKNOWN_OP: { status: 422, message: 'The operation is not in any module manifest.' },
  DEPENDENCY_FAILED: { status: 422, message: 'An earlier mutation on this entity did not commit.' },
  INTERNAL: { status: 500, message: 'Something went wrong on our side.' },
  UNAVAILABLE: { status: 503, message: 'A dependency is unavailable; retry later.' },
  UNKNOWN_TENANT: { status: 404, message: 'No such tenant; create it first.' },
  UNKNOWN_MODULE: { status: 404, message: 'No such module.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export const ERROR_CODES = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CATALOGUE, value);
}

/** One field-level problem. `message` comes from a fixed set and never contains the submitted value. */
export interface FieldError {
  path: string;
  message: string;
}

/** The JSON body of every error answer, from the gateway and from services alike. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  errors?: FieldError[];
  correlationId?: string;
  [extra: string]: unknown;
}

/** The one error type. Thrown at the edges, turned into `ErrorBody` by one handler. */
export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly errors: FieldError[] | undefined;
  /** Extra fields that belong in the body, e.g. `current` or `candidates`. Never PHI from the request. */
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, opts: { errors?: FieldError[]; details?: Record<string, unknown>; message?: string; status?: number } = {}) {
    super(opts.message ?? ERROR_CATALOGUE[code].message);
    this.name = 'FerryError';
    this.code = code;
    this.status = opts.status ?? ERROR_CATALOGUE[code].status;
    this.errors = opts.errors;
    this.details = opts.details;
  }

  toBody(correlationId?: string): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message };
    if (this.errors && this.errors.length > 0) body.errors = this.errors;
    if (this.details) Object.assign(body, this.details);
    if (correlationId) body.correlationId = correlationId;
    return body;
  }
}
