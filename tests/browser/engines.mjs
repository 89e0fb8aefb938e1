#!/usr/bin/env node
// Open an OnAir page several times in a browser engine other than Chromium and check that every
// page load plays: Firefox ESR (puppeteer-core over WebDriver BiDi) or WebKitGTK (Debian's
// MiniBrowser driven by WebKitWebDriver, W3C WebDriver over HTTP, under an Xvfb this script
// starts itself). Both play LL-HLS through hls.js (MSE): neither offers WebRTC H.264 here.
//
//   node engines.mjs <url> --engine firefox|webkit [--loads N (4)] [--alternate URL]
//                    [--min-advance S (5)] [--max-stall MS (3000)] [--load-timeout MS (30000)]
//                    [--hang-retries N (1)] [--simulate-hang] [--verbose]
//
// With --alternate, every second load opens that URL instead (e.g. the embed page).
// A load passes when, within --load-timeout of its navigation, the page says `playing`,
// video.currentTime advanced by --min-advance seconds since then, videoWidth > 0, and
// currentTime never stood still for longer than --max-stall ms after it first moved (a player
// that is stuck at the start never moves: the timeout catches it; one that stops after a few
// seconds stalls). Prints exactly one JSON line on stdout: {"ok", "engine", "loads": [...]};
// exit code 0 when every load passed, 1 otherwise, 2 on bad arguments. A missing browser,
// driver or Xvfb is a failure, never a skip. See README.md.
//
// WebKitGTK only: a load whose page stops answering WebDriver (its web process deadlocked inside
// GStreamer, a browser bug: docs/llhls.md) is listed in "browserHangs" and made again in a new
// browser, at most --hang-retries times per run; the load made again must play. --simulate-hang
// stops the web processes (SIGSTOP) during the first load, to check that path.

import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { choiceArg, errorText, numberArg, parseFlags, scriptFrame, sleep, textArg } from './common.mjs';

const USAGE =
  'usage: node engines.mjs <url> --engine firefox|webkit [--loads N (4)] [--alternate URL] [--min-advance S (5)] ' +
  '[--max-stall MS (3000)] [--load-timeout MS (30000)] [--hang-retries N (1)] [--simulate-hang] [--verbose]';

export const FIREFOX_PATH = '/usr/bin/firefox-esr';
export const WEBKIT_DRIVER = '/usr/bin/WebKitWebDriver';
export const MINIBROWSER = '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';
const XVFB = '/usr/bin/Xvfb';

function parseArgs(argv) {
  const number = numberArg(0);
  return parseFlags(
    argv,
    USAGE,
    {
      url: null,
      alternate: null,
      engine: null,
      loads: 4,
      minAdvance: 5,
      maxStall: 3000,
      loadTimeout: 30000,
      hangRetries: 1,
      simulateHang: false,
      verbose: !!process.env.ONAIR_ENGINES_VERBOSE,
    },
    {
      '--engine': ['engine', choiceArg(['firefox', 'webkit'])],
      '--alternate': ['alternate', textArg],
      '--loads': ['loads', numberArg(1)],
      '--min-advance': ['minAdvance', number],
      '--max-stall': ['maxStall', number],
      '--load-timeout': ['loadTimeout', number],
      '--hang-retries': ['hangRetries', number],
      '--simulate-hang': ['simulateHang', true],
      '--verbose': ['verbose', true],
    },
    [['url', textArg, '<url>']],
  );
}

const { opts, log, finish, hardStop, exitAfter } = scriptFrame('engines', USAGE, parseArgs, { withElapsed: true });
if (!opts.engine) {
  finish({ ok: false, reason: 'bad arguments: --engine is required' }, 2);
  process.exit(2);
}

const loads = [];
/** WebKitGTK loads whose web process hung and that a new browser made again (--hang-retries). */
const browserHangs = [];
/** The URL of load `i`. */
const urlOf = (i) => (opts.alternate && i % 2 === 1 ? opts.alternate : opts.url);
hardStop((opts.loads + opts.hangRetries) * (opts.loadTimeout + 30000) + 30000, () => ({
  ok: false,
  engine: opts.engine,
  reason: 'hard timeout (browser hung)',
  loads,
  browserHangs,
}));

