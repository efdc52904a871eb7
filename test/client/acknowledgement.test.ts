// The device's half of retention (`client/acknowledgement.ts`): what it drops, from a case table,
// and how it acknowledges (batched, never lower, a 409 read again) against a real CouchDB-protocol
// server (express-pouchdb standing in for /sync/{tenant}) with a hand-driven scheduler.
import { expect } from 'chai';
import { createAckWriter, dropPlan, type HeldDocs } from '../../client/acknowledgement.ts';
import { ackDocId } from '../../validators/acknowledgement.ts';
import type { DeviceVerdict } from '../../validators/acknowledgement.ts';
import type { FetchLike } from '../../client/auth-fetch.ts';
import { FakeScheduler, FakeTokens, startGateway, type GatewayStandIn } from './support.ts';

type Held = HeldDocs;
const m = (entity: string, seq: number, over: Partial<NonNullable<Held['mutation']>> = {}): NonNullable<Held['mutation']> => ({ entity, seq, after: null, resolves: null, ...over });
const committed = (counter: number, version: number): NonNullable<Held['status']> => ({ state: 'committed', counter, response: { status: 200, body: { id: 'x', version } } });
const status = (state: 'rejected' | 'conflict' | 'waiting' | 'retrying', counter: number, current?: unknown): NonNullable<Held['status']> => ({ state, counter, ...(current ? { current } : {}) });

const verdictOf = (held: Held[], acked: number | null, mid: string): DeviceVerdict => dropPlan(held, acked).find((p) => p.mid === mid)!.verdict;

describe('client/acknowledgement: dropPlan', () => {
  // Each case: the held docs, the acknowledged counter, the mid asked about, the verdict.
  const cases: Array<[string, Held[], number | null, string, DeviceVerdict]> = [
    [
      'committed and acknowledged, an older version of its entity → drop',
      [
        { mid: 'a', mutation: m('e1', 1), status: committed(10, 1), note: null },
        { mid: 'b', mutation: m('e1', 2, { after: 'a' }), status: committed(11, 2), note: null },
      ],
      20,
      'a',
      { kind: 'drop' },
    ],
    [
      'the entity’s newest confirmed record stays (its view and the next baseVersion)',
      [
        { mid: 'a', mutation: m('e1', 1), status: committed(10, 1), note: null },
        { mid: 'b', mutation: m('e1', 2, { after: 'a' }), status: committed(11, 2), note: null },
      ],
      20,
      'b',
      { kind: 'keep', reason: 'confirmed-record' },
    ],
    ['acknowledged below its counter → keep', [{ mid: 'a', mutation: m('e1', 1), status: committed(10, 1), note: null }, { mid: 'b', mutation: m('e1', 2), status: committed(11, 2), note: null }], 9, 'a', { kind: 'keep', reason: 'not-acknowledged' }],
    ['never acknowledged → keep', [{ mid: 'a', mutation: m('e1', 1), status: committed(10, 1), note: null }, { mid: 'b', mutation: m('e1', 2), status: committed(11, 2), note: null }], null, 'a', { kind: 'keep', reason: 'not-acknowledged' }],
    ['queued, no status yet → keep', [{ mid: 'a', mutation: m('e1', 1), status: null, note: null }], 20, 'a', { kind: 'keep', reason: 'no-status' }],
    ['rejected by the device itself (a note, no status) → keep', [{ mid: 'a', mutation: m('e1', 1), status: null, note: { kind: 'rejected' } }], 20, 'a', { kind: 'keep', reason: 'no-status' }],
    ['waiting → keep', [{ mid: 'a', mutation: m('e1', 1), status: status('waiting', 5), note: null }], 20, 'a', { kind: 'keep', reason: 'not-terminal' }],
    ['retrying → keep', [{ mid: 'a', mutation: m('e1', 1), status: status('retrying', 5), note: null }], 20, 'a', { kind: 'keep', reason: 'not-terminal' }],
    ['a conflict nobody resolved → keep for the user', [{ mid: 'a', mutation: m('e1', 1), status: status('conflict', 5, { version: 3 }), note: null }], 20, 'a', { kind: 'keep', reason: 'awaiting-user' }],
    ['a rejection nobody acted on → keep for the user', [{ mid: 'a', mutation: m('e1', 1), status: status('rejected', 5), note: null }], 20, 'a', { kind: 'keep', reason: 'awaiting-user' }],
    ['a rejection the user discarded → drop', [{ mid: 'a', mutation: m('e1', 1), status: status('rejected', 5), note: { kind: 'discarded' } }], 20, 'a', { kind: 'drop' }],
    [
      'a conflict the user merged, the merge committed → drop the conflict',
      [
        { mid: 'a', mutation: m('e1', 1), status: status('conflict', 5, { version: 3 }), note: null },
        { mid: 'b', mutation: m('e1', 2, { resolves: 'a' }), status: committed(8, 4), note: null },
      ],
      20,
      'a',
      { kind: 'drop' },
    ],
    [
      'a conflict whose merge is still queued → keep (the merge names it)',
      [
        { mid: 'a', mutation: m('e1', 1), status: status('conflict', 5, { version: 3 }), note: null },
        { mid: 'b', mutation: m('e1', 2, { resolves: 'a' }), status: null, note: null },
      ],
      20,
      'a',
      { kind: 'keep', reason: 'needed-by-queued' },
    ],
    [
      'a committed predecessor of a queued update → keep',
      [
        { mid: 'a', mutation: m('e1', 1), status: committed(5, 1), note: null },
        { mid: 'b', mutation: m('e1', 2, { after: 'a' }), status: committed(6, 2), note: null },
        { mid: 'c', mutation: m('e1', 3, { after: 'b' }), status: status('waiting', 7), note: null },
      ],
      20,
      'b',
      { kind: 'keep', reason: 'needed-by-queued' },
    ],
    ['a terminal status of another of the user’s devices (no mutation doc here), acknowledged → drop', [{ mid: 'z', mutation: null, status: committed(5, 1), note: null }], 20, 'z', { kind: 'drop' }],
    ['the same, not acknowledged → keep', [{ mid: 'z', mutation: null, status: committed(5, 1), note: null }], 4, 'z', { kind: 'keep', reason: 'not-acknowledged' }],
    ['a status without a counter → keep', [{ mid: 'a', mutation: m('e1', 1), status: { state: 'committed', response: { status: 201, body: {} } }, note: null }], 20, 'a', { kind: 'keep', reason: 'no-status' }],
  ];
  for (const [name, held, acked, mid, want] of cases) it(name, () => expect(verdictOf(held, acked, mid)).to.deep.equal(want));
});

