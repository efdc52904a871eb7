import { createRequire } from 'node:module';

// pouchdb-validation compiles a database's `validate_doc_update` source again for every doc it
// validates (couchdb-eval's `evaluate`: a regex over the whole source, then `eval`), ~3% of the
// embedded server's CPU under the worker's load. Apache CouchDB compiles it once per design doc
// in its query server and reuses it. So does this: a compiled function is kept per source text.
// It still runs with the design doc of the moment as `this` (pouchdb-validation calls it so), so
// a design doc whose other fields change is seen at once; a new source is a new entry. Sources
// that use `require` (which resolves against the design doc it was compiled with) or get extra
// variables are compiled each time, as before.

type Evaluate = (requireContext: unknown, extraVars: Record<string, unknown> | undefined, program: string) => unknown;
interface CouchEval {
  evaluate: Evaluate;
}

/** Most distinct sources kept: a server holds a handful of design docs; past it, start over. */
export const MAX_COMPILED = 256;

/** Whether a compiled function may be reused for this call. */
export function isReusable(extraVars: Record<string, unknown> | undefined, program: unknown): program is string {
  return typeof program === 'string' && !/\brequire\b/.test(program) && (extraVars === undefined || Object.keys(extraVars).length === 0);
}

export function compiledOnce(evaluate: Evaluate, max = MAX_COMPILED): Evaluate {
  let compiled = new Map<string, unknown>();
  return (requireContext, extraVars, program) => {
    if (extraVars !== undefined && Object.keys(extraVars).length > 0) return evaluate(requireContext, extraVars, program);
    // The lookup first: the source is only scanned for `require` when it is compiled.
    const hit = typeof program === 'string' ? compiled.get(program) : undefined;
    if (hit !== undefined) return hit;
    if (!isReusable(extraVars, program)) return evaluate(requireContext, extraVars, program);
    // A compilation error throws here and is not kept.
    const fn = evaluate(requireContext, extraVars, program);
    if (compiled.size >= max) compiled = new Map();
    compiled.set(program, fn);
    return fn;
  };
}

let installed = false;

/** Makes couchdb-eval (as pouchdb-validation uses it: `coucheval.evaluate(...)` at each call) reuse compilations. */
export function installCompiledValidation(): void {
  if (installed) return;
  // The module object pouchdb-validation holds; it looks `evaluate` up at every call.
  const coucheval = createRequire(import.meta.url)('couchdb-eval') as CouchEval;
  coucheval.evaluate = compiledOnce(coucheval.evaluate.bind(coucheval));
  installed = true;
}
