import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// `npm run bench`: runs every bench/*.bench.ts (each default-exports `async (report) => void`),
// then prints one table. A figure may name a baseline measured in the same run; its ratio to
// that baseline is printed beside it, so results compare across machines. Raw figures also go
// to bench/out/ as JSON. `npm run bench -- registration` runs only matching modules.

export interface FigureOptions {
  /** Name of a figure reported earlier by the same module, to print a ratio against. */
  baseline?: string;
  note?: string;
}

export interface Report {
  figure(name: string, value: number, unit: string, opts?: FigureOptions): void;
  note(text: string): void;
}

export type Bench = (report: Report) => Promise<void>;

interface Figure {
  module: string;
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  ratio?: number;
  note?: string;
}

const here = dirname(fileURLToPath(import.meta.url));

function formatValue(v: number): string {
  return v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(2);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => `| ${r.map((cell, c) => (c === 2 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join(' | ')} |`;
  return [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n');
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const files = readdirSync(here)
    .filter((f) => f.endsWith('.bench.ts'))
    .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
    .sort();
  const figures: Figure[] = [];
  const notes: string[] = [];
  let failed = false;
  let current = '';
  // A socket error nobody listened for (e.g. a server a module closed under a live client) would
  // kill the process and lose every figure; record it against the module running and go on.
  process.on('uncaughtException', (err) => {
    failed = true;
    console.error(`uncaught error while running ${current || 'the runner'}:`, err);
  });
  for (const file of files) {
    current = file;
    const module = file.replace(/\.bench\.ts$/, '');
    const mine = new Map<string, Figure>();
    const report: Report = {
      figure(name, value, unit, opts = {}) {
        const f: Figure = { module, name, value, unit, ...(opts.note ? { note: opts.note } : {}) };
        if (opts.baseline) {
          const base = mine.get(opts.baseline);
          if (!base) throw new Error(`${module}: baseline "${opts.baseline}" was not reported before "${name}"`);
          f.baseline = opts.baseline;
          f.ratio = value / base.value;
        }
        mine.set(name, f);
        figures.push(f);
        console.error(`  ${module}: ${name} = ${formatValue(value)} ${unit}${f.ratio !== undefined ? ` (${f.ratio.toFixed(2)}× ${f.baseline})` : ''}`);
      },
      note(text) {
        notes.push(`${module}: ${text}`);
        console.error(`  ${module}: ${text}`);
      },
    };
    console.error(`running ${file}…`);
    const started = Date.now();
    try {
      const mod = (await import(pathToFileURL(join(here, file)).href)) as { default: Bench };
      await mod.default(report);
    } catch (err) {
      failed = true;
      console.error(`${file} failed:`, err);
    }
    console.error(`  ${file} took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  const rows = [['bench', 'figure', 'value', 'unit', 'vs baseline (same run)']];
  for (const f of figures) rows.push([f.module, f.name, formatValue(f.value), f.unit, f.ratio !== undefined ? `${f.ratio.toFixed(2)}× ${f.baseline}` : '—']);
  console.log(`\n${table(rows)}\n`);
  for (const n of notes) console.log(`- ${n}`);
  const out = join(here, 'out');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ node: process.version, figures, notes }, null, 2));
  if (failed) process.exitCode = 1;
}

await main();
