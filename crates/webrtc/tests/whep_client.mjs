#!/usr/bin/env node
// Headless Chromium as WHEP player(s) for the onair-webrtc tests.
//
//   node whep_client.mjs <page-url> <whep-url> [--viewers N (1)] [--min-frames N (30)]
//        [--expect-width W] [--timeout MS (30000)] [--end close|delete|none|kill (close)]
//        [--tcp-only] [--want-sync] [--no-audio] [--hold MS (0)] [--chromium PATH]
//
// Opens <page-url> (same origin as <whep-url>), then per viewer: RTCPeerConnection with recvonly
// video + audio, createOffer, POST application/sdp to <whep-url>, setRemoteDescription(answer),
// and polls getStats() until framesDecoded > --min-frames and (if given) frameWidth == W and
// audio packets arrived (unless --no-audio) (--want-sync: and Chromium estimates both tracks' playout times from
// the RTCP sender reports, giving avSyncDeltaMs = video − audio). --tcp-only drops the answer's UDP candidates so ICE-TCP must be used.
// --end: close = pc.close() only; delete = HTTP DELETE of the session then pc.close(); none =
// leave the page open until the process exits; kill = SIGKILL the browser (the player vanishes). Prints one JSON line:
//   {"ok":true,"viewers":[{"ok":true,"framesDecoded":..,"frameWidth":..,...}],...}
// playwright-core comes from tests/browser/node_modules of the repository (tests/browser/common.mjs).

import { CHROMIUM_PATH, launchOptions, loadChromium } from '../../../tests/browser/common.mjs';

const chromium = await loadChromium();

const argv = process.argv.slice(2);
const opts = {
  page: argv[0],
  whep: argv[1],
  viewers: 1,
  minFrames: 30,
  expectWidth: null,
  timeout: 30000,
  end: 'close',
  tcpOnly: false,
  hold: 0,
  wantSync: false,
  noAudio: false,
  chromium: CHROMIUM_PATH,
};
for (let i = 2; i < argv.length; i++) {
  const a = argv[i];
  const next = () => argv[++i];
  if (a === '--viewers') opts.viewers = Number(next());
  else if (a === '--min-frames') opts.minFrames = Number(next());
  else if (a === '--expect-width') opts.expectWidth = Number(next());
  else if (a === '--timeout') opts.timeout = Number(next());
  else if (a === '--end') opts.end = next();
  else if (a === '--tcp-only') opts.tcpOnly = true;
  else if (a === '--hold') opts.hold = Number(next());
  else if (a === '--want-sync') opts.wantSync = true;
  else if (a === '--no-audio') opts.noAudio = true;
  else if (a === '--chromium') opts.chromium = next();
  else throw new Error(`unknown argument ${a}`);
}
if (!opts.page || !opts.whep) {
  console.log(JSON.stringify({ ok: false, reason: 'usage: whep_client.mjs <page-url> <whep-url> [options]' }));
  process.exit(2);
}

