import { expect } from 'chai';
import { guardRemoteInfo } from '../../client/session.ts';
import type { Db } from '../../client/store.ts';

describe('client: remote info() guard (PouchDB replication calls it unguarded)', function () {
  it('answers the last good info when a later call fails, and rejects when there is none', async function () {
    const answers: Array<() => Promise<PouchDB.Core.DatabaseInfo>> = [
      () => Promise.reject(new Error('socket hang up')),
      () => Promise.resolve({ db_name: 'north', doc_count: 0, update_seq: 3 } as PouchDB.Core.DatabaseInfo),
      () => Promise.reject(new Error('socket hang up')),
    ];
    const fake = { info: () => answers.shift()!() } as unknown as Db;
    const remote = guardRemoteInfo(fake);
    let firstFailed = false;
    await remote.info().catch(() => (firstFailed = true));
    expect(firstFailed).to.equal(true);
    expect((await remote.info()).update_seq).to.equal(3);
    expect((await remote.info()).update_seq).to.equal(3);
  });
});
