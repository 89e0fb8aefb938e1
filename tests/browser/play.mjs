#!/usr/bin/env node
// Open an OnAir page in headless Chromium and check that the video really plays.
//
//   node play.mjs <url> [--expect-width N] [--expect-height N] [--min-advance S]
//                 [--expect-transport webrtc|llhls|native]
//                 [--timeout MS] [--screenshot FILE] [--viewport WxH]
//                 [--chromium PATH] [--fail-on-console-error] [--verbose]
//
// Prints exactly one JSON line on stdout and exits 0 when, within the timeout,
// video.currentTime advanced by at least --min-advance seconds since playback
// began (the page's data-state first became "playing") and videoWidth > 0
// (over WebRTC also: decoded frames still rising); otherwise prints
// {"ok":false,"reason":...} and exits 1. See README.md.

import { chromium } from 'playwright-core';
import {
  CHROMIUM_PATH,
  choiceArg,
  closeWithin,
  errorText,
  launchOptions,
  numberArg,
  parseFlags,
  sampleWebRtc,
  scriptFrame,
  sleep,
  textArg,
  viewportArg,
} from './common.mjs';

const USAGE =
  'usage: node play.mjs <url> [--expect-width N] [--expect-height N] [--min-advance S (3)] ' +
  '[--expect-transport webrtc|llhls|native] [--playing-periods K (1)] ' +
  '[--timeout MS (30000)] [--screenshot FILE] [--viewport WxH (1280x720)] [--chromium PATH] ' +
  '[--fail-on-console-error] [--verbose]';

const TRANSPORTS = ['webrtc', 'llhls', 'native'];

function parseArgs(argv) {
  const opts = {
    url: null,
    expectWidth: null,
    expectHeight: null,
    expectTransport: null,
    minAdvance: 3,
    playingPeriods: 1,
    timeout: 30000,
    screenshot: null,
    viewport: { width: 1280, height: 720 },
    chromium: CHROMIUM_PATH,
    failOnConsoleError: false,
    verbose: false,
  };
  const file = (v, flag) => {
    if (!v) throw new Error(`${flag} needs a file`);
    return v;
  };
  const number = numberArg();
  return parseFlags(
    argv,
    USAGE,
    opts,
    {
      '--expect-width': ['expectWidth', number],
      '--expect-height': ['expectHeight', number],
      '--expect-transport': ['expectTransport', choiceArg(TRANSPORTS)],
      '--min-advance': ['minAdvance', number],
      '--playing-periods': ['playingPeriods', number],
      '--timeout': ['timeout', number],
      '--screenshot': ['screenshot', file],
      '--viewport': ['viewport', viewportArg],
      '--chromium': ['chromium', textArg],
      '--fail-on-console-error': ['failOnConsoleError', true],
      '--verbose': ['verbose', true],
    },
    [['url', textArg, '<url>']],
  );
}

const { opts, t0, elapsed, log, finish, hardStop, exitAfter } = scriptFrame('play', USAGE, parseArgs);

// Everything the page tells us.
const states = []; // [{state, t}] in order of change
const transports = []; // body.dataset.transport values, in order of change
let navigations = 0;
const consoleErrors = [];
let resourceErrors = 0; // "Failed to load resource" (e.g. the 404s while offline): expected
const pageErrors = [];
const MAX_MESSAGES = 20;

function recordState(s) {
  if (typeof s !== 'string' || !s) return;
  if (states.length === 0 || states[states.length - 1].state !== s) {
    states.push({ state: s, t: elapsed() });
    log('state', s);
  }
}

function recordTransport(t) {
  if (typeof t === 'string' && t && transports[transports.length - 1] !== t) {
    transports.push(t);
    log('transport', t);
  }
}

const stateNames = () => states.map((s) => s.state);
const playingAtMs = () => {
  const s = states.find((x) => x.state === 'playing');
  return s ? s.t : null;
};
/** How many times the page entered `playing` (a stream restart or a reconnect starts another). */
function playingPeriods() {
  return states.filter((s) => s.state === 'playing').length;
}