const launch = launchOptions(opts.chromium);
// --end kill: SIGKILL the browser once playing (no DTLS close_notify, no more ICE consent).
const server = opts.end === 'kill' ? await chromium.launchServer(launch) : null;
const browser = server ? await chromium.connect(server.wsEndpoint()) : await chromium.launch(launch);
let result;
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  await page.goto(opts.page);
  result = await page.evaluate(async (o) => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    async function viewer(i) {
      const t0 = performance.now();
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      // Play what arrives, as a page would (Chromium estimates playout times only for played media).
      const video = document.createElement('video');
      video.autoplay = true;
      video.playsInline = true;
      document.body.appendChild(video);
      pc.ontrack = (ev) => {
        if (ev.streams[0] && video.srcObject !== ev.streams[0]) {
          video.srcObject = ev.streams[0];
          video.play().catch(() => {});
        }
      };
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const res = await fetch(o.whep, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
      const body = await res.text();
      if (res.status !== 201) {
        pc.close();
        return { ok: false, viewer: i, status: res.status, body };
      }
      const location = res.headers.get('Location');
      let answer = body;
      if (o.tcpOnly) answer = answer.split('\r\n').filter((l) => !/^a=candidate:\S+ \d+ udp /i.test(l)).join('\r\n');
      const h264 = (answer.match(/a=fmtp:\d+ .*profile-level-id=([0-9a-fA-F]{6})/) || [])[1] || null;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      const out = { ok: false, viewer: i, answerProfile: h264, framesDecoded: 0, frameWidth: 0, frameHeight: 0, audioPackets: 0 };
      let firstFrameMs = null;
      const syncSamples = [];
      while (performance.now() - t0 < o.timeout) {
        const stats = await pc.getStats();
        let pair = null;
        const byId = new Map();
        stats.forEach((s) => byId.set(s.id, s));
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') {
            out.framesDecoded = s.framesDecoded || 0;
            out.frameWidth = s.frameWidth || 0;
            out.frameHeight = s.frameHeight || 0;
            out.videoPackets = s.packetsReceived || 0;
            out.videoPacketsLost = s.packetsLost || 0;
            out.framesDropped = s.framesDropped || 0;
            out.decoder = s.decoderImplementation || null;
            out.keyFramesDecoded = s.keyFramesDecoded || 0;
            out.videoPlayoutNtp = s.estimatedPlayoutTimestamp || null;
            out.jitterBufferDelayMs = s.jitterBufferEmittedCount ? Math.round((1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount) : null;
            const codec = byId.get(s.codecId);
            out.videoCodec = codec ? `${codec.mimeType} ${codec.sdpFmtpLine || ''}`.trim() : null;
          }
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            out.audioPackets = s.packetsReceived || 0;
            out.audioPlayoutNtp = s.estimatedPlayoutTimestamp || null;
            const codec = byId.get(s.codecId);
            out.audioCodec = codec ? codec.mimeType : null;
          }
          if (s.type === 'remote-outbound-rtp') out[`${s.kind}SenderReports`] = s.reportsSent || 0;
          if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId);
        });
        if (pair) {
          const local = byId.get(pair.localCandidateId);
          const remote = byId.get(pair.remoteCandidateId);
          out.candidatePair = {
            protocol: remote && remote.protocol,
            remote: remote && `${remote.address}:${remote.port}`,
            remoteTcpType: (remote && remote.tcpType) || null,
            localType: local && local.candidateType,
          };
        }
        // Both tracks' estimated playout time on the sender's NTP clock (from RTCP SR): equal when
        // the player keeps them in sync.
        // One sample is noisy (a frame or an audio packet apart, and Chromium converges on sync
        // over a few seconds): report the median of the last five.
        if (out.videoPlayoutNtp && out.audioPlayoutNtp) syncSamples.push(Math.round(out.videoPlayoutNtp - out.audioPlayoutNtp));
        const recent = syncSamples.slice(-5).sort((a, b) => a - b);
        out.avSyncDeltaMs = recent.length >= 5 ? recent[2] : null;
        out.avSyncSamples = syncSamples.slice(-5);
        if (out.framesDecoded > 0 && firstFrameMs === null) firstFrameMs = Math.round(performance.now() - t0);
        if (out.framesDecoded > o.minFrames && (o.expectWidth === null || out.frameWidth === o.expectWidth) && (o.noAudio || out.audioPackets > 0) && (!o.wantSync || out.avSyncDeltaMs !== null)) {
          out.ok = true;
          break;
        }
        await sleep(200);
      }
      out.firstFrameMs = firstFrameMs;
      out.elapsedMs = Math.round(performance.now() - t0);
      out.connectionState = pc.connectionState;
      if (o.end === 'delete') {
        const del = await fetch(location, { method: 'DELETE' });
        out.deleteStatus = del.status;
      }
      out.videoElement = { width: video.videoWidth, currentTime: Math.round(video.currentTime * 1000) / 1000 };
      if (o.end === 'close' || o.end === 'delete') pc.close();
      else (window.__keep = window.__keep || []).push(pc);
      return out;
    }
    const viewers = await Promise.all(Array.from({ length: o.viewers }, (_, i) => viewer(i)));
    return { ok: viewers.every((v) => v.ok), viewers };
  }, opts);
  result.consoleErrors = consoleErrors;
  if (opts.hold > 0) await new Promise((r) => setTimeout(r, opts.hold));
} catch (e) {
  result = { ok: false, reason: String(e && e.stack ? e.stack : e) };
} finally {
  if (server) {
    server.process().kill('SIGKILL');
    result.killedAt = Date.now();
  } else {
    await browser.close();
  }
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
