import type { CouchServer } from '../../couchdb/client.ts';
import { inboxName } from '../../couchdb/provision.ts';
import type { TokenIssuer } from '../../identity/tokens.ts';
import { loggableError, silentLogger, type Logger } from '../../http/log.ts';
import type { Platform } from '../platform/open.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from './backoff.ts';
import { createLeaseStore, LeaseLost, type Fence } from './lease.ts';
import { createWorkerMetrics, setLeaseState, type WorkerMetrics } from './metrics.ts';
import { createPendingStore } from './pending.ts';
import { createPositionStore } from './position.ts';
import { migrateWorker } from './schema.ts';
import { migrateSync } from '../sync/local-store.ts';
import type { RetentionPolicy } from './retention-rule.ts';
import { startTenantRunner, type TenantRunner, type TenantRunnerOptions } from './tenant-runner.ts';

// The worker (DESIGN §1 step 4, §4): for every tenant in the registry, hold the tenant's lease or
// stand by for it; while holding it, drain the tenant's inbox. New tenants are picked up by
// polling the registry (the embedded server has no `_db_updates`).

export interface WorkerOptions {
  platform: Pick<Platform, 'db' | 'tenants' | 'memberships'>;
  /** Authenticated as the `ferry-worker` CouchDB user. */
  couch: CouchServer;
  issuer: TokenIssuer;
  /** Base URL per module (`registration` → `http://127.0.0.1:8081`). */
  services: Readonly<Record<string, string>>;
  workerId: string;
  logger?: Logger;
  metrics?: WorkerMetrics;
  leaseTtlMs?: number;
  waitingTimeoutMs?: number;
  retry?: RetryPolicy;
  /** How often the tenant registry and leases are looked at; default a third of the lease TTL. */
  leaseCheckMs?: number;
  pageSize?: number;
  maxInFlight?: number;
  /** Mutations per round (one service batch). */
  batchSize?: number;
  /** Rounds under way at once per tenant. */
  rounds?: number;
  /** Deadline of each I/O step of a round. */
  stepTimeoutMs?: number;
  tickMs?: number;
  pollTimeoutMs?: number;
  commitTimeoutMs?: number;
  /** Only these tenants (tests); default every tenant in the registry. */
  tenants?: readonly string[];
  fetch?: typeof fetch;
  /**
   * Retention (docs/SYNC.md "Retention"): a CouchDB server as an admin of the inboxes (`_purge`
   * and `_compact` are admin-only in CouchDB 3) and the policy. Absent: nothing is purged.
   */
  retention?: { purger: CouchServer; policy: RetentionPolicy; intervalMs?: number; batchSize?: number };
  clock?: () => number;
  random?: () => number;
}

export interface Worker {
  metrics: WorkerMetrics;
  /** Tenants whose lease this worker holds right now. */
  held(): string[];
  stop(): Promise<void>;
}

export const DEFAULT_WAITING_TIMEOUT_MS = 7 * 24 * 3600_000;

