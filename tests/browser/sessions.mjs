#!/usr/bin/env node
// Open N OnAir pages in ONE headless Chromium, wait until every one plays over
// WebRTC (framesDecoded > 0), then close them all (their WHEP sessions end).
//
//   node sessions.mjs <url> <count> [--hold-ms N] [--timeout MS] [--drain-ms N]
//                     [--tabs] [--chromium PATH] [--verbose]
//
// Prints exactly one JSON line on stdout: {"ok":true,"playing":N,...} and exit
// 0 when all N played over WebRTC within the timeout, else {"ok":false,...}
// and exit 1 (2 on bad arguments). See README.md.

import { chromium } from 'playwright-core';
import {
  CHROMIUM_PATH,
  closeWithin,
  errorText,
  launchOptions,
  numberArg,
  pageWebRtcStats,
  parseFlags,
  scriptFrame,
  sleep,
  streamOfPageUrl,
  textArg,
} from './common.mjs';

const USAGE =
  'usage: node sessions.mjs <url> <count> [--hold-ms N (0)] [--timeout MS (45000)] [--drain-ms N (5000)] ' +
  '[--tabs] [--chromium PATH] [--verbose]';

function parseArgs(argv) {
  const opts = {
    url: null,
    count: null,
    holdMs: 0,
    timeout: 45000,
    drainMs: 5000,
    tabs: false,
    chromium: CHROMIUM_PATH,
    verbose: false,
  };
  const count = (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error('<count> must be a positive integer');
    return n;
  };
  const number = numberArg(0);
  parseFlags(
    argv,
    USAGE,
    opts,
    {
      '--hold-ms': ['holdMs', number],
      '--timeout': ['timeout', number],
      '--drain-ms': ['drainMs', number],
      '--tabs': ['tabs', true],
      '--chromium': ['chromium', textArg],
      '--verbose': ['verbose', true],
    },
    [
      ['url', textArg, '<url>'],
      ['count', count, '<count>'],
    ],
  );
  new URL(opts.url); // throws on a bad URL
  return opts;
}

const { opts, t0, elapsed, log, finish, hardStop, exitAfter } = scriptFrame('sessions', USAGE, parseArgs, {
  withElapsed: true,
});

const apiUrl = new URL(`/api/streams/${encodeURIComponent(streamOfPageUrl(opts.url))}`, opts.url).href;

/** `viewers.webrtc` from /api/streams/<stream>, or null (offline, no such field, unreachable). */
async function webrtcViewers() {
  try {
    const res = await fetch(apiUrl, { signal: AbortSignal.timeout(15000) });
    if (!res.ok) return null;
    const body = await res.json();
    const n = body && body.viewers && body.viewers.webrtc;
    return typeof n === 'number' ? n : null;
  } catch {
    return null;
  }
}

/** What one page shows now. */
async function pageSample(page) {
  const [dom, rtc] = await Promise.all([
    page.evaluate(() => ({
      state: (document.body && document.body.dataset.state) || null,
      transport: (document.body && document.body.dataset.transport) || null,
    })),
    page.evaluate(pageWebRtcStats),
  ]);
  return { ...dom, webrtc: rtc };
}

const isPlayingWebRtc = (s) =>
  s && s.state === 'playing' && s.transport === 'webrtc' && s.webrtc && s.webrtc.framesDecoded > 0;

function summary(s, playingAtMs) {
  const w = (s && s.webrtc) || {};
  return {
    state: s ? s.state : null,
    transport: s ? s.transport : null,
    connectionState: w.connectionState ?? null,
    framesDecoded: w.framesDecoded ?? 0,
    frameWidth: w.frameWidth ?? 0,
    frameHeight: w.frameHeight ?? 0,
    candidateType: w.candidateType ?? null,
    playingAtMs,
  };
}

