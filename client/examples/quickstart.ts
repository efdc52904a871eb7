// Runnable example for client/README.md.
//   npx tsx client/examples/quickstart.ts                       offline: queue, draft, read, wipe
//   FERRY_URL=http://127.0.0.1:8080 npx tsx client/examples/quickstart.ts   also sync via the gateway (dev IdP user ada)
import { pathToFileURL } from 'node:url';
import { openNodeSession, type TokenProvider } from '../node.ts';

/** A token provider for the dev identity provider (DESIGN §3): log in once, refresh on demand. */
export async function devIdpTokens(gatewayUrl: string, username: string, password: string, tenant: string): Promise<TokenProvider & { owner: string }> {
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${gatewayUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${path} answered ${res.status}`);
    return (await res.json()) as { access_token: string; refresh_token: string; user: { id: string } };
  };
  let session: Awaited<ReturnType<typeof post>> | null = await post('/auth/token', { username, password, tenant });
  const current = () => {
    if (!session) throw new Error('signed out');
    return session;
  };
  return {
    owner: session.user.id,
    getToken: async () => current().access_token,
    refresh: async () => {
      session = await post('/auth/refresh', { refresh_token: current().refresh_token });
      return session.access_token;
    },
    // For session.signOut(): the token it revokes on the server, and forgetting both afterwards.
    revocationToken: () => session?.refresh_token ?? null,
    clear: () => {
      session = null;
    },
  };
}

export async function quickstart(opts: { gatewayUrl?: string; log?: (line: string) => void } = {}): Promise<void> {
  const log = opts.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  const online = Boolean(opts.gatewayUrl);
  const tokens = online
    ? await devIdpTokens(opts.gatewayUrl!, 'ada', 'ferry-dev', 'north')
    : { owner: 'ada', getToken: async () => 'offline', refresh: async () => 'offline' };

  const session = await openNodeSession({
    gatewayUrl: opts.gatewayUrl ?? 'http://127.0.0.1:8080',
    tenant: 'north',
    owner: tokens.owner,
    passphrase: 'a long device passphrase',
    tokens,
    adapter: 'memory', // 'leveldb' with prefix: './data/device/' keeps it on disk
    prefix: `quickstart-${Date.now()}-`,
    autoSync: online,
    kdfIterations: 100_000,
  });
  session.on('status', (m) => log(`status ${m.op} seq=${m.seq} → ${m.state.kind}`));
  session.on('conflict', (c) => log(`conflict ${c.code} on ${c.entity}`));

  // 1. Register a patient (validated locally, queued in the encrypted outbox).
  const created = await session.mutate('patient.create', {
    givenName: 'Amina', familyName: 'Okafor', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1',
  });
  if (!created.ok) throw new Error(`refused: ${created.code}`);

  // 2. Edit it again while still offline: after/baseVersion chain automatically.
  const edited = await session.mutate('patient.update', {
    givenName: 'Amina', familyName: 'Okafor', birthDate: '1990-04-12', sex: 'female', facility: 'north-hc-1', phone: '+2348000000000',
  }, created.entity);
  if (!edited.ok) throw new Error(`refused: ${edited.code}`);
  log(`update chained after ${session.mutation(edited.mid)?.after === created.mid ? 'the create' : '?'} on base version ${session.mutation(edited.mid)?.baseVersion}`);

  // 3. Invalid input never reaches the queue; messages never echo the input.
  const bad = await session.mutate('patient.create', { givenName: 'X', familyName: 'Y', birthDate: '2999-01-01', sex: 'female', facility: 'f' });
  if (!bad.ok) log(`refused: ${bad.code} ${bad.errors.map((e) => `${e.path} ${e.message}`).join('; ')}`);

  // 4. A draft stays on the device until submitted.
  const draft = await session.drafts.save({ op: 'patient.create', payload: { givenName: 'Kofi' } });
  log(`drafts: ${(await session.drafts.list()).length}`);
  await session.drafts.remove(draft.id);

  // 5. What the user sees: server-confirmed record with pending changes laid over it.
  const view = session.entity(created.entity);
  log(`entity: phone=${String(view.current?.phone)} pending=${view.pending.length} confirmed=${view.confirmed ? `v${view.confirmed.version}` : 'not yet'}`);

  if (online) {
    const until = Date.now() + 30_000;
    while (Date.now() < until && session.mutations().some((m) => m.state.kind === 'queued' || m.state.kind === 'waiting' || m.state.kind === 'retrying')) {
      await new Promise((r) => setTimeout(r, 250));
    }
    log(`after sync: confirmed=${session.entity(created.entity).confirmed?.version ?? 'not yet'}`);
  }

  // 6. Closing with unsynced work needs confirmation.
  const closing = await session.close();
  if (!closing.ok) log(`close refused: ${closing.unsynced} unsynced mutation(s)`);
  if (online) {
    // 7. Sign-out: stops sync, wipes the store, revokes the session on the server, forgets the tokens.
    const out = await session.signOut({ confirm: true, wipe: true });
    log(`signed out${out.ok && out.revoked ? ', session revoked on the server' : ''}`);
  } else {
    await session.wipe({ confirm: true });
    log('wiped');
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  quickstart({ gatewayUrl: process.env.FERRY_URL }).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
