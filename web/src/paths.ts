// Where the app lives: the gateway serves it at /app/ (web/serve.ts), the service worker's scope.
export const BASE = '/app';
