// What the clinician-app browser tests share: signing in through the app's own screens, and
// `checkScreen`, which saves screenshots at 360 px and 1280 px (test/browser/artifacts/, git-ignored),
// runs axe-core (no serious or critical finding) and checks that 360 px has no horizontal scroll.

import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { Page } from 'playwright-core';

export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), 'artifacts');
export const PASSPHRASE = 'a long device passphrase';
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

interface AxeFinding {
  id: string;
  impact: string | null;
  nodes: number;
  targets: string[];
}

/** Every finding axe-core reports against WCAG 2.1 A/AA on the page as it is now. */
export async function axeFindings(page: Page): Promise<AxeFinding[]> {
  // Evaluated through the debugging protocol, not an inline <script>: the app's CSP stays strict.
  await page.evaluate(AXE_SOURCE);
  return page.evaluate(async () => {
    const axe = (globalThis as unknown as { axe: { run(ctx: Document, opts: unknown): Promise<{ violations: Array<{ id: string; impact: string | null; nodes: Array<{ target: string[] }> }> }> } }).axe;
    const result = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, targets: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
}

/** Screenshots at both widths, axe-core clean of serious/critical findings, no horizontal scroll at 360 px. */
export async function checkScreen(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const before = page.viewportSize() ?? { width: 1280, height: 900 };
  try {
    for (const width of [360, 1280]) {
      await page.setViewportSize({ width, height: width === 360 ? 780 : 900 });
      // Let layout settle after the resize.
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      if (width === 360) {
        const scroll = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth }));
        expect(scroll.scrollWidth, `${name}: horizontal scroll at 360 px`).to.be.at.most(scroll.innerWidth);
      }
      await page.screenshot({ path: join(ARTIFACTS, `${name}-${width}.png`), fullPage: true });
      const serious = (await axeFindings(page)).filter((f) => f.impact === 'serious' || f.impact === 'critical');
      expect(serious, `${name} at ${width} px: axe-core findings`).to.deep.equal([]);
    }
  } finally {
    await page.setViewportSize(before);
  }
}

/** Loads the app, then signs in through its screens (see `signInOnScreen`). */
export async function signInThroughApp(page: Page, url: string, username: string, opts: { tenant?: string; screens?: string } = {}): Promise<void> {
  await page.goto(`${url}/app/`);
  await page.waitForSelector('#signin, #unlock');
  if (await page.locator('#unlock').count()) await page.click('.aside button');
  await signInOnScreen(page, username, opts);
}

/** The sign-in screen, then (for several memberships) the tenant picker, then unlock or first-use passphrase. */
export async function signInOnScreen(page: Page, username: string, opts: { tenant?: string; screens?: string } = {}): Promise<void> {
  await page.waitForSelector('#signin');
  await page.fill('#signin-user', username);
  await page.fill('#signin-password', 'ferry-dev');
  if (opts.screens) await checkScreen(page, `${opts.screens}-signin`);
  await page.click('#signin button[type=submit]');
  await page.waitForSelector('#tenant-picker, #unlock');
  if (await page.locator('#tenant-picker').count()) {
    if (opts.screens) await checkScreen(page, `${opts.screens}-tenant-picker`);
    await page.check(`#tenant-${opts.tenant ?? 'north'}`);
    await page.click('#tenant-picker button[type=submit]');
  }
  await unlockThroughApp(page, opts.screens);
}

export async function unlockThroughApp(page: Page, screens?: string): Promise<void> {
  await page.waitForSelector('#unlock');
  const firstUse = (await page.getAttribute('#unlock', 'data-first-use')) === 'yes';
  await page.fill('#unlock-passphrase', PASSPHRASE);
  if (firstUse) await page.fill('#unlock-confirm', PASSPHRASE);
  if (screens) await checkScreen(page, `${screens}-${firstUse ? 'first-use' : 'unlock'}`);
  await page.click('#unlock button[type=submit]');
  await page.waitForSelector('#nav-patients');
}

export async function fillPatientForm(page: Page, p: { givenName?: string; familyName?: string; birthDate?: string; sex?: string; phone?: string; nationalId?: string }): Promise<void> {
  if (p.givenName !== undefined) await page.fill('#f-givenName', p.givenName);
  if (p.familyName !== undefined) await page.fill('#f-familyName', p.familyName);
  if (p.birthDate !== undefined) await page.fill('#f-birthDate', p.birthDate);
  if (p.sex !== undefined) await page.check(`#sex-${p.sex}`);
  if (p.phone !== undefined) await page.fill('#f-phone', p.phone);
  if (p.nationalId !== undefined) await page.fill('#f-nationalId', p.nationalId);
}

/** Opens a route of the app without a page load (the router's own navigation). */
export async function go(page: Page, path: string): Promise<void> {
  await page.evaluate((p) => {
    history.pushState(null, '', p);
    dispatchEvent(new PopStateEvent('popstate'));
  }, path);
}

export interface RawDump {
  records: number;
  hits: string[];
}

/** Reads every object store of every IndexedDB database of the origin, raw, in the page. */
export function dumpIndexedDb(page: Page, needles: string[]): Promise<RawDump> {
  return page.evaluate(
    // No named inner functions: tsx would wrap them in a `__name` helper the page does not have.
    async ({ needles }) => {
      const dbs = await indexedDB.databases();
      let text = '';
      let records = 0;
      for (const info of dbs) {
        if (!info.name) continue;
        const req = indexedDB.open(info.name);
        const db = await new Promise<IDBDatabase>((resolve, reject) => {
          req.onsuccess = () => resolve(req.result);
          req.onerror = () => reject(req.error);
        });
        for (const name of Array.from(db.objectStoreNames)) {
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
      return { records, hits: needles.filter((n) => text.includes(n)) };
    },
    { needles },
  );
}
