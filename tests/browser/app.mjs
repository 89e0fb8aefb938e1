#!/usr/bin/env node
// The desktop window's UI (ui/app.html, as src-tauri embeds it) in headless
// Chromium against a running engine, with Tauri replaced by a small shim over
// the engine's loopback control API. Driven one JSON command at a time.
//
//   node app.mjs --dist DIR --control URL --token TOKEN --obs-server S --obs-key K
//                [--rtmp ADDR] [--chromium PATH] [--viewport WxH] [--verbose]
//
// --dist: a build of ui/ (`ONAIR_UI_OUT=DIR npm run build` in ui/, what
// src-tauri/build.rs does into src-tauri/ui-dist/). The page is served from
// there by a small HTTP server of this script on 127.0.0.1 (another origin than
// the engine's, as the app's tauri://localhost: the preview and the event
// stream reach the engine cross-origin, as in the app; a page from a
// non-loopback origin would be stopped by Chromium's local-network-access
// checks, which WebKitGTK does not have), with the Content-Security-Policy of
// src-tauri/tauri.conf.json as a response header: violations are reported.
//
// The shim, injected before the page's scripts, is what Tauri provides:
//   window.__TAURI_INTERNALS__  invoke(cmd, args, options), transformCallback,
//                               unregisterCallback, runCallback — the IPC layer;
//   window.__TAURI__            core.invoke / event.listen over it, as
//                               `app.withGlobalTauri` builds them (@tauri-apps/api:
//                               listen = invoke('plugin:event|listen',
//                               {event, target, handler: transformCallback(h)})).
// Commands run in this Node process (page.exposeFunction), as Tauri commands
// run in the app's Rust side, not in the webview; they map to the control API
// with the bearer token (from the page itself a cross-origin PUT or an
// Authorization header would not pass the engine's CORS preflight):
//   status          GET  /api/control/status
//   stream_status   GET  /api/streams/{stream}
//   go_live         POST /api/control/streams/{stream}/go-live
//   end_stream      POST /api/control/streams/{stream}/end
//   set_title       PUT  /api/control/streams/{stream}/title   {"title"}
//   send_chat       POST /api/control/streams/{stream}/chat    {"text"}
//   matrix_login    POST /api/control/matrix/login             {"homeserver","user","password"}
//   matrix_logout   POST /api/control/matrix/logout
//   restream_list   GET  /api/control/streams/{stream}/restream
//   restream_put    PUT  /api/control/streams/{stream}/restream/{name}  {"url","key","enabled","ome_policy_expires_s"}
//   restream_remove DELETE …/restream/{name}; restream_enable / restream_disable POST …/{name}/enable|disable
// Engine events: an EventSource on /api/control/events?token=… in the page,
// each message delivered to the `engine` listeners as Tauri would
// ({event: "engine", id, payload}).
// Answered by the shim itself (no control-API counterpart):
//   app_info        from the engine's status (stream, viewer link, Go live) and
//                   --obs-server/--obs-key; the QR code is a placeholder SVG
//                   (the app renders it in Rust); tray state from the status
//   settings_get    from the status (stream) and --control/--rtmp; settings_set
//                   keeps them in memory and answers restart_needed like the app
//   obs_setup_info  default ws://127.0.0.1:4455, no password stored
//   obs_apply, obs_write_profile, obs_save_password
//                   refused ("not available in the browser test"): the real
//                   commands are tested against real OBS in src-tauri/tests
//   plugin:clipboard-manager|write_text   kept (see "state".clipboard)
//
// Commands on stdin, one JSON line each; one JSON answer line each
// ({"ok":true,...} or {"ok":false,"reason":...,"state":...}); `timeout` in ms,
// default 20000:
//   {"op":"open"}                          open the window page
//   {"op":"state"}                         what the page shows (pageState below)
//   {"op":"until","js":EXPR,"timeout":T}   wait until the page expression is truthy; answers its value
//   {"op":"click","selector":S}            click S
//   {"op":"fill","selector":S,"text":X}    type X into S
//   {"op":"submit","selector":S,"text":X}  type X into S and press Enter
//   {"op":"waitPlaying","minAdvance":S,"timeout":T}  the preview plays and advances S seconds
//   {"op":"screenshot","path":FILE,"fullPage":B}  PNG of the page (scrolled to the top)
//   {"op":"close"}                         close the browser and exit 0