function sawOfflineBeforePlaying() {
  for (const s of states) {
    if (s.state === 'playing') return false;
    if (s.state === 'offline') return true;
  }
  return false;
}

async function run() {
  let browser;
  let page = null;
  const deadline = t0 + opts.timeout;
  let last = null; // last sample
  let result = null;
  try {
    browser = await chromium.launch(launchOptions(opts.chromium, deadline - Date.now()));
    const context = await browser.newContext({ viewport: opts.viewport });
    page = await context.newPage();

    // State changes are pushed from the page (survives navigations; we also poll).
    await page.exposeFunction('__onairReportState', (s) => recordState(s));
    await page.addInitScript(() => {
      const report = () => {
        const s = document.body && document.body.dataset.state;
        if (s) window.__onairReportState(s);
      };
      new MutationObserver(report).observe(document, {
        subtree: true,
        attributes: true,
        attributeFilter: ['data-state'],
      });
      document.addEventListener('DOMContentLoaded', report);
    });

    page.on('framenavigated', (frame) => {
      if (frame === page.mainFrame()) {
        navigations++;
        log('navigated', frame.url());
      }
    });
    page.on('console', (msg) => {
      if (msg.type() === 'warning' || msg.type() === 'info') log(`console ${msg.type()}:`, msg.text());
      if (msg.type() !== 'error') return;
      const text = msg.text();
      if (/^Failed to load resource/.test(text)) {
        resourceErrors++;
        return;
      }
      if (consoleErrors.length < MAX_MESSAGES) consoleErrors.push(text);
      log('console error:', text);
    });
    page.on('pageerror', (err) => {
      if (pageErrors.length < MAX_MESSAGES) pageErrors.push(String(err && err.message ? err.message : err));
      log('page error:', String(err));
    });

    const resp = await page.goto(opts.url, {
      waitUntil: 'domcontentloaded',
      timeout: Math.max(1000, deadline - Date.now()),
    });
    if (!resp || !resp.ok()) {
      result = { ok: false, reason: `page load failed: HTTP ${resp ? resp.status() : 'no response'}` };
      return await conclude(page, result, last);
    }

    let baseline = null; // currentTime when playback began
    let lastLog = 0;
    while (Date.now() < deadline) {
      let sample;
      try {
        sample = await page.evaluate(() => {
          const v = (window.onair && window.onair.video) || document.querySelector('video');
          return {
            state: document.body ? document.body.dataset.state || null : null,
            transport: document.body ? document.body.dataset.transport || null : null,
            currentTime: v ? v.currentTime : null,
            paused: v ? v.paused : null,
            readyState: v ? v.readyState : null,
            videoWidth: v ? v.videoWidth : 0,
            videoHeight: v ? v.videoHeight : 0,
            badge: (document.querySelector('.transport-badge') || {}).textContent || null,
            latencyText: (document.querySelector('.player-latency') || {}).textContent || null,
          };
        });
      } catch (e) {
        // Navigation in progress (which the navigation count will show) or page gone.
        log('evaluate failed:', e.message);
        await sleep(200);
        continue;
      }
      last = sample;
      recordState(sample.state);
      recordTransport(sample.transport);
      const ct = sample.currentTime;
      // Playback began: the page says "playing" (or, for a page without
      // data-state, the video runs).
      const begun =
        sample.state === 'playing' || (sample.state === null && sample.paused === false && ct > 0);
      if (begun && typeof ct === 'number') {
        if (baseline === null || ct < baseline - 0.5) {
          baseline = ct; // first start, or a new session after the stream came back
          log('playback began at', ct.toFixed(2));
        }
        const advanced = ct - baseline;
        if (Date.now() - lastLog > 1000) {
          lastLog = Date.now();
          log(`t=${ct.toFixed(2)} advanced=${advanced.toFixed(2)} ${sample.videoWidth}x${sample.videoHeight}`);
        }
        if (advanced >= opts.minAdvance && sample.videoWidth > 0 && playingPeriods() >= opts.playingPeriods) {
          result = {
            ok: true,
            currentTime: round(ct),
            advanced: round(advanced),
            videoWidth: sample.videoWidth,
            videoHeight: sample.videoHeight,
            state: sample.state,
            transport: sample.transport,
            sawOffline: sawOfflineBeforePlaying(),
            playingPeriods: playingPeriods(),
            navigations,
          };
          // The first expectation the page does not meet.
          const miss = [
            ['videoWidth', opts.expectWidth],
            ['videoHeight', opts.expectHeight],
            ['transport', opts.expectTransport],
          ].find(([key, want]) => want !== null && sample[key] !== want);
          if (miss) {
            result = { ...result, ok: false, reason: `${miss[0]} ${sample[miss[0]]} != expected ${miss[1]}` };
          } else if (opts.failOnConsoleError && (consoleErrors.length > 0 || pageErrors.length > 0)) {
            result = { ...result, ok: false, reason: 'console or page errors' };
          }
          return await conclude(page, result, last);
        }
      }
      await sleep(200);
    }
    const why =
      last === null
        ? 'page never answered'
        : baseline === null
          ? `never played (state ${last.state})`
          : `advanced only ${round((last.currentTime ?? 0) - baseline)} s of ${opts.minAdvance}` +
            (last.videoWidth > 0 ? '' : ', videoWidth 0');
    result = { ok: false, reason: `timeout after ${opts.timeout} ms: ${why}` };
    return await conclude(page, result, last);
  } catch (e) {
    result = { ok: false, reason: `error: ${errorText(e)}` };
    return finish(withDetails(result, last), 1);
  } finally {
    if (page) {
      // Close the tab first, like a user: the page's pagehide handler DELETEs
      // its WHEP session (keepalive), so the server does not wait for ICE to time out.
      await closeWithin(page, 2000);
      await sleep(200);
    }
    if (browser) await closeWithin(browser, 5000);
  }
}

