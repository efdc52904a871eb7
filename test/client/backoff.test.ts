import { expect } from 'chai';
import { nextDelay } from '../../client/backoff.ts';
import { ConnectionLoop, browserOnlineSource, type Connection, type ConnectionEnd, type ConnectHooks, type SyncState } from '../../client/sync.ts';
import { FakeScheduler } from './support.ts';

describe('client/backoff: nextDelay', () => {
  const opts = (random: number) => ({ base: 100, cap: 1_000, random: () => random });
  const cases: { attempt: number; random: number; expected: number }[] = [
    { attempt: 0, random: 0.5, expected: 0 },
    { attempt: -1, random: 0.5, expected: 0 },
    { attempt: 1, random: 0, expected: 50 },
    { attempt: 1, random: 0.999999, expected: 100 },
    { attempt: 2, random: 0, expected: 100 },
    { attempt: 3, random: 0.5, expected: 300 },
    { attempt: 4, random: 1, expected: 800 },
    { attempt: 5, random: 0, expected: 500 }, // ceiling capped at 1000
    { attempt: 5, random: 1, expected: 1_000 },
    { attempt: 60, random: 1, expected: 1_000 },
    { attempt: 1e9, random: 0.25, expected: 625 },
  ];
  for (const c of cases) {
    it(`attempt ${c.attempt}, random ${c.random} → ${c.expected} ms`, () => {
      expect(nextDelay(c.attempt, opts(c.random))).to.equal(c.expected);
    });
  }

  it('never exceeds the cap and never drops below half the ceiling', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let attempt = 1; attempt < 40; attempt++) {
      const d = nextDelay(attempt, { base: 250, cap: 30_000, random });
      const ceiling = Math.min(30_000, 250 * 2 ** (attempt - 1));
      expect(d).to.be.at.most(30_000).and.at.least(ceiling / 2);
    }
  });
});

