#!/usr/bin/env node
// OnAir WebRTC benchmark, browser side (bench/webrtc/run.sh).
//
//   node bench/webrtc/webrtc.mjs latency <viewer-url> [--block PX] [--duration S] [--warmup S]
//   node bench/webrtc/webrtc.mjs ttff <viewer-url> [--runs N]
//
// latency: the publisher burns the wall clock into every frame (a strip of --block-pixel squares
// in the top-left corner: square i (0..23) white when bit i of (epoch ms mod 2^24) is set, then
// one white and one black square as a sanity check; the idea and the decoding are those of
// bench/latency.mjs). On every frame the <video> presents (requestVideoFrameCallback) the strip is
// drawn on a canvas, decoded and subtracted from Date.now(). Also samples getStats() on
// window.onair.pc: candidate-pair RTT, video jitter-buffer delay, losses, frames dropped.
//
// ttff: opens the viewer page N times (a fresh browser context each time) and times, with the
// page's own clock (performance.now(), 0 = navigation start): the WHEP POST (fetch hooked), the
// answer, the first decoded frame (first requestVideoFrameCallback; framesDecoded > 0 as a check).
//
// Prints one JSON line; exit 1 on failure.

import { CHROMIUM_PATH, errorText, launchOptions, loadChromium, sleep } from '../../tests/browser/common.mjs';
import { clockResult, frameClockReader, out, stats } from '../common.mjs';

const round = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x * 10) / 10 : null);

const [mode, url, ...rest] = process.argv.slice(2);
const opt = { block: 40, duration: 20, warmup: 4, runs: 5, timeout: 40 };
for (let i = 0; i < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = Number(rest[i + 1]);
if (!['latency', 'ttff'].includes(mode) || !url) out({ ok: false, reason: 'usage: webrtc.mjs latency|ttff URL' }, 2);

const chromium = await loadChromium();
const hard = setTimeout(() => out({ ok: false, reason: 'hard timeout' }, 1), 240000);
hard.unref();

const playing = () => {
  const el = document.querySelector('[data-state]') || document.body;
  return el.dataset.state === 'playing' && window.onair && window.onair.video && window.onair.pc;
};

// getStats of the page's RTCPeerConnection, reduced to what we report.
const pageStats = async () => {
  const r = await window.onair.pc.getStats();
  const o = {};
  r.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
      o.rtt_ms = s.currentRoundTripTime * 1000;
      o.local = s.localCandidateId;
    }
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      o.framesDecoded = s.framesDecoded;
      o.framesDropped = s.framesDropped;
      o.packetsLost = s.packetsLost;
      o.packetsReceived = s.packetsReceived;
      o.jitterBufferMs = s.jitterBufferEmittedCount ? (s.jitterBufferDelay / s.jitterBufferEmittedCount) * 1000 : null;
      o.frameWidth = s.frameWidth;
      o.frameHeight = s.frameHeight;
      o.decoder = s.decoderImplementation;
      o.bytesReceived = s.bytesReceived;
    }
  });
  return o;
};

