import { connect, type NatsConnection } from '@nats-io/transport-node';
import { natsConnectionTarget, natsConnectOptions, type NatsAuth } from '../../../nats/connection.ts';
import { jetstream, jetstreamManager, type JetStreamClient } from '@nats-io/jetstream';
import { loggableError, silentLogger, type Logger } from '../../../http/log.ts';
import type { Queryable } from '../../../sql/database.ts';
import { backoffDelay, type BackoffPolicy } from '../../../retry/backoff.ts';
import type { PatientEvent } from './outbox.ts';
import { ensureStream } from './stream.ts';

// Publishes the outbox to JetStream in outbox order, many at once: publishes are issued in seq
// order on one connection, up to 100 awaiting their acks, and each round marks what was acked
// sent in one statement. A crash between the two publishes the events again on restart;
// the stream drops the copy because `Nats-Msg-Id` is the event id (duplicate window ≥ 2 h) and
// consumers can dedupe beyond that on `eventId`. While NATS is away nothing is lost: events
// wait in the outbox and the loop retries with backoff, reconnecting by itself.
//
// Order: an entity's events are committed one after another (its row is locked), so their
// outbox sequence numbers, and therefore their publication, follow commit order.

export interface OutboxEvent {
  seq: number;
  eventId: string;
  subject: string;
  payload: PatientEvent;
}

export interface RelayOptions {
  db: Queryable;
  /** May carry credentials (`nats://user:pass@host:4222`); never logged as given. */
  natsUrl: string;
  /** NATS_USER/NATS_PASSWORD or NATS_CREDS, when the URL carries none. */
  natsAuth?: NatsAuth;
  logger?: Logger;
  /** Events read per round. */
  batchSize?: number;
  /** Publishes awaiting their ack at once (default 100). */
  inFlight?: number;
  /** Safety-net poll; `notify()` wakes the relay at once after a commit. */
  pollMs?: number;
  backoff?: BackoffPolicy;
  publishTimeoutMs?: number;
  connectTimeoutMs?: number;
  /**
   * Test hook between the stream's ack and mark-sent, the worst moment to crash. Throwing from it
   * leaves the event unsent, exactly as a crash there would.
   */
  afterPublish?: (event: OutboxEvent) => void | Promise<void>;
}

export interface RelayStatus {
  running: boolean;
  connected: boolean;
  consecutiveFailures: number;
  published: number;
}

export interface OutboxRelay {
  start(): void;
  /** Wakes the relay; call after a commit that wrote an event. */
  notify(): void;
  stop(): Promise<void>;
  /** Events not yet marked sent. */
  pending(): Promise<number>;
  status(): RelayStatus;
}

