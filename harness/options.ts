// The harness's command line, parsed into plain data (pure, tested in test/harness/pure.test.ts).

export const INJECTIONS = ['duplicate-event', 'phi-log'] as const;
export type Injection = (typeof INJECTIONS)[number];

export interface HarnessOptions {
  devices: number;
  tenants: number;
  /** Mutations each device captures in its random flow (scenarios add a few more). */
  mutations: number;
  chaos: boolean;
  seed: number;
  report: string;
  keep: boolean;
  /** Kills of the worker and of the gateway each (kill -9, then restart). */
  kills: number;
  /** Pause between two captures on one device, uniformly in [min, max] ms. */
  thinkMs: [number, number];
  /** How long to wait, after the fault schedule, for every mutation to reach a terminal status. */
  drainTimeoutMs: number;
  inject: Injection[];
  databaseUrl: string | undefined;
  natsUrl: string | undefined;
  /** An external CouchDB (admin credentials in the URL); unset: the embedded server. */
  couchdbUrl: string | undefined;
  /** Gateway processes behind the fault proxy (round robin). */
  gateways: number;
  /** Worker processes; beyond one they stand by for each other's tenants. */
  workers: number;
  /** Progress display: 'auto' (TTY line or periodic lines), 'lines', or 'none'. */
  progress: 'auto' | 'lines' | 'none';
  /** CPU starvation: keep every core busy for this long from the start of capture (0: off). */
  starveMs: number;
}

export const DEFAULTS: Omit<HarnessOptions, 'seed'> = {
  devices: 8,
  tenants: 2,
  mutations: 10,
  chaos: false,
  report: 'harness-report.json',
  keep: false,
  kills: 1,
  thinkMs: [150, 600],
  drainTimeoutMs: 180_000,
  inject: [],
  databaseUrl: undefined,
  natsUrl: undefined,
  couchdbUrl: undefined,
  gateways: 1,
  workers: 1,
  progress: 'auto',
  starveMs: 0,
};

export class UsageError extends Error {
  override name = 'UsageError';
}

export const USAGE = `usage: npm run harness -- [options]
  --devices N          simulated devices (default ${DEFAULTS.devices})
  --tenants N          synthetic tenants, 1..20 (default ${DEFAULTS.tenants})
  --mutations N        mutations each device captures in its random flow (default ${DEFAULTS.mutations})
  --chaos              network faults through the proxy: latency, bandwidth cap, reset, dropped response, duplicate request
  --seed N             reproduces the fault schedule (default: random, printed and recorded)
  --kills N            kill -9 and restart the worker and the gateway N times each (default ${DEFAULTS.kills}; 0: none):
                       with several gateways one of them, in turn; with several workers the holder of a tenant's lease
  --gateways N         gateway processes behind the fault proxy, round robin, 1..8 (default ${DEFAULTS.gateways})
  --workers N          worker processes, 1..8 (default ${DEFAULTS.workers}); the others stand by for each tenant
  --think-ms MIN,MAX   pause between two captures on one device (default ${DEFAULTS.thinkMs.join(',')})
  --drain-timeout S    seconds to wait for every mutation to reach a terminal status (default ${DEFAULTS.drainTimeoutMs / 1000})
  --report PATH        JSON report file (default ${DEFAULTS.report})
  --keep               keep the temp data dir and the PostgreSQL schemas
  --inject KIND        break the run on purpose to prove a check fires: ${INJECTIONS.join(' | ')} (repeatable)
  --database-url URL   PostgreSQL (default TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres)
  --nats-url URL       NATS JetStream (default TEST_NATS_URL or nats://127.0.0.1:4222)
  --couchdb-url URL    an external CouchDB 3 (admin credentials in the URL; default COUCHDB_URL, else the embedded server);
                       FERRY_COUCH_GATEWAY_PASSWORD and FERRY_COUCH_WORKER_PASSWORD must be set
  --progress MODE      auto | lines | none (default auto: one updating line on a TTY, periodic lines otherwise)
  --starve S           keep every core busy with CPU hogs for S seconds from the start of capture (default 0: off)
  --help               this text`;

function int(name: string, raw: string | undefined, min: number, max: number): number {
  const n = Number(raw);
  if (raw === undefined || !Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} takes a whole number from ${min} to ${max}`);
  return n;
}

/** Parses argv (without node and the script). `randomSeed` is used only when `--seed` is absent. */
export function parseArgs(argv: readonly string[], randomSeed: () => number): HarnessOptions | 'help' {
  const o: HarnessOptions = { ...DEFAULTS, thinkMs: [...DEFAULTS.thinkMs], inject: [], seed: NaN };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--help':
      case '-h':
        return 'help';
      case '--devices':
        o.devices = int(flag, value(), 2, 500);
        break;
      case '--tenants':
        o.tenants = int(flag, value(), 1, 20);
        break;
      case '--mutations':
        o.mutations = int(flag, value(), 1, 10_000);
        break;
      case '--chaos':
        o.chaos = true;
        break;
      case '--seed':
        o.seed = int(flag, value(), 0, 2 ** 32 - 1);
        break;
      case '--kills':
        o.kills = int(flag, value(), 0, 50);
        break;
      case '--think-ms': {
        const m = /^(\d+),(\d+)$/.exec(value());
        if (!m || Number(m[1]) > Number(m[2])) throw new UsageError('--think-ms takes MIN,MAX in ms, MIN <= MAX');
        o.thinkMs = [Number(m[1]), Number(m[2])];
        break;
      }
      case '--drain-timeout':
        o.drainTimeoutMs = int(flag, value(), 5, 86_400) * 1000;
        break;
      case '--report':
        o.report = value();
        break;
      case '--keep':
        o.keep = true;
        break;
      case '--inject': {
        const v = value();
        if (!(INJECTIONS as readonly string[]).includes(v)) throw new UsageError(`--inject takes one of ${INJECTIONS.join(', ')}`);
        if (!o.inject.includes(v as Injection)) o.inject.push(v as Injection);
        break;
      }
      case '--database-url':
        o.databaseUrl = value();
        break;
      case '--nats-url':
        o.natsUrl = value();
        break;
      case '--couchdb-url':
        o.couchdbUrl = value();
        break;
      case '--gateways':
        o.gateways = int(flag, value(), 1, 8);
        break;
      case '--workers':
        o.workers = int(flag, value(), 1, 8);
        break;
      case '--starve':
        o.starveMs = int(flag, value(), 0, 3_600) * 1000;
        break;
      case '--progress': {
        const v = value();
        if (v !== 'auto' && v !== 'lines' && v !== 'none') throw new UsageError('--progress takes auto, lines or none');
        o.progress = v;
        break;
      }
      default:
        throw new UsageError(`unknown option ${arg}`);
    }
  }
  if (Number.isNaN(o.seed)) o.seed = randomSeed() >>> 0;
  return o;
}
