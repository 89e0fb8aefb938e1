#!/usr/bin/env node
// A blog on another HTTPS origin embeds OnAir's player: this script serves that page itself
// (Node's https, on 127.0.0.1 with the certificate it is given), whose <iframe> shows OnAir's
// `https://…/embed/<stream>`, opens it in headless Chromium trusting the test CA (by the CA's
// public-key hash: --ignore-certificate-errors-spki-list), and checks that the embedded player
// plays, over which transport, and that no request of the page or the frame was plain http and
// no mixed-content warning was printed.
//
//   node embed_https.mjs <embed-url> <cert.pem> <key.pem> <ca-spki-sha256-base64> [--timeout MS]
//
// Prints one JSON line: {"ok":true,"transport":"webrtc"|"llhls",…} or {"ok":false,"reason":…};
// exit 1 on failure.

import fs from 'node:fs';
import https from 'node:https';
import { CHROMIUM_PATH, closeWithin, errorText, launchOptions, loadChromium, sleep } from './common.mjs';

const [embedUrl, certFile, keyFile, spki, ...rest] = process.argv.slice(2);
const timeoutArg = rest.indexOf('--timeout');
const timeout = timeoutArg >= 0 ? Number(rest[timeoutArg + 1]) : 30000;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  if (!embedUrl || !spki) throw new Error('usage: node embed_https.mjs <embed-url> <cert> <key> <ca-spki> [--timeout MS]');
  const blog = `<!doctype html><html><head><meta charset="utf-8"><title>A blog</title></head><body>
<h1>My stream, embedded</h1>
<iframe id="onair" src="${embedUrl}" width="640" height="360" allow="autoplay; fullscreen" style="border:0"></iframe>
</body></html>`;
  const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) }, (req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(blog);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const pageUrl = `https://127.0.0.1:${server.address().port}/`;

  const chromium = await loadChromium();
  const options = launchOptions(CHROMIUM_PATH, timeout);
  options.args = [...options.args, `--ignore-certificate-errors-spki-list=${spki}`];
  const browser = await chromium.launch(options);
  const insecure = [];
  const mixed = [];
  const consoleErrors = [];
  try {
    const page = await browser.newPage();
    page.on('request', (r) => {
      const u = r.url();
      if (u.startsWith('http://') || u.startsWith('ws://')) insecure.push(u);
    });
    page.on('console', (m) => {
      const text = m.text();
      if (/mixed content/i.test(text)) mixed.push(text);
      if (m.type() === 'error') consoleErrors.push(text);
    });
    await page.goto(pageUrl, { timeout });
    const deadline = Date.now() + timeout;
    let frame = null;
    while (!frame && Date.now() < deadline) {
      frame = page.frames().find((f) => f.url().startsWith(embedUrl.split('?')[0]));
      if (!frame) await sleep(100);
    }
    if (!frame) throw new Error('the embed frame never loaded');
    let first = null;
    let last = null;
    while (Date.now() < deadline) {
      last = await frame.evaluate(() => {
        const v = document.querySelector('video');
        return {
          state: document.body ? document.body.dataset.state || null : null,
          transport: document.body ? document.body.dataset.transport || null : null,
          currentTime: v ? v.currentTime : 0,
          width: v ? v.videoWidth : 0,
          secure: window.isSecureContext,
          origin: location.origin,
        };
      });
      if (last.state === 'playing' && last.width > 0) {
        first ??= last;
        if (last.currentTime - first.currentTime >= 2) break;
      }
      await sleep(250);
    }
    const played = first !== null && last.currentTime - first.currentTime >= 2;
    const ok = played && insecure.length === 0 && mixed.length === 0;
    out({
      ok,
      reason: ok
        ? undefined
        : !played
          ? `the embedded player did not play (last: ${JSON.stringify(last)})`
          : `insecure requests or mixed content: ${JSON.stringify({ insecure, mixed })}`,
      page: pageUrl,
      frameOrigin: last ? last.origin : null,
      secureContext: last ? last.secure : null,
      transport: last ? last.transport : null,
      advanced: first && last ? last.currentTime - first.currentTime : 0,
      width: last ? last.width : 0,
      insecureRequests: insecure,
      mixedContent: mixed,
      consoleErrors,
    });
    process.exitCode = ok ? 0 : 1;
  } finally {
    await closeWithin(browser, 5000);
    server.close();
  }
}

main().catch((e) => {
  out({ ok: false, reason: errorText(e) });
  process.exitCode = 1;
});
