import type { JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { STREAM_NAME } from './outbox.ts';

// The REGISTRATION stream. nats.js takes durations in nanoseconds, and `streams.add` leaves an
// existing stream as it is, so the duplicate window is checked and raised with `streams.update`.

const NANOS_PER_MS = 1_000_000;
/** DESIGN §6: at least 2 h; the server's default would be 2 minutes. */
export const DUPLICATE_WINDOW_MS = 2 * 3600_000;
export const STREAM_SUBJECTS = [`${STREAM_NAME}.>`];

export async function ensureRegistrationStream(jsm: JetStreamManager, duplicateWindowMs = DUPLICATE_WINDOW_MS): Promise<void> {
  const wanted = duplicateWindowMs * NANOS_PER_MS;
  const current = await streamConfig(jsm);
  if (!current) {
    try {
      await jsm.streams.add({ name: STREAM_NAME, subjects: STREAM_SUBJECTS, duplicate_window: wanted });
      return;
    } catch (err) {
      // Another relay created it between our look and our add; fall through and check it.
      const again = await streamConfig(jsm);
      if (!again) throw err;
      return update(jsm, again, wanted);
    }
  }
  return update(jsm, current, wanted);
}

async function update(jsm: JetStreamManager, config: StreamConfig, wanted: number): Promise<void> {
  const subjects = config.subjects ?? [];
  const missing = STREAM_SUBJECTS.filter((s) => !subjects.includes(s));
  if (config.duplicate_window >= wanted && missing.length === 0) return;
  await jsm.streams.update(STREAM_NAME, { ...config, subjects: [...subjects, ...missing], duplicate_window: Math.max(config.duplicate_window, wanted) });
}

async function streamConfig(jsm: JetStreamManager): Promise<StreamConfig | null> {
  try {
    return (await jsm.streams.info(STREAM_NAME)).config;
  } catch (err) {
    if ((err as { name?: string }).name === 'StreamNotFoundError' || /not found/i.test((err as Error).message)) return null;
    throw err;
  }
}
