import { expect } from 'chai';
import type { Browser } from 'playwright-core';
import { v7 as uuidv7 } from 'uuid';
import { startTestStack, type TestStack } from '../support/stack.ts';
import { launchChromium } from '../support/browser.ts';

describe('Fauxton for platform admins, in Debian Chromium', function () {
  this.timeout(120_000);
  let stack: TestStack;
  let browser: Browser;
  let mid: string;

  before(async function () {
    browser = await launchChromium(this);
    stack = await startTestStack({ worker: false });
    // ben is a tenant admin in north but not a platform admin.
    await stack.platform.memberships.set('north', 'ben', ['registrar', 'admin']);
    mid = uuidv7();
    const token = await stack.login('ada', 'north');
    const doc = {
      _id: `m:ada:${mid}`,
      _rev: '1-0123456789abcdef0123456789abcdef',
      type: 'mutation', v: 1, tenant: 'north', owner: 'ada', device: 'dev-fx', seq: 1,
      op: 'patient.create', entity: `pat_${uuidv7()}`, after: null, resolves: null, baseVersion: null,
      payload: { givenName: 'Testa', familyName: 'Synthetica', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1' },
      createdAt: new Date().toISOString(),
    };
    const res = await fetch(`${stack.url}/sync/north/_bulk_docs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ new_edits: false, docs: [doc] }),
    });
    expect(res.status).to.equal(201);
  });
  after(async function () {
    await browser?.close();
    await stack?.stop();
  });

  async function signIn(username: string) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${stack.url}/_utils/`);
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', 'ferry-dev');
    await page.click('button[type=submit]');
    return { context, page };
  }

  it('logs in as admin, opens Fauxton, sees inbox_north and opens a mutation doc', async function () {
    const { context, page } = await signIn('admin');
    try {
      await page.getByText('inbox_north', { exact: true }).click();
      // Each row of All Documents has an "Edit document" control; open the mutation's.
      const row = page.locator('div', { hasText: `m:ada:${mid}` }).filter({ has: page.locator('[title="Edit document"]') }).last();
      await row.locator('[title="Edit document"]').click();
      await page.getByText('patient.create').first().waitFor();
      expect(decodeURIComponent(page.url())).to.include(mid);
      const cookies = await context.cookies();
      const session = cookies.find((c) => c.name === 'ferry_admin');
      expect(session?.httpOnly).to.equal(true);
      expect(session?.sameSite).to.equal('Strict');
    } finally {
      await context.close();
    }
  });

  for (const who of ['ada', 'ben']) {
    it(`gives ${who} (${who === 'ben' ? 'a tenant admin' : 'a registrar'}) nothing`, async function () {
      const { context, page } = await signIn(who);
      try {
        await page.getByRole('alert').waitFor();
        expect(await page.content()).to.not.include('inbox_north');
        const cookies = await context.cookies();
        expect(cookies.find((c) => c.name === 'ferry_admin')).to.equal(undefined);
        const probe = await page.evaluate(async () => {
          const out: number[] = [];
          for (const path of ['/_all_dbs', '/inbox_north/_all_docs', '/_users/_all_docs', '/_config', '/_utils/']) {
            out.push((await fetch(path, { headers: { accept: 'application/json' } })).status);
          }
          return out;
        });
        expect(probe).to.deep.equal([401, 401, 401, 401, 401]);
      } finally {
        await context.close();
      }
    });
  }

  it('refuses a tenant admin Bearer token on the CouchDB admin API, and accepts a platform admin one', async function () {
    const tenantAdmin = await stack.login('ben', 'north');
    for (const path of ['/_all_dbs', '/inbox_north', '/_users', '/_config', '/_replicator', '/_utils/']) {
      const res = await fetch(`${stack.url}${path}`, { headers: { authorization: `Bearer ${tenantAdmin}`, accept: 'application/json' } });
      expect(res.status, path).to.equal(403);
    }
    const platformAdmin = await stack.login('admin', 'north');
    const res = await fetch(`${stack.url}/_all_dbs`, { headers: { authorization: `Bearer ${platformAdmin}` } });
    expect(await res.json()).to.include.members(['inbox_north', 'inbox_south', 'inbox_east']);
  });
});
