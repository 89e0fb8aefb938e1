#!/usr/bin/env node
// Two viewer pages of one stream in one headless Chromium, one forced to WebRTC and one to
// LL-HLS, watched for a fixed time while the test drops and restarts the publisher.
//
//   node grace.mjs <viewer page url> [--duration MS (40000)] [--chromium PATH] [--verbose]
//
// Prints exactly one JSON line: {"ok": true, "pages": [{"transport": "webrtc"|"hls",
// "navigations": N, "samples": [[epoch ms, currentTime, data-state, data-transport, videoWidth],
// ...]}, ...]}
// (a sample every 250 ms), or {"ok": false, "reason": ...}. Judging is the Rust test's job
// (tests/tests/grace.rs): it knows when the publisher dropped and came back.

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

const USAGE = 'usage: node grace.mjs <url> [--duration MS (40000)] [--chromium PATH] [--verbose]';

const { opts, log, finish, hardStop, exitAfter } = scriptFrame('grace', USAGE, (argv) =>
  parseFlags(
    argv,
    USAGE,
    { url: null, duration: 40000, chromium: CHROMIUM_PATH, verbose: false },
    {
      '--duration': ['duration', numberArg()],
      '--chromium': ['chromium', textArg],
      '--verbose': ['verbose', true],
    },
    [['url', textArg, '<url>']],
  ),
);

const MAX_SAMPLES = 1000;

async function main() {
  hardStop(opts.duration + 30000, () => ({ ok: false, reason: 'hung' }));
  let browser;
  const pages = [];
  try {
    browser = await chromium.launch(launchOptions(opts.chromium, 20000));
    const context = await browser.newContext({ viewport: { width: 640, height: 360 } });
    for (const transport of ['webrtc', 'hls']) {
      const page = await context.newPage();
      const entry = { transport, navigations: 0, samples: [], page };
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) entry.navigations++;
      });
      const url = new URL(opts.url);
      url.searchParams.set('transport', transport);
      await page.goto(url.href, { waitUntil: 'domcontentloaded', timeout: 20000 });
      pages.push(entry);
    }
    const end = Date.now() + opts.duration;
    while (Date.now() < end) {
      for (const entry of pages) {
        try {
          const s = await entry.page.evaluate(() => {
            const v = (window.onair && window.onair.video) || document.querySelector('video');
            return [
              v ? v.currentTime : null,
              document.body.dataset.state || null,
              document.body.dataset.transport || null,
              v ? v.videoWidth : 0,
            ];
          });
          if (entry.samples.length < MAX_SAMPLES) entry.samples.push([Date.now(), ...s]);
        } catch (e) {
          log(entry.transport, 'evaluate failed:', errorText(e));
        }
      }
      await sleep(250);
    }
    return finish({ ok: true, pages: pages.map(({ page, ...rest }) => rest) }, 0);
  } catch (e) {
    return finish({ ok: false, reason: `error: ${errorText(e)}` }, 1);
  } finally {
    for (const { page } of pages) await closeWithin(page, 2000);
    if (browser) await closeWithin(browser, 5000);
  }
}

exitAfter(main);
