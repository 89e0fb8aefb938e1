#!/usr/bin/env node
// Open several OnAir pages in ONE headless Chromium, wait until every one plays, then watch them
// for a while: does each keep playing, without a stall and without reloading?
//
//   node watch.mjs <url> [<url> ...] [--duration MS] [--timeout MS] [--stall-ms MS]
//                  [--ready-file PATH] [--chromium PATH] [--verbose]
//
// Each URL gets its own page (and browser context). Once every page's data-state is "playing"
// and its video.currentTime has advanced 1 s, the script writes --ready-file (if given: a test
// starts what it wants to watch through then) and samples every page every 200 ms for
// --duration ms (default 20000). It prints exactly one JSON line on stdout:
//   {"ok":..., "reason":..., "pages":[{url, transport, advancedS, maxStallMs, navigations,
//                                      states, videoWidth}], "elapsedMs"}
// ok: every page advanced by at least half the watch time, no page's currentTime stood still
// longer than --stall-ms (default 1500) and none navigated (reloaded). Exit 0 when ok, else 1
// (2 on bad arguments). --timeout (default 45000) bounds the wait for playing.

import { chromium } from 'playwright-core';
import {
  CHROMIUM_PATH,
  closeWithin,
  errorText,
  launchOptions,
  numberArg,
  parseFlags,
  scriptFrame,
  sleep,
  textArg,
} from './common.mjs';
import { writeFileSync } from 'node:fs';

const USAGE =
  'usage: node watch.mjs <url> [<url> ...] [--duration MS (20000)] [--timeout MS (45000)] ' +
  '[--stall-ms MS (1500)] [--ready-file PATH] [--chromium PATH] [--verbose]';

function parseArgs(argv) {
  const opts = {
    urls: [],
    duration: 20000,
    timeout: 45000,
    stallMs: 1500,
    readyFile: null,
    chromium: CHROMIUM_PATH,
    verbose: false,
  };
  // Flags first, then every remaining argument is a URL.
  const rest = [];
  const flags = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) {
      flags.push(argv[i]);
      if (argv[i] !== '--verbose' && !argv[i].includes('=')) flags.push(argv[++i]);
    } else {
      rest.push(argv[i]);
    }
  }
  const number = numberArg(0);
  parseFlags(
    flags,
    USAGE,
    opts,
    {
      '--duration': ['duration', number],
      '--timeout': ['timeout', number],
      '--stall-ms': ['stallMs', number],
      '--ready-file': ['readyFile', textArg],
      '--chromium': ['chromium', textArg],
      '--verbose': ['verbose', true],
    },
    [],
  );
  if (rest.length === 0) throw new Error('give at least one <url>');
  for (const u of rest) new URL(u); // throws on a bad URL
  opts.urls = rest;
  return opts;
}

const { opts, t0, log, finish, hardStop, exitAfter } = scriptFrame('watch', USAGE, parseArgs, {
  withElapsed: true,
});

const probe = () => {
  const v = (window.onair && window.onair.video) || document.querySelector('video');
  return {
    state: (document.body && document.body.dataset.state) || null,
    transport: (document.body && document.body.dataset.transport) || null,
    t: v ? v.currentTime : null,
    w: v ? v.videoWidth : 0,
  };
};

async function run() {
  let browser;
  const watched = [];
  try {
    browser = await chromium.launch(launchOptions(opts.chromium, opts.timeout));
    for (const url of opts.urls) {
      const context = await browser.newContext({ viewport: { width: 640, height: 360 } });
      const page = await context.newPage();
      const w = { url, page, navigations: 0, states: [], transport: null, start: null, last: null, lastMoveAt: null, maxStallMs: 0, videoWidth: 0 };
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) w.navigations++;
      });
      await page.goto(url, { waitUntil: 'domcontentloaded', timeout: opts.timeout });
      watched.push(w);
    }
    // Every page plays (1 s advanced since it first said "playing").
    const deadline = t0 + opts.timeout;
    const base = new Map();
    for (;;) {
      let ready = 0;
      for (const w of watched) {
        const s = await w.page.evaluate(probe).catch(() => null);
        if (s && s.state === 'playing' && typeof s.t === 'number') {
          if (!base.has(w) || s.t < base.get(w)) base.set(w, s.t);
          if (s.t - base.get(w) >= 1 && s.w > 0) ready++;
        }
      }
      if (ready === watched.length) break;
      if (Date.now() > deadline) {
        const states = await Promise.all(watched.map((w) => w.page.evaluate(probe).catch((e) => errorText(e))));
        return finish({ ok: false, reason: `not every page played within ${opts.timeout} ms`, states }, 1);
      }
      await sleep(200);
    }
    // Navigations so far were the initial loads.
    for (const w of watched) w.navigations = 0;
    if (opts.readyFile) writeFileSync(opts.readyFile, 'playing\n');
    log('all playing; watching for', opts.duration, 'ms');
    const end = Date.now() + opts.duration;
    while (Date.now() < end) {
      const now = Date.now();
      for (const w of watched) {
        const s = await w.page.evaluate(probe).catch(() => null);
        if (!s) continue;
        if (w.states[w.states.length - 1] !== s.state) w.states.push(s.state);
        w.transport = s.transport;
        w.videoWidth = s.w;
        if (w.start === null) {
          w.start = s.t;
          w.last = s.t;
          w.lastMoveAt = now;
          continue;
        }
        if (s.t > w.last) {
          w.last = s.t;
          w.lastMoveAt = now;
        } else {
          w.maxStallMs = Math.max(w.maxStallMs, now - w.lastMoveAt);
        }
      }
      await sleep(200);
    }
    const pages = watched.map((w) => ({
      url: w.url,
      transport: w.transport,
      advancedS: Math.round(((w.last ?? 0) - (w.start ?? 0)) * 1000) / 1000,
      maxStallMs: w.maxStallMs,
      navigations: w.navigations,
      states: w.states,
      videoWidth: w.videoWidth,
    }));
    const bad = pages.find(
      (p) => p.advancedS < opts.duration / 2000 || p.maxStallMs > opts.stallMs || p.navigations > 0,
    );
    const reason = bad
      ? `${bad.url}: advanced ${bad.advancedS} s, longest stall ${bad.maxStallMs} ms, ${bad.navigations} navigations`
      : undefined;
    return finish({ ok: !bad, reason, pages }, bad ? 1 : 0);
  } catch (e) {
    return finish({ ok: false, reason: `error: ${errorText(e)}` }, 1);
  } finally {
    for (const w of watched) await closeWithin(w.page, 2000);
    if (browser) await closeWithin(browser, 5000);
  }
}

hardStop(opts.timeout + opts.duration + 20000, () => ({ ok: false, reason: 'hard timeout' }));
await exitAfter(run);
