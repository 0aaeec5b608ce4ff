// The wallet's service worker: keeps the app shell so the wallet opens and makes codes with
// no network. Requests to the service's API and to the identity provider are never cached.
// The service writes a digest of every wallet file into CACHE when it serves this file, so a
// new release installs a new shell and drops the old one.

const CACHE = "idcode-wallet-__SHELL_VERSION__";
const SHELL = [
  "./",
  "app.js",
  "devicecode.js",
  "oidc.js",
  "qr.js",
  "store.js",
  "style.css",
  "manifest.webmanifest",
  "icon.svg",
  "vendor/qrcode-generator/qrcode.mjs",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) =>
        Promise.all(
          names.filter((name) => name.startsWith("idcode-wallet-") && name !== CACHE).map((name) => caches.delete(name)),
        ),
      )
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  const scope = new URL(self.registration.scope);
  if (request.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) {
    return; // the API, the identity provider: always the network
  }
  const path = url.pathname.slice(scope.pathname.length);
  if (path === "config.json") return; // read live; the page keeps its own copy
  // The shell from the cache (the sign-in answer's ?code=... is the same page), else the network.
  event.respondWith(
    caches.open(CACHE).then(async (cache) => {
      const key = request.mode === "navigate" || path === "" || path === "index.html" ? "./" : request;
      const cached = await cache.match(key, { ignoreSearch: request.mode === "navigate" });
      return cached || fetch(request);
    }),
  );
});
