import { expect } from 'chai';
import { withTransientRetry } from '../../client/transient-retry.ts';
import type { FetchLike } from '../../client/auth-fetch.ts';

// A replication request whose connection failed is sent once more before the replication hears of it.

function scripted(outcomes: Array<'reset' | number>): { fetch: FetchLike; calls: Array<{ url: string; body: unknown }> } {
  const calls: Array<{ url: string; body: unknown }> = [];
  const fetch: FetchLike = async (input, init) => {
    calls.push({ url: String(input), body: init?.body });
    const next = outcomes.shift() ?? 200;
    if (next === 'reset') throw new TypeError('fetch failed');
    return new Response('{}', { status: next });
  };
  return { fetch, calls };
}

const noWait = { sleep: async () => undefined };

describe('client: transient retry of replication requests', () => {
  it('sends a request again, same body, after a reset', async () => {
    const { fetch, calls } = scripted(['reset', 201]);
    const res = await withTransientRetry(fetch, noWait)('http://x/sync/north/_bulk_docs', { method: 'POST', body: '{"docs":[],"new_edits":false}' });
    expect(res.status).to.equal(201);
    expect(calls.map((c) => c.body)).to.deep.equal(['{"docs":[],"new_edits":false}', '{"docs":[],"new_edits":false}']);
  });
  it('gives up after the retries and throws the network error', async () => {
    const { fetch, calls } = scripted(['reset', 'reset', 'reset']);
    let thrown: unknown = null;
    await withTransientRetry(fetch, noWait)('http://x/sync/north/_changes').catch((e: unknown) => (thrown = e));
    expect(thrown).to.be.instanceOf(TypeError);
    expect(calls).to.have.length(2);
  });
  it('never retries an HTTP answer, whatever its status', async () => {
    const { fetch, calls } = scripted([503]);
    expect((await withTransientRetry(fetch, noWait)('http://x/sync/north/')).status).to.equal(503);
    expect(calls).to.have.length(1);
  });
  it('never retries a request its caller aborted, or a body that cannot be sent twice', async () => {
    const aborted = new AbortController();
    aborted.abort();
    const a = scripted(['reset', 200]);
    await withTransientRetry(a.fetch, noWait)('http://x/sync/north/_changes', { signal: aborted.signal }).catch(() => undefined);
    expect(a.calls).to.have.length(1);
    const b = scripted(['reset', 200]);
    await withTransientRetry(b.fetch, noWait)('http://x/sync/north/_bulk_docs', { method: 'POST', body: new Blob(['x']) }).catch(() => undefined);
    expect(b.calls).to.have.length(1);
  });
});
