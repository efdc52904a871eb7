import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { correlationId, correlationOf } from '../../http/correlation.ts';
import { errorHandler, notFound } from '../../http/errors.ts';
import { silentLogger, type Logger } from '../../http/log.ts';
import { bearerToken, cachingVerifier, type TokenVerifier } from '../../identity/tokens.ts';
import type { Database, Queryable } from '../../sql/database.ts';
import { FerryError } from '../../validators/codes.ts';
import { authenticate, callerFrom, callerOf, decideAccess, type Caller } from './access.ts';
import { prepareMutation, readBatchEnvelope, type MutationRequest } from './batch/items.ts';
import type { ItemAnswer } from './batch/plan.ts';
import { runMutations, type BatchResult } from './batch/run.ts';
import { DEFAULT_RETENTION_MS } from './idempotency/decision.ts';
import { createLicensing, type Licensing } from './licensing.ts';
import { readPatientLookup, readPatientQuery } from './patients/query.ts';
import { loadPatient, loadPatients, searchPatients } from './patients/store.ts';
import { etagOf } from './patients/versions.ts';

export interface RegistrationAppDeps {
  db: Database;
  verifier: TokenVerifier;
  logger?: Logger;
  licensing?: Licensing;
  /** How long an answer stays replayable under its key (default 30 days). */
  idempotencyRetentionMs?: number;
  /** Called after every commit that wrote an event, e.g. to wake the relay. */
  onCommit?: () => void;
  /** Per request of the single routes, and per item of a batch (64 KB). */
  bodyLimit?: string;
  /** The whole of a `POST /v1/batch` request (8 MB). */
  batchBodyLimit?: string;
  /** Test hook: wraps the mutation transaction, e.g. to fail a chosen statement. */
  wrapTransaction?: (tx: Queryable) => Queryable;
  searchLimit?: number;
  now?: () => Date;
}

