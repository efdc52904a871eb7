// The fault schedule: derived only from the seed and the run's shape, so `--seed` reproduces it.
// Pure (tested in test/harness/pure.test.ts). Times are ms after the devices start.

import { CALM, type FaultPlan } from './fault-proxy.ts';
import { between, forkRandom, type Random } from './random.ts';

export interface ScheduleInput {
  seed: number;
  devices: number;
  tenants: number;
  mutations: number;
  chaos: boolean;
  kills: number;
  thinkMs: [number, number];
}

export type StepKind = 'create' | 'update';

export interface DeviceSchedule {
  /** Index into the run's devices, also its name `d{index}`. */
  index: number;
  /** Index into the run's tenants. */
  tenant: number;
  /** One entry per random-flow mutation: pause before it, what it is, and which own patient an update picks (fraction). */
  steps: Array<{ thinkMs: number; kind: StepKind; pick: number }>;
  /** Offline spells: the proxy refuses the device's connections from `atMs` for `forMs`. */
  offline: Array<{ atMs: number; forMs: number }>;
  /** Moments the device is handed an already-expired access token (it must hit 401 and refresh). */
  expireTokenAtMs: number[];
}

export interface ProcessKill {
  target: 'worker' | 'gateway';
  atMs: number;
  /** How long the process stays dead before the harness restarts it. */
  downMs: number;
}

export interface Schedule {
  seed: number;
  plan: FaultPlan;
  /** Rough length of the capture phase: the slowest device's total think time. */
  activeMs: number;
  /** The span faults are spread over: the capture phase, but at least 20 s, so faults also hit the sync backlog. */
  windowMs: number;
  devices: DeviceSchedule[];
  kills: ProcessKill[];
  /** Two devices of one tenant (two users) update the same patient from the same base version. */
  contested: { a: number; b: number; atMs: number } | null;
  /** A user in two tenants: after its random flow the device queues offline in `from`, switches to `to`, then back. */
  tenantSwitch: { device: number; from: number; to: number } | null;
}

/** The chaos plan: every kind of network fault, at rates a run survives. */
export const CHAOS_PLAN: FaultPlan = { latencyMs: [5, 80], bandwidthBytesPerSec: 256 * 1024, reset: 0.04, dropResponse: 0.04, duplicate: 0.04 };

const UPDATE_SHARE = 0.6;
const MIN_WINDOW_MS = 20_000;

function deviceSchedule(seed: number, index: number, input: ScheduleInput, windowMs: number): DeviceSchedule {
  const r = forkRandom(seed, `device:${index}`);
  const steps: DeviceSchedule['steps'] = [];
  for (let k = 0; k < input.mutations; k++) {
    const thinkMs = between(r, input.thinkMs[0], input.thinkMs[1]);
    const kind: StepKind = k === 0 || r() >= UPDATE_SHARE ? 'create' : 'update';
    steps.push({ thinkMs, kind, pick: r() });
  }
  const offline: DeviceSchedule['offline'] = [];
  const spells = between(r, 0, 2);
  for (let s = 0; s < spells; s++) offline.push({ atMs: Math.floor(r() * windowMs), forMs: between(r, 1_000, 6_000) });
  offline.sort((a, b) => a.atMs - b.atMs);
  const expireTokenAtMs = r() < 0.5 || index === 0 ? [Math.floor(r() * windowMs)] : [];
  return { index, tenant: index % input.tenants, steps, offline, expireTokenAtMs };
}

export function buildSchedule(input: ScheduleInput): Schedule {
  const { seed } = input;
  const meanThink = (input.thinkMs[0] + input.thinkMs[1]) / 2;
  const windowMs = Math.max(MIN_WINDOW_MS, Math.round(meanThink * input.mutations));
  const devices = Array.from({ length: input.devices }, (_, i) => deviceSchedule(seed, i, input, windowMs));
  const activeMs = Math.max(...devices.map((d) => d.steps.reduce((t, s) => t + s.thinkMs, 0)));

  const pr: Random = forkRandom(seed, 'processes');
  const kills: ProcessKill[] = [];
  for (const target of ['worker', 'gateway'] as const) {
    for (let k = 0; k < input.kills; k++) {
      kills.push({ target, atMs: Math.floor(windowMs * (0.15 + 0.7 * pr())), downMs: between(pr, 300, 3_000) });
    }
  }
  kills.sort((a, b) => a.atMs - b.atMs || a.target.localeCompare(b.target));

  const sr = forkRandom(seed, 'sessions');
  // Devices a and b share tenant 0 when there is a second device of tenant 0 (index = tenants).
  const contested = input.devices > input.tenants ? { a: 0, b: input.tenants, atMs: Math.floor(Math.min(activeMs, windowMs) * (0.2 + 0.4 * sr())) } : null;
  // The last device switches, unless it is one of the contested pair (then no switch: too few devices).
  const last = input.devices - 1;
  const tenantSwitch =
    input.tenants >= 2 && (!contested || (last !== contested.a && last !== contested.b)) ? { device: last, from: last % input.tenants, to: (last + 1) % input.tenants } : null;

  return { seed, plan: input.chaos ? CHAOS_PLAN : CALM, activeMs, windowMs, devices, kills, contested, tenantSwitch };
}
