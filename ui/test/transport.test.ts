// The player's transport decisions (src/transport.ts): WebRTC first, LL-HLS as the fallback,
// B-frame streams on LL-HLS, `?transport=` forcing one, live periods, the retry schedule and the
// stall checks, driven with plain numbers for the clock.

import { describe, expect, it } from 'vitest';
import {
  HEALTH_PROBE_SPACING_MS,
  LOADING_TIMEOUT_MS,
  MAX_RETRY_DELAY_MS,
  MAX_WEBRTC_DROPS,
  QUICK_RETRY_DELAY_MS,
  STALL_CHECK_MS,
  TransportPolicy,
  WEBRTC_FIRST_FRAME_MS,
  WEBRTC_MEDIA_DEAD_MS,
  WEBRTC_MEDIA_STALL_MS,
  afterHlsProbe,
  afterWebRtcProbe,
  hlsCheck,
  playerOptionsFromQuery,
  webRtcCheck,
  type FailedWebRtcAttempt,
} from '../src/transport';

const STUN = { urls: 'stun:stun.example.org:3478' };
const TURN = { urls: ['turn:turn.example.org:3478?transport=udp'], username: 'u', credential: 'p' };

/** A WHEP attempt that failed with `kind`, made without ICE servers and learning none. */
function failed(kind: FailedWebRtcAttempt['kind'], more: Partial<FailedWebRtcAttempt> = {}): FailedWebRtcAttempt {
  return { kind, serverIceRetryAllowed: true, usedIceServers: [], learnedIceServers: null, ...more };
}

describe('playerOptionsFromQuery', () => {
  it('forces LL-HLS with ?transport=hls or llhls, any case', () => {
    expect(playerOptionsFromQuery('?transport=hls')).toEqual({ transport: 'hls' });
    expect(playerOptionsFromQuery('?transport=LLHLS')).toEqual({ transport: 'hls' });
  });

  it('forces relay-only ICE with ?ice=relay', () => {
    expect(playerOptionsFromQuery('?transport=webrtc&ice=relay')).toEqual({
      transport: 'webrtc',
      iceTransportPolicy: 'relay',
    });
    expect(playerOptionsFromQuery('?ice=all')).toEqual({});
  });

  it('forces WebRTC with ?transport=webrtc or whep', () => {
    expect(playerOptionsFromQuery('?transport=webrtc')).toEqual({ transport: 'webrtc' });
    expect(playerOptionsFromQuery('?transport=WHEP')).toEqual({ transport: 'webrtc' });
  });

  it('takes auto, and ignores what it does not know', () => {
    expect(playerOptionsFromQuery('?transport=auto')).toEqual({ transport: 'auto' });
    expect(playerOptionsFromQuery('?transport=dash')).toEqual({});
    expect(playerOptionsFromQuery('')).toEqual({});
  });

  it('reads a positive ?ice-timeout, and only that', () => {
    expect(playerOptionsFromQuery('?ice-timeout=1500&transport=webrtc')).toEqual({
      transport: 'webrtc',
      iceTimeoutMs: 1500,
    });
    for (const bad of ['?ice-timeout=0', '?ice-timeout=-5', '?ice-timeout=soon', '?ice-timeout=', '?ice-timeout=Infinity']) {
      expect(playerOptionsFromQuery(bad)).toEqual({});
    }
  });
});

