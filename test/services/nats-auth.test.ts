import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connectNats, natsConnectionTarget, redactNatsUrl, NatsSettingError } from '../../nats/connection.ts';
import { startRegistrationService } from '../../services/registration/index.ts';
import { readConfig, ConfigError } from '../../scripts/config.ts';
import { createLogger } from '../../http/log.ts';
import { requireNatsServerBinary, startOwnNatsServer, type OwnNatsServer } from '../support/nats-server.ts';
import { tempDir } from '../support/services.ts';
import { call, makeIdentity, newKey, newPatientId, openBackend, syntheticPatient, USERS, waitFor, type OpenedDb } from './registration-fixture.ts';

// NATS with authorisation on: nothing on the host may publish REGISTRATION.patient.created
// without credentials (FR-OFF-006's consumers trust that stream), and Ferry's service, given
// credentials in the URL or in NATS_USER/NATS_PASSWORD, publishes as before. The server is this
// suite's own (a free port from 4223), so the suite never depends on how 4222 is configured.

const STREAM = 'REGISTRATION';

async function lastSeq(server: OwnNatsServer): Promise<number> {
  const nc = await connectNats(server.urlAs(server.ferry), {}, { timeout: 5_000 });
  try {
    return (await (await jetstreamManager(nc)).streams.info(STREAM)).state.last_seq;
  } catch {
    return 0;
  } finally {
    await nc.close();
  }
}

describe('NATS with credentials (authorisation on)', function () {
  this.timeout(60_000);
  let server: OwnNatsServer;

  before(async function () {
    requireNatsServerBinary(this);
    server = await startOwnNatsServer();
  });
  after(async () => {
    await server?.stop();
  });

  it('refuses a client without credentials, or with a wrong password, at connect: it cannot publish on REGISTRATION.>', async () => {
    const anonymous = await connect({ servers: server.url, timeout: 3_000, reconnect: false }).then(
      (nc) => nc,
      (err: Error) => err,
    );
    expect(anonymous).to.be.instanceOf(Error);
    expect((anonymous as Error).message).to.match(/authorization/i);

    const wrong = await connectNats(`nats://ferry:not-the-password@127.0.0.1:${server.port}`, {}, { timeout: 3_000, reconnect: false }).then(
      (nc) => nc,
      (err: Error) => err,
    );
    expect(wrong).to.be.instanceOf(Error);
    expect((wrong as Error).message).to.match(/authorization/i);
  });

  it('refuses a publish on REGISTRATION.> by a user whose permissions lack it, and the stream does not grow', async () => {
    // The stream exists (created as ferry), so a refused publish cannot hide behind "no stream".
    const setup = await connectNats(server.urlAs(server.ferry), {}, { timeout: 5_000 });
    const jsm = await jetstreamManager(setup);
    await jsm.streams.add({ name: STREAM, subjects: [`${STREAM}.>`] }).catch(() => undefined);
    await setup.close();
    const before = await lastSeq(server);

    const nc = await connectNats(server.url, server.reader, { timeout: 5_000 });
    try {
      const forged = { v: 1, eventId: newKey(), type: 'patient.created', tenant: 'north', patientId: newPatientId(), version: 1 };
      const attempt = await jetstream(nc, { timeout: 2_000 })
        .publish(`${STREAM}.patient.created`, JSON.stringify(forged), { msgID: forged.eventId, timeout: 2_000 })
        .then(
          () => null,
          (err: Error) => err,
        );
      expect(attempt, 'the forged publish must fail').to.be.instanceOf(Error);
      expect(attempt!.message).to.match(/permission|timeout|timed out/i);
    } finally {
      await nc.close();
    }
    expect(await lastSeq(server)).to.equal(before);
  });

  describe('the registration service with credentials', function () {
    let opened: OpenedDb;
    before(async () => {
      opened = await openBackend('pglite', 'nats-auth');
    });
    after(async () => {
      await opened?.close();
    });

    for (const how of ['in NATS_URL', 'in NATS_USER and NATS_PASSWORD'] as const) {
      it(`publishes REGISTRATION.patient.created with the credentials ${how}, and never logs them`, async () => {
        const env =
          how === 'in NATS_URL'
            ? { NATS_URL: server.urlAs(server.ferry) }
            : { NATS_URL: server.url, NATS_USER: server.ferry.user, NATS_PASSWORD: server.ferry.password };
        const config = readConfig(env);
        const lines: string[] = [];
        const logger = createLogger('nats-auth-test', { level: 'debug', destination: { write: (line: string) => lines.push(line) } });
        const identity = await makeIdentity();
        const service = await startRegistrationService({
          db: opened.db,
          verifier: identity.verifier,
          logger,
          natsUrl: config.natsUrl,
          natsAuth: config.natsAuth,
          licensedTenants: ['north'],
          relay: { pollMs: 50, backoff: { baseMs: 50, maxMs: 300 }, publishTimeoutMs: 2_000, connectTimeoutMs: 2_000 },
        });
        try {
          const before = await lastSeq(server);
          const id = newPatientId();
          const token = await identity.token(USERS.ada);
          const made = await call(service.url, 'POST', '/v1/patients', { token, key: newKey(), body: syntheticPatient({ id }) });
          expect(made.status).to.equal(201);
          await waitFor(async () => (await lastSeq(server)) > before, 15_000, 50);
          const nc = await connectNats(server.urlAs(server.ferry), {}, { timeout: 5_000 });
          try {
            const m = await (await jetstreamManager(nc)).streams.getMessage(STREAM, { seq: before + 1 });
            expect(m!.subject).to.equal('REGISTRATION.patient.created');
            expect(m!.json<{ patientId: string }>().patientId).to.equal(id);
          } finally {
            await nc.close();
          }
        } finally {
          await service.close();
        }
        const log = lines.join('');
        expect(log).to.contain('connected to NATS');
        expect(log).to.not.contain(server.ferry.password);
      });
    }
  });
});

