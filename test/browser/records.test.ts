// The records replica in Debian Chromium (playwright-core) on IndexedDB: the device library,
// bundled by esbuild from client/browser.ts, pulls `/replica/{tenant}` from the CouchDB-protocol
// stand-in of test/client/support.ts (page served on the stand-in's origin), searches offline,
// and every IndexedDB object store of the origin, read raw, holds none of the records' PHI in clear.

import { expect } from 'chai';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { build } from 'esbuild';
import type { Browser, BrowserContext } from 'playwright-core';
import { launchChromium } from '../support/browser.ts';
import { dumpIndexedDb } from './app-helpers.ts';
import { FakeTokens, startGateway, type GatewayStandIn } from '../client/support.ts';
import { newPatientId, putRecord } from '../client/records-fixtures.ts';

const here = dirname(fileURLToPath(import.meta.url));
const PATIENT = { givenName: 'Quorvendal', familyName: 'Zyxreplicova', birthDate: '1958-03-17', identifiers: [{ system: 'nin', value: 'NG-5150-4242' }], phone: '+2348066600042' };
const NEEDLES = [PATIENT.givenName, PATIENT.familyName, PATIENT.birthDate, 'NG-5150-4242', PATIENT.phone];

async function bundle(): Promise<string> {
  const out = await build({
    stdin: { contents: "import { openBrowserSession } from './client/browser.ts';\n(globalThis as unknown as { ferry: unknown }).ferry = { openBrowserSession };\n", resolveDir: join(here, '..', '..'), loader: 'ts', sourcefile: 'records-page.ts' },
    bundle: true,
    platform: 'browser',
    format: 'iife',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
    define: { global: 'globalThis', 'process.env.NODE_ENV': '"production"' },
  });
  return out.outputFiles[0]!.text;
}

describe('the records replica in Debian Chromium (IndexedDB)', function () {
  this.timeout(120_000);
  let browser: Browser;
  let context: BrowserContext;
  let gw: GatewayStandIn;

  before(async function () {
    browser = await launchChromium(this);
  });
  after(async () => {
    await context?.close().catch(() => undefined);
    await browser?.close();
    await gw?.close();
  });

  it('pulls records into IndexedDB encrypted, finds them offline, and no PHI of them is in clear in raw IndexedDB', async () => {
    gw = await startGateway();
    const tokens = new FakeTokens(gw, 'north', 'ada');
    const id = newPatientId();
    await putRecord(gw.records('north', 'ada'), { id, version: 2, patient: PATIENT });
    await putRecord(gw.records('north', 'ada'), { id: newPatientId(), patient: { givenName: 'Other', familyName: 'Zyxreplicova' } });
    const script = await bundle();
    context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(`${err.name}: ${err.message}`));
    await page.route(`${gw.url}/records-page`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>records</title><body></body>' }));
    await page.goto(`${gw.url}/records-page`);
    await page.addScriptTag({ content: script });
    // A string, not a function: tsx names inner functions with a `__name` helper the page does not have.
    const inPage = `(async () => {
      const token = ${JSON.stringify(tokens.current)};
      const s = await globalThis.ferry.openBrowserSession({ gatewayUrl: ${JSON.stringify(gw.url)}, tenant: 'north', owner: 'ada', passphrase: 'a long device passphrase',
        tokens: { getToken: async () => token, refresh: async () => token }, kdfIterations: 1000, autoSync: false, idleTimeoutMs: null, online: null });
      const pulled = await s.records.pull();
      const count = s.records.state.count;
      const hits = s.records.search({ text: 'quorvendal zyx' }).map((h) => [h.id, h.version]);
      await s.close();
      return { pulled, count, hits };
    })()`;
    const result = (await page.evaluate(inPage)) as unknown;
    expect(errors).to.deep.equal([]);
    expect(result).to.deep.equal({ pulled: { kind: 'ok', pulled: 2 }, count: 2, hits: [[id, 2]] });
    const raw = await dumpIndexedDb(page, [...NEEDLES, id]);
    expect(raw.records, JSON.stringify(raw)).to.be.greaterThan(0);
    expect(raw.hits.includes(id), 'the dump covers the record docs (their ids are in clear)').to.equal(true);
    expect(raw.hits.filter((h) => h !== id), 'replica PHI in clear in IndexedDB').to.deep.equal([]);
    // Nor in Web Storage.
    const storage = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    expect(NEEDLES.filter((n) => storage.includes(n))).to.deep.equal([]);
  });
});
