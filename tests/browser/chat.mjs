#!/usr/bin/env node
// Drive the viewer page's chat in headless Chromium, one command at a time.
//
//   node chat.mjs [--chromium PATH] [--viewport WxH] [--verbose]
//
// Reads JSON commands from stdin, one per line, and answers each with exactly
// one JSON line on stdout ({"ok":true,...} or {"ok":false,"reason":...}). The
// browser context (and so localStorage) lives as long as the process, so a
// reloaded or reopened page can reuse its guest account. See README.md ("chat.mjs").
//
// Commands (`timeout` in ms, default 20000):
//   {"op":"open","url":U,"chatOverride":{...}?,"refuse":[...]?}  open U (the one page; an open
//        page navigates). chatOverride: fields merged into the `chat` object of
//        /api/streams/<stream> answers (`null` replaces `chat` with null) — to test a stale room
//        id / alias. refuse: [{"path":P,"status":S,"errcode":E}]: requests whose URL path is P
//        are answered S with {"errcode":E} instead of reaching the server (e.g. a homeserver
//        without /_matrix/client/v3/events); `[]` ends that. Both hold until an open gives them anew.
//   {"op":"reload"}                              reload the page
//   {"op":"state"}                               what the page shows (see pageState below)
//   {"op":"until","js":EXPR,"timeout":T}         wait until the page expression is truthy; answers its value
//   {"op":"waitStatus","status":S,"timeout":T}   window.onair.chat.state.status == S
//   {"op":"waitMessage","body":B,"timeout":T}    a message with text B is in the chat list
//   {"op":"waitTitle","title":X,"timeout":T}     the page heading reads X
//   {"op":"waitPlaying","minAdvance":S,"timeout":T}  the video plays and advances S seconds
//   {"op":"send","text":X,"timeout":T}           type X, press Enter; wait until the server confirmed it
//   {"op":"rename","name":X,"timeout":T}         pick display name X in the name picker
//   {"op":"screenshot","path":FILE}              PNG of the page
//   {"op":"close"}                               close the browser and exit 0
// Also: console errors and page errors are collected and returned by "state", and so are the
// page's Matrix requests as the browser saw them ("matrixRequests", counted since the launch):
// events (GET /events), eventsLongPolls (those with timeout > 0), messagesForward
// (/messages?dir=f polls), messagesBackward (/messages?dir=b history reads); and, from a
// `fetch` wrapper installed before the page's scripts ("eventsFetch", since the page loaded):
// pending (/events fetches without an answer yet), maxPending (the most at once), aborted (those
// whose AbortSignal fired while they were pending).

import { chromium } from 'playwright-core';
import { commonPageOp, commandTimeout, pageScriptFrame, pageSession, until, waitPlaying } from './common.mjs';

const USAGE = 'usage: node chat.mjs [--chromium PATH] [--viewport WxH] [--verbose]  (commands on stdin, see the header)';

const { opts, log } = pageScriptFrame('chat', USAGE);

let navigations = 0;
let chatOverride;
let refusals = [];
const matrixRequests = { events: 0, eventsLongPolls: 0, messagesForward: 0, messagesBackward: 0 };

/** The Matrix client-server request `url` is, for the counters: 'events', 'messages' or null. */
function matrixKind(url) {
  const u = new URL(url);
  if (/\/_matrix\/client\/[^/]+\/events$/.test(u.pathname)) return 'events';
  if (/\/_matrix\/client\/[^/]+\/rooms\/[^/]+\/messages$/.test(u.pathname)) return 'messages';
  return null;
}

