// Node entry: PouchDB with memory and leveldb storage, http and replication.

import PouchDB from 'pouchdb-core';
import MemoryAdapter from 'pouchdb-adapter-memory';
import LevelAdapter from 'pouchdb-adapter-leveldb';
import HttpAdapter from 'pouchdb-adapter-http';
import Replication from 'pouchdb-replication';
import { openSession, type Session, type SessionOptions } from './session.ts';

export const NodePouch: PouchDB.Static = PouchDB.plugin(MemoryAdapter).plugin(LevelAdapter).plugin(HttpAdapter).plugin(Replication);

export type NodeSessionOptions = Omit<SessionOptions, 'PouchDB' | 'adapter'> & {
  /** `leveldb` (default; set `prefix` to a directory ending in `/`) or `memory`. */
  adapter?: 'leveldb' | 'memory';
};

export function openNodeSession(options: NodeSessionOptions): Promise<Session> {
  return openSession({ ...options, PouchDB: NodePouch, adapter: options.adapter ?? 'leveldb' });
}

export * from './index.ts';
