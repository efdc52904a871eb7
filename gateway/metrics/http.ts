import type { Request, Response, NextFunction } from 'express';
import { Histogram } from 'prom-client';
import { resolveSyncRoute } from '../sync/routes.ts';
import type { MetricsRegistry } from './registry.ts';

// HTTP request durations per route class. The label is a class chosen from a closed set, never
// the raw path: paths carry tenant ids, doc ids and patient ids, and a label per id would both
// leak them into monitoring and grow without bound.

export const ROUTE_CLASSES = ['sync_write', 'sync_read', 'sync_changes', 'v1', 'auth', 'app', 'health', 'metrics', 'operator', 'other'] as const;
export type RouteClass = (typeof ROUTE_CLASSES)[number];

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);

/** The class of a request, from its method and raw path (query string ignored). Pure. */
export function routeClassOf(method: string, rawUrl: string): RouteClass {
  const q = rawUrl.indexOf('?');
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  if (path === '/healthz' || path === '/readyz') return 'health';
  if (path === '/metrics') return 'metrics';
  if (path === '/auth' || path.startsWith('/auth/') || path.startsWith('/.well-known/')) return 'auth';
  if (path === '/v1' || path.startsWith('/v1/')) return 'v1';
  if (path === '/' || path === '/app' || path.startsWith('/app/') || path === '/favicon.ico') return 'app';
  if (path === '/sync' || path.startsWith('/sync/')) {
    const route = resolveSyncRoute(path.slice('/sync'.length), method);
    if (!route) return 'other';
    if (route.kind === 'changes') return 'sync_changes';
    if (route.kind === 'bulk_docs' || (route.kind === 'local' && (method === 'PUT' || method === 'DELETE'))) return 'sync_write';
    return 'sync_read';
  }
  // Fauxton and the CouchDB admin API the operator proxy serves at root paths.
  if (path.startsWith('/_') || path.startsWith('/inbox_')) return 'operator';
  return 'other';
}

export interface HttpMetrics {
  duration: Histogram<'route_class' | 'method' | 'status'>;
}

/** Buckets up to a minute: a live `_changes` longpoll is held for up to its heartbeat window. */
export const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createHttpMetrics(registry: MetricsRegistry): HttpMetrics {
  return {
    duration: new Histogram({
      name: 'ferry_http_request_duration_seconds',
      help: 'HTTP request duration at the gateway, by route class, method and status',
      labelNames: ['route_class', 'method', 'status'],
      buckets: HTTP_BUCKETS,
      registers: [registry],
    }),
  };
}

/** Observes every request once, when its answer finishes or its client goes away. */
export function httpMetrics(metrics: HttpMetrics) {
  return function observeHttp(req: Request, res: Response, next: NextFunction): void {
    const started = process.hrtime.bigint();
    // The class is taken now: routers below rewrite req.url as they strip their mount path.
    const routeClass = routeClassOf(req.method, req.originalUrl ?? req.url);
    const method = METHODS.has(req.method) ? req.method : 'other';
    let done = false;
    const observe = () => {
      if (done) return;
      done = true;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      // A client that left before an answer was sent is recorded as status 0.
      const status = res.headersSent ? String(res.statusCode) : '0';
      metrics.duration.observe({ route_class: routeClass, method, status }, seconds);
    };
    res.once('finish', observe);
    res.once('close', observe);
    next();
  };
}
