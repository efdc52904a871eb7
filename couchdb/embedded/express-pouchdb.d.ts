// express-pouchdb 4.2.0 ships no types. This is the small part of its surface Ferry touches; the
// app is an express 4 application, typed loosely here because express 4's own types are not
// installed (the project uses express 5 for its own routes).
declare module 'express-pouchdb' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export interface CouchConfig {
    set(section: string, key: string, value: unknown, callback: (err: Error | null) => void): void;
    get(section: string, key: string): unknown;
    getSection(section: string): Record<string, string>;
  }

  export type Middleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;

  export interface RouterLayer {
    name: string;
    handle: Middleware;
  }

  /** The part of a wrapped PouchDB database Ferry's own wrapper touches (callback or promise `info`). */
  export interface WrappedDb {
    info(...args: unknown[]): Promise<Record<string, unknown>>;
  }

  export interface ExpressPouchApp {
    (req: IncomingMessage, res: ServerResponse): void;
    use(fn: Middleware): unknown;
    couchConfig: CouchConfig;
    /** Per-database wrappers, applied when a database is first opened. */
    dbWrapper: { registerWrapper(wrapper: (name: string, db: WrappedDb, next: () => unknown) => unknown): void };
    /** express 4 internals: the ordered middleware stack. */
    _router: { stack: RouterLayer[] };
  }

  export interface ExpressPouchOptions {
    mode?: 'fullCouchDB' | 'minimumForPouchDB' | 'custom';
    inMemoryConfig?: boolean;
    configPath?: string;
    logPath?: string;
    overrideMode?: { include?: string[]; exclude?: string[] };
  }

  // The PouchDB constructor crosses the library boundary untyped.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  export default function expressPouchDB(PouchDB: any, opts?: ExpressPouchOptions): ExpressPouchApp;
}
