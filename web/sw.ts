// The app shell's service worker (STACK-NOTES 11): lets the page reload while offline. It caches
// only the static shell under /app/ (no API answer, so no PHI, ever lands in the Cache Storage);
// shell requests go to the network first and fall back to the cache, so a new build is picked up
// whenever the gateway is reachable. /sync, /auth and /v1 are never intercepted.

import { BASE, isAppRoute as isAppPath } from './src/paths.ts';

// The WebWorker lib is not in tsconfig (the app uses DOM); the few types needed are declared here.
interface ExtendableEventLike extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface FetchEventLike extends ExtendableEventLike {
  request: Request;
  respondWith(r: Promise<Response>): void;
}
interface SwScope {
  location: Location;
  skipWaiting(): Promise<void>;
  clients: { claim(): Promise<void> };
  addEventListener(type: 'install' | 'activate', fn: (e: ExtendableEventLike) => void): void;
  addEventListener(type: 'fetch', fn: (e: FetchEventLike) => void): void;
}
const sw = globalThis as unknown as SwScope;

const CACHE = 'ferry-shell-v2';
const SHELL = ['/app/', '/app/index.html', '/app/app.js', '/app/style.css', '/app/manifest.webmanifest', '/app/icon.svg', '/app/icon-192.png', '/app/icon-512.png'];

/** A route of the app (`/app/patients/…`): the shell page answers it. */
function isAppRoute(url: URL): boolean {
  return url.pathname.startsWith(`${BASE}/`) && isAppPath(url.pathname.slice(BASE.length));
}

function isShell(url: URL): boolean {
  return url.origin === sw.location.origin && (SHELL.includes(url.pathname) || isAppRoute(url));
}

sw.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => sw.skipWaiting()),
  );
});

sw.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => sw.clients.claim()),
  );
});

sw.addEventListener('fetch', (event) => {
  const request = event.request;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (!isShell(url)) return;
  const key = isAppRoute(url) ? '/app/index.html' : url.pathname;
  event.respondWith(
    fetch(request)
      .then(async (res) => {
        if (res.ok) await caches.open(CACHE).then((cache) => cache.put(key, res.clone()));
        return res;
      })
      .catch(async () => (await caches.match(key)) ?? Response.error()),
  );
});
