// Shared by the browser scripts (tests/browser/*.mjs, bench/*.mjs, bench/webrtc/webrtc.mjs,
// crates/webrtc/tests/whep_client.mjs): Chromium flags and launch, command-line parsing, WebRTC
// stats from a page, and the frame of the command-driven scripts (chat.mjs, app.mjs). Needs
// nothing but Node: playwright-core is loaded only by loadChromium() (the command-driven scripts
// pass their own `chromium` to pageSession).

/** The Chromium binary every script uses unless told otherwise (--chromium): Debian's. */
export const CHROMIUM_PATH = process.env.ONAIR_CHROMIUM || '/usr/bin/chromium';

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
 * Options of `chromium.launch` (or `launchServer`) for the headless browser `executablePath` with
 * CHROMIUM_ARGS; with `timeoutMs` (floored at 1 s) as the launch timeout, else Playwright's.
 */
export function launchOptions(executablePath, timeoutMs) {
  const options = { executablePath, args: CHROMIUM_ARGS };
  if (timeoutMs !== undefined) options.timeout = Math.max(1000, timeoutMs);
  return options;
}

/**
 * playwright-core's `chromium`, for scripts outside tests/browser: the copy installed here
 * (tests/browser/node_modules), unless ONAIR_PLAYWRIGHT names another playwright-core directory.
 */
export async function loadChromium() {
  const dir = process.env.ONAIR_PLAYWRIGHT;
  const mod = dir
    ? await import(new URL('index.mjs', 'file://' + dir.replace(/\/?$/, '/')).href)
    : await import('playwright-core');
  return mod.chromium || mod.default.chromium;
}

/** Closes a page or a browser, giving up (without an error) after `ms`. */
export const closeWithin = (closable, ms) => Promise.race([closable.close().catch(() => undefined), sleep(ms)]);

/** The first line of an error's message (what the scripts report as `reason`). */
export const errorText = (e) => (e && e.message ? e.message.split('\n')[0] : String(e));

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

/** Value parsers for parseFlags: each gets the value (undefined when missing) and the flag. */
export const numberArg =
  (min = -Infinity) =>
  (v, flag) => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min) throw new Error(`${flag} needs a number`);
    return n;
  };
export const textArg = (v, flag) => {
  if (v === undefined) throw new Error(`${flag} needs a value`);
  return v;
};
export const choiceArg = (choices) => (v, flag) => {
  if (!choices.includes(v)) throw new Error(`${flag} needs one of ${choices.join('|')}`);
  return v;
};
export const viewportArg = (v, flag) => {
  const m = /^(\d+)x(\d+)$/.exec(v ?? '');
  if (!m) throw new Error(`${flag} needs WxH`);
  return { width: Number(m[1]), height: Number(m[2]) };
};

/**
 * Parses `argv` into `opts` (which holds the defaults) and returns it. `flags` maps each flag to
 * `[key, parse]`: `parse` is `true` for a switch (sets true, takes no value), else a value parser
 * (above; it throws on a bad value); a value is inline (`--flag=v`) or the next argument.
 * `positionals` are `[key, parse, name]` in order: the other arguments, each required (`missing
 * <name>`). An unknown `--flag` or one argument too many throws `unexpected argument: <arg>`;
 * -h/--help prints `usage` on stderr and exits 2.
 */
export function parseFlags(argv, usage, opts, flags, positionals) {
  let next = 0; // the next positional
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const [flag, inline] = a.startsWith('--') && eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    if (flag === '-h' || flag === '--help') {
      process.stderr.write(usage + '\n');
      process.exit(2);
    }
    if (Object.hasOwn(flags, flag)) {
      const [key, parse] = flags[flag];
      opts[key] = parse === true ? true : parse(inline !== undefined ? inline : argv[++i], flag);
    } else if (a.startsWith('--') || next >= positionals.length) {
      throw new Error(`unexpected argument: ${a}`);
    } else {
      const [key, parse] = positionals[next++];
      opts[key] = parse(a, key);
    }
  }
  for (const [key, , name] of positionals) {
    if (opts[key] === null || opts[key] === undefined || opts[key] === '') throw new Error(`missing ${name}`);
  }
  return opts;
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
  /** Prints `result()` and exits 1 after `ms`, in case the browser hangs (launch and close included). */
  const hardStop = (ms, result) => {
    setTimeout(() => {
      finish(result(), 1);
      process.exit(1);
    }, ms).unref();
  };
  /** Runs `main` and exits with the code it returns (else the one `finish` set). */
  const exitAfter = async (main) => {
    const code = await main();
    process.exit(code ?? process.exitCode ?? 1);
  };
  return { opts, t0, elapsed, log, finish, hardStop, exitAfter };
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
      answer({ ok: false, op: cmd.op, reason: errorText(e), state: details });
    }
    if (cmd.op === 'close') break;
  }
}

