// Retention end to end with the real device library: the whole stack (gateway, worker with
// retention on: window 1 ms, a pass every 300 ms; registration service; embedded CouchDB) and Ferry
// sessions on Node. One device acknowledges as the client does (`client/acknowledgement.ts`,
// batched every 200 ms here) and drops what it acknowledged; round after round of creates and
// chained updates, the inbox's docs of that user return to 0 and the device keeps one mutation per
// entity (its newest confirmed record). A second user's device never acknowledges: none of its
// statuses is ever purged, however many passes run.
import { startTestStack, type TestStack } from '../support/stack.ts';
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import { NodePouch, openNodeSession, type Session } from '../../client/node.ts';
import { localDbName, rawDb } from '../../client/store.ts';
import { devTokens, FAST_WORKER, type DevTokens } from '../acceptance/support.ts';
import { patient } from '../client/support.ts';
import { waitUntil } from './fixture.ts';

const ROUNDS = 5;
const ENTITIES = 8;

describe('retention with the real client: acknowledgements and local drops, end to end', function () {
  this.timeout(300_000);
  let stack: TestStack;
  const sessions: Session[] = [];

  const adminGet = async (path: string) => {
    const res = await fetch(`${stack.couch.identities.url}/inbox_north${path}`, {
      headers: { authorization: `Basic ${Buffer.from(`${stack.couch.identities.admin.username}:${stack.couch.identities.admin.password}`).toString('base64')}` },
    });
    return (await res.json()) as Record<string, unknown>;
  };
  /** The inbox's mutation and status docs of one owner. */
  const inboxDocs = async (owner: string) =>
    ((await adminGet(`/_all_docs?startkey=${encodeURIComponent(JSON.stringify(`m:${owner}:`))}&endkey=${encodeURIComponent(JSON.stringify(`m:${owner}:\ufff0`))}`)).rows as unknown[]).length +
    ((await adminGet(`/_all_docs?startkey=${encodeURIComponent(JSON.stringify(`s:${owner}:`))}&endkey=${encodeURIComponent(JSON.stringify(`s:${owner}:\ufff0`))}`)).rows as unknown[]).length;

  const open = async (tokens: DevTokens, prefix: string, acknowledgeEveryMs: number): Promise<Session> => {
    const s = await openNodeSession({
      gatewayUrl: stack.url,
      tenant: tokens.tenant,
      owner: tokens.owner,
      passphrase: 'correct horse battery staple',
      tokens,
      adapter: 'memory',
      prefix,
      kdfIterations: 1_000,
      idleTimeoutMs: null,
      online: null,
      backoff: { base: 100, cap: 1_000 },
      autoSync: true,
      acknowledgeEveryMs,
    });
    sessions.push(s);
    return s;
  };
  /** The ids in the device's store (ids are stored in clear; no key needed). */
  const localIds = async (s: Session, prefix: string) => {
    const db = rawDb({ PouchDB: NodePouch, adapter: 'memory', prefix, tenant: s.tenant, owner: s.owner }, await localDbName(s.tenant, s.owner));
    const ids = (await db.allDocs()).rows.map((r) => r.id);
    return { mutations: ids.filter((id) => id.startsWith('m:')).length, statuses: ids.filter((id) => id.startsWith('s:')).length };
  };

  before(async () => {
    stack = await startTestStack({ workerTuning: FAST_WORKER, env: { FERRY_RETENTION_WINDOW_MS: '1', FERRY_RETENTION_INTERVAL_MS: '300' } });
  });
  after(async () => {
    for (const s of sessions.splice(0)) if (!s.closed) await s.wipe({ confirm: true }).catch(() => undefined);
    await stack?.stop();
  });

  it('keeps the inbox bounded under steady load with real acknowledgements, and never purges an unacknowledged status', async () => {
    const adaPrefix = `ret-ada-${randomUUID()}-`;
    const benPrefix = `ret-ben-${randomUUID()}-`;
    const adaTokens = await devTokens(stack.url, 'ada', 'north');
    const ada = await open(adaTokens, adaPrefix, 200);
    // Ben's device acknowledges nothing during the test (its first write would be in a day).
    const ben = await open(await devTokens(stack.url, 'ben', 'north'), benPrefix, 86_400_000);

    const benMids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await ben.mutate('patient.create', patient({ givenName: `Benunacked${i}` }));
      if (!r.ok) throw new Error('mutate failed');
      benMids.push(r.mid);
    }
    await waitUntil(async () => benMids.every((mid) => ben.mutation(mid)?.state.kind === 'committed'), 60_000, 100);

    const entities: string[] = [];
    const figures: Array<{ round: number; peak: number; after: number; local: number }> = [];
    for (let round = 0; round < ROUNDS; round++) {
      const mids: string[] = [];
      for (let i = 0; i < ENTITIES; i++) {
        const r = round === 0 ? await ada.mutate('patient.create', patient({ givenName: `Adaround${round}x${i}` })) : await ada.mutate('patient.update', patient({ givenName: `Adaround${round}x${i}` }), { entity: entities[i]! });
        if (!r.ok) throw new Error(`mutate failed: ${JSON.stringify(r)}`);
        if (round === 0) entities.push(r.entity);
        mids.push(r.mid);
      }
      let peak = 0;
      await waitUntil(
        async () => {
          peak = Math.max(peak, await inboxDocs('ada'));
          return mids.every((mid) => ada.mutation(mid)?.state.kind === 'committed');
        },
        60_000,
        100,
      );
      // The device acknowledges, the worker purges: the user's inbox docs go back to 0.
      await waitUntil(async () => (await inboxDocs('ada')) === 0, 60_000, 100).catch(async (err: unknown) => {
        // What was left, for the failure message: the statuses' counters and states, and the ack.
        const left = (await adminGet(`/_all_docs?include_docs=true&startkey=${encodeURIComponent('"s:ada:"')}&endkey=${encodeURIComponent('"s:ada:\ufff0"')}`)).rows as Array<{ doc: { counter?: number; state: string } }>;
        const ack = await fetch(`${stack.url}/sync/north/_local/ferry-ack-${ada.device}`, { headers: { authorization: `Bearer ${adaTokens.current}` } }).then((r) => r.text());
        throw new Error(`${String(err)}; round ${round}; left ${JSON.stringify(left.map((r) => [r.doc.state, r.doc.counter]))}; ack ${ack}`);
      });
      // The device drops what it acknowledged, keeping one mutation (and status) per entity.
      await waitUntil(async () => (await localIds(ada, adaPrefix)).mutations <= ENTITIES, 30_000, 100);
      figures.push({ round, peak: Math.max(peak, mids.length), after: await inboxDocs('ada'), local: (await localIds(ada, adaPrefix)).mutations });
    }
    console.log(`      ada's inbox docs per round (peak → after retention), device's mutation docs: ${figures.map((f) => `${f.peak}→${f.after} (${f.local})`).join(' | ')}`);
    expect(figures.every((f) => f.after === 0)).to.equal(true);
    expect(figures.every((f) => f.local <= ENTITIES)).to.equal(true);
    const local = await localIds(ada, adaPrefix);
    expect(local.statuses, 'status docs dropped with their mutations').to.be.at.most(ENTITIES);
    // What the device kept still works: every entity's newest record is confirmed at the last version.
    for (const e of entities) expect(ada.entity(e).confirmed?.version).to.equal(ROUNDS);

    // Ben acknowledged nothing: all 4 mutations and their 4 statuses are still in the inbox, after
    // every retention pass of the rounds above, and still on his device.
    expect(await inboxDocs('ben')).to.equal(8);
    expect(await localIds(ben, benPrefix)).to.deep.equal({ mutations: 4, statuses: 4 });
  });
});