export async function startWorker(opts: WorkerOptions): Promise<Worker> {
  const logger = opts.logger ?? silentLogger();
  const metrics = opts.metrics ?? createWorkerMetrics();
  const ttl = opts.leaseTtlMs ?? 15_000;
  const checkEvery = opts.leaseCheckMs ?? Math.max(50, Math.floor(ttl / 3));
  const clock = opts.clock ?? Date.now;
  await migrateWorker(opts.platform.db);
  // Retention reads the devices' acknowledgements from the sync `_local` table, whichever process made it.
  if (opts.retention) await migrateSync(opts.platform.db);
  const leases = createLeaseStore(opts.platform.db);
  const positions = createPositionStore(opts.platform.db);
  const pending = createPendingStore(opts.platform.db);
  const runnerOptions: TenantRunnerOptions = {
    pageSize: opts.pageSize ?? 500,
    maxInFlight: opts.maxInFlight ?? 2_000,
    batchSize: opts.batchSize ?? 200,
    rounds: opts.rounds ?? 4,
    stepTimeoutMs: opts.stepTimeoutMs ?? 30_000,
    waitingTimeoutMs: opts.waitingTimeoutMs ?? DEFAULT_WAITING_TIMEOUT_MS,
    retry: opts.retry ?? DEFAULT_RETRY_POLICY,
    tickMs: opts.tickMs ?? 1_000,
    pollTimeoutMs: opts.pollTimeoutMs ?? 25_000,
  };

  interface Held {
    lease: Fence;
    /** performance.now() until which the lease is trusted locally: renewal time + TTL − margin. */
    trustedUntil: number;
    runner: TenantRunner;
  }
  const held = new Map<string, Held>();
  const tokenCache = new Map<string, { token: string; until: number }>();
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  const margin = Math.max(ttl / 4, 50);

  const start = (tenant: string, lease: Fence) => {
    const entry: Held = { lease, trustedUntil: performance.now() + ttl - margin, runner: undefined as unknown as TenantRunner };
    held.set(tenant, entry);
    entry.runner = startTenantRunner({
      tenant,
      lease,
      assertLease: () => {
        if (performance.now() > entry.trustedUntil || held.get(tenant) !== entry) throw new LeaseLost(tenant);
      },
      inbox: opts.couch.db(inboxName(tenant)),
      positions,
      pending,
      commit: {
        services: opts.services,
        issuer: opts.issuer,
        memberships: opts.platform.memberships,
        fetch: opts.fetch ?? fetch,
        timeoutMs: opts.commitTimeoutMs ?? 30_000,
        tokenCache,
      },
      metrics,
      logger,
      clock,
      random: opts.random ?? Math.random,
      options: runnerOptions,
      ...(opts.retention
        ? {
            retention: {
              purger: opts.retention.purger.db(inboxName(tenant)),
              db: opts.platform.db,
              policy: opts.retention.policy,
              intervalMs: opts.retention.intervalMs ?? 3600_000,
              batchSize: opts.retention.batchSize ?? 500,
            },
          }
        : {}),
    });
    setLeaseState(metrics, tenant, true);
    logger.info({ tenant, workerId: opts.workerId, fence: lease.fence }, 'worker took the tenant lease');
    void entry.runner.done.then(() => {
      if (held.get(tenant) === entry) {
        held.delete(tenant);
        setLeaseState(metrics, tenant, false);
        if (!stopping) void leases.release(lease).catch(() => undefined);
      }
    });
  };

  const check = async () => {
    const tenants = opts.tenants ?? (await opts.platform.tenants.list());
    for (const tenant of tenants) {
      if (stopping) return;
      const h = held.get(tenant);
      if (h) {
        const asked = performance.now();
        if (await leases.renew(h.lease, ttl)) {
          h.trustedUntil = asked + ttl - margin;
        } else {
          logger.warn({ tenant, fence: h.lease.fence }, 'worker lost the tenant lease');
          held.delete(tenant);
          setLeaseState(metrics, tenant, false);
          void h.runner.stop();
        }
        continue;
      }
      const lease = await leases.acquire(tenant, opts.workerId, ttl);
      if (lease && !stopping) start(tenant, lease);
      else setLeaseState(metrics, tenant, false);
    }
  };

  const loop = async () => {
    try {
      await check();
    } catch (err) {
      logger.warn({ err: loggableError(err) }, 'worker lease check failed');
    }
    if (!stopping) timer = setTimeout(() => void loop(), checkEvery);
  };
  await loop();

  return {
    metrics,
    held: () => [...held.keys()],
    async stop() {
      stopping = true;
      if (timer) clearTimeout(timer);
      const entries = [...held.values()];
      held.clear();
      await Promise.all(entries.map((e) => e.runner.stop()));
      await Promise.all(entries.map((e) => leases.release(e.lease).catch(() => undefined)));
    },
  };
}