// ---------- the command-driven page scripts (chat.mjs, app.mjs) ----------

/**
 * The arguments and frame (scriptFrame) of a command-driven page script: the flags all of them
 * take (--chromium PATH, --viewport WxH, default 1280x720, --verbose) plus `flags` over
 * `defaults`; `check(opts)` may throw to refuse a combination (`bad arguments: ...`, exit 2).
 */
export function pageScriptFrame(name, usage, { defaults = {}, flags = {}, check } = {}) {
  return scriptFrame(name, usage, (argv) => {
    const opts = parseFlags(
      argv,
      usage,
      { chromium: CHROMIUM_PATH, viewport: { width: 1280, height: 720 }, verbose: false, ...defaults },
      { '--chromium': ['chromium', textArg], '--viewport': ['viewport', viewportArg], '--verbose': ['verbose', true], ...flags },
      [],
    );
    if (check) check(opts);
    return opts;
  });
}

/** The `timeout` of a command (ms), default 20000. */
export const commandTimeout = (cmd) => (typeof cmd.timeout === 'number' ? cmd.timeout : 20000);

/**
 * Polls `fn` (async, returns a value or undefined/false) every 100 ms until truthy or timeout;
 * the timeout error (with `timeout: true`) names `what` and the last error `fn` threw.
 */
export async function until(what, timeout, fn) {
  const deadline = Date.now() + timeout;
  let lastErr = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e; // navigation in progress and the like
    }
    if (Date.now() > deadline) {
      const err = new Error(`timeout after ${timeout} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr.message.split('\n')[0]})` : ''}`);
      err.timeout = true;
      throw err;
    }
    await sleep(100);
  }
}

/**
 * The browser of a command-driven page script: `chromium` (playwright-core's) launched with
 * `opts.chromium` and one context of `opts.viewport`, holding at most one page. `ensurePage()`
 * opens it on first use, collects its console errors (not "Failed to load resource") and page
 * errors (50 of each at most; console messages are logged with --verbose) and runs
 * `setup(page)` on it. `serve(run, state)` answers the commands (serveCommands) and then closes
 * the page and the browser (giving up after 2 s and 5 s).
 */
export async function pageSession(chromium, opts, log, setup = async () => {}) {
  const browser = await chromium.launch(launchOptions(opts.chromium, 30000));
  const context = await browser.newContext({ viewport: opts.viewport });
  const consoleErrors = [];
  const pageErrors = [];
  let page = null;
  const ensurePage = async () => {
    if (page) return page;
    page = await context.newPage();
    page.on('console', (msg) => {
      if (opts.verbose) log(`console ${msg.type()}:`, msg.text());
      if (msg.type() === 'error' && !/^Failed to load resource/.test(msg.text()) && consoleErrors.length < 50) {
        consoleErrors.push(msg.text());
      }
    });
    page.on('pageerror', (err) => {
      if (pageErrors.length < 50) pageErrors.push(String(err && err.message ? err.message : err));
    });
    await setup(page);
    return page;
  };
  const serve = async (run, state) => {
    await serveCommands(run, state, log);
    if (page) await closeWithin(page, 2000);
    await closeWithin(browser, 5000);
  };
  return { browser, context, ensurePage, consoleErrors, pageErrors, serve };
}

/**
 * The ops every command-driven page script has, for its `run` to fall back to: state (answers
 * `state()`), until (`js` truthy in the page; answers its value), screenshot (`path`), close;
 * any other op is unknown.
 */
export async function commonPageOp(cmd, { ensurePage, state }) {
  const timeout = commandTimeout(cmd);
  switch (cmd.op) {
    case 'state':
      return { state: await state() };
    case 'until': {
      const p = await ensurePage();
      const value = await until(cmd.js, timeout, () => p.evaluate(cmd.js));
      return { value };
    }
    case 'screenshot': {
      const p = await ensurePage();
      await p.screenshot({ path: cmd.path, timeout });
      return { path: cmd.path };
    }
    case 'close':
      return {};
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

/**
 * The waitPlaying op: until `probe` (a page function answering `{state, t, w}`: the player's
 * state, the video's currentTime and videoWidth) shows it playing, with a picture, `minAdvance`
 * (default 2) seconds past the first playing time seen. Answers `{video, transport}` (`transport`:
 * the page function's value after).
 */
export async function waitPlaying(page, cmd, what, probe, transport) {
  const minAdvance = typeof cmd.minAdvance === 'number' ? cmd.minAdvance : 2;
  let base = null;
  const v = await until(what, commandTimeout(cmd), async () => {
    const s = await page.evaluate(probe);
    if (s.state !== 'playing') return null;
    if (base === null || s.t < base) base = s.t;
    return s.t - base >= minAdvance && s.w > 0 ? s : null;
  });
  return { video: v, transport: await page.evaluate(transport) };
}
