import { DEMO_TENANTS } from '../gateway/tenant/demo.ts';
import { createCouchServer, type CouchServer } from './client.ts';
import { ensureServiceUsers, resolveCouchIdentities, type CouchIdentities } from './identities.ts';
import { provisionTenant, type ProvisionResult } from './provision.ts';
import { findRunningEmbedded, startEmbeddedCouch, type EmbeddedCouch, type SupervisorLogger } from './embedded/supervisor.ts';
import { loadEmbeddedAdmin } from './embedded/files.ts';
import { couchDir } from './secrets.ts';

// What `npm start` (and the CLI) call to get a ready CouchDB: the embedded server when
// COUCHDB_URL is unset, the service users in place, and every known tenant's inbox provisioned.

export interface PrepareCouchConfig {
  dataDir: string;
  couchdbUrl: string | undefined;
}

export interface TenantList {
  record(tenant: string): Promise<void>;
  list(): Promise<string[]>;
}

export interface PrepareCouchOptions {
  /** Provision the demo tenants (dev only). Default true; pass false when an external IdP is configured. */
  demoTenants?: boolean;
  /** Re-provision every tenant already in the registry (repairs `_security`, updates the design doc). Default true. */
  reprovisionRegistered?: boolean;
  /** In embedded mode, use a server another process already supervises on this data dir. Default false. */
  reuseRunning?: boolean;
  /** Embedded server port; 0 picks a free one. */
  embeddedPort?: number;
  env?: Record<string, string | undefined>;
  /** How long to wait for an external CouchDB to answer. Default 30 s. */
  waitMs?: number;
}

export interface PreparedCouch {
  /** Authenticated as the server admin: provisioning only. */
  server: CouchServer;
  identities: CouchIdentities;
  /** Present when this call started the embedded server. */
  embedded?: EmbeddedCouch;
  provisioned: ProvisionResult[];
  /** Stops the embedded server if this call started it. */
  stop(): Promise<void>;
}

async function waitUntilUp(server: CouchServer, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (!(await server.up())) {
    if (Date.now() > deadline) throw new Error(`CouchDB at ${server.url} is not reachable or refuses the admin credentials`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export async function prepareCouch(
  config: PrepareCouchConfig,
  platform: { tenants: TenantList },
  logger?: SupervisorLogger,
  opts: PrepareCouchOptions = {},
): Promise<PreparedCouch> {
  let embedded: EmbeddedCouch | undefined;
  let embeddedServer: { url: string; admin: CouchIdentities['admin'] } | undefined;
  if (!config.couchdbUrl) {
    const running = opts.reuseRunning ? findRunningEmbedded(config.dataDir) : null;
    if (running) {
      embeddedServer = { url: `http://127.0.0.1:${running.port}`, admin: loadEmbeddedAdmin(couchDir(config.dataDir)) };
    } else {
      embedded = await startEmbeddedCouch({ dataDir: config.dataDir, port: opts.embeddedPort ?? 0, ...(logger ? { logger } : {}) });
      embeddedServer = { url: embedded.url, admin: embedded.admin };
    }
  }
  const stop = async () => {
    await embedded?.stop();
  };
  try {
    const identities = resolveCouchIdentities({
      couchdbUrl: config.couchdbUrl,
      dataDir: config.dataDir,
      ...(opts.env ? { env: opts.env } : {}),
      ...(embeddedServer ? { embedded: embeddedServer } : {}),
    });
    const server = createCouchServer({ url: identities.url, auth: identities.admin });
    await waitUntilUp(server, opts.waitMs ?? 30_000);
    const users = await ensureServiceUsers(server, identities);
    if (users.created.length || users.updated.length) logger?.info({ component: 'couchdb', ...users }, 'CouchDB service users ensured');

    const tenants = new Set<string>(opts.demoTenants === false ? [] : DEMO_TENANTS);
    if (opts.reprovisionRegistered !== false) for (const t of await platform.tenants.list()) tenants.add(t);
    const provisioned: ProvisionResult[] = [];
    for (const tenant of [...tenants].sort()) {
      const result = await provisionTenant({ admin: server, tenant, registry: platform.tenants });
      provisioned.push(result);
      if (result.dbCreated || result.securityUpdated || result.designUpdated) {
        logger?.info({ component: 'couchdb', ...result }, 'tenant inbox provisioned');
      }
    }
    return { server, identities, ...(embedded ? { embedded } : {}), provisioned, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
