import { randomBytes } from 'node:crypto';
import { sameSecret } from '../../identity/secret.ts';
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { FerryError, isErrorCode, type ErrorBody } from '../../validators/codes.ts';
import { loggableError, silentLogger, type Logger } from '../../http/log.ts';
import { parseAdminRequest, runAdmin, type AdminDeps, type AdminRequest, type AdminResult } from './admin.ts';

// The local operator API: while the server runs it holds the embedded databases (PGlite is
// single-process), so the `ferry` CLI asks it to run the command instead of opening them.
//
// Who may call: the socket lives in FERRY_DATA_DIR (0700) with mode 0600, and each request must
// carry the token the server writes at start to FERRY_DATA_DIR/operator.token (0600, new on every
// start, removed at stop). Both checks come down to "the service user"; the token also keeps a
// socket that some other process bound from being trusted by mistake. Nothing listens on TCP.

export const SOCKET_NAME = 'operator.sock';
export const TOKEN_NAME = 'operator.token';
/** sun_path is 108 bytes on Linux (104 on macOS), the terminating NUL included. */
const MAX_SOCKET_PATH = 103;
const MAX_BODY_BYTES = 64 * 1024;

export const socketPathOf = (dataDir: string) => join(dataDir, SOCKET_NAME);
export const tokenPathOf = (dataDir: string) => join(dataDir, TOKEN_NAME);

/** The operator API cannot be reached or used; the message says what to check (no secrets in it). */
export class OperatorApiError extends Error {
  override name = 'OperatorApiError';
}

export interface OperatorApi {
  socketPath: string;
  close(): Promise<void>;
}

/** True when something accepts connections on the socket (a live server, not a stale file). */
export function socketAnswers(path: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    if (!existsSync(path)) return resolve(false);
    const socket = connect(path);
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      text += c;
      if (text.length > MAX_BODY_BYTES) {
        reject(new FerryError('PAYLOAD_TOO_LARGE'));
        req.destroy();
      }
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(new FerryError('MALFORMED_REQUEST'));
      }
    });
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/** Writes a fresh token atomically with mode 0600 (a rename never exposes a half-written file). */
function writeToken(path: string): string {
  const token = randomBytes(32).toString('base64url');
  const tmp = `${path}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, `${token}\n`, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, path);
  return token;
}

/** How long a stop waits for commands under way. */
const CLOSE_GRACE_MS = 5_000;

export async function startOperatorApi(opts: { dataDir: string; admin: AdminDeps; logger?: Logger }): Promise<OperatorApi> {
  const logger = opts.logger ?? silentLogger();
  const socketPath = socketPathOf(opts.dataDir);
  const tokenPath = tokenPathOf(opts.dataDir);
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new Error(`operator API: the socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter FERRY_DATA_DIR, or set FERRY_OPERATOR_API=off`);
  }
  if (await socketAnswers(socketPath)) {
    throw new Error(`operator API: another process already serves ${socketPath}; is Ferry already running on this FERRY_DATA_DIR?`);
  }
  // What a crashed server left behind.
  rmSync(socketPath, { force: true });
  const token = writeToken(tokenPath);

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const auth = req.headers.authorization ?? '';
    const presented = auth.startsWith('Bearer ') ? auth.slice('Bearer '.length).trim() : '';
    if (!presented || !sameSecret(presented, token)) throw new FerryError('UNAUTHENTICATED');
    if (req.method !== 'POST' || req.url !== '/admin') throw new FerryError('NOT_FOUND');
    const request = parseAdminRequest(await readBody(req));
    const result = await runAdmin(opts.admin, request);
    // Operator actions are worth a log line: command and tenant are ids, never PHI.
    logger.info({ component: 'operator-api', command: request.command, tenant: 'tenant' in request ? request.tenant : undefined }, 'operator command');
    send(res, 200, { result });
  };
  // Commands under way: a stop lets them finish and answer (bounded) before the stack's databases close.
  const running = new Set<Promise<void>>();
  const server: Server = createServer((req, res) => {
    const command = handle(req, res).catch((err: unknown) => {
      const ferry = err instanceof FerryError ? err : new FerryError('INTERNAL');
      if (ferry.status >= 500) logger.error({ component: 'operator-api', err: loggableError(err) }, 'operator command failed');
      if (!res.headersSent) send(res, ferry.status, ferry.toBody());
    });
    running.add(command);
    void command.finally(() => running.delete(command));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // The umask (077, scripts/data-dir.ts) already made it private; say so explicitly too.
  chmodSync(socketPath, 0o600);
  logger.info({ component: 'operator-api' }, 'operator API listening on FERRY_DATA_DIR/operator.sock');

  return {
    socketPath,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await Promise.race([Promise.allSettled([...running]), new Promise((r) => setTimeout(r, CLOSE_GRACE_MS).unref())]);
      server.closeAllConnections();
      await closed;
      rmSync(socketPath, { force: true });
      // Only our own token: a newer server on the same directory may have replaced it.
      try {
        if (readFileSync(tokenPath, 'utf8').trim() === token) rmSync(tokenPath, { force: true });
      } catch {
        // Already gone.
      }
    },
  };
}

/** Sends one command to the running server's operator API. Errors come back as the server's FerryError. */
export async function callOperatorApi(dataDir: string, request: AdminRequest, opts: { timeoutMs?: number } = {}): Promise<AdminResult> {
  let token: string;
  try {
    token = readFileSync(tokenPathOf(dataDir), 'utf8').trim();
  } catch {
    throw new OperatorApiError(`a server answers on ${socketPathOf(dataDir)} but its token file ${TOKEN_NAME} cannot be read; run the CLI as the user that runs Ferry`);
  }
  const payload = JSON.stringify(request);
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(
      {
        socketPath: socketPathOf(dataDir),
        path: '/admin',
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: opts.timeoutMs ?? 120_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new OperatorApiError('the operator API did not answer in time')));
    req.on('error', reject);
    req.end(payload);
  });
  // The boundary: the server's JSON, checked field by field below.
  let parsed: { result?: AdminResult } & Partial<ErrorBody>;
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    throw new OperatorApiError(`the operator API answered ${status} without JSON`);
  }
  if (status === 200 && parsed.result) return parsed.result;
  const { code, message: _message, errors, ...details } = parsed;
  throw new FerryError(isErrorCode(code) ? code : 'INTERNAL', { status, ...(errors ? { errors } : {}), details });
}