import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { commandTimeout, commonPageOp, pageScriptFrame, pageSession, textArg, until, waitPlaying } from './common.mjs';

const USAGE =
  'usage: node app.mjs --dist DIR --control URL --token TOKEN --obs-server S --obs-key K [--rtmp ADDR] ' +
  '[--chromium PATH] [--viewport WxH] [--verbose]  (commands on stdin, see the header)';

const { opts, log } = pageScriptFrame('app', USAGE, {
  defaults: { viewport: { width: 1280, height: 900 }, dist: null, control: null, token: null, obsServer: '', obsKey: '', rtmp: '127.0.0.1:1935' },
  flags: {
    '--dist': ['dist', textArg],
    '--control': ['control', (v, flag) => textArg(v, flag).replace(/\/$/, '')],
    '--token': ['token', textArg],
    '--obs-server': ['obsServer', textArg],
    '--obs-key': ['obsKey', textArg],
    '--rtmp': ['rtmp', textArg],
  },
  check: (o) => {
    if (!o.dist || !o.control || !o.token) throw new Error('--dist, --control and --token are required');
  },
});

// ---------- the app's Content-Security-Policy (src-tauri/tauri.conf.json) ----------

const here = dirname(fileURLToPath(import.meta.url));
const tauriConf = JSON.parse(await readFile(join(here, '../../src-tauri/tauri.conf.json'), 'utf8'));
const CSP = Object.entries(tauriConf.app.security.csp)
  .map(([k, v]) => `${k} ${v}`)
  .join('; ');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
};

// ---------- the window's pages, as the app serves them from its embedded ui-dist ----------

const distRoot = normalize(opts.dist);
const pages = createServer(async (req, res) => {
  const url = new URL(req.url || '/', 'http://127.0.0.1');
  const file = normalize(join(distRoot, decodeURIComponent(url.pathname)));
  if (!file.startsWith(distRoot + sep)) {
    res.writeHead(403).end('outside the UI build');
    return;
  }
  try {
    const body = await readFile(file);
    const headers = { 'content-type': TYPES[extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' };
    if (extname(file) === '.html') headers['content-security-policy'] = CSP;
    res.writeHead(200, headers).end(body);
  } catch {
    res.writeHead(404).end('not in the UI build');
  }
});
await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve));
const ORIGIN = `http://127.0.0.1:${pages.address().port}`;

// ---------- the commands (the Rust side of the app, over the control API) ----------

const settings = { current: null };
const clipboard = [];
const invoked = [];

