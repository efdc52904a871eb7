// The inbox views (ES5 source text, run by CouchDB's JavaScript engine).

/**
 * `feed`: the view-backed pull feed of DESIGN §4. The worker stamps each status doc with a
 * per-tenant `counter`; the gateway answers a user's `_changes` from keys `[owner, counter]`,
 * value `_rev` (the change row's rev, without fetching the doc).
 */
export const FEED_MAP = `function (doc) {
  if (doc.type === 'status' && doc._id.indexOf('s:') === 0 && typeof doc.counter === 'number') {
    emit([doc.owner, doc.counter], doc._rev);
  }
}`;

/**
 * `pending`: per-user count of mutations without a terminal status (the pending quota of §5).
 * Each mutation counts +1, each terminal status -1; reduce `_sum`, group by owner.
 */
export const PENDING_MAP = `function (doc) {
  if (doc.type === 'mutation' && doc._id.indexOf('m:') === 0) {
    emit(doc.owner, 1);
  } else if (doc.type === 'status' && doc._id.indexOf('s:') === 0 &&
      (doc.state === 'committed' || doc.state === 'rejected' || doc.state === 'conflict')) {
    emit(doc.owner, -1);
  }
}`;

/** `by_entity`: an entity's mutation chain, keys `[owner, entity, seq]`, value `after`. */
export const BY_ENTITY_MAP = `function (doc) {
  if (doc.type === 'mutation' && doc._id.indexOf('m:') === 0) {
    emit([doc.owner, doc.entity, doc.seq], doc.after);
  }
}`;
