// How complex one JSON document may be: nesting depth and member count. Checked at the edge
// before anything walks the doc recursively (JSON.stringify, canonical JSON, zod, CouchDB's
// view map): a doc nested a few thousand levels deep fits in 64 KB, yet overflows the stack of
// every recursive walker after it. This check is a loop over an explicit stack, so it cannot.

export interface DocShapeLimits {
  /** Containers (objects and arrays) on the deepest path; the doc itself is level 1. */
  maxDepth: number;
  /** Object keys plus array items, counted over the whole doc. */
  maxMembers: number;
}

export const DOC_SHAPE_LIMITS: DocShapeLimits = { maxDepth: 32, maxMembers: 4096 };

export type DocShape = { kind: 'ok' } | { kind: 'too-deep' } | { kind: 'too-many-members' };

/** Walks `value` iteratively and stops at the first limit passed; O(members), no recursion. */
export function checkDocShape(value: unknown, limits: DocShapeLimits = DOC_SHAPE_LIMITS): DocShape {
  if (typeof value !== 'object' || value === null) return { kind: 'ok' };
  const stack: Array<{ node: object; depth: number }> = [{ node: value, depth: 1 }];
  let members = 0;
  while (stack.length > 0) {
    const { node, depth } = stack.pop()!;
    if (depth > limits.maxDepth) return { kind: 'too-deep' };
    const children: unknown[] = Array.isArray(node) ? node : Object.values(node);
    members += children.length;
    if (members > limits.maxMembers) return { kind: 'too-many-members' };
    for (const child of children) {
      if (typeof child === 'object' && child !== null) stack.push({ node: child, depth: depth + 1 });
    }
  }
  return { kind: 'ok' };
}