describe('client/acknowledgement: the ack writer against a CouchDB-protocol server', function () {
  this.timeout(20_000);
  let gw: GatewayStandIn;
  let tokens: FakeTokens;
  const DEVICE = 'dev-ack-1';
  const id = `_local/${ackDocId(DEVICE)}`;

  beforeEach(async () => {
    gw = await startGateway();
    tokens = new FakeTokens(gw, 'north', 'ada');
  });
  afterEach(async () => {
    await gw.close();
  });

  const authed: FetchLike = (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set('Authorization', `Bearer ${tokens.current}`);
    return globalThis.fetch(input, { ...init, headers });
  };
  const ackPuts = () => gw.requests.filter((r) => r.method === 'PUT' && r.path.includes('ferry-ack-'));
  const stored = async () => (await gw.inbox('north').get(id)) as unknown as { counter: number; device: string; type: string; v: number };

  function writer(scheduler: FakeScheduler, acknowledged: number[], reconciled: () => Promise<void> = async () => undefined) {
    return createAckWriter({
      fetch: authed,
      dbUrl: `${gw.url}/sync/north`,
      device: () => DEVICE,
      scheduler,
      everyMs: 1_000,
      reconciled,
      acknowledged: async (c) => void acknowledged.push(c),
    });
  }

  it('batches: many pulled batches in one interval become one PUT of the newest counter', async () => {
    const scheduler = new FakeScheduler();
    const acknowledged: number[] = [];
    const w = writer(scheduler, acknowledged);
    for (const seq of [3, 4, 5, 9, 7]) w.pulled(seq);
    expect(ackPuts(), 'nothing before the interval').to.have.length(0);
    scheduler.advance(1_000);
    await waitForCount(() => acknowledged.length, 1);
    expect(ackPuts()).to.have.length(1);
    expect(await stored()).to.deep.include({ type: 'ferry-ack', v: 1, device: DEVICE, counter: 9 });
    // Later batches: one more PUT; an older position (a pull restarted from an older checkpoint) never lowers it.
    w.pulled(12);
    w.pulled(2);
    scheduler.advance(1_000);
    await waitForCount(() => acknowledged.length, 2);
    expect(acknowledged).to.deep.equal([9, 12]);
    expect((await stored()).counter).to.equal(12);
    w.pulled(4);
    scheduler.advance(1_000);
    await w.flush();
    expect(ackPuts(), 'nothing new to say, nothing sent').to.have.length(2);
    w.stop();
  });

  it('a counter that arrives while a write is slow is written after it (not lost)', async () => {
    const scheduler = new FakeScheduler();
    const acknowledged: number[] = [];
    let release: (() => void) | null = null;
    const slow: FetchLike = async (input, init) => {
      if (init?.method === 'PUT' && acknowledged.length === 0) await new Promise<void>((r) => (release = r));
      return authed(input, init);
    };
    const w = createAckWriter({ fetch: slow, dbUrl: `${gw.url}/sync/north`, device: () => DEVICE, scheduler, everyMs: 1_000, reconciled: async () => undefined, acknowledged: async (c) => void acknowledged.push(c) });
    w.pulled(5);
    scheduler.advance(1_000);
    await waitForCount(() => (release ? 1 : 0), 1);
    // The next batch lands, and its timer fires, while the first PUT is still on its way.
    w.pulled(9);
    scheduler.advance(1_000);
    release!();
    await waitForCount(() => acknowledged.length, 1);
    await new Promise((r) => setTimeout(r, 20));
    scheduler.advance(1_000);
    await waitForCount(() => acknowledged.length, 2);
    expect(acknowledged).to.deep.equal([5, 9]);
    expect((await stored()).counter).to.equal(9);
    w.stop();
  });

  it('waits for the pulled batches to be read into the index before acknowledging them', async () => {
    const scheduler = new FakeScheduler();
    const acknowledged: number[] = [];
    let release!: () => void;
    const reading = new Promise<void>((r) => (release = r));
    const w = writer(scheduler, acknowledged, () => reading);
    w.pulled(5);
    scheduler.advance(1_000);
    await new Promise((r) => setTimeout(r, 50));
    expect(ackPuts(), 'not while the batch is still being read').to.have.length(0);
    release();
    await waitForCount(() => acknowledged.length, 1);
    expect(acknowledged).to.deep.equal([5]);
    w.stop();
  });

  it('a doc written elsewhere (an earlier session): the 409 makes it read the doc again, and it never goes below it', async () => {
    await gw.inbox('north').put({ _id: id, type: 'ferry-ack', v: 1, device: DEVICE, counter: 30 } as unknown as PouchDB.Core.PutDocument<object>);
    const scheduler = new FakeScheduler();
    const acknowledged: number[] = [];
    const w = writer(scheduler, acknowledged);
    w.pulled(20);
    await w.flush();
    expect(acknowledged, 'below what the server already holds: nothing written').to.deep.equal([]);
    expect((await stored()).counter).to.equal(30);
    // Someone bumps it behind the writer's back: its next PUT conflicts, it reads again and writes on top.
    const current = await gw.inbox('north').get(id);
    await gw.inbox('north').put({ ...current, counter: 31 } as unknown as PouchDB.Core.PutDocument<object>);
    w.pulled(40);
    await w.flush();
    scheduler.advance(1_000);
    await waitForCount(() => acknowledged.length, 1);
    expect(acknowledged).to.deep.equal([40]);
    expect((await stored()).counter).to.equal(40);
    w.stop();
  });
});

async function waitForCount(get: () => number, n: number, ms = 5_000): Promise<void> {
  const until = Date.now() + ms;
  while (get() < n) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${n}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
