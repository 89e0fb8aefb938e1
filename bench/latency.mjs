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

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

function parseArgs(argv) {
  const o = {
    url: null,
    block: 40,
    duration: 20,
    warmup: 5,
    timeout: 60,
    chromium: process.env.ONAIR_CHROMIUM || '/usr/bin/chromium',
    screenshot: null,
    expectTransport: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--block':
        o.block = Number(next());
        break;
      case '--duration':
        o.duration = Number(next());
        break;
      case '--warmup':
        o.warmup = Number(next());
        break;
      case '--timeout':
        o.timeout = Number(next());
        break;
      case '--chromium':
        o.chromium = next();
        break;
      case '--screenshot':
        o.screenshot = next();
        break;
      case '--expect-transport':
        o.expectTransport = next();
        break;
      default:
        if (a.startsWith('--') || o.url) throw new Error(`unexpected argument ${a}`);
        o.url = a;
    }
  }
  if (!o.url) throw new Error('missing <viewer-url>');
  return o;
}

// playwright-core: the copy installed for the browser tests (tests/browser), unless
// ONAIR_PLAYWRIGHT points at another playwright-core directory.
async function loadPlaywright() {
  const dir =
    process.env.ONAIR_PLAYWRIGHT || new URL('../tests/browser/node_modules/playwright-core/', import.meta.url).pathname;
  const mod = await import(new URL('index.mjs', 'file://' + dir.replace(/\/?$/, '/')).href);
  return mod.chromium || mod.default.chromium;
}

const out = (obj, code) => {
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(code);
};

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function stats(xs) {
  if (xs.length === 0) return { n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return { n: s.length, min: s[0], median: q(0.5), p95: q(0.95), max: s[s.length - 1], mean };
}

const chromium = await loadPlaywright();
let browser;
try {
  browser = await chromium.launch({ executablePath: opts.chromium, args: CHROMIUM_ARGS });
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
    async ({ block, duration }) => {
      const BITS = 24;
      const MOD = 1 << BITS;
      const v = window.onair.video;
      const canvas = document.createElement('canvas');
      canvas.width = (BITS + 2) * block;
      canvas.height = block;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      const latency = [];
      const hlsLatency = [];
      let bad = 0;
      let frames = 0;
      const start = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
      // Mean brightness of the inner half of square i.
      const level = (data, i) => {
        const x0 = Math.round(i * block + block / 4);
        const x1 = Math.round(i * block + (3 * block) / 4);
        const y0 = Math.round(block / 4);
        const y1 = Math.round((3 * block) / 4);
        let sum = 0;
        let n = 0;
        for (let y = y0; y < y1; y++) {
          for (let x = x0; x < x1; x++) {
            const k = (y * canvas.width + x) * 4;
            sum += data[k] + data[k + 1] + data[k + 2];
            n += 3;
          }
        }
        return sum / n;
      };
      const end = performance.now() + duration * 1000;
      await new Promise((resolve) => {
        const sample = () => {
          const wall = Date.now();
          frames++;
          ctx.drawImage(v, 0, 0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
          const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          const white = level(data, BITS);
          const black = level(data, BITS + 1);
          if (!(white > 170 && black < 80)) {
            bad++;
          } else {
            const mid = (white + black) / 2;
            let value = 0;
            for (let i = 0; i < BITS; i++) if (level(data, i) > mid) value += 2 ** i;
            const lat = (((wall % MOD) - value) % MOD + MOD) % MOD;
            if (lat > 60000) bad++;
            else latency.push(lat);
          }
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
    { block: opts.block, duration: opts.duration },
  );
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot }).catch(() => undefined);
  const g = stats(result.latency);
  const h = stats(result.hlsLatency);
  const round = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x) : null);
  const summary = {
    ok: g.n >= 10 && result.bad <= result.frames / 10,
    samples: g.n,
    unreadable_frames: result.bad,
    median_ms: round(g.median),
    p95_ms: round(g.p95),
    min_ms: round(g.min),
    max_ms: round(g.max),
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
  out({ ok: false, reason: `error: ${String(e && e.message ? e.message : e).split('\n')[0]}` }, 1);
} finally {
  if (browser) await browser.close().catch(() => undefined);
}
