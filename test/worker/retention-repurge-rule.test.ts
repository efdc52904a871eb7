import { expect } from 'chai';
import { decideRepurge, purgedIdState, type KeyLookupRow, type PurgedMutation } from '../../gateway/worker/retention-rule.ts';

// The re-purge guard's decision (docs/SYNC.md "Retention"): which ids retention purged are back in
// the inbox, from what `_all_docs?keys` (no docs) answers for them.

describe('worker/retention: purgedIdState', () => {
  const cases: Array<[string, KeyLookupRow | undefined, ReturnType<typeof purgedIdState>]> = [
    ['not_found, as after the purge', { key: 'm:ada:1', error: 'not_found' }, 'gone'],
    ['a live revision again', { key: 'm:ada:1', value: { rev: '1-a' } }, 'back'],
    ['a deleted revision again (a deleted leaf can hold a body)', { key: 's:ada:1', value: { rev: '3-c', deleted: true } }, 'back'],
    ['no row for the key', undefined, 'unknown'],
    ['another error (a shard not answering)', { key: 'm:ada:1', error: 'nodedown' }, 'unknown'],
    ['a value without a rev', { key: 'm:ada:1', value: {} as { rev: string } }, 'unknown'],
  ];
  for (const [name, row, want] of cases) {
    it(`${name} → ${want}`, () => {
      expect(purgedIdState(row)).to.equal(want);
    });
  }
});

describe('worker/retention: decideRepurge', () => {
  const mut = (mid: string): PurgedMutation => ({ owner: 'ada', mid, ids: [`m:ada:${mid}`, `s:ada:${mid}`] });
  const gone = (key: string): KeyLookupRow => ({ key, error: 'not_found' });
  const live = (key: string): KeyLookupRow => ({ key, value: { rev: '1-x' } });
  const rowsOf = (...rows: KeyLookupRow[]) => new Map(rows.map((r) => [r.key, r]));
  const cases: Array<[string, PurgedMutation[], Map<string, KeyLookupRow>, { back: Array<[string, string[]]>; unknown: number }]> = [
    ['nothing purged', [], rowsOf(), { back: [], unknown: 0 }],
    ['both docs still gone', [mut('1')], rowsOf(gone('m:ada:1'), gone('s:ada:1')), { back: [], unknown: 0 }],
    ['both docs back (what the 3.5.0 cluster did)', [mut('1')], rowsOf(live('m:ada:1'), live('s:ada:1')), { back: [['1', ['m:ada:1', 's:ada:1']]], unknown: 0 }],
    ['only the status doc back', [mut('1')], rowsOf(gone('m:ada:1'), live('s:ada:1')), { back: [['1', ['s:ada:1']]], unknown: 0 }],
    ['one back, one gone, one unanswered', [mut('1'), mut('2'), mut('3')], rowsOf(live('m:ada:1'), gone('s:ada:1'), gone('m:ada:2'), gone('s:ada:2'), gone('m:ada:3')), { back: [['1', ['m:ada:1']]], unknown: 1 }],
    ['rows for ids not asked about are ignored', [mut('1')], rowsOf(gone('m:ada:1'), gone('s:ada:1'), live('m:ben:1')), { back: [], unknown: 0 }],
  ];
  for (const [name, purged, rows, want] of cases) {
    it(name, () => {
      const got = decideRepurge(purged, rows);
      expect({ back: got.back.map((b) => [b.mutation.mid, b.ids]), unknown: got.unknown }).to.deep.equal(want);
    });
  }
});