describe('TransportPolicy: the transport of the next session', () => {
  it('auto: WebRTC first when the browser has it, else HLS', () => {
    expect(new TransportPolicy('auto').next(true)).toBe('webrtc');
    expect(new TransportPolicy('auto').next(false)).toBe('hls');
  });

  it('forced transports ignore failures and what the browser has', () => {
    const hls = new TransportPolicy('hls');
    expect(hls.next(true)).toBe('hls');
    const rtc = new TransportPolicy('webrtc');
    expect(rtc.next(false)).toBe('webrtc');
    expect(rtc.webRtcFailed(failed('http'))).toBe('retry');
    expect(rtc.webRtcDropped()).toBe(false);
    for (let i = 0; i < MAX_WEBRTC_DROPS; i++) rtc.webRtcDropped();
    expect(rtc.next(true)).toBe('webrtc');
    expect(rtc.webRtcBlocked).toBe(false);
  });

  it('auto: a failed WHEP attempt falls back to LL-HLS for the rest of the live period', () => {
    const p = new TransportPolicy('auto');
    for (const kind of ['http', 'network', 'timeout', 'ice'] as const) {
      const q = new TransportPolicy('auto');
      expect(q.webRtcFailed(failed(kind))).toBe('llhls');
      expect(q.next(true)).toBe('hls');
    }
    expect(p.webRtcFailed(failed('unsupported'))).toBe('llhls');
    expect(p.next(true)).toBe('hls');
    expect(p.next(true)).toBe('hls');
  });

  it('auto: a WHEP 503 (the server at a WebRTC limit) plays LL-HLS until the stream restarts', () => {
    // whep.ts reports any answer but 201 as kind 'http' (status 503, the reason in the message).
    const p = new TransportPolicy('auto');
    expect(p.next(true)).toBe('webrtc');
    expect(p.webRtcFailed(failed('http', { learnedIceServers: null }))).toBe('llhls');
    expect(p.webRtcBlocked).toBe(true);
    expect(p.next(true)).toBe('hls');
    p.endLivePeriod();
    expect(p.next(true)).toBe('webrtc');
    // Forced WebRTC waits for the retry delay instead.
    expect(new TransportPolicy('webrtc').webRtcFailed(failed('http'))).toBe('retry');
  });

  it('forced WebRTC in a browser without it gives up instead of retrying', () => {
    expect(new TransportPolicy('webrtc').webRtcFailed(failed('unsupported', { usedIceServers: null }))).toBe(
      'unsupported',
    );
  });

  it('the stream restarting (a new live period) tries WebRTC again', () => {
    const p = new TransportPolicy('auto');
    p.webRtcFailed(failed('timeout'));
    expect(p.next(true)).toBe('hls');
    p.endLivePeriod();
    expect(p.next(true)).toBe('webrtc');
  });
});

describe('TransportPolicy: B-frames', () => {
  it('auto asks /api/streams and plays LL-HLS for a stream with B-frames', () => {
    const p = new TransportPolicy('auto');
    expect(p.checksBframes).toBe(true);
    expect(p.streamInfo({ bframes: true })).toBe(true);
    expect(p.next(true)).toBe('hls');
    p.endLivePeriod();
    expect(p.next(true)).toBe('webrtc');
  });

  it('keeps WebRTC when there are no B-frames or the API did not answer', () => {
    const p = new TransportPolicy('auto');
    expect(p.streamInfo({ bframes: false })).toBe(false);
    expect(p.streamInfo({})).toBe(false);
    expect(p.streamInfo(null)).toBe(false);
    expect(p.next(true)).toBe('webrtc');
  });

  it('is not asked when WebRTC is forced, or B-frame avoidance is off', () => {
    const forced = new TransportPolicy('webrtc');
    expect(forced.checksBframes).toBe(false);
    expect(forced.streamInfo({ bframes: true })).toBe(false);
    expect(forced.next(true)).toBe('webrtc');
    const off = new TransportPolicy('auto', { avoidWebRtcWithBframes: false });
    expect(off.checksBframes).toBe(false);
    expect(off.streamInfo({ bframes: true })).toBe(false);
    expect(off.next(true)).toBe('webrtc');
    expect(new TransportPolicy('hls').checksBframes).toBe(false);
  });
});

describe("TransportPolicy: one more try with the server's ICE servers", () => {
  it('when a timeout or ICE failure learned servers the attempt did not use', () => {
    for (const kind of ['timeout', 'ice'] as const) {
      const p = new TransportPolicy('auto');
      expect(p.webRtcFailed(failed(kind, { learnedIceServers: [STUN, TURN] }))).toBe('retry-with-server-ice');
      expect(p.webRtcBlocked).toBe(false);
      expect(p.next(true)).toBe('webrtc');
    }
  });

  it('not when the attempt already used them (in any order)', () => {
    const p = new TransportPolicy('auto');
    expect(p.webRtcFailed(failed('timeout', { usedIceServers: [TURN, STUN], learnedIceServers: [STUN, TURN] }))).toBe(
      'llhls',
    );
  });

  it('not for the retry itself, other failures, no servers learned, or no peer connection', () => {
    const learned = { learnedIceServers: [STUN] };
    expect(new TransportPolicy().webRtcFailed(failed('timeout', { ...learned, serverIceRetryAllowed: false }))).toBe(
      'llhls',
    );
    expect(new TransportPolicy().webRtcFailed(failed('http', learned))).toBe('llhls');
    expect(new TransportPolicy().webRtcFailed(failed('network', learned))).toBe('llhls');
    expect(new TransportPolicy().webRtcFailed(failed('timeout', { learnedIceServers: [] }))).toBe('llhls');
    expect(new TransportPolicy().webRtcFailed(failed('ice', { ...learned, usedIceServers: null }))).toBe('llhls');
  });

  it('forced WebRTC also retries with them first, then backs off', () => {
    const p = new TransportPolicy('webrtc');
    expect(p.webRtcFailed(failed('ice', { learnedIceServers: [STUN] }))).toBe('retry-with-server-ice');
    expect(p.webRtcFailed(failed('ice', { learnedIceServers: [STUN], usedIceServers: [STUN] }))).toBe('retry');
  });
});

