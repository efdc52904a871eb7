// `npm run harness -- --devices 50 --tenants 3 --mutations 40 --chaos --seed 7`
// A thin CLI over harness/: parse the options, run, print the report table, write the JSON report,
// exit non-zero on any violation. docs/HARNESS.md explains every option and the report.
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs, UsageError, USAGE } from '../harness/options.ts';
import { createProgress } from '../harness/progress.ts';
import { renderReport } from '../harness/report.ts';
import { runHarness } from '../harness/run.ts';

async function main(): Promise<number> {
  let options;
  try {
    options = parseArgs(process.argv.slice(2), () => Math.floor(Math.random() * 2 ** 32));
    // An external CouchDB may come from the environment, as it does for every Ferry process.
    if (options !== 'help' && options.couchdbUrl === undefined && process.env.COUCHDB_URL) options.couchdbUrl = process.env.COUCHDB_URL;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`harness: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  if (options === 'help') {
    console.log(USAGE);
    return 0;
  }
  const progress = createProgress(options.progress);
  const report = await runHarness(options, { progress: (s) => progress.update(s), note: (line) => progress.note(line) });
  progress.done();
  const file = resolve(options.report);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(renderReport(report));
  console.log(`\nReport: ${file}`);
  return report.ok ? 0 : 1;
}

// Interrupted: the harness's exit hook kills its child processes; the temp dir and schemas stay (say so).
process.once('SIGINT', () => {
  console.error('\nharness: interrupted; child processes are killed, temp data and schemas may be left behind');
  process.exit(130);
});

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`harness: failed: ${err.name}: ${err.message}`);
    process.exit(3);
  },
);
