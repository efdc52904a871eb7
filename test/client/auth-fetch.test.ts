import { expect } from 'chai';
import { createAuthFetch, peekClaims, type FetchLike, type TenantMismatchSource } from '../../client/auth-fetch.ts';
import { fakeJwt } from './support.ts';

interface Sent {
  url: string;
  auth: string | null;
  body: unknown;
}

/** A fake transport: answers 401 for tokens not in `valid`, else `answer`. */
function transport(valid: Set<string>, answer: (s: Sent) => Response = () => new Response('{}', { status: 201 })) {
  const sent: Sent[] = [];
  const fetch: FetchLike = async (input, init) => {
    const s = { url: String(input), auth: new Headers(init?.headers).get('authorization'), body: init?.body };
    sent.push(s);
    const token = s.auth?.slice(7) ?? '';
    if (!valid.has(token)) return new Response(JSON.stringify({ code: 'UNAUTHENTICATED' }), { status: 401 });
    return answer(s);
  };
  return { fetch, sent };
}

function tokens(initial: string, next: () => string) {
  const t = {
    current: initial,
    refreshes: 0,
    getToken: async () => t.current,
    refresh: async () => {
      t.refreshes++;
      await new Promise((r) => setTimeout(r, 10));
      t.current = next();
      return t.current;
    },
  };
  return t;
}

const bulk = JSON.stringify({ docs: [{ _id: 'm:ada:0190f000-0000-7000-8000-000000000001' }], new_edits: false });