describe('NATS settings (nats/connection.ts)', function () {
  it('takes credentials out of the server URLs and redacts them for logs', () => {
    const t = natsConnectionTarget('nats://svc:s3cret@nats-a:4222,nats://svc:s3cret@nats-b:4222');
    expect(t.servers).to.deep.equal(['nats://nats-a:4222', 'nats://nats-b:4222']);
    expect(t.auth).to.equal('url');
    expect(t.authenticator).to.be.a('function');
    expect(t.display).to.equal('nats://***@nats-a:4222,nats://***@nats-b:4222');
    expect(redactNatsUrl('nats://svc:s3cret@h:4222')).to.not.contain('s3cret');
    expect(natsConnectionTarget('127.0.0.1:4222').servers).to.deep.equal(['nats://127.0.0.1:4222']);
    expect(natsConnectionTarget('nats://127.0.0.1:4222').auth).to.equal('none');
  });

  it('refuses contradictory or unusable settings, naming the variable and never the secret', () => {
    const cases: Array<[string, Parameters<typeof natsConnectionTarget>[1], string]> = [
      ['nats://a:1@h:4222', { user: 'b', password: '2' }, 'NATS_USER'],
      ['nats://h:4222', { user: 'b' }, 'NATS_PASSWORD'],
      ['nats://h:4222', { password: 'p' }, 'NATS_USER'],
      ['nats://a:1@h:4222,nats://a:2@g:4222', {}, 'NATS_URL'],
      ['http://h:4222', {}, 'NATS_URL'],
      ['nats://h:4222', { credsFile: '/nonexistent/ferry.creds' }, 'NATS_CREDS'],
    ];
    for (const [url, auth, variable] of cases) {
      let caught: unknown;
      try {
        natsConnectionTarget(url, auth);
      } catch (err) {
        caught = err;
      }
      expect(caught, `${url} ${JSON.stringify(auth)}`).to.be.instanceOf(NatsSettingError);
      expect((caught as NatsSettingError).variable).to.equal(variable);
      expect((caught as Error).message).to.not.match(/\b[12]\b|s3cret/);
    }
  });

  it('reads a creds file, and readConfig refuses one that is not a creds file, naming NATS_CREDS', () => {
    const dir = tempDir('ferry-creds-');
    try {
      const good = join(dir.path, 'svc.creds');
      // Shape only: the JWT and seed are never sent in this test.
      writeFileSync(good, '-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.x\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n------END USER NKEY SEED------\n');
      expect(natsConnectionTarget('nats://h:4222', { credsFile: good }).auth).to.equal('creds-file');
      const bad = join(dir.path, 'bad.creds');
      writeFileSync(bad, 'user=ferry password=x\n');
      expect(() => readConfig({ NATS_CREDS: bad })).to.throw(ConfigError, /^NATS_CREDS /);
    } finally {
      dir.remove();
    }
  });
});
