#!/usr/bin/env node
// Glass-to-glass latency of the OnAir viewer page, read from the frames themselves.
//
//   node bench/latency.mjs <viewer-url> [--block PX] [--duration S] [--warmup S]
//                          [--expect-transport llhls|webrtc] [--timeout S] [--chromium PATH]
//                          [--screenshot FILE]
//
// The publisher (bench/run.sh latency) burns the wall clock into every frame when it is captured:
// a strip of `--block`-pixel squares in the top-left corner, square i (0..23) white when bit i of
// (epoch milliseconds mod 2^24) is set, then one always-white and one always-black square (a
// sanity check). This script opens the viewer page in headless Chromium, waits until it plays,
// lets hls.js settle for --warmup seconds, then for --duration seconds, on every frame the video
// presents (requestVideoFrameCallback), draws the strip onto a canvas, decodes the capture time
// and subtracts it from Date.now(): capture → encode → RTMP → OnAir → LL-HLS → hls.js → decode
// → display, on one machine (one clock). It also samples hls.js's own estimate (`hls.latency`,
// the distance from the playlist's live edge) and its target.
//
// Prints one JSON line: {"ok":true,"samples":N,"median_ms":…,"p95_ms":…,…}; exit 1 on failure.

import {
  CHROMIUM_PATH,
  errorText,
  launchOptions,
  loadChromium,
  numberArg,
  parseFlags,
  sleep,
  textArg,
} from '../tests/browser/common.mjs';
import { clockResult, frameClockReader, out, stats } from './common.mjs';

const USAGE =
  'usage: node bench/latency.mjs <viewer-url> [--block PX (40)] [--duration S (20)] [--warmup S (5)] ' +
  '[--expect-transport llhls|webrtc] [--timeout S (60)] [--chromium PATH] [--screenshot FILE]';

function parseArgs(argv) {
  const opts = {
    url: null,
    block: 40,
    duration: 20,
    warmup: 5,
    timeout: 60,
    chromium: CHROMIUM_PATH,
    screenshot: null,
    expectTransport: null,
  };
  const number = numberArg();
  return parseFlags(
    argv,
    USAGE,
    opts,
    {
      '--block': ['block', number],
      '--duration': ['duration', number],
      '--warmup': ['warmup', number],
      '--timeout': ['timeout', number],
      '--chromium': ['chromium', textArg],
      '--screenshot': ['screenshot', textArg],
      '--expect-transport': ['expectTransport', textArg],
    },
    [['url', textArg, '<viewer-url>']],
  );
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  out({ ok: false, reason: `bad arguments: ${e.message}` }, 2);
}

const hardStop = setTimeout(
  () => out({ ok: false, reason: 'hard timeout' }, 1),
  (opts.timeout + opts.warmup + opts.duration + 30) * 1000,
);
hardStop.unref();

const chromium = await loadChromium();
let browser;
try {
  browser = await chromium.launch(launchOptions(opts.chromium));
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e.message || e)));
  const resp = await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  if (!resp || !resp.ok()) out({ ok: false, reason: `page load: HTTP ${resp ? resp.status() : 'none'}` }, 1);
  await page.waitForFunction(
    () => document.body && document.body.dataset.state === 'playing' && window.onair && window.onair.video,
    null,
    { timeout: opts.timeout * 1000, polling: 100 },
  );
  const t0 = Date.now();
  await sleep(opts.warmup * 1000);

  const result = await page.evaluate(
    async ({ block, duration, readerSrc }) => {
      const v = window.onair.video;
      const readClock = eval(readerSrc)(v, block);
      const latency = [];
      const hlsLatency = [];
      let bad = 0;
      let frames = 0;
      const start = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      const end = performance.now() + duration * 1000;
      await new Promise((resolve) => {
        const sample = () => {
          const wall = Date.now();
          frames++;
          const lat = readClock(wall);
          if (lat === null) bad++;
          else latency.push(lat);
          const hls = window.onair.hls;
          if (hls && typeof hls.latency === 'number' && Number.isFinite(hls.latency)) {
            hlsLatency.push({ latency: hls.latency * 1000, target: (hls.targetLatency ?? NaN) * 1000 });
          }
        };
        const loop = () => {
          if (performance.now() >= end) return resolve();
          sample();
          schedule();
        };
        const schedule = () =>
          v.requestVideoFrameCallback ? v.requestVideoFrameCallback(loop) : setTimeout(loop, 1000 / 30);
        schedule();
      });
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      return {
        latency,
        hlsLatency: hlsLatency.map((h) => h.latency),
        hlsTarget: hlsLatency.length ? hlsLatency[hlsLatency.length - 1].target : null,
        bad,
        frames,
        droppedFrames: q && start ? q.droppedVideoFrames - start.droppedVideoFrames : null,
        decodedFrames: q && start ? q.totalVideoFrames - start.totalVideoFrames : null,
        videoWidth: v.videoWidth,
        videoHeight: v.videoHeight,
        playbackRate: v.playbackRate,
        transport: document.body.dataset.transport || null,
      };
    },
    { block: opts.block, duration: opts.duration, readerSrc: `(${frameClockReader})` },
  );
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot }).catch(() => undefined);
  const g = stats(result.latency);
  const h = stats(result.hlsLatency);
  const round = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x) : null);
  const summary = {
    ...clockResult(g, result.bad, result.frames, round),
    mean_ms: round(g.mean),
    hls_latency_median_ms: round(h.median),
    hls_latency_p95_ms: round(h.p95),
    hls_target_latency_ms: round(result.hlsTarget),
    frames_presented: result.frames,
    frames_decoded: result.decodedFrames,
    frames_dropped: result.droppedFrames,
    video: `${result.videoWidth}x${result.videoHeight}`,
    transport: result.transport,
    page_errors: errors.slice(0, 5),
  };
  if (!summary.ok) summary.reason = g.n < 10 ? 'too few readable frames' : 'too many unreadable frames';
  if (opts.expectTransport && result.transport !== opts.expectTransport) {
    summary.ok = false;
    summary.reason = `the page played over ${result.transport}, not ${opts.expectTransport}`;
  }
  await browser.close().catch(() => undefined);
  browser = null;
  out(summary, summary.ok ? 0 : 1);
} catch (e) {
  out({ ok: false, reason: `error: ${errorText(e)}` }, 1);
} finally {
  if (browser) await browser.close().catch(() => undefined);
}
