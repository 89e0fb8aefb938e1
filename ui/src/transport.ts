// The player's transport decisions, without DOM, network or timers: which transport the next
// session uses (WebRTC first, LL-HLS when WebRTC fails or the stream has B-frames, or the one
// forced by `?transport=`), what a failed or lost WebRTC session leads to, when a stalled session
// is probed and restarted, whether a playlist means the stream is live, and the retry schedule.
// LivePlayer (player.ts) tells it what happened, with the time, and does what it answers.
//
// A "live period" runs from the playlist appearing until it is gone again: WebRTC that failed
// (or kept dropping) in one live period is not tried again in it, and a stream that restarts
// starts with WebRTC again.

import { sameIceServers, type WhepFailureKind } from './whep';

/** What is playing (or being tried): WebRTC/WHEP, hls.js LL-HLS, or the browser's own HLS. */
export type Transport = 'webrtc' | 'llhls' | 'native';
/** `auto`: WebRTC first, LL-HLS when that fails; `webrtc` / `hls`: only that one. */
export type TransportMode = 'auto' | 'webrtc' | 'hls';

/** No playback progress for this long → probe the playlist. */
export const STALL_CHECK_MS = 6000;
/** Never started playing for this long → start over. */
export const LOADING_TIMEOUT_MS = 25000;
/** At most one health probe of the playlist in this long. */
export const HEALTH_PROBE_SPACING_MS = 3000;
export const MAX_RETRY_DELAY_MS = 15000;
/** The first retry after a session that played (a lost WebRTC session is usually fine to redo). */
export const QUICK_RETRY_DELAY_MS = 300;

export const DEFAULT_ICE_TIMEOUT_MS = 4000;
/** `disconnected` this long → reconnect. */
export const WEBRTC_DISCONNECT_GRACE_MS = 3000;
/** Connected but no picture this long → give up on WebRTC. */
export const WEBRTC_FIRST_FRAME_MS = 12000;
/** No RTP this long → probe the playlist. */
export const WEBRTC_MEDIA_STALL_MS = 4000;
/** No RTP this long while the playlist is live → reconnect. */
export const WEBRTC_MEDIA_DEAD_MS = 12000;
/** Connected sessions lost within one live period before LL-HLS is used until the stream restarts. */
export const MAX_WEBRTC_DROPS = 3;

/**
 * Player settings from the page URL, for tests and debugging:
 * `?transport=hls|webrtc|auto` and `?ice-timeout=<ms>`.
 */
export function playerOptionsFromQuery(
  search: string = window.location.search,
): { transport?: TransportMode; iceTimeoutMs?: number; iceTransportPolicy?: RTCIceTransportPolicy } {
  const q = new URLSearchParams(search);
  const out: { transport?: TransportMode; iceTimeoutMs?: number; iceTransportPolicy?: RTCIceTransportPolicy } = {};
  const t = (q.get('transport') ?? '').toLowerCase();
  if (t === 'hls' || t === 'llhls') out.transport = 'hls';
  else if (t === 'webrtc' || t === 'whep') out.transport = 'webrtc';
  else if (t === 'auto') out.transport = 'auto';
  const ms = Number(q.get('ice-timeout') ?? '');
  if (q.has('ice-timeout') && Number.isFinite(ms) && ms > 0) out.iceTimeoutMs = ms;
  // `?ice=relay`: WebRTC through the TURN server only (what a viewer on a UDP-hostile network
  // gets anyway; for checking a TURN set-up).
  if ((q.get('ice') ?? '').toLowerCase() === 'relay') out.iceTransportPolicy = 'relay';
  return out;
}

/** What a WHEP attempt that failed before it played leads to. */
export type WebRtcFailureAction =
  /** The attempt gathered without the server's STUN/TURN servers: once more with them. */
  | 'retry-with-server-ice'
  /** `auto`: LL-HLS now, WebRTC again in the next live period. */
  | 'llhls'
  /** Forced WebRTC: try again after the retry delay. */
  | 'retry'
  /** Forced WebRTC in a browser that has none: give up. */
  | 'unsupported';