/**
 * Runs in the page (as a function body: WebDriver sends it as text): what the player shows, and
 * hls.js errors since the load (recorded by a listener hooked on each hls.js instance).
 */
const SAMPLE = `
  const v = (window.onair && window.onair.video) || document.querySelector('video');
  const hls = window.onair ? window.onair.hls : null;
  window.__onairHlsErrors = window.__onairHlsErrors || [];
  if (hls && !hls.__onairHooked) {
    hls.__onairHooked = true;
    hls.on('hlsError', (_e, d) => {
      if (window.__onairHlsErrors.length < 20)
        window.__onairHlsErrors.push((d.fatal ? 'fatal ' : '') + d.type + ': ' + d.details);
    });
  }
  // The media element's events since the load (how a stall came about: e.g. WebKitGTK's
  // ratechange → pause that found the cause of issue 9's stall).
  window.__onairEvents = window.__onairEvents || [];
  if (v && !v.__onairHooked) {
    v.__onairHooked = true;
    for (const type of ['play', 'playing', 'pause', 'waiting', 'stalled', 'seeking', 'seeked', 'ratechange', 'emptied']) {
      v.addEventListener(type, () => {
        if (window.__onairEvents.length < 60)
          window.__onairEvents.push(type + '@' + Math.round(performance.now()) + ' t=' + v.currentTime.toFixed(3) +
            ' readyState=' + v.readyState + ' rate=' + v.playbackRate);
      });
    }
  }
  const b = v && v.buffered && v.buffered.length ? v.buffered : null;
  return {
    state: document.body ? document.body.dataset.state || null : null,
    transport: document.body ? document.body.dataset.transport || null : null,
    currentTime: v ? v.currentTime : null,
    paused: v ? v.paused : null,
    readyState: v ? v.readyState : null,
    videoWidth: v ? v.videoWidth : 0,
    bufferedEnd: b ? b.end(b.length - 1) : null,
    bufferedRanges: b ? b.length : 0,
    latency: hls && Number.isFinite(hls.latency) ? hls.latency : null,
    hlsErrors: window.__onairHlsErrors.slice(),
    events: window.__onairEvents.slice(),
    userAgent: navigator.userAgent,
  };
`;

/** Polls one page load (navigated by `navigate`, sampled by `sample`) until it passes or fails. */
async function watchLoad(index, navigate, sample) {
  const started = Date.now();
  const deadline = started + opts.loadTimeout;
  const load = { index, url: urlOf(index), ok: false };
  const states = [];
  let baseline = null; // currentTime when the page first said playing
  let lastTime = null;
  let lastMoveAt = null; // when currentTime last changed (after it first moved)
  let longestStallMs = 0;
  let last = null;
  try {
    await navigate();
    while (Date.now() < deadline) {
      const s = await sample();
      last = s;
      if (s.state && states[states.length - 1] !== s.state) {
        states.push(s.state);
        log(`load ${index}: state ${s.state} (${s.transport})`);
      }
      const now = Date.now();
      if (s.state === 'playing' && baseline === null && typeof s.currentTime === 'number') {
        baseline = s.currentTime;
        load.playingAfterMs = now - started;
      }
      if (typeof s.currentTime === 'number') {
        if (lastTime !== null && s.currentTime !== lastTime) {
          if (lastMoveAt !== null) longestStallMs = Math.max(longestStallMs, now - lastMoveAt);
          lastMoveAt = now;
        }
        lastTime = s.currentTime;
      }
      const stalledFor = lastMoveAt === null ? 0 : now - lastMoveAt;
      const advanced = baseline === null ? 0 : s.currentTime - baseline;
      if (stalledFor > opts.maxStall) {
        load.reason = `stalled for ${stalledFor} ms at currentTime ${s.currentTime} (advanced ${advanced.toFixed(3)})`;
        longestStallMs = Math.max(longestStallMs, stalledFor);
        break;
      }
      if (baseline !== null && advanced >= opts.minAdvance && s.videoWidth > 0) {
        load.ok = true;
        break;
      }
      await sleep(250);
    }
    if (!load.ok && !load.reason) {
      load.reason =
        baseline === null
          ? `never played within ${opts.loadTimeout} ms (state ${last && last.state})`
          : `advanced only ${(last.currentTime - baseline).toFixed(3)} s within ${opts.loadTimeout} ms`;
    }
  } catch (e) {
    load.reason = errorText(e);
  }
  Object.assign(load, {
    advanced: baseline === null || !last ? 0 : Number((last.currentTime - baseline).toFixed(3)),
    longestStallMs,
    states,
    last,
    elapsedMs: Date.now() - started,
  });
  log(`load ${index}: ${load.ok ? 'ok' : 'FAILED: ' + load.reason}`);
  return load;
}