async function control(method, path, body) {
  const res = await fetch(`${opts.control}/api/control${path}`, {
    method,
    headers: {
      authorization: `Bearer ${opts.token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  // Commands reject with the error's text, as the app's do.
  if (!res.ok) throw new Error(text.trim() || `HTTP ${res.status}`);
  return text ? JSON.parse(text) : null;
}

const enc = encodeURIComponent;
const QR_PLACEHOLDER =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="10" height="10" fill="#fff"/>' +
  '<path d="M1 1h3v3H1zM6 1h3v3H6zM1 6h3v3H1zM6 6h1v1H6zM8 8h1v1H8z" fill="#0c0e13"/></svg>';

async function appInfo() {
  const st = await control('GET', '/status');
  const stream = st.default_stream;
  const me = st.streams.find((s) => s.name === stream) || { armed: false, live: false };
  return {
    version: 'browser-test',
    stream,
    engine_url: opts.control,
    viewer_url: `${st.viewer_base}/${stream}`,
    viewer_qr_svg: QR_PLACEHOLDER,
    public_host_configured: false,
    obs: { server: opts.obsServer, stream_key: opts.obsKey, url: `${opts.obsServer}/${opts.obsKey}` },
    armed: !!me.armed,
    require_go_live: st.require_go_live,
    tray: me.live ? 'live' : me.armed ? 'ready' : 'offline',
  };
}

async function settingsGet() {
  if (!settings.current) {
    const st = await control('GET', '/status');
    settings.current = {
      stream: st.default_stream,
      http: new URL(opts.control).host,
      rtmp: opts.rtmp,
      public_host: '',
      notifications: { went_live: true, publisher_dropped: true, stream_ended: true, obs_connected: true, chat_mention: true },
    };
  }
  return settings.current;
}

const COMMANDS = {
  app_info: () => appInfo(),
  status: () => control('GET', '/status'),
  stream_status: async ({ stream }) => {
    const res = await fetch(`${opts.control}/api/streams/${enc(stream)}`);
    return res.json();
  },
  go_live: ({ stream }) => control('POST', `/streams/${enc(stream)}/go-live`),
  end_stream: ({ stream }) => control('POST', `/streams/${enc(stream)}/end`),
  set_title: ({ stream, title }) => control('PUT', `/streams/${enc(stream)}/title`, { title }),
  send_chat: ({ stream, text }) => control('POST', `/streams/${enc(stream)}/chat`, { text }),
  matrix_login: ({ homeserver, user, password }) => control('POST', '/matrix/login', { homeserver, user, password }),
  matrix_logout: () => control('POST', '/matrix/logout'),
  restream_list: ({ stream }) => control('GET', `/streams/${enc(stream)}/restream`),
  restream_put: ({ stream, name, body }) => control('PUT', `/streams/${enc(stream)}/restream/${enc(name)}`, body),
  restream_remove: ({ stream, name }) => control('DELETE', `/streams/${enc(stream)}/restream/${enc(name)}`),
  restream_enable: ({ stream, name }) => control('POST', `/streams/${enc(stream)}/restream/${enc(name)}/enable`),
  restream_disable: ({ stream, name }) => control('POST', `/streams/${enc(stream)}/restream/${enc(name)}/disable`),
  settings_get: () => settingsGet(),
  settings_set: async ({ settings: s }) => {
    const before = await settingsGet();
    const restart_needed = ['stream', 'http', 'rtmp', 'public_host'].some((k) => before[k] !== s[k]);
    settings.current = s;
    return { restart_needed };
  },
  obs_setup_info: () => ({ default_url: 'ws://127.0.0.1:4455', password: 'none', profile_dir: null }),
  obs_apply: () => {
    throw new Error('not available in the browser test (tested against real OBS in src-tauri/tests)');
  },
  obs_write_profile: () => {
    throw new Error('not available in the browser test (tested in src-tauri/tests)');
  },
  obs_save_password: () => {
    throw new Error('not available in the browser test');
  },
  'plugin:clipboard-manager|write_text': ({ text }) => {
    clipboard.push(text);
    return null;
  },
};

/** page.exposeFunction target: runs a command; answers {ok, value} or {ok: false, error}. */
async function runCommand(cmd, args) {
  invoked.push(cmd);
  log('invoke', cmd, JSON.stringify(args));
  const f = COMMANDS[cmd];
  if (!f) return { ok: false, error: `command ${cmd} not found` };
  try {
    return { ok: true, value: (await f(args || {})) ?? null };
  } catch (e) {
    return { ok: false, error: e && e.message ? e.message : String(e) };
  }
}

// ---------- the shim (runs in the page before its scripts) ----------

function tauriShim({ control, token }) {
  let nextId = 1;
  const callbacks = new Map();
  // plugin:event|listen registrations: event name → Map(eventId → handler callback id).
  const listeners = new Map();
  let eventSerial = 0;

  const internals = {
    metadata: { currentWindow: { label: 'main' }, currentWebview: { windowLabel: 'main', label: 'main' } },
    transformCallback(callback, once = false) {
      const id = nextId++;
      callbacks.set(id, (data) => {
        if (once) callbacks.delete(id);
        return callback && callback(data);
      });
      return id;
    },
    unregisterCallback(id) {
      callbacks.delete(id);
    },
    runCallback(id, data) {
      const cb = callbacks.get(id);
      if (cb) cb(data);
    },
    async invoke(cmd, args = {}, _options) {
      if (cmd === 'plugin:event|listen') {
        const eventId = nextId++;
        if (!listeners.has(args.event)) listeners.set(args.event, new Map());
        listeners.get(args.event).set(eventId, args.handler);
        return eventId;
      }
      if (cmd === 'plugin:event|unlisten') {
        listeners.get(args.event)?.delete(args.eventId);
        return null;
      }
      const r = await window.__onairShimCommand(cmd, args);
      if (!r.ok) throw r.error; // Tauri rejects with the command's error value (a string here)
      return r.value;
    },
  };
  window.__TAURI_INTERNALS__ = internals;

  // What `app.withGlobalTauri` puts on window.__TAURI__ (the parts the window uses).
  window.__TAURI__ = {
    core: {
      invoke: (cmd, args, options) => internals.invoke(cmd, args, options),
      transformCallback: (cb, once) => internals.transformCallback(cb, once),
    },
    event: {
      async listen(event, handler, options) {
        const target = options && options.target ? options.target : { kind: 'Any' };
        const eventId = await internals.invoke('plugin:event|listen', {
          event,
          target,
          handler: internals.transformCallback(handler),
        });
        return () => internals.invoke('plugin:event|unlisten', { event, eventId });
      },
    },
  };

  // Engine events pushed, as the app's `engine` Tauri event.
  const shim = { events: 0, sseOpen: false, sseErrors: 0 };
  window.__onairShim = shim;
  const es = new EventSource(`${control}/api/control/events?token=${encodeURIComponent(token)}`);
  es.onopen = () => {
    shim.sseOpen = true;
  };
  es.onerror = () => {
    shim.sseErrors++;
  };
  es.onmessage = (m) => {
    let payload;
    try {
      payload = JSON.parse(m.data);
    } catch {
      return;
    }
    shim.events++;
    const id = ++eventSerial;
    for (const handler of (listeners.get('engine') || new Map()).values()) {
      internals.runCallback(handler, { event: 'engine', id, payload });
    }
  };
}

// ---------- the browser ----------

const cspViolations = [];

const session = await pageSession(chromium, opts, log, async (page) => {
  await page.exposeFunction('__onairShimCommand', runCommand);
  await page.exposeFunction('__onairCsp', (v) => {
    log('CSP violation', JSON.stringify(v));
    if (cspViolations.length < 50) cspViolations.push(v);
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__onairCsp({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile || '' }),
    );
  });
  await page.addInitScript(tauriShim, { control: opts.control, token: opts.token });
});
const { ensurePage, consoleErrors, pageErrors } = session;

/** Runs in the page: everything a test asserts on. */
function pageState() {
  const app = window.onairApp;
  const text = (id) => (document.getElementById(id) || {}).textContent || '';
  const v = app && app.view ? app.view.video : null;
  const player = document.getElementById('player');
  const list = (sel) => [...document.querySelectorAll(sel)].map((li) => li.textContent);
  return {
    tray: document.body.dataset.tray || null,
    badge: text('state-badge'),
    liveButton: text('live-toggle'),
    title: (document.getElementById('title-input') || {}).value,
    documentTitle: document.title,
    error: document.getElementById('app-error').hidden ? '' : text('app-error'),
    health: {
      bitrate: text('h-bitrate'),
      fps: text('h-fps'),
      keyint: text('h-keyint'),
      resolution: text('h-res'),
      viewers: text('h-viewers'),
      summary: text('health-summary'),
      bframesWarning: !document.getElementById('h-bframes-warning').hidden,
    },
    chat: {
      status: (document.querySelector('.chat-status:not([hidden])') || {}).textContent || '',
      inputDisabled: (document.querySelector('.chat-input') || {}).disabled ?? null,
      messages: [...document.querySelectorAll('.chat-msg')].map((li) => ({
        id: li.dataset.id,
        sender: li.dataset.sender,
        senderName: (li.querySelector('.chat-sender') || {}).textContent || null,
        text: (li.querySelector('.chat-text') || {}).textContent || '',
      })),
    },
    matrix: text('matrix-state'),
    viewerUrl: (document.getElementById('viewer-url') || {}).value,
    obs: {
      server: (document.getElementById('obs-server') || {}).value,
      passwordState: text('obs-password-state'),
      result: document.getElementById('obs-result').hidden
        ? null
        : {
            outcome: document.getElementById('obs-result').dataset.outcome,
            head: text('obs-result-head'),
            items: list('#obs-result-lists li'),
          },
    },
    player: {
      state: player ? player.dataset.state || null : null,
      transport: player ? player.dataset.transport || null : null,
      video: v ? { currentTime: v.currentTime, videoWidth: v.videoWidth, paused: v.paused, muted: v.muted } : null,
    },
    shim: window.__onairShim || null,
    events: app ? app.events.length : 0,
  };
}

async function state() {
  const p = await ensurePage();
  const s = await p.evaluate(pageState);
  return { ...s, invoked: [...new Set(invoked)], clipboard, consoleErrors, pageErrors, cspViolations };
}

async function run(cmd) {
  const timeout = commandTimeout(cmd);
  switch (cmd.op) {
    case 'open': {
      const p = await ensurePage();
      const resp = await p.goto(`${ORIGIN}/app.html`, { waitUntil: 'domcontentloaded', timeout });
      if (!resp || !resp.ok()) throw new Error(`page load failed: HTTP ${resp ? resp.status() : 'no response'}`);
      // Started: app_info answered and the event stream open.
      await until('the window to start', timeout, () =>
        p.evaluate(() => !!(window.onairApp && window.onairApp.info && window.__onairShim.sseOpen)),
      );
      return { state: await state() };
    }
    case 'click': {
      const p = await ensurePage();
      await p.locator(cmd.selector).click({ timeout });
      return {};
    }
    case 'fill': {
      const p = await ensurePage();
      await p.locator(cmd.selector).fill(cmd.text, { timeout });
      return {};
    }
    case 'submit': {
      const p = await ensurePage();
      const input = p.locator(cmd.selector);
      await until(`${cmd.selector} to be enabled`, timeout, () => input.isEnabled());
      await input.fill(cmd.text, { timeout });
      await input.press('Enter', { timeout });
      return {};
    }
    case 'waitPlaying':
      return waitPlaying(
        await ensurePage(),
        cmd,
        'the preview to play',
        () => {
          const v = window.onairApp && window.onairApp.view ? window.onairApp.view.video : null;
          const player = document.getElementById('player');
          return { state: player.dataset.state, t: v ? v.currentTime : 0, w: v ? v.videoWidth : 0 };
        },
        () => document.getElementById('player').dataset.transport || null,
      );
    case 'screenshot': {
      const p = await ensurePage();
      // The whole window, from the top (clicks may have scrolled it).
      await p.evaluate(() => window.scrollTo(0, 0));
      await p.screenshot({ path: cmd.path, fullPage: !!cmd.fullPage, timeout });
      return { path: cmd.path };
    }
    default:
      return commonPageOp(cmd, { ensurePage, state });
  }
}

await session.serve(run, state);
pages.close();
process.exit(0);