function round(x) {
  return Math.round(x * 1000) / 1000;
}

function withDetails(result, last) {
  const out = { ...result };
  if (last) {
    for (const k of ['currentTime', 'videoWidth', 'videoHeight', 'state', 'transport', 'badge', 'latencyText']) {
      if (!(k in out)) out[k] = k === 'currentTime' && typeof last[k] === 'number' ? round(last[k]) : last[k];
    }
  }
  if (!('sawOffline' in out)) out.sawOffline = sawOfflineBeforePlaying();
  out.navigations = navigations;
  out.states = stateNames();
  out.transports = transports;
  out.playingAtMs = playingAtMs();
  out.consoleErrors = consoleErrors;
  out.pageErrors = pageErrors;
  out.resourceErrors = resourceErrors;
  out.elapsedMs = elapsed();
  return out;
}

async function conclude(page, result, last) {
  // WebRTC: two getStats() samples ≥ 1 s apart, so frames and packets can be seen rising.
  let webrtc = null;
  try {
    webrtc = await sampleWebRtc(page, 1000);
  } catch (e) {
    log('webrtc stats failed:', e.message);
  }
  if (webrtc) {
    result = { ...result, webrtc };
    log('webrtc', JSON.stringify(webrtc));
    if (result.ok && result.transport === 'webrtc' && !(webrtc.framesDecodedDelta > 0)) {
      result = { ...result, ok: false, reason: 'WebRTC: framesDecoded did not rise' };
    }
  }
  if (opts.screenshot) {
    try {
      await page.screenshot({ path: opts.screenshot, timeout: 5000 });
    } catch (e) {
      log('screenshot failed:', e.message);
      result = { ...result, screenshotError: e.message.split('\n')[0] };
    }
  }
  return finish(withDetails(result, last), result.ok ? 0 : 1);
}

hardStop(opts.timeout + 15000, () =>
  withDetails({ ok: false, reason: `hard timeout after ${opts.timeout + 15000} ms` }, null),
);
await exitAfter(run);