describe('TransportPolicy: lost WebRTC sessions', () => {
  it(`reconnects with WebRTC until ${MAX_WEBRTC_DROPS} sessions were lost in one live period`, () => {
    const p = new TransportPolicy('auto');
    for (let i = 1; i < MAX_WEBRTC_DROPS; i++) {
      expect(p.webRtcDropped()).toBe(false);
      expect(p.next(true)).toBe('webrtc');
    }
    expect(p.webRtcDropped()).toBe(true);
    expect(p.webRtcDrops).toBe(MAX_WEBRTC_DROPS);
    expect(p.next(true)).toBe('hls');
    // Told once: further drops do not announce it again.
    expect(p.webRtcDropped()).toBe(false);
  });

  it('counts drops per live period', () => {
    const p = new TransportPolicy('auto');
    for (let i = 1; i < MAX_WEBRTC_DROPS; i++) p.webRtcDropped();
    p.endLivePeriod();
    expect(p.webRtcDrops).toBe(0);
    expect(p.webRtcDropped()).toBe(false);
    expect(p.next(true)).toBe('webrtc');
  });
});

describe('TransportPolicy: retry schedule', () => {
  it('doubles from twice the poll interval up to the cap', () => {
    const p = new TransportPolicy();
    const delays = Array.from({ length: 6 }, () => p.retryDelayMs(1500, false));
    expect(delays).toEqual([3000, 6000, 12000, MAX_RETRY_DELAY_MS, MAX_RETRY_DELAY_MS, MAX_RETRY_DELAY_MS]);
  });

  it('retries at once after a session that played, then backs off', () => {
    const p = new TransportPolicy();
    expect(p.retryDelayMs(1500, true)).toBe(QUICK_RETRY_DELAY_MS);
    expect(p.retryDelayMs(1500, true)).toBe(6000);
  });

  it('starts over once playback starts (or the stream went offline)', () => {
    const p = new TransportPolicy();
    p.retryDelayMs(1000, false);
    p.retryDelayMs(1000, false);
    p.resetRetries();
    expect(p.retryDelayMs(1000, true)).toBe(QUICK_RETRY_DELAY_MS);
    expect(p.retryDelayMs(1000, false)).toBe(4000);
  });
});

describe('TransportPolicy: is the playlist live?', () => {
  it('2xx is live, anything else offline', () => {
    const p = new TransportPolicy();
    expect(p.wantsPlaylistBody).toBe(false);
    expect(p.playlistAnswer(true)).toBe('live');
    expect(p.playlistAnswer(false)).toBe('offline');
  });

  it('after the stream was played to its end, its lingering finished playlist is not a new stream', () => {
    const p = new TransportPolicy();
    p.streamEnded();
    expect(p.wantsPlaylistBody).toBe(true);
    const finished = '#EXTM3U\n#EXTINF:1,\nseg1.m4s\n#EXT-X-ENDLIST\n';
    expect(p.playlistAnswer(true, finished)).toBe('offline');
    expect(p.playlistAnswer(true, finished)).toBe('offline');
    // The stream restarted: a live playlist again.
    expect(p.playlistAnswer(true, '#EXTM3U\n#EXTINF:1,\nseg1.m4s\n')).toBe('live');
    expect(p.wantsPlaylistBody).toBe(false);
  });

  it('a 404 in between ends the wait for the finished playlist to go', () => {
    const p = new TransportPolicy();
    p.streamEnded();
    expect(p.playlistAnswer(false)).toBe('offline');
    expect(p.wantsPlaylistBody).toBe(false);
    expect(p.playlistAnswer(true)).toBe('live');
  });
});