/** The registration service's HTTP app: `/v1/patients` (DESIGN §6) and `/v1/batch` (README.md). */
export function createRegistrationApp(deps: RegistrationAppDeps): Express {
  const logger = deps.logger ?? silentLogger();
  const licensing = deps.licensing ?? createLicensing(deps.db);
  const now = deps.now ?? (() => new Date());
  const idempotency = { retentionMs: deps.idempotencyRetentionMs ?? DEFAULT_RETENTION_MS, now };
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('trust proxy', false);
  app.use(correlationId());
  app.use(requestLog(logger));
  // One verification per token string until it expires: a batch of one user's items verifies once.
  const verify = cachingVerifier(deps.verifier);
  app.use(authenticate(verify));
  // Registered first, so the 64 KB parser below finds the batch's body already read.
  app.use('/v1/batch', express.json({ limit: deps.batchBodyLimit ?? '8mb', strict: true }));
  app.use(express.json({ limit: deps.bodyLimit ?? '64kb', strict: true }));

  const mutations = { db: deps.db, licensing, now, retentionMs: idempotency.retentionMs, ...(deps.wrapTransaction ? { wrapTransaction: deps.wrapTransaction } : {}) };
  const committed = (result: BatchResult) => {
    if (result.events > 0) deps.onCommit?.();
  };

  // The single routes are a batch of one through the same decisions as POST /v1/batch.
  const single = async (req: Request, res: Response) => {
    const caller = callerFrom(res);
    const request: MutationRequest = {
      method: req.method === 'PUT' ? 'PUT' : 'POST',
      path: pathOf(req),
      idempotencyKey: req.get('idempotency-key'),
      ifMatch: req.get('if-match'),
      correlationId: correlationOf(res),
      authorization: undefined,
      requires: null,
      body: req.body as unknown,
    };
    // express.json has enforced the body limit on the bytes as sent.
    const result = await runMutations(mutations, caller.tenant, [prepareMutation(request, caller, Infinity)]);
    committed(result);
    const answer = result.answers[0]!;
    for (const [name, value] of Object.entries(answerHeaders(answer))) res.setHeader(name, value);
    res.status(answer.status).type('application/json').send(answer.body);
  };
  app.post('/v1/patients', single);
  app.put('/v1/patients/:id', single);

  app.post('/v1/batch', async (req, res) => {
    const outer = callerFrom(res);
    const requests = readBatchEnvelope(req.body);
    const callers = await Promise.all(requests.map((r) => (r.authorization === undefined ? outer : itemCaller(verify, r.authorization, outer.tenant))));
    const prepared = requests.map((r, i) => prepareMutation(r, callers[i]!));
    const result = await runMutations(mutations, outer.tenant, prepared);
    committed(result);
    // Each answer's body is spliced in as its JSON text, so a replay stays byte-identical.
    const items = result.answers.map(
      (a) => `{"status":${a.status},"headers":${JSON.stringify(answerHeaders(a))},"body":${a.body}${a.skipped ? ',"skipped":true' : ''}}`,
    );
    res.status(200).type('application/json').send(`{"items":[${items.join(',')}]}`);
  });
  // Many records at once, each exactly as GET /v1/patients/{id} shows it (the replica's projection reads a batch of events' records in one call).
  app.post('/v1/patients/lookup', async (req, res) => {
    const caller = callerFrom(res);
    await requireAccess(licensing, caller, 'read');
    const ids = readPatientLookup(req.body);
    if (!ids.ok) throw new FerryError('VALIDATION_FAILED', { errors: ids.errors });
    res.json({ results: await loadPatients(deps.db, caller.tenant, ids.value) });
  });
  app.get('/v1/patients/:id', async (req, res) => {
    const caller = callerFrom(res);
    await requireAccess(licensing, caller, 'read');
    const record = await loadPatient(deps.db, caller.tenant, String(req.params.id));
    if (!record) throw new FerryError('NOT_FOUND');
    res.setHeader('ETag', etagOf(record.version));
    res.json(record);
  });
  app.get('/v1/patients', async (req, res) => {
    const caller = callerFrom(res);
    await requireAccess(licensing, caller, 'read');
    const query = readPatientQuery(req.query);
    if (!query.ok) throw new FerryError('VALIDATION_FAILED', { errors: query.errors });
    res.json({ results: await searchPatients(deps.db, caller.tenant, query.value, deps.searchLimit ?? 50) });
  });

  app.use(notFound());
  app.use(errorHandler(logger));
  return app;
}

async function requireAccess(licensing: Licensing, caller: ReturnType<typeof callerFrom>, action: 'read' | 'write'): Promise<void> {
  const decision = decideAccess(caller, action, await licensing.isLicensed(caller.tenant));
  if (decision.kind === 'deny') throw new FerryError(decision.code);
}

/** An item's own caller: its token verified like any other, and of the batch's tenant. */
async function itemCaller(verify: TokenVerifier, authorization: string, tenant: string): Promise<Caller | FerryError> {
  const token = bearerToken(authorization);
  if (!token) return new FerryError('UNAUTHENTICATED');
  try {
    const caller = callerOf(await verify(token));
    return caller.tenant === tenant ? caller : new FerryError('TENANT_MISMATCH');
  } catch {
    return new FerryError('UNAUTHENTICATED');
  }
}

/** The headers the single route sets with an answer, lower-case. */
function answerHeaders(answer: ItemAnswer): Record<string, string> {
  const headers: Record<string, string> = {};
  if (answer.status >= 200 && answer.status < 300 && !answer.skipped) {
    const record = JSON.parse(answer.body) as { id: string; version: number };
    headers.etag = etagOf(record.version);
    if (answer.status === 201) headers.location = `/v1/patients/${encodeURIComponent(record.id)}`;
  }
  if (answer.replayed) headers['idempotent-replayed'] = 'true';
  return headers;
}

function pathOf(req: Request): string {
  return req.originalUrl.split('?')[0] ?? req.originalUrl;
}

/** One line per request: ids, codes and timings only, never bodies or headers. */
function requestLog(logger: Logger) {
  return function logRequest(req: Request, res: Response, next: NextFunction): void {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      logger.debug(
        { correlationId: correlationOf(res), method: req.method, route: req.route?.path, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 },
        'request',
      );
    });
    next();
  };
}
