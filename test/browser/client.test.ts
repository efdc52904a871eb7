// The device library in Debian Chromium (playwright-core), through the clinician web app the
// gateway serves at /app/ (web/, bundled by esbuild at stack start), against the full stack:
// write while offline, reload while offline (service-worker app shell), the data is still there and
// encrypted in raw IndexedDB, then back online the statuses arrive.

import { startTestStack, type TestStack } from '../support/stack.ts';
import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../support/browser.ts';
import { requireNats } from '../support/services.ts';

const PASSPHRASE = 'a long device passphrase';
// Synthetic patient; values chosen so that they cannot appear by chance in ciphertext or ids.
const PATIENT = { givenName: 'Quorvenda', familyName: 'Zyxtestova', birthDate: '1983-07-29', facility: 'north-hc-1' };

interface RawDump {
  databases: string[];
  stores: number;
  records: number;
  hits: string[];
  mutationIdSeen: boolean;
}

/** Reads every object store of every IndexedDB database of the origin, raw, in the page. */
function dumpIndexedDb(page: Page, needles: string[], mid: string): Promise<RawDump> {
  return page.evaluate(
    // No named inner functions: tsx would wrap them in a `__name` helper the page does not have.
    async ({ needles, mid }) => {
      const dbs = await indexedDB.databases();
      let text = '';
      let stores = 0;
      let records = 0;
      for (const info of dbs) {
        if (!info.name) continue;
        const req = indexedDB.open(info.name);
        const db = await new Promise<IDBDatabase>((resolve, reject) => {
          req.onsuccess = () => resolve(req.result);
          req.onerror = () => reject(req.error);
        });
        for (const name of Array.from(db.objectStoreNames)) {
          stores++;
          const values = await new Promise<unknown[]>((resolve, reject) => {
            const r = db.transaction(name, 'readonly').objectStore(name).getAll();
            r.onsuccess = () => resolve(r.result as unknown[]);
            r.onerror = () => reject(r.error);
          });
          records += values.length;
          text += JSON.stringify(values);
        }
        db.close();
      }
      return { databases: dbs.map((d) => d.name ?? ''), stores, records, hits: needles.filter((n) => text.includes(n)), mutationIdSeen: text.includes(mid) };
    },
    { needles, mid },
  );
}

