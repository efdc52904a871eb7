// Where the app lives: the gateway serves it at /app/ (web/serve.ts), the service worker's scope.
export const BASE = '/app';

/** The app's routes, below BASE. The router (App.tsx) mounts these; the server and the service worker answer exactly these with the shell. */
export const ROUTES = {
  patients: '/',
  register: '/register',
  patient: '/patients/:id',
  editPatient: '/patients/:id/edit',
  problems: '/problems',
  problem: '/problems/:mid',
  device: '/device',
} as const;

// A route parameter is an id the app made or the server gave: short, and of id characters only.
const PARAM = '[A-Za-z0-9_-]{1,128}';
const ROUTE_PATTERNS = Object.values(ROUTES).map((r) => new RegExp(`^${r.replace(/:[a-z]+/g, PARAM)}$`));

/**
 * Whether a path below BASE (`/patients/pat_1`, not `/app/patients/pat_1`) is one of the app's routes, so
 * the shell page answers it. Anything else is a file or nothing: an unknown path gets the same 404 as an
 * unknown file, so the shell is no oracle for what exists.
 */
export function isAppRoute(path: string): boolean {
  return ROUTE_PATTERNS.some((p) => p.test(path));
}
