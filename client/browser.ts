// Browser entry: PouchDB on IndexedDB, http and replication. Bundle with esbuild
// (`--bundle --platform=browser`); PouchDB's browser build also needs the `events` package.

import PouchDB from 'pouchdb-core';
import IdbAdapter from 'pouchdb-adapter-idb';
import HttpAdapter from 'pouchdb-adapter-http';
import Replication from 'pouchdb-replication';
import { openSession, type Session, type SessionOptions } from './session.ts';

export const BrowserPouch: PouchDB.Static = PouchDB.plugin(IdbAdapter).plugin(HttpAdapter).plugin(Replication);

export function openBrowserSession(options: Omit<SessionOptions, 'PouchDB' | 'adapter'>): Promise<Session> {
  return openSession({ ...options, PouchDB: BrowserPouch, adapter: 'idb' });
}

export * from './index.ts';