const session = await pageSession(chromium, opts, log, async (page) => {
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations++;
  });
  page.on('request', (req) => {
    if (req.method() !== 'GET') return; // CORS preflights (OPTIONS) are not the page's requests
    const kind = matrixKind(req.url());
    const q = new URL(req.url()).searchParams;
    if (kind === 'events') {
      matrixRequests.events++;
      if (Number(q.get('timeout') || 0) > 0) matrixRequests.eventsLongPolls++;
    } else if (kind === 'messages') {
      if (q.get('dir') === 'f') matrixRequests.messagesForward++;
      else matrixRequests.messagesBackward++;
    }
  });
  await page.addInitScript(watchEventsFetch);
  // Refused paths: answered here, as a homeserver without them would.
  await page.route(
    (url) => refusals.some((r) => url.pathname === r.path),
    async (route) => {
      const path = new URL(route.request().url()).pathname;
      const r = refusals.find((x) => x.path === path);
      if (!r) return route.continue();
      log('refused:', route.request().url());
      await route.fulfill({
        status: r.status || 404,
        headers: { 'Access-Control-Allow-Origin': '*' },
        json: { errcode: r.errcode || 'M_UNRECOGNIZED', error: 'refused by chat.mjs' },
      });
    },
  );
  // /api/streams/<stream>: the real answer, with `chat` changed when the test asks for it.
  await page.route(/\/api\/streams\/[^/?]+(\?.*)?$/, async (route) => {
    if (chatOverride === undefined) return route.continue();
    try {
      const res = await route.fetch();
      const body = await res.json();
      if (chatOverride === null) body.chat = null;
      else body.chat = { ...(body.chat || {}), ...chatOverride };
      await route.fulfill({ response: res, json: body });
    } catch (e) {
      log('override failed:', e.message);
      await route.abort().catch(() => undefined);
    }
  });
});
const { ensurePage, consoleErrors, pageErrors } = session;

/**
 * Runs in the page before its scripts: counts the page's `/events` fetches that are pending and
 * those aborted while pending (Playwright's request events cannot tell an aborted long-poll from
 * a finished one once a CORS preflight answered it).
 */
function watchEventsFetch() {
  const counts = { pending: 0, maxPending: 0, aborted: 0 };
  Object.defineProperty(window, '__onairEventsFetch', { value: counts });
  const fetch = window.fetch;
  window.fetch = function (input, init) {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const p = fetch.call(this, input, init);
    if (/\/_matrix\/client\/[^/]+\/events\?/.test(url)) {
      let settled = false;
      counts.pending++;
      counts.maxPending = Math.max(counts.maxPending, counts.pending);
      const signal = init && init.signal;
      if (signal) signal.addEventListener('abort', () => settled || counts.aborted++, { once: true });
      p.then(
        () => undefined,
        () => undefined,
      ).finally(() => {
        settled = true;
        counts.pending--;
      });
    }
    return p;
  };
}

/** Runs in the page: everything a test asserts on. */
function pageState() {
  const chat = window.onair && window.onair.chat;
  const title = document.getElementById('stream-title');
  const panel = document.getElementById('chat');
  const body = document.getElementById('chat-body');
  const status = document.querySelector('.chat-status');
  const link = document.querySelector('.chat-native');
  const input = document.querySelector('.chat-input');
  const v = window.onair && window.onair.video;
  return {
    title: title ? title.textContent : null,
    documentTitle: document.title,
    panelHidden: panel ? panel.hidden : null,
    chatEnabled: chat ? chat.enabled : null,
    chat: chat ? chat.state : null,
    panelStatus: body ? body.dataset.status || null : null,
    statusText: status && !status.hidden ? status.textContent : '',
    nativeLink: link && !link.hidden ? link.getAttribute('href') : null,
    inputDisabled: input ? input.disabled : null,
    nameShown: (document.querySelector('.chat-name-value') || {}).textContent || null,
    messages: [...document.querySelectorAll('.chat-msg')].map((li) => ({
      id: li.dataset.id,
      sender: li.dataset.sender,
      kind: li.dataset.kind,
      senderName: (li.querySelector('.chat-sender') || {}).textContent || null,
      text: (li.querySelector('.chat-text') || {}).textContent || '',
      html: (li.querySelector('.chat-text') || {}).innerHTML || '',
      pending: li.classList.contains('is-pending'),
    })),
    playerState: document.body.dataset.state || null,
    transport: document.body.dataset.transport || null,
    video: v ? { currentTime: v.currentTime, videoWidth: v.videoWidth, paused: v.paused } : null,
    localStorageKeys: Object.keys(localStorage).filter((k) => k.startsWith('onair-matrix-guest:')),
    eventsFetch: window.__onairEventsFetch ? { ...window.__onairEventsFetch } : null,
  };
}