async function run() {
  let browser;
  const deadline = t0 + opts.timeout;
  const viewers = { before: await webrtcViewers(), open: null, after: null };
  try {
    browser = await chromium.launch(launchOptions(opts.chromium, deadline - Date.now()));
    const shared = opts.tabs ? await browser.newContext({ viewport: { width: 640, height: 360 } }) : null;
    const pages = [];
    for (let i = 0; i < opts.count; i++) {
      const ctx = shared ?? (await browser.newContext({ viewport: { width: 640, height: 360 } }));
      const page = await ctx.newPage();
      page.on('pageerror', (err) => log(`page ${i} error:`, String(err)));
      pages.push({ i, ctx, page, last: null, playingAtMs: null });
    }
    await Promise.all(
      pages.map((p) =>
        p.page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: Math.max(1000, deadline - Date.now()) }),
      ),
    );
    log(`${pages.length} pages opened`);

    // Wait until every page plays over WebRTC.
    let playing = 0;
    const failWhileWaiting = (reason) =>
      finish(
        {
          ok: false,
          reason,
          count: pages.length,
          playing,
          viewers,
          pages: pages.map((p) => summary(p.last, p.playingAtMs)),
        },
        1,
      );
    while (Date.now() < deadline) {
      await Promise.all(
        pages.map(async (p) => {
          if (p.playingAtMs !== null) return;
          try {
            p.last = await pageSample(p.page);
          } catch (e) {
            log(`page ${p.i}: ${e.message.split('\n')[0]}`);
            return;
          }
          if (isPlayingWebRtc(p.last)) {
            p.playingAtMs = elapsed();
            log(`page ${p.i} plays over WebRTC (${p.last.webrtc.framesDecoded} frames)`);
          }
        }),
      );
      playing = pages.filter((p) => p.playingAtMs !== null).length;
      if (playing === pages.length) break;
      // A page that fell back to LL-HLS stays there until the stream restarts: fail now.
      const fellBack = pages.find((p) => p.last && p.last.state === 'playing' && p.last.transport !== 'webrtc');
      if (fellBack) {
        return failWhileWaiting(`page ${fellBack.i} plays over ${fellBack.last.transport}, not WebRTC`);
      }
      await sleep(250);
    }
    if (playing < pages.length) {
      return failWhileWaiting(`timeout after ${opts.timeout} ms: ${playing} of ${pages.length} pages play over WebRTC`);
    }

    if (opts.holdMs > 0) {
      log(`holding ${opts.holdMs} ms`);
      await sleep(opts.holdMs);
    }
    // Still receiving? Every page decoded frames once (above); now its video packets must keep
    // arriving. (Decoding speed is the browser's CPU, which 20 pages on a small machine starve;
    // the server's job is to keep sending.)
    const before = pages.map((p) => p.last.webrtc.videoPacketsReceived);
    if (opts.holdMs < 2000) await sleep(2000 - opts.holdMs);
    let stillPlaying = 0;
    await Promise.all(
      pages.map(async (p, k) => {
        try {
          p.last = await pageSample(p.page);
          if (isPlayingWebRtc(p.last) && p.last.webrtc.videoPacketsReceived > before[k]) stillPlaying++;
        } catch {
          // counted as not playing
        }
      }),
    );
    viewers.open = await webrtcViewers();
    const pageSummaries = pages.map((p) => summary(p.last, p.playingAtMs));

    // Close every page the way a user closes a tab (pagehide → DELETE with keepalive).
    await Promise.all(pages.map((p) => p.page.close().catch(() => undefined)));
    log('pages closed');
    if (viewers.open !== null) {
      const target = viewers.before ?? 0;
      const drainDeadline = Date.now() + opts.drainMs;
      do {
        await sleep(250);
        viewers.after = await webrtcViewers();
      } while (viewers.after !== null && viewers.after > target && Date.now() < drainDeadline);
    }

    return finish(
      {
        ok: stillPlaying === pages.length,
        ...(stillPlaying === pages.length ? {} : { reason: `${pages.length - stillPlaying} pages stopped receiving video` }),
        count: pages.length,
        playing,
        stillPlaying,
        viewers,
        pages: pageSummaries,
      },
      stillPlaying === pages.length ? 0 : 1,
    );
  } catch (e) {
    return finish({ ok: false, reason: `error: ${errorText(e)}`, viewers }, 1);
  } finally {
    if (browser) await closeWithin(browser, 5000);
  }
}

const hardStopMs = opts.timeout + opts.holdMs + opts.drainMs + 15000;
hardStop(hardStopMs, () => ({ ok: false, reason: `hard timeout after ${hardStopMs} ms` }));
await exitAfter(run);
