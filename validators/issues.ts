import type { z } from 'zod';
import type { FieldError } from './codes.ts';

// zod's own messages can quote the input (e.g. invalid enum values, too-long strings), so every
// issue is mapped to a fixed message keyed by its kind. The path is data structure, not data.
const MESSAGES: Record<string, string> = {
  invalid_type: 'has the wrong type or is missing',
  too_small: 'is too short or too small',
  too_big: 'is too long or too large',
  invalid_format: 'has an invalid format',
  invalid_value: 'is not one of the allowed values',
  unrecognized_keys: 'contains fields that are not allowed',
  invalid_union: 'does not match any allowed shape',
  not_multiple_of: 'is not a valid multiple',
  invalid_key: 'has an invalid key',
  invalid_element: 'has an invalid element',
};

/** Custom refinements use `params.catalogue` to pick a fixed message of their own. */
export function toFieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.map((issue) => {
    const custom = issue.code === 'custom' ? (issue.params as { catalogue?: string } | undefined)?.catalogue : undefined;
    return {
      path: issue.path.map(String).join('.') || '(root)',
      message: custom ?? MESSAGES[issue.code] ?? 'is invalid',
    };
  });
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

export function parseWith<T>(schema: z.ZodType<T>, input: unknown): Parsed<T> {
  const result = schema.safeParse(input);
  return result.success ? { ok: true, value: result.data } : { ok: false, errors: toFieldErrors(result.error) };
}