const browser = await chromium.launch(launchOptions(CHROMIUM_PATH));
try {
  if (mode === 'latency') {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const resp = await page.goto(url, { waitUntil: 'domcontentloaded' });
    if (!resp || !resp.ok()) out({ ok: false, reason: `page: HTTP ${resp && resp.status()}` }, 1);
    await page.waitForFunction(playing, null, { timeout: opt.timeout * 1000, polling: 100 });
    await sleep(opt.warmup * 1000);
    const r = await page.evaluate(
      async ({ block, duration, pageStatsSrc, readerSrc }) => {
        const pageStats = eval(pageStatsSrc);
        const v = window.onair.video;
        const readClock = eval(readerSrc)(v, block);
        const lat = [];
        const rtt = [];
        const jb = [];
        let bad = 0;
        let frames = 0;
        const s0 = await pageStats();
        const end = performance.now() + duration * 1000;
        const poll = setInterval(async () => {
          const s = await pageStats();
          if (s.rtt_ms !== undefined) rtt.push(s.rtt_ms);
          if (s.jitterBufferMs != null) jb.push(s.jitterBufferMs);
        }, 1000);
        await new Promise((resolve) => {
          const loop = () => {
            if (performance.now() >= end) return resolve();
            const wall = Date.now();
            frames++;
            const l = readClock(wall);
            if (l === null) bad++;
            else lat.push(l);
            v.requestVideoFrameCallback ? v.requestVideoFrameCallback(loop) : setTimeout(loop, 33);
          };
          v.requestVideoFrameCallback ? v.requestVideoFrameCallback(loop) : setTimeout(loop, 33);
        });
        clearInterval(poll);
        const s1 = await pageStats();
        return { lat, rtt, jb, bad, frames, s0, s1, rvfc: !!v.requestVideoFrameCallback, w: v.videoWidth, h: v.videoHeight };
      },
      { block: opt.block, duration: opt.duration, pageStatsSrc: `(${pageStats.toString()})`, readerSrc: `(${frameClockReader})` },
    );
    const g = stats(r.lat);
    const t = stats(r.rtt);
    const j = stats(r.jb);
    const res = {
      ...clockResult(g, r.bad, r.frames, round),
      rtt_median_ms: round(t.median),
      rtt_max_ms: round(t.max),
      jitter_buffer_median_ms: round(j.median),
      video: `${r.w}x${r.h}`,
      decoder: r.s1.decoder,
      frames_decoded: r.s1.framesDecoded - r.s0.framesDecoded,
      frames_dropped: r.s1.framesDropped - r.s0.framesDropped,
      packets_lost: r.s1.packetsLost - r.s0.packetsLost,
      packets_received: r.s1.packetsReceived - r.s0.packetsReceived,
      video_mbps: round(((r.s1.bytesReceived - r.s0.bytesReceived) * 8) / opt.duration / 1e6),
      rvfc: r.rvfc,
    };
    if (!res.ok) res.reason = 'too few readable frames';
    out(res, res.ok ? 0 : 1);
  } else {
    const runs = [];
    for (let i = 0; i < opt.runs; i++) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 720 } });
      await ctx.addInitScript(() => {
        window.__t = {};
        const f = window.fetch;
        window.fetch = async function (input, init) {
          const u = String(input && input.url ? input.url : input);
          const post = /\/whep$/.test(u) && init && init.method === 'POST';
          if (post) window.__t.post = performance.now();
          const r = await f.apply(this, arguments);
          if (post) window.__t.answer = performance.now();
          return r;
        };
        const watch = setInterval(() => {
          const v = window.onair && window.onair.video;
          if (!v) return;
          clearInterval(watch);
          if (v.requestVideoFrameCallback)
            v.requestVideoFrameCallback(() => {
              window.__t.frame = performance.now();
            });
          else
            v.addEventListener('loadeddata', () => {
              window.__t.frame = performance.now();
            });
        }, 5);
      });
      const page = await ctx.newPage();
      await page.goto(url, { waitUntil: 'commit' });
      await page.waitForFunction(() => window.__t && window.__t.frame !== undefined, null, { timeout: opt.timeout * 1000, polling: 20 });
      const t = await page.evaluate(() => window.__t);
      const s = await page.evaluate(`(${pageStats.toString()})()`);
      const transport = await page.evaluate(() => (document.querySelector('[data-transport]') || document.body).dataset.transport);
      runs.push({
        nav_to_frame_ms: round(t.frame),
        post_ms: round(t.post),
        post_to_answer_ms: round(t.answer - t.post),
        post_to_frame_ms: round(t.frame - t.post),
        frames_decoded: s.framesDecoded,
        transport,
      });
      await ctx.close();
      await sleep(300 + Math.random() * 1700); // land at different points of the GOP
    }
    const n = stats(runs.map((r) => r.nav_to_frame_ms));
    const p = stats(runs.map((r) => r.post_to_frame_ms));
    out(
      {
        ok: runs.every((r) => r.frames_decoded > 0),
        runs: runs.length,
        nav_to_frame_median_ms: n.median,
        nav_to_frame_min_ms: n.min,
        nav_to_frame_max_ms: n.max,
        post_to_frame_median_ms: p.median,
        post_to_answer_median_ms: stats(runs.map((r) => r.post_to_answer_ms)).median,
        each: runs,
      },
      0,
    );
  }
} catch (e) {
  out({ ok: false, reason: errorText(e) }, 1);
} finally {
  await browser.close().catch(() => undefined);
}
