// The inbox views (ES5 source text, run by CouchDB's JavaScript engine).

/** `by_entity`: an entity's mutation chain, keys `[owner, entity, seq]`, value `after`. */
export const BY_ENTITY_MAP = `function (doc) {
  if (doc.type === 'mutation' && doc._id.indexOf('m:') === 0) {
    emit([doc.owner, doc.entity, doc.seq], doc.after);
  }
}`;