/** The WHEP attempt that failed: what it used and what it learned. */
export interface FailedWebRtcAttempt {
  kind: WhepFailureKind;
  /** This attempt may be redone once with the ICE servers the server announced. */
  serverIceRetryAllowed: boolean;
  /** ICE servers of the attempt's peer connection (null: no peer connection was made). */
  usedIceServers: readonly RTCIceServer[] | null;
  /** ICE servers from the attempt's 201 `Link` headers (null: no 201). */
  learnedIceServers: readonly RTCIceServer[] | null;
}

/**
 * The transport state of one player: the mode, WebRTC blocked for the live period, WebRTC
 * sessions lost in it, failures in a row (the retry schedule), and whether the stream was just
 * played to its end.
 */
export class TransportPolicy {
  readonly mode: TransportMode;
  private readonly avoidBframes: boolean;
  /** WebRTC did not work in this live period: use LL-HLS until the stream restarts. */
  private blocked = false;
  /** Connected WebRTC sessions lost in this live period. */
  private drops = 0;
  /** Failed attempts since playback last started (or the stream went offline). */
  private failures = 0;
  /** The stream was played to its end: its finished playlist may linger for a moment. */
  private ended = false;

  /**
   * `avoidWebRtcWithBframes` (default true): in `auto` mode, skip WebRTC when the stream has
   * B-frames (browsers' WebRTC stacks do not reorder frames).
   */
  constructor(mode: TransportMode = 'auto', opts: { avoidWebRtcWithBframes?: boolean } = {}) {
    this.mode = mode;
    this.avoidBframes = opts.avoidWebRtcWithBframes !== false;
  }

  /** Whether WebRTC is off for the rest of this live period. */
  get webRtcBlocked(): boolean {
    return this.blocked;
  }

  /** The next session's transport: WebRTC, or HLS (hls.js LL-HLS, else the browser's own). */
  next(webRtcSupported: boolean): 'webrtc' | 'hls' {
    if (this.mode === 'hls') return 'hls';
    if (this.mode === 'webrtc') return 'webrtc';
    return webRtcSupported && !this.blocked ? 'webrtc' : 'hls';
  }

  /** Whether a WebRTC attempt reads `/api/streams/<stream>` for B-frames while it gathers. */
  get checksBframes(): boolean {
    return this.mode === 'auto' && this.avoidBframes;
  }

  /**
   * `/api/streams/<stream>` answered a WebRTC attempt (null: no answer). True: the stream has
   * B-frames, LL-HLS plays instead (for this live period).
   */
  streamInfo(info: { bframes?: boolean } | null): boolean {
    if (!this.checksBframes || info?.bframes !== true) return false;
    this.blocked = true;
    return true;
  }

  /** A WHEP attempt failed before it played. */
  webRtcFailed(a: FailedWebRtcAttempt): WebRtcFailureAction {
    if (
      a.serverIceRetryAllowed &&
      a.usedIceServers !== null &&
      (a.kind === 'timeout' || a.kind === 'ice') &&
      a.learnedIceServers !== null &&
      a.learnedIceServers.length > 0 &&
      !sameIceServers(a.learnedIceServers, a.usedIceServers)
    ) {
      return 'retry-with-server-ice';
    }
    if (this.mode === 'webrtc') return a.kind === 'unsupported' ? 'unsupported' : 'retry';
    this.blocked = true;
    return 'llhls';
  }

  /**
   * A connected WebRTC session was lost (the player reconnects, WebRTC first). True when it was
   * one too many: LL-HLS until the stream restarts.
   */
  webRtcDropped(): boolean {
    this.drops++;
    if (this.mode !== 'auto' || this.drops < MAX_WEBRTC_DROPS || this.blocked) return false;
    this.blocked = true;
    return true;
  }

  /** Drops in this live period (for the log). */
  get webRtcDrops(): number {
    return this.drops;
  }

  /**
   * Playback failed while the playlist is still there: how long to wait before the next
   * attempt. Doubles from 2× the poll interval up to MAX_RETRY_DELAY_MS; `quickFirstRetry`
   * (after a session that played) makes the first one QUICK_RETRY_DELAY_MS.
   */
  retryDelayMs(pollIntervalMs: number, quickFirstRetry: boolean): number {
    this.failures++;
    if (quickFirstRetry && this.failures === 1) return QUICK_RETRY_DELAY_MS;
    return Math.min(pollIntervalMs * 2 ** this.failures, MAX_RETRY_DELAY_MS);
  }

