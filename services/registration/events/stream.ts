import type { JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { STREAM_NAME } from './outbox.ts';

// The REGISTRATION stream. nats.js takes durations in nanoseconds, and `streams.add` leaves an
// existing stream as it is, so the duplicate window is checked and raised with `streams.update`.

const NANOS_PER_MS = 1_000_000;
/** DESIGN §6: at least 2 h; the server's default would be 2 minutes. */
export const DUPLICATE_WINDOW_MS = 2 * 3600_000;

export interface StreamSpec {
  name: string;
  subjects: string[];
  duplicateWindowMs: number;
}

export const REGISTRATION_STREAM: StreamSpec = { name: STREAM_NAME, subjects: [`${STREAM_NAME}.>`], duplicateWindowMs: DUPLICATE_WINDOW_MS };

/** Creates the stream, or raises an existing one's duplicate window and adds missing subjects. Never lowers or removes anything. */
export async function ensureStream(jsm: JetStreamManager, spec: StreamSpec = REGISTRATION_STREAM): Promise<void> {
  const wanted = spec.duplicateWindowMs * NANOS_PER_MS;
  const current = await streamConfig(jsm, spec.name);
  if (!current) {
    try {
      await jsm.streams.add({ name: spec.name, subjects: spec.subjects, duplicate_window: wanted });
      return;
    } catch (err) {
      // Another relay created it between our look and our add; fall through and check it.
      const again = await streamConfig(jsm, spec.name);
      if (!again) throw err;
      return update(jsm, spec, again, wanted);
    }
  }
  return update(jsm, spec, current, wanted);
}

/** True when every subject `subject` can match is also matched by `pattern` (NATS wildcards). */
export function subsumes(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] === '*' ? s[i] === '>' : p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

async function update(jsm: JetStreamManager, spec: StreamSpec, config: StreamConfig, wanted: number): Promise<void> {
  const existing = config.subjects ?? [];
  const missing = spec.subjects.filter((w) => !existing.some((e) => subsumes(e, w)));
  if (config.duplicate_window >= wanted && missing.length === 0) return;
  // The server refuses overlapping subjects, so narrower ones the new wildcard covers make way for it.
  const kept = existing.filter((e) => !missing.some((m) => subsumes(m, e)));
  await jsm.streams.update(spec.name, { ...config, subjects: [...kept, ...missing], duplicate_window: Math.max(config.duplicate_window, wanted) });
}

async function streamConfig(jsm: JetStreamManager, name: string): Promise<StreamConfig | null> {
  try {
    return (await jsm.streams.info(name)).config;
  } catch (err) {
    if ((err as { name?: string }).name === 'StreamNotFoundError' || /not found/i.test((err as Error).message)) return null;
    throw err;
  }
}