describe('client/auth-fetch', () => {
  it('adds the bearer token and keeps PouchDB’s headers', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    const { fetch, sent } = transport(new Set([t1]));
    const f = createAuthFetch({ fetch, tokens: tokens(t1, () => t1), tenant: 'north', owner: 'ada' });
    const res = await f('http://gw/sync/north/_bulk_docs', { method: 'POST', headers: new Headers({ 'content-type': 'application/json' }), body: bulk });
    expect(res.status).to.equal(201);
    expect(sent[0]!.auth).to.equal(`Bearer ${t1}`);
  });

  it('on 401 refreshes once and retries the same request (same mutation ids) with the new token', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    const t2 = fakeJwt({ tid: 'north', owner: 'ada', n: 2 });
    const valid = new Set([t2]);
    const { fetch, sent } = transport(valid);
    const tp = tokens(t1, () => t2);
    const f = createAuthFetch({ fetch, tokens: tp, tenant: 'north', owner: 'ada' });
    const res = await f('http://gw/sync/north/_bulk_docs', { method: 'POST', body: bulk });
    expect(res.status).to.equal(201);
    expect(tp.refreshes).to.equal(1);
    expect(sent.map((s) => s.auth)).to.deep.equal([`Bearer ${t1}`, `Bearer ${t2}`]);
    expect(sent[1]!.body).to.equal(sent[0]!.body);
  });

  it('refresh is single-flight: concurrent 401s share one refresh; a later request with the stale token reuses it', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    const t2 = fakeJwt({ tid: 'north', owner: 'ada', n: 2 });
    let minted = 1;
    const { fetch, sent } = transport(new Set([t2]));
    const tp = tokens(t1, () => (minted++ === 1 ? t2 : fakeJwt({ tid: 'north', owner: 'ada', n: 99 })));
    // The provider keeps handing out t1 (a cache that has not caught up).
    tp.getToken = async () => t1;
    const f = createAuthFetch({ fetch, tokens: tp, tenant: 'north', owner: 'ada' });
    const results = await Promise.all([1, 2, 3, 4].map(() => f('http://gw/sync/north/_changes', {})));
    expect(results.map((r) => r.status)).to.deep.equal([201, 201, 201, 201]);
    expect(tp.refreshes).to.equal(1);
    const later = await f('http://gw/sync/north/_changes', {});
    expect(later.status).to.equal(201);
    expect(tp.refreshes).to.equal(1);
    expect(sent[sent.length - 1]!.auth).to.equal(`Bearer ${t2}`);
  });

  it('retries only once: a second 401 is returned to PouchDB (and the loop backs off)', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    const { fetch, sent } = transport(new Set());
    const tp = tokens(t1, () => fakeJwt({ tid: 'north', owner: 'ada', n: 2 }));
    const f = createAuthFetch({ fetch, tokens: tp, tenant: 'north', owner: 'ada' });
    expect((await f('http://gw/sync/north/', {})).status).to.equal(401);
    expect(sent).to.have.length(2);
    expect(tp.refreshes).to.equal(1);
  });

  const mismatches: { name: string; token: string; source: TenantMismatchSource }[] = [
    { name: 'a token for another tenant', token: fakeJwt({ tid: 'south', owner: 'ada' }), source: 'token-tenant' },
    { name: 'a token for another user', token: fakeJwt({ tid: 'north', owner: 'ben' }), source: 'token-owner' },
  ];
  for (const c of mismatches) {
    it(`never sends with ${c.name}: answers 403 TENANT_MISMATCH locally and reports it`, async () => {
      const { fetch, sent } = transport(new Set([c.token]));
      const seen: TenantMismatchSource[] = [];
      const f = createAuthFetch({ fetch, tokens: tokens(c.token, () => c.token), tenant: 'north', owner: 'ada', onTenantMismatch: (s) => seen.push(s) });
      const res = await f('http://gw/sync/north/_bulk_docs', { method: 'POST', body: bulk });
      expect(res.status).to.equal(403);
      expect(((await res.json()) as { code: string }).code).to.equal('TENANT_MISMATCH');
      expect(sent).to.have.length(0);
      expect(seen).to.deep.equal([c.source]);
    });
  }

  it('a refresh that comes back for another tenant is not used either', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    const south = fakeJwt({ tid: 'south', owner: 'ada', n: 2 });
    const { fetch, sent } = transport(new Set([south]));
    const seen: TenantMismatchSource[] = [];
    const f = createAuthFetch({ fetch, tokens: tokens(t1, () => south), tenant: 'north', owner: 'ada', onTenantMismatch: (s) => seen.push(s) });
    expect((await f('http://gw/sync/north/_bulk_docs', { method: 'POST', body: bulk })).status).to.equal(403);
    expect(sent).to.have.length(1);
    expect(seen).to.deep.equal(['token-tenant']);
  });

  it('reports a gateway 403 TENANT_MISMATCH, but not other 403s', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    let code = 'TENANT_MISMATCH';
    const { fetch } = transport(new Set([t1]), () => new Response(JSON.stringify({ code }), { status: 403 }));
    const seen: TenantMismatchSource[] = [];
    const f = createAuthFetch({ fetch, tokens: tokens(t1, () => t1), tenant: 'north', owner: 'ada', onTenantMismatch: (s) => seen.push(s) });
    const res = await f('http://gw/sync/north/_changes', {});
    expect(((await res.json()) as { code: string }).code).to.equal('TENANT_MISMATCH'); // body still readable by PouchDB
    code = 'FORBIDDEN';
    await f('http://gw/sync/north/_changes', {});
    expect(seen).to.deep.equal(['server']);
  });

  it('reports reachability: network failure → false, any answer → true', async () => {
    const t1 = fakeJwt({ tid: 'north', owner: 'ada', n: 1 });
    let fail = true;
    const seen: boolean[] = [];
    const fetch: FetchLike = async () => {
      if (fail) throw new TypeError('fetch failed');
      return new Response('{}', { status: 500 });
    };
    const f = createAuthFetch({ fetch, tokens: tokens(t1, () => t1), tenant: 'north', owner: 'ada', onReachability: (v) => seen.push(v) });
    await f('http://gw/sync/north/', {}).catch(() => undefined);
    fail = false;
    await f('http://gw/sync/north/', {});
    expect(seen).to.deep.equal([false, true]);
  });

  it('peekClaims reads JWT claims and ignores opaque tokens', () => {
    expect(peekClaims(fakeJwt({ tid: 'north', owner: 'ada' }))).to.include({ tid: 'north', owner: 'ada' });
    expect(peekClaims('opaque-token')).to.equal(null);
    expect(peekClaims('a.%%%.c')).to.equal(null);
  });
});
