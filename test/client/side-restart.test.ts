// A fault on one side of a live connection restarts that side only (`afterSideFailure` in
// `client/sync.ts`): the decision from a case table, then against a real CouchDB-protocol server
// (express-pouchdb standing in for /sync/{tenant}), counting what the other side did not redo.
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { openNodeSession } from '../../client/node.ts';
import type { FetchLike } from '../../client/auth-fetch.ts';
import type { Session } from '../../client/session.ts';
import { afterSideFailure, type SideFailure, type SideFailureAction, type SyncState } from '../../client/sync.ts';
import { FakeTokens, patient, startGateway, waitFor, type GatewayStandIn } from './support.ts';

describe('client/sync: afterSideFailure', () => {
  const base: SideFailure = { halted: null, stopping: false, otherHealthy: true, attempt: 1, reachable: true };
  const cases: Array<[string, Partial<SideFailure>, SideFailureAction]> = [
    ['the gateway answered an error, the other side works → restart this side alone', {}, { kind: 'restart-side', attempt: 1 }],
    ['the third failure in a row → restart alone, after the third backoff', { attempt: 3 }, { kind: 'restart-side', attempt: 3 }],
    ['the other side failed too → end the connection', { otherHealthy: false }, { kind: 'end' }],
    ['the network failed → end the connection (the app sees backoff)', { reachable: false }, { kind: 'end' }],
    ['the network failed and the other side failed → end', { reachable: false, otherHealthy: false }, { kind: 'end' }],
    ['a tenant mismatch → halt, whatever the other side does', { halted: 'server' }, { kind: 'halt', source: 'server' }],
    ['a tenant mismatch with the network down → halt', { halted: 'token-tenant', reachable: false, otherHealthy: false }, { kind: 'halt', source: 'token-tenant' }],
    ['the connection is stopping → stop', { stopping: true }, { kind: 'stop' }],
    ['stopping wins over a halt', { stopping: true, halted: 'server' }, { kind: 'stop' }],
  ];
  for (const [name, over, want] of cases) it(name, () => expect(afterSideFailure({ ...base, ...over })).to.deep.equal(want));
});

describe('client/sync: a push fault leaves the live pull alone', function () {
  this.timeout(30_000);
  let gw: GatewayStandIn;
  let tokens: FakeTokens;
  let session: Session | null = null;

  beforeEach(async () => {
    gw = await startGateway();
    tokens = new FakeTokens(gw, 'north', 'ada');
  });
  afterEach(async () => {
    if (session && !session.closed) await session.wipe({ confirm: true }).catch(() => undefined);
    session = null;
    await gw.close();
  });

  it('a 503 on the push restarts the push only: the pull keeps its longpoll and asks for nothing again', async () => {
    let failNextBulkDocs = false;
    let injected = 0;
    // The gateway's 503 for one `_bulk_docs`, answered before it reaches the stand-in.
    const faulty: FetchLike = async (input, init) => {
      if (failNextBulkDocs && String(input).includes('/_bulk_docs')) {
        failNextBulkDocs = false;
        injected++;
        return new Response(JSON.stringify({ error: 'unavailable', reason: 'try again' }), { status: 503, headers: { 'content-type': 'application/json' } });
      }
      return globalThis.fetch(input, init);
    };
    const states: SyncState[] = [];
    session = await openNodeSession({
      gatewayUrl: gw.url,
      tenant: 'north',
      owner: 'ada',
      passphrase: 'pw',
      tokens,
      adapter: 'memory',
      kdfIterations: 1_000,
      autoSync: true,
      idleTimeoutMs: null,
      backoff: { base: 20, cap: 80 },
      fetch: faulty,
      prefix: `sr-${randomUUID()}-`,
    });
    session.on('sync', (s) => states.push(s));
    const s = session;
    await waitFor(() => s.sync.state.kind === 'idle');
    const mark = gw.requests.length;
    failNextBulkDocs = true;
    const a = await s.mutate('patient.create', patient());
    if (!a.ok) throw new Error('mutate failed');
    await waitFor(async () => (await gw.inbox('north').allDocs()).rows.some((r) => r.id === `m:ada:${a.mid}`));
    await waitFor(() => s.sync.state.kind === 'idle');
    const after = gw.requests.slice(mark);
    const paths = after.map((r) => `${r.method} ${r.path.split('?')[0]}`);
    expect(injected).to.equal(1);
    expect(after.filter((r) => r.path.includes('/_bulk_docs')).map((r) => r.status), 'sent again after the restart').to.deep.equal([201]);
    // The pull was not torn down: its longpoll stayed open (not abandoned), and it made none of a
    // start's requests (db info, its checkpoint); the push's restart read only its own checkpoint.
    expect(after.filter((r) => r.path.includes('feed=longpoll') && r.abandoned), 'no longpoll abandoned').to.have.length(0);
    expect(paths.filter((p) => p === 'GET /sync/north/' || p === 'GET /sync/north'), 'no db info').to.have.length(0);
    expect(paths.filter((p) => p === 'GET /sync/'), 'no server root').to.have.length(0);
    expect(states.filter((x) => x.kind === 'backoff'), 'the app saw no connection backoff').to.have.length(0);
    await s.sync.stop();
  });
});
