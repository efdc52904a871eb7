import { randomBytes } from 'node:crypto';
import type { CouchServer } from '../couchdb/client.ts';

// The baseline most figures are set against: what the CouchDB server under test takes as raw
// `_bulk_docs` (docs of ~480 bytes, batches of 500) into a scratch database, measured in the same
// run, so a ratio compares the path with the store it sits on.

/** Raw `_bulk_docs` write rate of `server`, docs/s. */
export async function rawBulkDocsRate(server: CouchServer, n: number): Promise<number> {
  const name = `bench_raw_${randomBytes(4).toString('hex')}`;
  await server.createDb(name);
  const db = server.db(name);
  const filler = randomBytes(150).toString('hex');
  const docs = Array.from({ length: n }, (_, i) => ({ _id: `doc-${i}-${randomBytes(4).toString('hex')}`, type: 'bench', seq: i, filler }));
  const started = process.hrtime.bigint();
  for (let i = 0; i < docs.length; i += 500) await db.bulkDocs(docs.slice(i, i + 500));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await server.request('DELETE', `/${name}`).then((r) => r.body?.cancel());
  return n / seconds;
}