describe('the device library in Debian Chromium (web app, IndexedDB, offline)', function () {
  this.timeout(180_000);
  let stack: TestStack;
  let browser: Browser;
  let context: BrowserContext;
  const pageErrors: string[] = [];
  const notFound: string[] = [];

  before(async function () {
    this.timeout(180_000);
    browser = await launchChromium(this);
    await requireNats(this);
    stack = await startTestStack({ workerTuning: { retry: { baseMs: 50, maxMs: 400, jitter: 0.5 }, tickMs: 50, pollTimeoutMs: 2_000 } });
  });
  after(async function () {
    this.timeout(60_000);
    await context?.close().catch(() => undefined);
    await browser?.close();
    await stack?.stop();
  });

  it('writes while offline, survives an offline reload encrypted in raw IndexedDB, and gets its statuses back online', async function () {
    context = await browser.newContext();
    const page = await context.newPage();
    pageErrors.length = 0;
    page.on('dialog', (d) => void d.dismiss());
    page.on('pageerror', (err) => pageErrors.push(`${err.name}: ${err.message}`));
    page.on('response', (r) => {
      if (r.status() === 404) notFound.push(new URL(r.url()).pathname);
    });

    // `/` sends a browser to the app.
    await page.goto(`${stack.url}/`);
    expect(new URL(page.url()).pathname).to.equal('/app/');

    // Sign in (dev IdP) and unlock a new encrypted store.
    await page.fill('#signin input[name=username]', 'ada');
    await page.fill('#signin input[name=password]', 'ferry-dev');
    await page.fill('#signin input[name=tenant]', 'north');
    await page.click('#signin button[type=submit]');
    await page.fill('#unlock input[name=passphrase]', PASSPHRASE);
    await page.click('#unlock button[type=submit]');
    await page.waitForSelector('#register').catch((err: Error) => {
      throw new Error(`${err.message}\npage errors: ${pageErrors.join("\n")}`);
    });
    // The app shell is cached and the page is controlled, so it can reload offline.
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20_000 });

    // Offline: the indicator says so, and a registration is queued locally.
    await context.setOffline(true);
    await page.waitForSelector('#net[data-state=offline]');
    // The form is checked by the same zod schema: a future birth date is refused, nothing queued.
    await page.fill('#register input[name=givenName]', PATIENT.givenName);
    await page.fill('#register input[name=familyName]', PATIENT.familyName);
    await page.fill('#register input[name=birthDate]', '2999-01-01');
    await page.click('#register button[type=submit]');
    await page.waitForSelector('#register-errors li');
    expect(await page.textContent('#register-errors')).to.include('birthDate');
    expect(await page.locator('#mutations tr[data-mid]').count()).to.equal(0);
    await page.fill('#register input[name=birthDate]', PATIENT.birthDate);
    await page.click('#register button[type=submit]');
    const row = page.locator('#mutations tr[data-mid]');
    await row.first().waitFor();
    const mid = (await row.first().getAttribute('data-mid'))!;
    expect(await row.first().getAttribute('data-state')).to.equal('queued');
    expect(await page.textContent('#patients')).to.include(PATIENT.familyName);

    // Reload while still offline: the service worker serves the shell; unlock; the data is there.
    await page.reload();
    await page.fill('#unlock input[name=passphrase]', PASSPHRASE);
    await page.click('#unlock button[type=submit]');
    await page.waitForSelector(`#mutations tr[data-mid="${mid}"][data-state=queued]`);
    expect(await page.textContent('#patients')).to.include(PATIENT.familyName);

    // Raw IndexedDB holds the mutation (its id is in clear) but none of the demographics in clear.
    const raw = await dumpIndexedDb(page, [PATIENT.givenName, PATIENT.familyName, PATIENT.birthDate], mid);
    expect(raw.records, JSON.stringify(raw)).to.be.greaterThan(0);
    expect(raw.mutationIdSeen, 'the dump covers the mutation doc').to.equal(true);
    expect(raw.hits, 'PHI in clear in IndexedDB').to.deep.equal([]);
    // Nor in the URL, Web Storage or the Cache Storage.
    const elsewhere = await page.evaluate(async () => {
      const cached: string[] = [];
      for (const name of await caches.keys()) for (const req of await (await caches.open(name)).keys()) cached.push(new URL(req.url).pathname);
      return { url: location.href, local: JSON.stringify({ ...localStorage }), session: JSON.stringify({ ...sessionStorage }), cached };
    });
    for (const needle of [PATIENT.givenName, PATIENT.familyName, PATIENT.birthDate]) {
      expect(elsewhere.url).to.not.include(needle);
      expect(elsewhere.local).to.not.include(needle);
      expect(elsewhere.session).to.not.include(needle);
    }
    expect(elsewhere.cached.every((p) => p.startsWith('/app/')), JSON.stringify(elsewhere.cached)).to.equal(true);

    // Back online: the queue flushes, the worker commits, and the status arrives on the page.
    await context.setOffline(false);
    await page.waitForSelector('#net[data-state=online]');
    await page.waitForSelector(`#mutations tr[data-mid="${mid}"][data-state=committed]`, { timeout: 60_000 });
    expect(await page.textContent('#patients')).to.include('v1');
    expect(await page.textContent('#unsynced')).to.include('0 change(s)');

    // Lock drops the store; wipe with nothing unsynced needs no confirmation and leaves the sign-in.
    await page.click('#lock');
    await page.waitForSelector('#unlock');
    await page.fill('#unlock input[name=passphrase]', PASSPHRASE);
    await page.click('#unlock button[type=submit]');
    await page.waitForSelector(`#mutations tr[data-mid="${mid}"][data-state=committed]`);
    await page.click('#wipe');
    await page.waitForSelector('#signin');
    const after = await dumpIndexedDb(page, [PATIENT.familyName], mid);
    expect(after.mutationIdSeen, 'wiped').to.equal(false);
    expect(pageErrors).to.deep.equal([]);
    // The only 404s are first-sync replication checkpoints: no app asset is missing.
    expect(notFound.filter((p) => !p.startsWith('/sync/north/_local/')), JSON.stringify(notFound)).to.deep.equal([]);
  });
  it('shows a duplicate conflict with the server candidates and creates anyway with a reason', async function () {
    const ctx = await browser.newContext();
    try {
      const page = await ctx.newPage();
      pageErrors.length = 0;
      page.on('pageerror', (err) => pageErrors.push(`${err.name}: ${err.message}`));
      // ben registered this (synthetic) person online already.
      const person = { givenName: 'Dupliqua', familyName: 'Testerova', birthDate: '1991-02-03', sex: 'female', facility: 'north-hc-1' };
      const benToken = await stack.login('ben', 'north');
      const existing = await fetch(`${stack.url}/v1/patients`, {
        method: 'POST',
        headers: { authorization: `Bearer ${benToken}`, 'content-type': 'application/json', 'idempotency-key': crypto.randomUUID() },
        body: JSON.stringify(person),
      });
      expect(existing.status).to.equal(201);
      const existingId = ((await existing.json()) as { id: string }).id;

      await page.goto(`${stack.url}/app/`);
      await page.fill('#signin input[name=username]', 'cy');
      await page.fill('#signin input[name=password]', 'ferry-dev');
      await page.fill('#signin input[name=tenant]', 'north');
      await page.click('#signin button[type=submit]');
      await page.fill('#unlock input[name=passphrase]', PASSPHRASE);
      await page.click('#unlock button[type=submit]');
      await page.fill('#register input[name=givenName]', person.givenName);
      await page.fill('#register input[name=familyName]', person.familyName);
      await page.fill('#register input[name=birthDate]', person.birthDate);
      await page.click('#register button[type=submit]');

      // The conflict card shows the candidate ids next to the user's own change.
      const card = page.locator('section[data-conflict]');
      await card.waitFor({ timeout: 30_000 });
      expect(await card.textContent()).to.include('DUPLICATE_DETECTED').and.include(existingId).and.include(person.familyName);
      const mid = (await card.getAttribute('data-conflict'))!;
      expect(await page.getAttribute(`#mutations tr[data-mid="${mid}"]`, 'data-state')).to.equal('conflict');
      await card.locator('input[name=reason]').fill('Different person: checked the national id card');
      await card.getByText('Create anyway').click();
      await page.waitForSelector('section[data-conflict]', { state: 'detached' });
      // The new create (same entity, resolving the conflict) commits; the conflicted one stays as history.
      await page.waitForFunction(() => document.querySelectorAll('#mutations tr[data-state=committed]').length === 1, null, { timeout: 30_000 });
      expect(await page.textContent('#patients')).to.include('v1');
      expect(pageErrors).to.deep.equal([]);
      // Sign out needs no confirmation with nothing unsynced; the store stays for next time, and
      // the session ends on the server: the refresh token the tab held no longer refreshes.
      const refreshToken = await page.evaluate(() => sessionStorage.getItem('ferry.refresh'));
      expect(refreshToken).to.be.a('string');
      await page.click('#signout');
      await page.waitForSelector('#signin');
      expect(await page.evaluate(() => sessionStorage.getItem('ferry.refresh'))).to.equal(null);
      const refresh = await fetch(`${stack.url}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }) });
      expect(refresh.status).to.equal(401);
    } finally {
      await ctx.close();
    }
  });
});
