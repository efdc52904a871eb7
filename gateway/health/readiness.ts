// `/readyz` (DESIGN §5): what the stack needs in order to serve, each dependency probed with a
// deadline. A required dependency that is down makes the stack unready (503); an optional one
// (NATS, an outbox backlog) makes it degraded (200), because uploads and commits go on and the
// events wait durably in the outbox. The report names components and reasons from closed sets:
// no URLs, credentials, error messages or counts, so it is safe to answer unauthenticated.

export type Impact = 'unready' | 'degraded';
export type Reason = 'unreachable' | 'timeout' | 'backlog' | 'disconnected';

export type ProbeResult = { ok: true } | { ok: false; reason: Exclude<Reason, 'timeout'> };

export interface ComponentCheck {
  /** A fixed name: `couchdb`, `platform_db`, `registration`, `nats`, `outbox`. */
  component: string;
  /** What the stack is when this component is not ok. */
  impact: Impact;
  probe(): Promise<ProbeResult>;
}

export interface ComponentState {
  status: 'up' | 'down' | 'degraded';
  reason?: Reason;
}

export interface ReadinessReport {
  status: 'ready' | 'degraded' | 'unready';
  components: Record<string, ComponentState>;
}

export interface Observation {
  component: string;
  impact: Impact;
  /** Null: ok. */
  failure: Reason | null;
}

/** The report from what each probe saw. Pure. */
export function decideReadiness(observations: readonly Observation[]): ReadinessReport {
  const components: Record<string, ComponentState> = {};
  let status: ReadinessReport['status'] = 'ready';
  for (const o of observations) {
    if (o.failure === null) {
      components[o.component] = { status: 'up' };
      continue;
    }
    components[o.component] = { status: o.impact === 'unready' ? 'down' : 'degraded', reason: o.failure };
    if (o.impact === 'unready') status = 'unready';
    else if (status === 'ready') status = 'degraded';
  }
  return { status, components };
}

export function httpStatusOf(report: ReadinessReport): 200 | 503 {
  return report.status === 'unready' ? 503 : 200;
}

export type Readiness = () => Promise<ReadinessReport>;

/**
 * Runs every check at once, each bounded by `timeoutMs`, so /readyz answers within about that
 * time whatever hangs. A probe still running from an earlier call is joined, not started again,
 * so a dependency that hangs cannot pile up probes.
 */
export function createReadiness(checks: readonly ComponentCheck[], opts: { timeoutMs: number }): Readiness {
  const inFlight = new Map<string, Promise<ProbeResult>>();
  const probeOnce = (c: ComponentCheck): Promise<ProbeResult> => {
    let p = inFlight.get(c.component);
    if (!p) {
      p = c.probe().catch((): ProbeResult => ({ ok: false, reason: 'unreachable' }));
      inFlight.set(c.component, p);
      void p.finally(() => inFlight.delete(c.component));
    }
    return p;
  };
  const observe = async (c: ComponentCheck): Promise<Observation> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), opts.timeoutMs);
    });
    try {
      const r = await Promise.race([probeOnce(c), timeout]);
      const failure: Reason | null = r === 'timeout' ? 'timeout' : r.ok ? null : r.reason;
      return { component: c.component, impact: c.impact, failure };
    } finally {
      clearTimeout(timer);
    }
  };
  return async () => decideReadiness(await Promise.all(checks.map(observe)));
}
