import { expect } from 'chai';
import { afterWait, type WaitOutcome } from '../../gateway/replica/changes.ts';
import { startTestStack, type TestStack } from '../support/stack.ts';
import { projectedAt, pull, register, replica, type ChangeRow } from './support.ts';

// A membership change reaches a device's live /replica longpoll: the wait reads the caller's
// scope again (on every head move and every few seconds), and ends with no rows once it differs,
// so no record of a facility the caller lost is served by a longpoll begun before the change; the
// next pull is the catch-up with the deletions.

describe('replica: a waiting longpoll and a membership change', function () {
  this.timeout(90_000);

  describe('afterWait (what a waiting longpoll does next)', () => {
    const cases: Array<[string, { deadline: boolean; headMoved: boolean; scopeCheckDue: boolean; scopeChanged: boolean }, WaitOutcome]> = [
      ['head moved, same scope: read the feed', { deadline: false, headMoved: true, scopeCheckDue: false, scopeChanged: false }, 'read'],
      ['scope check, same scope: wait on', { deadline: false, headMoved: false, scopeCheckDue: true, scopeChanged: false }, 'wait'],
      ['the wait ended for no reason (watchers closed as the gateway stops): answer, never spin', { deadline: false, headMoved: false, scopeCheckDue: false, scopeChanged: false }, 'answer'],
      ['deadline: answer', { deadline: true, headMoved: false, scopeCheckDue: false, scopeChanged: false }, 'answer'],
      ['deadline with a head move: answer (the feed deadline wins)', { deadline: true, headMoved: true, scopeCheckDue: false, scopeChanged: false }, 'answer'],
      ['scope changed at a scope check: answer empty', { deadline: false, headMoved: false, scopeCheckDue: true, scopeChanged: true }, 'answer'],
      ['scope changed with a head move: answer empty, never read under the old scope', { deadline: false, headMoved: true, scopeCheckDue: false, scopeChanged: true }, 'answer'],
    ];
    for (const [name, input, want] of cases) it(name, () => expect(afterWait(input)).to.equal(want));
  });

  describe('on the full stack', () => {
    let stack: TestStack;
    before(async function () {
      this.timeout(120_000);
      stack = await startTestStack({ webApp: false });
    });
    after(async () => {
      await stack?.stop();
    });

    it('a facility taken away ends the longpoll within the scope check, serves nothing of it, and the next pull deletes its records', async () => {
      const ada = await stack.login('ada', 'north');
      const dee = await stack.login('dee', 'north');
      const mine = await register(stack, ada, 'north-hc-1');
      await projectedAt(stack, 'north', mine.id, 1);
      const { lastSeq } = await pull(stack, dee, 'north');
      const started = Date.now();
      const waiting = replica(stack, dee, `/north/_changes?feed=longpoll&timeout=60000&since=${encodeURIComponent(lastSeq)}`);
      await new Promise((r) => setTimeout(r, 300));
      try {
        expect(await stack.platform.memberships.setFacilities('north', 'dee', [])).to.equal(true);
        // Committed at dee's old facility after the change, while her longpoll still waits.
        const late = await register(stack, ada, 'north-hc-1');
        const answer = await waiting;
        const elapsed = Date.now() - started;
        expect(answer.status).to.equal(200);
        expect((answer.body.results as ChangeRow[]).map((r) => r.id)).to.not.include(`r:patient:${late.id}`);
        expect(answer.body.results).to.deep.equal([]);
        expect(elapsed, 'ended by the scope check, long before the 60 s timeout').to.be.below(15_000);
        const next = await pull(stack, dee, 'north', String(answer.body.last_seq));
        const ids = next.rows.map((r) => r.id);
        expect(ids).to.include(`r:patient:${mine.id}`);
        expect(next.rows.every((r) => r.deleted === true)).to.equal(true);
      } finally {
        await stack.platform.memberships.setFacilities('north', 'dee', ['north-hc-1']);
      }
    });
    it('with no commit at all, the scope check alone ends the longpoll (within about 5 s)', async () => {
      const dee = await stack.login('dee', 'north');
      const { lastSeq } = await pull(stack, dee, 'north');
      const started = Date.now();
      const waiting = replica(stack, dee, `/north/_changes?feed=longpoll&timeout=60000&since=${encodeURIComponent(lastSeq)}`);
      await new Promise((r) => setTimeout(r, 300));
      try {
        await stack.platform.memberships.setFacilities('north', 'dee', []);
        const answer = await waiting;
        expect(answer.status).to.equal(200);
        expect(answer.body.results).to.deep.equal([]);
        expect(Date.now() - started, 'ended by the scope check, long before the 60 s timeout').to.be.below(15_000);
        const next = await pull(stack, dee, 'north', String(answer.body.last_seq));
        expect(next.rows.length).to.be.above(0);
        expect(next.rows.every((r) => r.deleted === true)).to.equal(true);
      } finally {
        await stack.platform.memberships.setFacilities('north', 'dee', ['north-hc-1']);
      }
    });
  });
});
