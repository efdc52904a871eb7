// express-pouchdb answers every request through `new Buffer(...)` (utils.jsonToBuffer). Node
// checks each such call from inside node_modules for its DEP0005 warning by capturing a stack
// trace, up to 10,000 times per process: about a tenth of a request's CPU in this server until
// then. A single call from outside node_modules settles the check for the process's life; the
// warning itself is not shown (the server's output carries no deprecation notices).
export function settleBufferDeprecationCheck(): void {
  const shown = process.noDeprecation;
  process.noDeprecation = true;
  try {
    // The deprecated form on purpose, from this file (outside node_modules).
    Reflect.construct(Buffer, [0]);
  } finally {
    process.noDeprecation = shown;
  }
}
