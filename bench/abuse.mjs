#!/usr/bin/env node
// The attacker of `bench/run.sh abuse` (the same mix as tests/tests/abuse.rs), against an engine
// on loopback: WHEP offers (a real Chromium offer, OFFERS_IN_FLIGHT at a time), idle HTTP
// connections, slowloris ones (a header byte a second) and RTMP connections that never finish
// the handshake — all started at once, each bounded by --hold-s.
//
//   node bench/abuse.mjs <http base URL> <rtmp host:port> <stream> [--offers N] [--idle N]
//                        [--slowloris N] [--rtmp N] [--hold-s S]
//
// Prints one JSON line: the WHEP answers by status, and for each connection kind how long the
// server kept them (median / max seconds; "at once" = closed within 1 s).

import net from 'node:net';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { out, stats } from './common.mjs';

const args = process.argv.slice(2);
const [base, rtmp, stream] = args;
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i < 0 ? dflt : Number(args[i + 1]);
};
if (!base || !rtmp || !stream) {
  process.stderr.write('usage: node bench/abuse.mjs <http base URL> <rtmp host:port> <stream> [--offers N] ...\n');
  process.exit(2);
}
const OFFERS = flag('--offers', 3000);
const OFFERS_IN_FLIGHT = 64;
const IDLE = flag('--idle', 300);
const SLOWLORIS = flag('--slowloris', 300);
const RTMP = flag('--rtmp', 300);
const HOLD_MS = flag('--hold-s', 30) * 1000;

const offer = readFileSync(
  fileURLToPath(new URL('../crates/webrtc/tests/data/chromium156-recvonly-offer.sdp', import.meta.url)),
);
const whep = new URL(`/live/${stream}/whep`, base).href;
const httpUrl = new URL(base);

async function offers() {
  const statuses = {};
  let next = 0;
  const t0 = Date.now();
  const worker = async () => {
    while (next < OFFERS) {
      next++;
      let status = 'error';
      try {
        const res = await fetch(whep, {
          method: 'POST',
          headers: { 'Content-Type': 'application/sdp' },
          body: offer,
          signal: AbortSignal.timeout(HOLD_MS),
        });
        await res.arrayBuffer();
        status = String(res.status);
      } catch {
        // counted as "error"
      }
      statuses[status] = (statuses[status] || 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: OFFERS_IN_FLIGHT }, worker));
  return { statuses, seconds: (Date.now() - t0) / 1000 };
}

/** Resolves to the seconds the server kept a connection (capped at HOLD_MS). */
function held(host, port, trickle) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let done = false;
    let timer = null;
    const finish = () => {
      if (done) return;
      done = true;
      clearInterval(timer);
      sock.destroy();
      resolve((Date.now() - t0) / 1000);
    };
    const sock = net.connect({ host, port });
    sock.on('error', finish);
    sock.on('close', finish);
    sock.on('end', finish);
    sock.on('data', () => {});
    setTimeout(finish, HOLD_MS);
    if (trickle) {
      const head = Buffer.from(`GET /live/${stream}/llhls.m3u8 HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(100)}`);
      let i = 0;
      sock.on('connect', () => {
        timer = setInterval(() => {
          if (i < head.length) sock.write(head.subarray(i, ++i));
        }, 1000);
      });
    }
  });
}

const summary = (xs) => {
  const g = stats(xs);
  return {
    n: g.n,
    median_s: Math.round(g.median * 10) / 10,
    max_s: Math.round(g.max * 10) / 10,
    at_once: xs.filter((x) => x < 1).length,
  };
};

const [rtmpHost, rtmpPort] = [rtmp.slice(0, rtmp.lastIndexOf(':')), Number(rtmp.slice(rtmp.lastIndexOf(':') + 1))];
const t0 = Date.now();
const kinds = [
  ['idle_http', IDLE, () => held(httpUrl.hostname, Number(httpUrl.port), false)],
  ['slowloris', SLOWLORIS, () => held(httpUrl.hostname, Number(httpUrl.port), true)],
  ['rtmp_half_open', RTMP, () => held(rtmpHost, rtmpPort, false)],
];
const conns = kinds.map(([name, n, f]) => Promise.all(Array.from({ length: n }, f)).then((xs) => [name, summary(xs)]));
const [whepResult, ...held_] = await Promise.all([offers(), ...conns]);
out({ ok: true, whep: whepResult, held: Object.fromEntries(held_), seconds: (Date.now() - t0) / 1000 }, 0);
