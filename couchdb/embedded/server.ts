import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createEmbeddedApp } from './app.ts';
import { settleBufferDeprecationCheck } from './buffer-deprecation.ts';
import { loadEmbeddedAdmin, loadServerSecrets } from './files.ts';

// Child-process entry of the embedded CouchDB-compatible server (STACK-NOTES traps 3 and 17):
// express-pouchdb runs standalone under `http.createServer`, in its own process, so that a crash
// on a bad `_changes` filter takes down only this process; the parent restarts it.
//
//   node .tmp/embedded-couch/server-{hash}.bundle.js '{"couchDir":"…","port":0}'   (bundle.ts; plain JS)
//   node --import tsx couchdb/embedded/server.ts '{"couchDir":"…","port":0}'  (the same, from source)
//
// Prints one JSON line `{"event":"ready","port":N}` on stdout once it accepts authenticated
// traffic, and exits when stdin closes (the parent is gone) or on SIGTERM.

interface ChildArgs {
  couchDir: string;
  port: number;
}

function parseArgs(raw: string | undefined): ChildArgs {
  const value: unknown = JSON.parse(raw ?? '{}');
  const { couchDir, port } = (value ?? {}) as Partial<ChildArgs>;
  if (typeof couchDir !== 'string' || typeof port !== 'number' || !Number.isInteger(port)) {
    throw new Error('usage: server.ts \'{"couchDir":"…","port":N}\'');
  }
  return { couchDir, port };
}

async function selfCheck(port: number, auth: string): Promise<void> {
  const base = `http://127.0.0.1:${port}`;
  const anonymous = await fetch(`${base}/`);
  await anonymous.body?.cancel();
  if (anonymous.status !== 401) throw new Error(`self-check: anonymous GET / answered ${anonymous.status}`);
  const session = await fetch(`${base}/_session`, { headers: { authorization: auth } });
  const body = (await session.json()) as { userCtx?: { roles?: string[] } };
  if (!session.ok || !body.userCtx?.roles?.includes('_admin')) throw new Error('self-check: the admin cannot log in');
}

async function main(): Promise<void> {
  settleBufferDeprecationCheck();
  const args = parseArgs(process.argv[2]);
  const admin = loadEmbeddedAdmin(args.couchDir);
  const secrets = loadServerSecrets(args.couchDir);
  const listener = await createEmbeddedApp({ couchDir: args.couchDir, admin, ...secrets });
  const server = http.createServer(listener);
  // Its clients are Ferry's own processes on loopback, whose event loops can stall for seconds
  // (PGlite opening, a large batch). With Node's 5 s default the server closed idle sockets that
  // a stalled client then reused ("other side closed"); a few idle sockets held longer cost nothing.
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(args.port, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  await selfCheck(port, `Basic ${Buffer.from(`${admin.username}:${admin.password}`).toString('base64')}`);

  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();

  process.stdout.write(`${JSON.stringify({ event: 'ready', port })}\n`);
}

main().catch((err: unknown) => {
  console.error(`embedded CouchDB failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