  /** Playback started, or the stream went offline by itself: the retry schedule starts over. */
  resetRetries(): void {
    this.failures = 0;
  }

  /** The stream is gone (or unreachable): the next live period starts with WebRTC again. */
  endLivePeriod(): void {
    this.blocked = false;
    this.drops = 0;
  }

  /** The stream was played to its end (EXT-X-ENDLIST). */
  streamEnded(): void {
    this.ended = true;
  }

  /** Whether the next playlist probe must read the body (to tell a lingering finished playlist). */
  get wantsPlaylistBody(): boolean {
    return this.ended;
  }

  /**
   * A playlist probe answered: `ok` (HTTP 2xx) and the body when `wantsPlaylistBody` asked for
   * it. Right after the stream ended, its finished playlist is not a new stream.
   */
  playlistAnswer(ok: boolean, body?: string): 'live' | 'offline' {
    if (!ok) {
      this.ended = false;
      return 'offline';
    }
    if (this.ended) {
      if (body === undefined || body.includes('#EXT-X-ENDLIST')) return 'offline';
      this.ended = false;
    }
    return 'live';
  }
}

/** What the once-a-second check of an HLS session asks for. */
export type HlsCheck = 'fine' | 'probe-stalled' | 'probe-not-started';

/**
 * Once a second during an HLS session: probe the playlist when playback stopped advancing or
 * never started (at most one probe per HEALTH_PROBE_SPACING_MS).
 */
export function hlsCheck(s: {
  now: number;
  lastProgressAt: number;
  sessionStartedAt: number;
  loading: boolean;
  lastProbeAt: number;
}): HlsCheck {
  const stalled = s.now - s.lastProgressAt > STALL_CHECK_MS;
  const neverStarted = s.loading && s.now - s.sessionStartedAt > LOADING_TIMEOUT_MS;
  if (!stalled && !neverStarted) return 'fine';
  if (s.now - s.lastProbeAt < HEALTH_PROBE_SPACING_MS) return 'fine';
  return neverStarted ? 'probe-not-started' : 'probe-stalled';
}

/**
 * The playlist probe that hlsCheck() asked for answered: offline, restart the session (it never
 * started, or made no progress for 3× STALL_CHECK_MS while the stream is live), or give the
 * player a while longer.
 */
export function afterHlsProbe(
  check: Exclude<HlsCheck, 'fine'>,
  probe: 'live' | 'offline' | 'unknown',
  stalledForMs: number,
): 'offline' | 'restart' | 'wait' {
  if (probe === 'offline') return 'offline';
  if (check === 'probe-not-started') return 'restart';
  return stalledForMs > STALL_CHECK_MS * 3 ? 'restart' : 'wait';
}

/**
 * Once a second during a connected WebRTC session (RTP arrival, not currentTime, which a
 * MediaStream advances regardless): no picture long after connecting → give up on WebRTC; no RTP
 * for a while → probe the playlist (at most one probe per HEALTH_PROBE_SPACING_MS).
 */
export function webRtcCheck(s: {
  now: number;
  connectedAt: number;
  lastMediaAt: number;
  loading: boolean;
  lastProbeAt: number;
}): 'fine' | 'no-picture' | 'probe' {
  if (s.loading && s.now - s.connectedAt > WEBRTC_FIRST_FRAME_MS) return 'no-picture';
  if (s.now - s.lastMediaAt < WEBRTC_MEDIA_STALL_MS || s.now - s.lastProbeAt < HEALTH_PROBE_SPACING_MS) return 'fine';
  return 'probe';
}

/** The playlist probe that webRtcCheck() asked for answered: offline, reconnect, or wait. */
export function afterWebRtcProbe(
  probe: 'live' | 'offline' | 'unknown',
  silentForMs: number,
): 'offline' | 'reconnect' | 'wait' {
  if (probe === 'offline') return 'offline';
  return silentForMs > WEBRTC_MEDIA_DEAD_MS ? 'reconnect' : 'wait';
}