// ---- Firefox ESR: puppeteer-core over WebDriver BiDi -------------------------------------------

async function runFirefox() {
  if (!existsSync(FIREFOX_PATH)) throw new Error(`${FIREFOX_PATH} is missing: apt-get install firefox-esr`);
  const puppeteer = (await import('puppeteer-core')).default;
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX_PATH,
    headless: true,
    extraPrefsFirefox: { 'media.autoplay.default': 0, 'media.autoplay.blocking_policy': 0 },
  });
  try {
    for (let i = 0; i < opts.loads; i++) {
      const page = await browser.newPage();
      try {
        loads.push(
          await watchLoad(
            i,
            () => page.goto(urlOf(i), { waitUntil: 'domcontentloaded', timeout: opts.loadTimeout }),
            () => page.evaluate(new Function(SAMPLE)),
          ),
        );
      } finally {
        await page.close().catch(() => undefined);
      }
    }
  } finally {
    await Promise.race([browser.close().catch(() => undefined), sleep(5000)]);
  }
}

// ---- WebKitGTK: MiniBrowser through WebKitWebDriver (W3C WebDriver over HTTP) -------------------

const children = [];
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts Xvfb on a free display (it prints the number it chose); returns `:N`. */
function startXvfb() {
  if (!existsSync(XVFB)) throw new Error(`${XVFB} is missing: apt-get install xvfb`);
  return new Promise((resolve, reject) => {
    const x = spawn(XVFB, ['-displayfd', '1', '-nolisten', 'tcp', '-screen', '0', '1280x720x24'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    children.push(x);
    let out = '';
    const timer = setTimeout(() => reject(new Error('Xvfb did not report a display within 10 s')), 10000);
    x.on('exit', (code) => reject(new Error(`Xvfb exited (${code})`)));
    x.stdout.on('data', (d) => {
      out += d;
      const m = /^(\d+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(`:${m[1]}`);
      }
    });
  });
}

async function webdriver(base, method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(20000),
  });
  const v = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`WebDriver ${method} ${path}: HTTP ${r.status} ${JSON.stringify(v.value || v)}`);
  return v.value;
}

/**
 * Diagnostics (ONAIR_ENGINES_BACKTRACE=FILE, needs gdb): appends every thread's backtrace of each
 * of the browser's web processes (`pids`) to FILE, taken while a failed load still hangs.
 */
function backtraces(index, pids, file) {
  for (const pid of pids) {
    let out;
    try {
      out = execFileSync('gdb', ['-p', pid, '-batch', '-ex', 'thread apply all bt'], {
        encoding: 'utf8',
        timeout: 60000,
        maxBuffer: 64 << 20,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      out = `gdb failed: ${errorText(e)}`;
    }
    appendFileSync(file, `==== load ${index}: WebKitWebProcess ${pid}\n${out}\n`);
  }
  log(`load ${index}: backtraces of ${pids.length} web process(es) in ${file}`);
}

/** PID and every descendant of it (from /proc, via `ps`). */
function processTree(pid) {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    try {
      const kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(all[i])], { encoding: 'utf8' });
      all.push(...kids.split(/\s+/).filter(Boolean).map(Number));
    } catch {
      /* no children */
    }
  }
  return all;
}

/**
 * One browser: WebKitWebDriver on a free port and a MiniBrowser session on `display`.
 * `stop()` ends the session and kills the driver, the browser and its web processes.
 */
