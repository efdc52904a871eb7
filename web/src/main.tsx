// Entry: mounts the app and registers the app-shell service worker (web/sw.ts), so the app
// reloads offline once it has been opened online.

import { render } from 'preact';
import { App } from './App.tsx';
import { currentLocale } from './i18n.ts';

document.documentElement.lang = currentLocale();
const root = document.getElementById('root');
if (root) {
  // The static "Loading…" placeholder goes; Preact renders into an empty root.
  root.replaceChildren();
  render(<App />, root);
}

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' }).catch(() => undefined);
}