export function createOutboxRelay(opts: RelayOptions): OutboxRelay {
  const logger = opts.logger ?? silentLogger();
  const batchSize = opts.batchSize ?? 500;
  const inFlight = opts.inFlight ?? 100;
  const pollMs = opts.pollMs ?? 1000;
  const backoff = opts.backoff ?? { baseMs: 200, maxMs: 10_000 };
  const publishTimeoutMs = opts.publishTimeoutMs ?? 5000;
  // Parsed once, up front: contradictory credentials fail at start, not in the retry loop.
  const target = natsConnectionTarget(opts.natsUrl, opts.natsAuth);
  let nc: NatsConnection | null = null;
  let js: JetStreamClient | null = null;
  let streamReady = false;
  let stopped = true;
  let loop: Promise<void> | null = null;
  let kicked = false;
  let wake: (() => void) | null = null;
  let failures = 0;
  let published = 0;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      wake = done;
    });

  async function connection(): Promise<JetStreamClient> {
    if (nc && nc.isClosed()) {
      nc = null;
      js = null;
    }
    if (!nc) {
      nc = await connect({
        ...natsConnectOptions(target),
        name: 'ferry-registration-relay',
        timeout: opts.connectTimeoutMs ?? 2000,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        ignoreClusterUpdates: true,
      });
      js = jetstream(nc, { timeout: publishTimeoutMs });
      streamReady = false;
      logger.info({ component: 'registration-relay', servers: target.display, auth: target.auth }, 'connected to NATS');
    }
    if (!streamReady) {
      await ensureStream(await jetstreamManager(nc, { timeout: publishTimeoutMs }));
      streamReady = true;
    }
    return js!;
  }

  async function publishBatch(): Promise<number> {
    const client = await connection();
    const { rows } = await opts.db.query<{ seq: string | number; event_id: string; subject: string; payload: PatientEvent | string }>(
      'SELECT seq, event_id, subject, payload FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1',
      [batchSize],
    );
    const events: OutboxEvent[] = rows.map((row) => ({
      seq: Number(row.seq),
      eventId: row.event_id,
      subject: row.subject,
      payload: typeof row.payload === 'string' ? (JSON.parse(row.payload) as PatientEvent) : row.payload,
    }));
    const publishOne = async (event: OutboxEvent) => {
      await client.publish(event.subject, JSON.stringify(event.payload), { msgID: event.eventId, timeout: publishTimeoutMs });
      await opts.afterPublish?.(event);
      return event.seq;
    };
    // Issued in seq order on one connection, up to `inFlight` at once. An event waits for the
    // ack of its entity's previous event, so a lost publish can never let a later change of the
    // same patient reach the stream first. The first failure stops the round.
    const sent: number[] = [];
    const inFlightSet = new Set<Promise<unknown>>();
    const lastOfEntity = new Map<string, Promise<unknown>>();
    let failure: unknown = null;
    const track = (event: OutboxEvent) => {
      const p = publishOne(event).then(
        (seq) => void sent.push(seq),
        (err: unknown) => void (failure ??= err),
      );
      inFlightSet.add(p);
      void p.finally(() => inFlightSet.delete(p));
      lastOfEntity.set(event.payload.patientId, p);
    };
    for (const event of events) {
      if (stopped || failure !== null) break;
      const previous = lastOfEntity.get(event.payload.patientId);
      if (previous) await previous;
      while (inFlightSet.size >= inFlight && failure === null) await Promise.race(inFlightSet);
      if (stopped || failure !== null) break;
      track(event);
    }
    await Promise.all(inFlightSet);
    // Everything acked is marked, in one statement; what failed is read again next round, from
    // the first unmarked seq. A crash before this UPDATE republishes: the stream drops the copies.
    if (sent.length > 0) await opts.db.query('UPDATE outbox SET published_at = now() WHERE seq = ANY($1::bigint[])', [sent]);
    published += sent.length;
    if (failure !== null) throw failure;
    return rows.length;
  }

  async function run(): Promise<void> {
    while (!stopped) {
      try {
        kicked = false;
        const n = await publishBatch();
        if (failures > 0) logger.info({ component: 'registration-relay', afterFailures: failures }, 'relay recovered');
        failures = 0;
        if (n < batchSize && !kicked && !stopped) await sleep(pollMs);
      } catch (err) {
        if (stopped) break;
        failures++;
        // A stream lost with its server must be recreated, so check it again on the next try.
        streamReady = false;
        const e = err as Error;
        if (failures === 1 || failures % 20 === 0) logger.warn({ component: 'registration-relay', failures, err: loggableError(e) }, 'relay cannot publish; events wait in the outbox');
        await sleep(backoffDelay(failures, backoff));
      }
    }
    // A connect that finished after stop() began would otherwise leak its connection.
    const late = nc;
    nc = null;
    js = null;
    if (late) await late.close().catch(() => undefined);
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      loop = run();
    },
    notify() {
      kicked = true;
      wake?.();
    },
    async stop() {
      stopped = true;
      wake?.();
      const conn = nc;
      nc = null;
      js = null;
      // Closing first makes a publish waiting on a dead server give up now, not at its timeout.
      if (conn) await conn.close().catch(() => undefined);
      await loop;
      loop = null;
    },
    async pending() {
      const { rows } = await opts.db.query<{ n: string | number }>('SELECT count(*) AS n FROM outbox WHERE published_at IS NULL');
      return Number(rows[0]?.n ?? 0);
    },
    status() {
      return { running: !stopped, connected: nc !== null && !nc.isClosed(), consecutiveFailures: failures, published };
    },
  };
}
