// Bundles the clinician web app (web/src/main.tsx, Preact, and web/sw.ts) with esbuild's JS API into web/dist/,
// next to the static shell (index.html, style.css). The gateway serves that folder at /app/.
// Built once per process: every stack in a test run shares the result.

import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

export const WEB_DIR = dirname(fileURLToPath(import.meta.url));
export const WEB_DIST = join(WEB_DIR, 'dist');
const STATIC_FILES = ['index.html', 'style.css', 'manifest.webmanifest', 'icon.svg', 'icon-192.png', 'icon-512.png'];

let built: Promise<string> | null = null;

/** Builds web/dist/ (once per process) and resolves to its path. */
export function buildWebApp(opts: { outdir?: string; minify?: boolean } = {}): Promise<string> {
  if (opts.outdir && opts.outdir !== WEB_DIST) return buildInto(opts.outdir, opts.minify ?? true);
  built ??= buildInto(WEB_DIST, opts.minify ?? true).catch((err: unknown) => {
    built = null;
    throw err;
  });
  return built;
}

async function buildInto(outdir: string, minify: boolean): Promise<string> {
  await mkdir(outdir, { recursive: true });
  await build({
    entryPoints: { app: join(WEB_DIR, 'src', 'main.tsx'), sw: join(WEB_DIR, 'sw.ts') },
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir,
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: 'es2022',
    minify,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'silent',
    // PouchDB's browser build reads these Node globals.
    define: { global: 'globalThis', 'process.env.NODE_ENV': '"production"' },
  });
  for (const f of STATIC_FILES) await copyFile(join(WEB_DIR, f), join(outdir, f));
  return outdir;
}
