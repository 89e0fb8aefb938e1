// Shared by play.mjs and sessions.mjs: Chromium flags and WebRTC stats from a page.

export const CHROMIUM_ARGS = [
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

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs in the page: the digest of `window.onair.pc.getStats()`, or null when
 * there is no peer connection. Self-contained (it is serialized by Playwright).
 */
export async function pageWebRtcStats() {
  const pc = window.onair && window.onair.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  const n = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const out = {
    connectionState: pc.connectionState,
    iceConnectionState: pc.iceConnectionState,
    framesDecoded: 0,
    frameWidth: 0,
    frameHeight: 0,
    audioPacketsReceived: 0,
    videoPacketsReceived: 0,
    videoCodec: null,
    audioCodec: null,
    candidateType: null,
  };
  let pair = null;
  for (const s of byId.values()) {
    if (s.type === 'inbound-rtp') {
      const codec = byId.get(s.codecId);
      if (s.kind === 'video') {
        out.framesDecoded += n(s.framesDecoded);
        out.videoPacketsReceived += n(s.packetsReceived);
        out.frameWidth = Math.max(out.frameWidth, n(s.frameWidth));
        out.frameHeight = Math.max(out.frameHeight, n(s.frameHeight));
        if (codec) out.videoCodec = codec.mimeType;
      } else if (s.kind === 'audio') {
        out.audioPacketsReceived += n(s.packetsReceived);
        if (codec) out.audioCodec = codec.mimeType;
      }
    } else if (s.type === 'transport' && !pair && s.selectedCandidatePairId) {
      pair = byId.get(s.selectedCandidatePairId) || null;
    }
  }
  if (!pair) {
    for (const s of byId.values()) {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        pair = s;
        break;
      }
    }
  }
  if (pair) {
    const local = byId.get(pair.localCandidateId);
    const remote = byId.get(pair.remoteCandidateId);
    out.candidateType = {
      local: local ? local.candidateType : null,
      remote: remote ? remote.candidateType : null,
      protocol: (local && local.protocol) || (remote && remote.protocol) || null,
    };
  }
  return out;
}

/**
 * Two samples of pageWebRtcStats `intervalMs` apart; the second one plus the
 * deltas (`framesDecodedDelta`, `audioPacketsDelta`, `videoPacketsDelta`).
 * Null when the page has no peer connection (at the first sample).
 */
export async function sampleWebRtc(page, intervalMs = 1000) {
  const a = await page.evaluate(pageWebRtcStats);
  if (!a) return null;
  const t0 = Date.now();
  await sleep(intervalMs);
  const b = await page.evaluate(pageWebRtcStats);
  if (!b) return { ...a, closedDuringSampling: true };
  return {
    ...b,
    framesDecodedDelta: b.framesDecoded - a.framesDecoded,
    audioPacketsDelta: b.audioPacketsReceived - a.audioPacketsReceived,
    videoPacketsDelta: b.videoPacketsReceived - a.videoPacketsReceived,
    sampleIntervalMs: Date.now() - t0,
  };
}

/** Stream name of an OnAir page URL (`/demo`, `/embed/demo`, `?stream=demo`). */
export function streamOfPageUrl(url) {
  const u = new URL(url);
  const q = u.searchParams.get('stream');
  if (q) return q;
  const segs = u.pathname.split('/').filter(Boolean);
  return decodeURIComponent(segs[segs.length - 1] || '');
}

/**
 * The command-line frame of a script: parses arguments (bad ones print
 * `{"ok":false,...}` and exit 2), and gives `log` (stderr with --verbose),
 * `elapsed` (ms since start) and `finish` (prints the result JSON once, sets the
 * exit code). `withElapsed` adds `elapsedMs` to the printed result.
 */
export function scriptFrame(name, usage, parseArgs, { withElapsed = false } = {}) {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, reason: `bad arguments: ${e.message}` }) + '\n');
    process.stderr.write(usage + '\n');
    process.exit(2);
  }
  const t0 = Date.now();
  const elapsed = () => Date.now() - t0;
  const log = (...a) => {
    if (opts.verbose) process.stderr.write(`[${name} ${(elapsed() / 1000).toFixed(1)}s] ${a.join(' ')}\n`);
  };
  let printed = false;
  const finish = (result, code) => {
    if (!printed) {
      printed = true;
      process.stdout.write(JSON.stringify(withElapsed ? { ...result, elapsedMs: elapsed() } : result) + '\n');
    }
    process.exitCode = code;
    return code;
  };
  return { opts, t0, elapsed, log, finish };
}

/** One JSON line on stdout: the answer to a command of a command-driven script. */
export const answer = (v) => process.stdout.write(JSON.stringify(v) + '\n');

/**
 * The command loop of chat.mjs and app.mjs: reads JSON commands from stdin, one per line, runs
 * each with `run(cmd)` and answers exactly one JSON line: `{ok: true, op, ms, ...result}` or
 * `{ok: false, op, reason, state}` (`state()` describes the page for the failure report). Returns
 * after `{"op":"close"}` or the end of stdin.
 */
export async function serveCommands(run, state, log = () => {}) {
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      answer({ ok: false, reason: `not JSON: ${e.message}` });
      continue;
    }
    log('>', line);
    const started = Date.now();
    try {
      const out = await run(cmd);
      answer({ ok: true, op: cmd.op, ms: Date.now() - started, ...out });
    } catch (e) {
      let details = null;
      try {
        details = await state();
      } catch {
        // page gone
      }
      answer({ ok: false, op: cmd.op, reason: e && e.message ? e.message.split('\n')[0] : String(e), state: details });
    }
    if (cmd.op === 'close') break;
  }
}