async function startWebKit(display) {
  const port = await freePort();
  const driver = spawn(WEBKIT_DRIVER, [`--port=${port}`], {
    stdio: ['ignore', 'ignore', opts.verbose ? 'inherit' : 'ignore'],
    env: { ...process.env, DISPLAY: display },
  });
  children.push(driver);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ready = await webdriver(base, 'GET', '/status').then(
      (v) => v && v.ready,
      () => false,
    );
    if (ready) break;
    if (i > 50) throw new Error('WebKitWebDriver did not become ready within 10 s');
    await sleep(200);
  }
  const session = await webdriver(base, 'POST', '/session', {
    capabilities: {
      alwaysMatch: { 'webkitgtk:browserOptions': { binary: MINIBROWSER, args: ['--automation'] } },
    },
  });
  const sid = session.sessionId;
  log('WebDriver session', sid, JSON.stringify(session.capabilities && session.capabilities.browserVersion));
  return {
    call: (method, path, body) => webdriver(base, method, `/session/${sid}${path}`, body),
    /** The browser's web processes (WebKitWebProcess), for backtraces and --simulate-hang. */
    webProcesses: () =>
      processTree(driver.pid).filter((pid) => {
        try {
          return execFileSync('ps', ['-o', 'comm=', '-p', String(pid)], { encoding: 'utf8' }).startsWith('WebKitWebProces');
        } catch {
          return false;
        }
      }),
    async stop() {
      await Promise.race([webdriver(base, 'DELETE', `/session/${sid}`).catch(() => undefined), sleep(3000)]);
      for (const pid of processTree(driver.pid).reverse()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    },
  };
}

/** A load failed because the page stopped answering WebDriver: the web process hung. */
const webProcessHung = (load) => !load.ok && /aborted due to timeout/.test(load.reason || '');

async function runWebKit() {
  for (const f of [WEBKIT_DRIVER, MINIBROWSER]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: apt-get install webkit2gtk-driver`);
  }
  const display = await startXvfb();
  log('Xvfb on', display);
  let browser = await startWebKit(display);
  let simulateHang = opts.simulateHang;
  try {
    for (let i = 0; i < opts.loads; i++) {
      const load = await watchLoad(
        i,
        async () => {
          // A blank page in between, so every load starts a fresh player.
          await browser.call('POST', '/url', { url: 'about:blank' });
          await browser.call('POST', '/url', { url: urlOf(i) });
          if (simulateHang) {
            simulateHang = false;
            for (const pid of browser.webProcesses()) process.kill(pid, 'SIGSTOP');
            log(`load ${i}: web processes stopped (--simulate-hang)`);
          }
        },
        () => browser.call('POST', '/execute/sync', { script: SAMPLE, args: [] }),
      );
      if (!load.ok && process.env.ONAIR_ENGINES_BACKTRACE) {
        backtraces(i, browser.webProcesses(), process.env.ONAIR_ENGINES_BACKTRACE);
      }
      if (webProcessHung(load) && browserHangs.length < opts.hangRetries) {
        // WebKitGTK's web process can deadlock inside GStreamer at the start of a load (its main
        // thread in a flush, the source's streaming thread waiting for the main thread; docs/
        // llhls.md). That is the browser's bug, not the page's: note it, start a new browser and
        // make this load again, which must play. A second hang fails the run.
        browserHangs.push({ index: i, reason: load.reason, last: load.last });
        log(`load ${i}: the web process hung; a new browser makes the load again`);
        await browser.stop();
        browser = await startWebKit(display);
        i--;
        continue;
      }
      loads.push(load);
    }
  } finally {
    await browser.stop();
  }
}

exitAfter(async () => {
  try {
    await (opts.engine === 'firefox' ? runFirefox() : runWebKit());
  } catch (e) {
    return finish({ ok: false, engine: opts.engine, reason: errorText(e), loads, browserHangs }, 1);
  }
  const ok = loads.length === opts.loads && loads.every((l) => l.ok);
  return finish(
    {
      ok,
      engine: opts.engine,
      played: loads.filter((l) => l.ok).length,
      reason: ok ? undefined : loads.filter((l) => !l.ok).map((l) => `load ${l.index}: ${l.reason}`).join('; '),
      loads,
      browserHangs,
    },
    ok ? 0 : 1,
  );
});
