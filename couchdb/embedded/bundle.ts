import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

// The embedded CouchDB child runs as plain JavaScript: `server.ts` and its own imports are bundled
// once per source version into `.tmp/embedded-couch/server-{hash}.bundle.js` (ESM, the package
// being `"type": "module"`; packages stay external and resolve from the repository's node_modules),
// so the child carries no TypeScript loader and no per-module transpile. One bundle per process; a changed source gets a new file name.

const SERVER_ENTRY = fileURLToPath(new URL('./server.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT_DIR = join(REPO_ROOT, '.tmp', 'embedded-couch');

let bundled: Promise<string> | undefined;

async function bundleOnce(): Promise<string> {
  const result = await build({
    entryPoints: [SERVER_ENTRY],
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: `node${process.versions.node}`,
    write: false,
    logLevel: 'silent',
  });
  const code = result.outputFiles[0]!.contents;
  const file = join(OUT_DIR, `server-${createHash('sha256').update(code).digest('hex').slice(0, 16)}.bundle.js`);
  if (!existsSync(file)) {
    mkdirSync(OUT_DIR, { recursive: true });
    // Written aside and renamed, so a concurrent start never runs a half-written file.
    const partial = `${file}.${process.pid}.partial`;
    writeFileSync(partial, code);
    renameSync(partial, file);
  }
  return file;
}

/** The path of the bundled child entry, building it on first use. */
export function embeddedServerBundle(): Promise<string> {
  bundled ??= bundleOnce().catch((err: unknown) => {
    bundled = undefined;
    throw err;
  });
  return bundled;
}
