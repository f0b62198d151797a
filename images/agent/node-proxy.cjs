// Preloaded into every Node process in a bottle (NODE_OPTIONS=--require).
// Node before 24 ignores HTTPS_PROXY in its built-in fetch, and a bottle has
// no other way out: route fetch through the bottle's proxy, keeping
// NO_PROXY hosts (the bottle's own loopback) direct. Without undici
// installed this does nothing, and fetch fails as it would have.
'use strict';
(() => {
  const proxy = process.env.HTTPS_PROXY || process.env.https_proxy ||
    process.env.HTTP_PROXY || process.env.http_proxy;
  if (!proxy) return;
  // Debian's packaged modules (node-undici and what it needs) are in
  // /usr/share/nodejs, which Debian's Node searches and other builds of
  // Node (a native bottle runs the host's) do not: add it, last.
  const debian = '/usr/share/nodejs';
  const Module = require('module');
  if (!Module.globalPaths.includes(debian) && typeof Module._initPaths === 'function') {
    const saved = process.env.NODE_PATH;
    process.env.NODE_PATH = [saved, debian].filter(Boolean).join(require('path').delimiter);
    Module._initPaths();
    if (saved === undefined) delete process.env.NODE_PATH; else process.env.NODE_PATH = saved;
  }
  let undici;
  for (const name of ['undici', '/usr/share/nodejs/undici']) {
    try { undici = require(name); break; } catch (_) { /* next */ }
  }
  if (!undici || !undici.ProxyAgent || !undici.setGlobalDispatcher) return;
  const noProxy = (process.env.NO_PROXY || process.env.no_proxy || '')
    .split(',').map((s) => s.trim().toLowerCase().replace(/^\./, '')).filter(Boolean);
  const bypass = (host) => noProxy.some((n) => n === '*' || host === n || host.endsWith('.' + n));
  const direct = new undici.Agent();
  const viaProxy = new undici.ProxyAgent(proxy);
  class BottleDispatcher extends undici.Dispatcher {
    dispatch(options, handler) {
      const host = new URL(String(options.origin)).hostname.replace(/^\[|\]$/g, '').toLowerCase();
      return (bypass(host) ? direct : viaProxy).dispatch(options, handler);
    }
    close() { return Promise.all([direct.close(), viaProxy.close()]); }
    destroy() { return Promise.all([direct.destroy(), viaProxy.destroy()]); }
  }
  undici.setGlobalDispatcher(new BottleDispatcher());
})();