describe('hlsCheck / afterHlsProbe', () => {
  const base = { now: 100_000, lastProgressAt: 100_000, sessionStartedAt: 90_000, loading: false, lastProbeAt: 0 };

  it('leaves a session that advances alone', () => {
    expect(hlsCheck(base)).toBe('fine');
    expect(hlsCheck({ ...base, lastProgressAt: base.now - STALL_CHECK_MS })).toBe('fine');
  });

  it('probes a session that stopped advancing, at most once per spacing', () => {
    const stalled = { ...base, lastProgressAt: base.now - STALL_CHECK_MS - 1 };
    expect(hlsCheck(stalled)).toBe('probe-stalled');
    expect(hlsCheck({ ...stalled, lastProbeAt: base.now - HEALTH_PROBE_SPACING_MS + 1 })).toBe('fine');
    expect(hlsCheck({ ...stalled, lastProbeAt: base.now - HEALTH_PROBE_SPACING_MS })).toBe('probe-stalled');
  });

  it('probes a session that never started playing', () => {
    const s = { ...base, loading: true, sessionStartedAt: base.now - LOADING_TIMEOUT_MS - 1 };
    expect(hlsCheck(s)).toBe('probe-not-started');
    expect(hlsCheck({ ...s, lastProgressAt: 0 })).toBe('probe-not-started');
    expect(hlsCheck({ ...s, loading: false })).toBe('fine');
  });

  it('the probe says: offline, restart, or wait a while longer', () => {
    expect(afterHlsProbe('probe-stalled', 'offline', STALL_CHECK_MS * 10)).toBe('offline');
    expect(afterHlsProbe('probe-not-started', 'offline', 0)).toBe('offline');
    expect(afterHlsProbe('probe-not-started', 'live', 0)).toBe('restart');
    expect(afterHlsProbe('probe-not-started', 'unknown', 0)).toBe('restart');
    expect(afterHlsProbe('probe-stalled', 'live', STALL_CHECK_MS * 2)).toBe('wait');
    expect(afterHlsProbe('probe-stalled', 'live', STALL_CHECK_MS * 3 + 1)).toBe('restart');
    expect(afterHlsProbe('probe-stalled', 'unknown', STALL_CHECK_MS * 3 + 1)).toBe('restart');
  });
});

describe('webRtcCheck / afterWebRtcProbe', () => {
  const base = { now: 50_000, connectedAt: 40_000, lastMediaAt: 50_000, loading: false, lastProbeAt: 0 };

  it('gives up on WebRTC when connected but no picture for long', () => {
    expect(webRtcCheck({ ...base, loading: true, now: base.connectedAt + WEBRTC_FIRST_FRAME_MS })).toBe('fine');
    expect(webRtcCheck({ ...base, loading: true, now: base.connectedAt + WEBRTC_FIRST_FRAME_MS + 1 })).toBe(
      'no-picture',
    );
  });

  it('probes the playlist when RTP stopped, at most once per spacing', () => {
    expect(webRtcCheck(base)).toBe('fine');
    const silent = { ...base, lastMediaAt: base.now - WEBRTC_MEDIA_STALL_MS };
    expect(webRtcCheck(silent)).toBe('probe');
    expect(webRtcCheck({ ...silent, lastProbeAt: base.now - 1000 })).toBe('fine');
  });

  it('the probe says: offline, reconnect after long silence, or wait', () => {
    expect(afterWebRtcProbe('offline', 0)).toBe('offline');
    expect(afterWebRtcProbe('live', WEBRTC_MEDIA_DEAD_MS)).toBe('wait');
    expect(afterWebRtcProbe('live', WEBRTC_MEDIA_DEAD_MS + 1)).toBe('reconnect');
    expect(afterWebRtcProbe('unknown', WEBRTC_MEDIA_DEAD_MS + 1)).toBe('reconnect');
  });
});

describe('a whole live period, step by step', () => {
  it('WebRTC → dropped → LL-HLS → stream restarts → WebRTC again', () => {
    const p = new TransportPolicy('auto');
    // First attempt: learned the server's TURN on a timeout → once more with it.
    expect(p.next(true)).toBe('webrtc');
    expect(p.webRtcFailed(failed('timeout', { learnedIceServers: [TURN] }))).toBe('retry-with-server-ice');
    // The retry connects and plays; then it keeps dropping.
    expect(p.next(true)).toBe('webrtc');
    p.resetRetries();
    const delays: number[] = [];
    for (let i = 0; i < MAX_WEBRTC_DROPS; i++) {
      p.webRtcDropped();
      delays.push(p.retryDelayMs(1500, true));
    }
    expect(delays).toEqual([QUICK_RETRY_DELAY_MS, 6000, 12000]);
    expect(p.next(true)).toBe('hls');
    // LL-HLS plays (the schedule starts over), to the end of the stream (the player goes
    // offline); the finished playlist lingers for a moment, then goes.
    p.resetRetries();
    p.streamEnded();
    p.resetRetries();
    p.endLivePeriod();
    expect(p.playlistAnswer(true, '#EXTM3U\n#EXT-X-ENDLIST\n')).toBe('offline');
    expect(p.playlistAnswer(false)).toBe('offline');
    // The stream is back: WebRTC first again, and a fresh retry schedule.
    expect(p.playlistAnswer(true)).toBe('live');
    expect(p.next(true)).toBe('webrtc');
    expect(p.retryDelayMs(1500, true)).toBe(QUICK_RETRY_DELAY_MS);
  });
});