async function state() {
  const p = await ensurePage();
  const s = await p.evaluate(pageState);
  return { ...s, navigations, consoleErrors, pageErrors, matrixRequests: { ...matrixRequests } };
}

async function run(cmd) {
  const timeout = commandTimeout(cmd);
  switch (cmd.op) {
    case 'open': {
      if ('chatOverride' in cmd) chatOverride = cmd.chatOverride;
      if ('refuse' in cmd) refusals = Array.isArray(cmd.refuse) ? cmd.refuse : [];
      const p = await ensurePage();
      const resp = await p.goto(cmd.url, { waitUntil: 'domcontentloaded', timeout });
      if (!resp || !resp.ok()) throw new Error(`page load failed: HTTP ${resp ? resp.status() : 'no response'}`);
      return {};
    }
    case 'reload': {
      const p = await ensurePage();
      await p.reload({ waitUntil: 'domcontentloaded', timeout });
      return {};
    }
    case 'waitStatus': {
      const p = await ensurePage();
      await until(`chat status ${cmd.status}`, timeout, () =>
        p.evaluate((want) => {
          const s = window.onair && window.onair.chat && window.onair.chat.state;
          return !!s && s.status === want;
        }, cmd.status),
      );
      return { state: await state() };
    }
    case 'waitMessage': {
      const p = await ensurePage();
      const start = Date.now();
      const msg = await until(`message "${cmd.body}"`, timeout, () =>
        p.evaluate((want) => {
          for (const li of document.querySelectorAll('.chat-msg')) {
            const text = (li.querySelector('.chat-text') || {}).textContent;
            if (text === want) {
              return {
                id: li.dataset.id,
                sender: li.dataset.sender,
                senderName: (li.querySelector('.chat-sender') || {}).textContent || null,
                pending: li.classList.contains('is-pending'),
              };
            }
          }
          return null;
        }, cmd.body),
      );
      return { message: msg, waitedMs: Date.now() - start };
    }
    case 'waitTitle': {
      const p = await ensurePage();
      const start = Date.now();
      await until(`title "${cmd.title}"`, timeout, () =>
        p.evaluate((want) => (document.getElementById('stream-title') || {}).textContent === want, cmd.title),
      );
      return { waitedMs: Date.now() - start };
    }
    case 'waitPlaying':
      return waitPlaying(
        await ensurePage(),
        cmd,
        'the video to play',
        () => {
          const v = window.onair && window.onair.video;
          return { state: document.body.dataset.state, t: v ? v.currentTime : 0, w: v ? v.videoWidth : 0 };
        },
        () => document.body.dataset.transport || null,
      );
    case 'send': {
      const p = await ensurePage();
      const input = p.locator('.chat-input');
      await input.waitFor({ state: 'visible', timeout });
      await until('the chat input to be enabled', timeout, () => input.isEnabled());
      await input.fill(cmd.text);
      await input.press('Enter');
      const msg = await until(`"${cmd.text}" to be sent`, timeout, () =>
        p.evaluate((want) => {
          const s = window.onair.chat.state;
          const m = s && s.messages.find((x) => x.body === want && !x.id.startsWith('local:'));
          if (m) return { id: m.id, sender: m.sender, senderName: m.senderName };
          const st = document.querySelector('.chat-status');
          // A refused send puts the text back and says why: report it at once.
          if (st && !st.hidden && /^Not sent/.test(st.textContent)) return { error: st.textContent };
          return null;
        }, cmd.text),
      );
      if (msg.error) throw new Error(msg.error);
      return { message: msg };
    }
    case 'rename': {
      const p = await ensurePage();
      await p.locator('.chat-name').click({ timeout });
      const field = p.locator('.chat-name-input');
      await field.fill(cmd.name);
      await field.press('Enter');
      await until(`display name "${cmd.name}"`, timeout, () =>
        p.evaluate((want) => window.onair.chat.state && window.onair.chat.state.displayName === want, cmd.name),
      );
      return { state: await state() };
    }
    default:
      return commonPageOp(cmd, { ensurePage, state });
  }
}

await session.serve(run, state);
process.exit(0);
