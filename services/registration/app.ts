import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { correlationId, correlationOf } from '../../http/correlation.ts';
import { errorHandler, notFound } from '../../http/errors.ts';
import { silentLogger, type Logger } from '../../http/log.ts';
import type { TokenVerifier } from '../../identity/tokens.ts';
import type { Database } from '../../sql/database.ts';
import { FerryError } from '../../validators/codes.ts';
import { authenticate, callerFrom, decideAccess } from './access.ts';
import { DEFAULT_RETENTION_MS, IDEMPOTENCY_KEY } from './idempotency/decision.ts';
import { requestFingerprint } from './idempotency/fingerprint.ts';
import { runIdempotent, type Answer, type IdempotentResult } from './idempotency/store.ts';
import { createLicensing, type Licensing } from './licensing.ts';
import { createPatient, RaceLost, updatePatient, type CommandContext } from './patients/commands.ts';
import { readPatientQuery } from './patients/query.ts';
import { loadPatient, searchPatients } from './patients/store.ts';
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
  bodyLimit?: string;
  searchLimit?: number;
  now?: () => Date;
}

/** The registration service's HTTP app: `/v1/patients` (DESIGN §6). */
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
  app.use(authenticate(deps.verifier));
  app.use(express.json({ limit: deps.bodyLimit ?? '64kb', strict: true }));

  const serialised = deps.db.kind === 'pglite';
  const mutate = async (res: Response, req: Request, work: (ctx: CommandContext) => Promise<Answer>): Promise<IdempotentResult> => {
    const caller = callerFrom(res);
    const key = idempotencyKeyOf(req);
    const body = jsonBodyOf(req);
    const fingerprint = requestFingerprint({ method: req.method, path: pathOf(req), owner: caller.owner, ifMatch: req.get('if-match') ?? null, body });
    const attempt = () =>
      runIdempotent(deps.db, { tenant: caller.tenant, key, fingerprint }, idempotency, async (tx) =>
        work({ tx, caller, licensed: await licensing.isLicensed(caller.tenant, tx), correlationId: correlationOf(res) ?? null, now: now(), serialised }),
      );
    // A lost race rolls everything back; the rerun's checks see the winner and answer 409.
    for (let tries = 1; ; tries++) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof RaceLost) || tries >= 3) throw err;
      }
    }
  };
  const answer = (res: Response, result: IdempotentResult) => {
    if (result.replayed) res.setHeader('Idempotent-Replayed', 'true');
    if (result.status < 300) {
      const record = JSON.parse(result.body) as { id: string; version: number };
      res.setHeader('ETag', etagOf(record.version));
      if (result.status === 201) res.setHeader('Location', `/v1/patients/${encodeURIComponent(record.id)}`);
      if (!result.replayed) deps.onCommit?.();
    }
    res.status(result.status).type('application/json').send(result.body);
  };

  app.post('/v1/patients', async (req, res) => {
    answer(res, await mutate(res, req, (ctx) => createPatient(ctx, req.body)));
  });
  app.put('/v1/patients/:id', async (req, res) => {
    const id = String(req.params.id);
    answer(res, await mutate(res, req, (ctx) => updatePatient(ctx, id, req.get('if-match'), req.body)));
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

function idempotencyKeyOf(req: Request): string | null {
  const key = req.get('idempotency-key');
  if (key === undefined) return null;
  if (!IDEMPOTENCY_KEY.test(key)) throw new FerryError('MALFORMED_REQUEST', { errors: [{ path: 'Idempotency-Key', message: 'has an invalid format' }] });
  return key;
}

/** express.json leaves the body undefined unless a JSON body came; that is malformed, not invalid. */
function jsonBodyOf(req: Request): unknown {
  if (req.body === undefined) throw new FerryError('MALFORMED_REQUEST');
  return req.body as unknown;
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
