// Shared by the browser side of the benchmarks (bench/latency.mjs, bench/webrtc/webrtc.mjs): the
// result line, summary statistics and the reader of the wall clock burnt into the frames. (Chromium
// flags, launch and playwright-core: tests/browser/common.mjs.)

/** Prints the result as one JSON line and exits with `code`. */
export const out = (obj, code) => {
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(code);
};

/** Count, min, median, p95, max and mean of `xs` (`{n: 0}` when empty). */
export function stats(xs) {
  if (xs.length === 0) return { n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return { n: s.length, min: s[0], median: q(0.5), p95: q(0.95), max: s[s.length - 1], mean };
}

/**
 * The first fields of a latency result, from the statistics `g` of the latencies read from the
 * frames, the frames that could not be read (`bad`) and all `frames`: ok (at least 10 read and at
 * most a tenth unreadable), samples, unreadable_frames, and median / p95 / min / max in ms, each
 * through `round`.
 */
export const clockResult = (g, bad, frames, round) => ({
  ok: g.n >= 10 && bad <= frames / 10,
  samples: g.n,
  unreadable_frames: bad,
  median_ms: round(g.median),
  p95_ms: round(g.p95),
  min_ms: round(g.min),
  max_ms: round(g.max),
});

/**
 * Runs in the page: the reader of the capture time the publisher burns into every frame, a strip
 * of `block`-pixel squares in the top-left corner of `video`: square i (0..23) white when bit i of
 * (epoch milliseconds mod 2^24) is set, then one always-white and one always-black square (a
 * sanity check). `read(wall)` draws the frame shown now onto a canvas, decodes the capture time
 * (threshold halfway between the check squares) and returns `wall` minus it in ms, or null when
 * the strip cannot be read (or the result is over 60 s). Self-contained: Playwright serializes a
 * function, so pass `String(frameClockReader)` into page.evaluate and eval it there.
 */
export function frameClockReader(video, block) {
  const BITS = 24;
  const MOD = 1 << BITS;
  const canvas = document.createElement('canvas');
  canvas.width = (BITS + 2) * block;
  canvas.height = block;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
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
  return (wall) => {
    ctx.drawImage(video, 0, 0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const white = level(data, BITS);
    const black = level(data, BITS + 1);
    if (!(white > 170 && black < 80)) return null;
    const mid = (white + black) / 2;
    let value = 0;
    for (let i = 0; i < BITS; i++) if (level(data, i) > mid) value += 2 ** i;
    const latency = ((((wall % MOD) - value) % MOD) + MOD) % MOD;
    return latency > 60000 ? null : latency;
  };
}