/** A connection the test ends by hand. */
class FakeConnections {
  made: { hooks: ConnectHooks; end(e: ConnectionEnd): void; stopped: boolean }[] = [];
  connect = (hooks: ConnectHooks): Connection => {
    let end!: (e: ConnectionEnd) => void;
    const ended = new Promise<ConnectionEnd>((r) => (end = r));
    const entry = { hooks, end, stopped: false };
    this.made.push(entry);
    return {
      ended,
      stop: async () => {
        entry.stopped = true;
        end({ kind: 'stopped' });
      },
    };
  };
  get last() {
    return this.made[this.made.length - 1]!;
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe('client/sync: ConnectionLoop (fake time)', () => {
  function setup(online: ReturnType<typeof fakeOnline> | null = null) {
    const scheduler = new FakeScheduler();
    const conns = new FakeConnections();
    const states: SyncState[] = [];
    const loop = new ConnectionLoop({ connect: conns.connect, backoff: { base: 100, cap: 800, random: () => 1 }, scheduler, online, onState: (s) => states.push(s) });
    return { scheduler, conns, states, loop };
  }

  it('backs off exponentially up to the cap, and resets after a connection catches up', async () => {
    const { scheduler, conns, states, loop } = setup();
    loop.start();
    expect(conns.made).to.have.length(1);
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      conns.last.end({ kind: 'failed', reachable: false, message: 'x' });
      await tick();
      const s = loop.state;
      expect(s.kind).to.equal('backoff');
      if (s.kind === 'backoff') delays.push(s.delayMs);
      scheduler.advance(s.kind === 'backoff' ? s.delayMs - 1 : 0);
      expect(conns.made).to.have.length(i + 1); // not yet
      scheduler.advance(1);
      expect(conns.made).to.have.length(i + 2);
    }
    expect(delays).to.deep.equal([100, 200, 400, 800, 800]);
    conns.last.hooks.active();
    conns.last.hooks.idle();
    expect(loop.state.kind).to.equal('idle');
    conns.last.end({ kind: 'failed', reachable: true, message: 'x' });
    await tick();
    expect(loop.state).to.deep.include({ kind: 'backoff', attempt: 1, delayMs: 100, reachable: true });
    expect(states.map((s) => s.kind)).to.include.members(['connecting', 'active', 'idle', 'backoff']);
    await loop.stop();
    expect(loop.state.kind).to.equal('stopped');
    expect(scheduler.pending).to.deep.equal([]);
  });

  it('a connection that moves documents resets the backoff, even if it never catches up', async () => {
    const { scheduler, conns, loop } = setup();
    loop.start();
    for (let i = 0; i < 3; i++) {
      conns.last.end({ kind: 'failed', reachable: true, message: 'x' });
      await tick();
      const s = loop.state;
      scheduler.advance(s.kind === 'backoff' ? s.delayMs : 0);
    }
    conns.last.hooks.active();
    conns.last.hooks.progress();
    conns.last.end({ kind: 'failed', reachable: true, message: 'x' });
    await tick();
    expect(loop.state).to.deep.include({ kind: 'backoff', attempt: 1, delayMs: 100 });
    await loop.stop();
  });

  it('halts on a tenant mismatch and does not retry until started again', async () => {
    const { scheduler, conns, loop } = setup();
    loop.start();
    conns.last.end({ kind: 'halted', source: 'server' });
    await tick();
    expect(loop.state).to.deep.equal({ kind: 'tenant-mismatch', source: 'server' });
    scheduler.advance(60_000);
    expect(conns.made).to.have.length(1);
    expect(loop.isRunning).to.equal(false);
    loop.start();
    expect(conns.made).to.have.length(2);
    await loop.stop();
  });

  it('stop() during a backoff cancels the timer', async () => {
    const { scheduler, conns, loop } = setup();
    loop.start();
    conns.last.end({ kind: 'failed', reachable: false, message: 'x' });
    await tick();
    await loop.stop();
    scheduler.advance(10_000);
    expect(conns.made).to.have.length(1);
  });

  it('follows online/offline events: offline drops the connection, online reconnects at once with a fresh backoff', async () => {
    const online = fakeOnline(false);
    const { scheduler, conns, loop } = setup(online);
    loop.start();
    expect(loop.state.kind).to.equal('offline');
    expect(conns.made).to.have.length(0);
    online.set(true);
    expect(conns.made).to.have.length(1);
    conns.last.end({ kind: 'failed', reachable: false, message: 'x' });
    await tick();
    conns.made.length = 1;
    online.set(false);
    expect(loop.state.kind).to.equal('offline');
    scheduler.advance(10_000);
    expect(conns.made).to.have.length(1); // the backoff timer was cleared
    online.set(true);
    expect(conns.made).to.have.length(2);
    online.set(false);
    expect(conns.made[1]!.stopped).to.equal(true);
    await loop.stop();
    expect(online.listeners).to.equal(0);
  });

  it('browserOnlineSource uses window-style events, and is null without them (Node)', () => {
    expect(browserOnlineSource(globalThis)).to.equal(null);
    const target = new EventTarget() as EventTarget & { navigator: { onLine: boolean } };
    target.navigator = { onLine: false };
    const src = browserOnlineSource(target)!;
    expect(src.online()).to.equal(false);
    const seen: boolean[] = [];
    const off = src.subscribe((v) => seen.push(v));
    target.dispatchEvent(new Event('online'));
    target.dispatchEvent(new Event('offline'));
    off();
    target.dispatchEvent(new Event('online'));
    expect(seen).to.deep.equal([true, false]);
  });
});

function fakeOnline(initial: boolean) {
  let value = initial;
  const subs = new Set<(v: boolean) => void>();
  return {
    online: () => value,
    subscribe(fn: (v: boolean) => void) {
      subs.add(fn);
      return () => subs.delete(fn);
    },
    set(v: boolean) {
      value = v;
      for (const fn of subs) fn(v);
    },
    get listeners() {
      return subs.size;
    },
  };
}
