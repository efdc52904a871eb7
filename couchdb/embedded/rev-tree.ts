// What purging leaf revisions does to a PouchDB rev tree (CouchDB 3 `_purge` semantics): the
// named leaves go, with every ancestor no remaining leaf still needs; when no leaf remains the doc
// goes entirely. Pure, over PouchDB's stored metadata shape, so it is tested from a case table
// (`test/couchdb/purge.test.ts`); `purge.ts` carries the result out on leveldb.

/** A node of PouchDB's rev tree: `[hash, opts, children]`. */
export type RevNode = [string, { status?: string; deleted?: boolean }, RevNode[]];
export interface RevPath {
  pos: number;
  ids: RevNode;
}

/** The part of PouchDB's leveldb doc-store metadata a purge reads and rewrites. */
export interface DocMetadata {
  id: string;
  rev_tree: RevPath[];
  /** rev → by-seq key of its body (only revs whose body is still stored). */
  rev_map: Record<string, number>;
  winningRev?: string;
  deleted?: boolean;
  seq?: number;
  [more: string]: unknown;
}

export type PurgePlan =
  /** Nothing named is a leaf: nothing changes (CouchDB answers the id with `[]`). */
  | { kind: 'none' }
  /** Every leaf is purged: the doc disappears. `seqs` are the bodies to delete. */
  | { kind: 'remove'; purged: string[]; seqs: number[]; wasLive: boolean }
  /** Some leaves stay: the doc is rewritten with `metadata`. */
  | { kind: 'rewrite'; purged: string[]; seqs: number[]; metadata: DocMetadata; liveDelta: -1 | 0 | 1 };

interface Leaf {
  rev: string;
  deleted: boolean;
  /** Revs from the root to the leaf, the leaf last. */
  path: string[];
}

function leavesOf(tree: readonly RevPath[]): Leaf[] {
  const out: Leaf[] = [];
  const visit = (pos: number, node: RevNode, above: string[]) => {
    const rev = `${pos}-${node[0]}`;
    const path = [...above, rev];
    if (node[2].length === 0) out.push({ rev, deleted: node[1].deleted === true, path });
    for (const child of node[2]) visit(pos + 1, child, path);
  };
  for (const root of tree) visit(root.pos, root.ids, []);
  return out;
}

/** PouchDB's winner: a live leaf before a deleted one, then the higher pos, then the higher hash. */
export function winnerOf(leaves: ReadonlyArray<{ rev: string; deleted: boolean }>): { rev: string; deleted: boolean } {
  let best: { rev: string; deleted: boolean; pos: number; hash: string } | null = null;
  for (const l of leaves) {
    const dash = l.rev.indexOf('-');
    const pos = Number(l.rev.slice(0, dash));
    const hash = l.rev.slice(dash + 1);
    if (!best || (best.deleted !== l.deleted ? best.deleted : best.pos !== pos ? best.pos < pos : best.hash < hash)) best = { ...l, pos, hash };
  }
  if (!best) throw new Error('a rev tree without leaves');
  return { rev: best.rev, deleted: best.deleted };
}

/** Copies the subtrees that hold a kept rev (a kept leaf keeps its whole path). */
function prune(tree: readonly RevPath[], keep: ReadonlySet<string>): RevPath[] {
  const copy = (pos: number, node: RevNode): RevNode | null => {
    if (!keep.has(`${pos}-${node[0]}`)) return null;
    const children = node[2].map((c) => copy(pos + 1, c)).filter((c): c is RevNode => c !== null);
    return [node[0], { ...node[1] }, children];
  };
  return tree.map((r) => ({ pos: r.pos, ids: copy(r.pos, r.ids) })).filter((r): r is RevPath => r.ids !== null);
}

export function planPurge(metadata: DocMetadata, revs: readonly string[]): PurgePlan {
  const leaves = leavesOf(metadata.rev_tree);
  const named = new Set(revs);
  const purgedLeaves = leaves.filter((l) => named.has(l.rev));
  if (purgedLeaves.length === 0) return { kind: 'none' };
  const purged = purgedLeaves.map((l) => l.rev);
  const remaining = leaves.filter((l) => !named.has(l.rev));
  const wasLive = metadata.deleted !== true;
  if (remaining.length === 0) return { kind: 'remove', purged, seqs: Object.values(metadata.rev_map), wasLive };
  const keep = new Set(remaining.flatMap((l) => l.path));
  const gone = Object.keys(metadata.rev_map).filter((rev) => !keep.has(rev));
  const rev_map: Record<string, number> = {};
  for (const [rev, seq] of Object.entries(metadata.rev_map)) if (keep.has(rev)) rev_map[rev] = seq;
  const winner = winnerOf(remaining);
  const next: DocMetadata = { ...metadata, rev_tree: prune(metadata.rev_tree, keep), rev_map, winningRev: winner.rev, deleted: winner.deleted };
  const seq = rev_map[winner.rev];
  if (seq !== undefined) next.seq = seq;
  const liveDelta = ((winner.deleted ? 0 : 1) - (wasLive ? 1 : 0)) as -1 | 0 | 1;
  return { kind: 'rewrite', purged, seqs: gone.map((rev) => metadata.rev_map[rev]!), metadata: next, liveDelta };
}
