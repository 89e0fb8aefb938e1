// Shared OnAir player: offline polling, WebRTC playback over WHEP with LL-HLS
// (hls.js, or native HLS) as the fallback, automatic recovery when a stream ends
// and comes back or the network blips, and a small DOM view (offline overlay,
// unmute button, LIVE / transport badges, latency). Used by the viewer page, the
// embed page and (later) the desktop window. Which transport to use, and what a
// failure or a stall leads to, is decided in transport.ts (no DOM, no network).

import Hls, { ErrorTypes, Events, type ErrorData, type HlsConfig } from 'hls.js';
import {
  DEFAULT_ICE_TIMEOUT_MS,
  TransportPolicy,
  WEBRTC_DISCONNECT_GRACE_MS,
  afterHlsProbe,
  afterWebRtcProbe,
  hlsCheck,
  webRtcCheck,
  type Transport,
  type TransportMode,
} from './transport';
import {
  WhepError,
  WhepSession,
  estimateWebRtcLatency,
  fetchIceServers,
  webRtcSupported,
  type WebRtcStats,
} from './whep';

import type { StreamStatus } from './api/StreamStatus';
import { catchUpRate, playbackRateChangesAreSafe } from './catchup';
import { inRanges, SEEK_WATCH, seekWatch } from './seek-watch';

export { playerOptionsFromQuery, type Transport, type TransportMode } from './transport';

export type PlayerState = 'offline' | 'loading' | 'playing' | 'error';

/** `GET /api/streams/<stream>` (the engine's `StreamStatus`); every field is optional. */
export type StreamInfo = Partial<StreamStatus>;

export interface PlayerStats {
  /** Seconds behind the live edge, or null when unknown. */
  latency: number | null;
  /** True when `latency` is the WebRTC estimate (jitter buffer + RTT/2), not a measurement. */
  latencyEstimated: boolean;
  transport: Transport | null;
  videoWidth: number;
  videoHeight: number;
  /** Last `getStats()` digest while on WebRTC, else null. */
  webrtc: WebRtcStats | null;
}

// ---------------------------------------------------------------------------
// URL helpers

/**
 * Stream name from a page path: the decoded last non-empty segment
 * (`/demo` → `demo`, `/embed/demo` → `demo`). A `?stream=` query parameter
 * wins (handy with the Vite dev server). Returns '' when there is none.
 */
export function streamFromLocation(loc: Pick<Location, 'pathname' | 'search'> = window.location): string {
  const q = new URLSearchParams(loc.search).get('stream');
  if (q) return q;
  const segments = loc.pathname.split('/').filter((s) => s.length > 0);
  let last = segments[segments.length - 1] ?? '';
  try {
    last = decodeURIComponent(last);
  } catch {
    // keep the raw segment when it is not valid percent-encoding
  }
  // Paths like /index.html or /embed.html (dev server, file preview) name no stream.
  if (/\.html?$/i.test(last)) return '';
  return last;
}

function joinOrigin(origin: string, path: string): string {
  return origin ? origin.replace(/\/+$/, '') + path : path;
}

export function llhlsUrl(stream: string, origin = ''): string {
  return joinOrigin(origin, `/live/${encodeURIComponent(stream)}/llhls.m3u8`);
}

export function hlsUrl(stream: string, origin = ''): string {
  return joinOrigin(origin, `/live/${encodeURIComponent(stream)}/playlist.m3u8`);
}

export function whepUrl(stream: string, origin = ''): string {
  return joinOrigin(origin, `/live/${encodeURIComponent(stream)}/whep`);
}

/**
 * The base the server's page names for HLS (`hls.public_base_url`: a CDN or caching proxy in
 * front of OnAir), from `<meta name="onair-hls-base">`; '' when there is none (or it is not an
 * http(s) URL): playlists then come from `origin`.
 */
export function hlsBaseFromPage(doc: Pick<Document, 'querySelector'> = document): string {
  const v = doc.querySelector('meta[name="onair-hls-base"]')?.getAttribute('content')?.trim() ?? '';
  return /^https?:\/\/[^/?#]+/i.test(v) ? v : '';
}

export function apiUrl(stream: string, origin = ''): string {
  return joinOrigin(origin, `/api/streams/${encodeURIComponent(stream)}`);
}

/** Fetch `/api/streams/<stream>`; null when offline, missing or unreadable. */
export async function fetchStreamInfo(stream: string, origin = '', timeoutMs = 5000): Promise<StreamInfo | null> {
  try {
    const res = await fetchWithTimeout(apiUrl(stream, origin), timeoutMs);
    if (!res.ok) return null;
    const body: unknown = await res.json();
    return body && typeof body === 'object' ? (body as StreamInfo) : null;
  } catch {
    return null;
  }
}

async function fetchWithTimeout(url: string, timeoutMs: number): Promise<Response> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    return await fetch(url, { cache: 'no-store', signal: ctrl.signal });
  } finally {
    clearTimeout(timer);
  }
}

/** "640×360 · 30 fps · 1500 kbps"; falls back to the decoded video size. */
export function describeStream(info: StreamInfo | null, stats?: Pick<PlayerStats, 'videoWidth' | 'videoHeight'>): string {
  const parts: string[] = [];
  const w = info?.video?.width ?? stats?.videoWidth ?? 0;
  const h = info?.video?.height ?? stats?.videoHeight ?? 0;
  if (w > 0 && h > 0) parts.push(`${w}×${h}`);
  const fps = info?.video?.fps;
  if (typeof fps === 'number' && fps > 0) parts.push(`${Number.isInteger(fps) ? fps : fps.toFixed(2)} fps`);
  const kbps = info?.bitrate_kbps;
  if (typeof kbps === 'number' && kbps > 0) {
    parts.push(kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbps` : `${Math.round(kbps)} kbps`);
  }
  const v = info?.viewers;
  if (v) {
    const n = (v.webrtc ?? 0) + (v.hls ?? 0);
    if (n > 0) parts.push(`${n} watching`);
  }
  return parts.join(' · ');
}

// ---------------------------------------------------------------------------
// LivePlayer: the state machine, no DOM besides the <video> element

export interface LivePlayerOptions {
  stream: string;
  video: HTMLVideoElement;
  /** Server origin, e.g. "http://127.0.0.1:8080"; '' = same origin as the page. */
  origin?: string;
  /**
   * Where playlists (and the parts they name) are loaded from, e.g. a CDN in front of the
   * server (the pages pass hlsBaseFromPage()); default: `origin`. WHEP and the API stay on `origin`.
   */
  hlsOrigin?: string;
  /** Playlist probe interval while offline (ms). */
  pollIntervalMs?: number;
  /** Extra hls.js settings (merged over the defaults below). */
  hlsConfig?: Partial<HlsConfig>;
  /** Default 'auto': WebRTC (WHEP) first, LL-HLS when it fails. */
  transport?: TransportMode;
  /** How long a WHEP attempt may take from POST to `connected` (ms, default 4000). */
  iceTimeoutMs?: number;
  /** ICE servers for the first WHEP session (else the server's, asked with `OPTIONS`). */
  iceServers?: RTCIceServer[];
  /** 'relay': WebRTC through TURN only (`?ice=relay`). */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /**
   * In 'auto' mode, skip WebRTC when `/api/streams` says the stream has
   * B-frames (browsers' WebRTC stacks do not reorder frames). Default true.
   */
  avoidWebRtcWithBframes?: boolean;
  onStateChange?: (state: PlayerState, message: string) => void;
  onTransportChange?: (transport: Transport) => void;
  /** Called about once a second while loading/playing. */
  onStats?: (stats: PlayerStats) => void;
  /** Autoplay was refused even muted: the page should offer a play button. */
  onNeedsGesture?: (needed: boolean) => void;
  /** hls.js instance created or destroyed. */
  onHlsChange?: (hls: Hls | null) => void;
  /** WHEP peer connection created or closed. */
  onPeerConnectionChange?: (pc: RTCPeerConnection | null) => void;
}

/** How the engine's 503 answer to a new viewer over the upload budget begins. */
export const FULL_ANSWER = 'the stream is full';
/** What the page says then; it asks again after FULL_RETRY_MS. */
export const FULL_MESSAGE =
  'This stream is full right now: the streamer\'s connection is busy with the viewers already watching. Trying again shortly…';
export const FULL_RETRY_MS = 30000;

/** hls.js settings for low-latency live playback. */
export const LIVE_HLS_CONFIG: Partial<HlsConfig> = {
  lowLatencyMode: true,
  // Keep a short back buffer: this is live, nobody seeks far back.
  backBufferLength: 30,
  liveDurationInfinity: true,
  // hls.js's own catch-up only engages with more than 1 s buffered, which a sub-second target
  // never has: LivePlayer catches up itself (catchup.ts), so this one stays off.
  maxLiveSyncPlaybackRate: 1,
  // No liveSyncDuration(Count) here: setting one would override the
  // playlist's PART-HOLD-BACK, i.e. the low-latency target.
  startFragPrefetch: true,
};

export class LivePlayer {
  readonly stream: string;
  readonly video: HTMLVideoElement;
  readonly origin: string;
  readonly hlsOrigin: string;
  readonly pollIntervalMs: number;
  readonly iceTimeoutMs: number;

  /** 'loading' until the first probe answers, so 'offline' always means the server said so. */
  state: PlayerState = 'loading';
  message = '';
  transport: Transport | null = null;
  hls: Hls | null = null;
  /** The current WHEP session (also while it is still connecting), or null. */
  whep: WhepSession | null = null;

  private readonly opts: LivePlayerOptions;
  private running = false;
  /** Bumped on every teardown; async callbacks from an older session are ignored. */
  private generation = 0;
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  private healthTimer: ReturnType<typeof setInterval> | null = null;
  /** The last probe was refused because the stream is full (the streamer's upload budget). */
  private full = false;
  /** Catching up by playback rate is safe here (not in WebKitGTK: see catchup.ts). */
  private readonly rateChangesSafe = playbackRateChangesAreSafe(navigator.userAgent);
  private mediaRecoveryUsed = false;
  /** When the current seek began (performance.now()), and its stuck-check timer (seek-watch.ts). */
  private seekingSince = 0;
  private seekTimer: ReturnType<typeof setTimeout> | null = null;
  /** Seeks made again this session because one never completed (seek-watch.ts). */
  private reseeks = 0;
  /** Which transport next, and what failures lead to (see transport.ts). */
  private readonly policy: TransportPolicy;
  private sessionStartedAt = 0;
  private lastProgressAt = 0;
  private lastTime = -1;
  private probing = false;
  private lastHealthProbeAt = 0;
  private needsGesture = false;
  private readonly listeners: Array<[string, EventListener]> = [];
  private readonly windowListeners: Array<[string, EventListener]> = [];

  // WebRTC
  /** ICE servers from the last WHEP 201 `Link` headers. */
  private learnedIceServers: RTCIceServer[] | null = null;
  private rtcConnectedAt = 0;
  private rtcLastMediaAt = 0;
  private rtcPackets = -1;
  private rtcPrev: WebRtcStats | null = null;
  private rtcLatency: number | null = null;
  private rtcStatsBusy = false;
  private disconnectTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(opts: LivePlayerOptions) {
    this.opts = opts;
    this.stream = opts.stream;
    this.video = opts.video;
    this.origin = opts.origin ?? '';
    this.hlsOrigin = opts.hlsOrigin || this.origin;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1500;
    this.policy = new TransportPolicy(opts.transport ?? 'auto', {
      avoidWebRtcWithBframes: opts.avoidWebRtcWithBframes,
    });
    this.iceTimeoutMs = opts.iceTimeoutMs ?? DEFAULT_ICE_TIMEOUT_MS;

    const v = this.video;
    v.muted = true; // autoplay policies only allow muted autoplay
    v.autoplay = true;
    v.playsInline = true;
    v.setAttribute('playsinline', '');
    v.setAttribute('muted', '');

    this.listen('playing', () => this.onVideoPlaying());
    this.listen('timeupdate', () => {
      this.noteProgress();
      this.catchUp();
    });
    this.listen('seeking', () => this.onSeeking());
    this.listen('seeked', () => this.clearSeekTimer());
    this.listen('ended', () => this.onVideoEnded());
    this.listen('error', () => this.onVideoError());
    this.listenWindow('pagehide', () => this.onPageHide());
    this.listenWindow('pageshow', (e) => this.onPageShow(e as PageTransitionEvent));
  }

  /** The transport mode asked for (`?transport=`); 'auto' by default. */
  get transportMode(): TransportMode {
    return this.policy.mode;
  }

  get playlistUrl(): string {
    return llhlsUrl(this.stream, this.hlsOrigin);
  }

  get whepUrl(): string {
    return whepUrl(this.stream, this.origin);
  }

  /** The WHEP peer connection, or null (offline, connecting not yet begun, or LL-HLS). */
  get pc(): RTCPeerConnection | null {
    return this.whep?.pc ?? null;
  }

  /** Begin: probe the playlist (showing offline while it is absent) until the stream is live. */
  start(): void {
    if (this.running) return;
    this.running = true;
    if (!this.stream) {
      this.setState('error', 'No stream named in the URL.');
      return;
    }
    this.schedulePoll(0);
  }

  /** Stop everything (timers, hls.js, WHEP session, network). */
  stop(): void {
    this.running = false;
    this.clearPoll();
    this.teardown();
  }

  /** Stop and remove the video/window listeners; the player cannot be restarted. */
  destroy(): void {
    this.stop();
    for (const [type, fn] of this.listeners) this.video.removeEventListener(type, fn);
    this.listeners.length = 0;
    for (const [type, fn] of this.windowListeners) window.removeEventListener(type, fn);
    this.windowListeners.length = 0;
  }

  /** Start playback after a user gesture (when autoplay was refused). */
  async playFromGesture(): Promise<void> {
    try {
      await this.video.play();
      this.setNeedsGesture(false);
    } catch {
      // still refused; keep the button
    }
  }

  stats(): PlayerStats {
    return {
      latency: this.latency(),
      latencyEstimated: this.transport === 'webrtc',
      transport: this.transport,
      videoWidth: this.video.videoWidth,
      videoHeight: this.video.videoHeight,
      webrtc: this.whep ? this.rtcPrev : null,
    };
  }

  /**
   * Seconds behind the live edge: hls.js estimate, seekable end for native HLS,
   * and for WebRTC an estimate from getStats() (jitter buffer + RTT/2).
   */
  latency(): number | null {
    if (this.state !== 'playing') return null;
    if (this.transport === 'webrtc') return this.rtcLatency;
    if (this.hls) {
      if (this.hls.latestLevelDetails?.live === false) return null; // not a live playlist
      const l = this.hls.latency;
      return Number.isFinite(l) && l > 0 ? l : null;
    }
    const s = this.video.seekable;
    if (s.length > 0) {
      const l = s.end(s.length - 1) - this.video.currentTime;
      return Number.isFinite(l) && l >= 0 ? l : null;
    }
    return null;
  }

  // -- internals ------------------------------------------------------------

  private listen(type: string, fn: () => void): void {
    const l: EventListener = () => fn();
    this.video.addEventListener(type, l);
    this.listeners.push([type, l]);
  }

  private listenWindow(type: string, fn: (e: Event) => void): void {
    const l: EventListener = (e) => fn(e);
    window.addEventListener(type, l);
    this.windowListeners.push([type, l]);
  }

  private setState(state: PlayerState, message = ''): void {
    if (state === this.state && message === this.message) return;
    this.state = state;
    this.message = message;
    this.opts.onStateChange?.(state, message);
  }

  private setNeedsGesture(needed: boolean): void {
    if (needed === this.needsGesture) return;
    this.needsGesture = needed;
    this.opts.onNeedsGesture?.(needed);
  }

  private clearPoll(): void {
    if (this.pollTimer !== null) {
      clearTimeout(this.pollTimer);
      this.pollTimer = null;
    }
  }

  private schedulePoll(delayMs: number): void {
    this.clearPoll();
    if (!this.running) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      void this.poll();
    }, delayMs);
  }

  /** 'live' on 200, 'offline' on 404/other HTTP status, 'unknown' on network failure. */
  private async probe(): Promise<'live' | 'offline' | 'unknown'> {
    this.full = false;
    try {
      const res = await fetchWithTimeout(this.playlistUrl, 5000);
      if (res.status === 503) {
        // Over the streamer's upload budget (a new viewer, no edge to send it to).
        this.full = (await res.text().catch(() => '')).startsWith(FULL_ANSWER);
      }
      if (res.ok && this.policy.wantsPlaylistBody) return this.policy.playlistAnswer(true, await res.text());
      void res.body?.cancel().catch(() => undefined);
      return this.policy.playlistAnswer(res.ok);
    } catch {
      return 'unknown';
    }
  }

  private async poll(): Promise<void> {
    const gen = this.generation;
    const result = await this.probe();
    if (!this.running || gen !== this.generation) return;
    if (result === 'live') {
      this.attach();
    } else if (this.full) {
      this.setState('error', FULL_MESSAGE);
      this.schedulePoll(FULL_RETRY_MS);
    } else {
      this.policy.endLivePeriod();
      this.setState('offline');
      this.schedulePoll(this.pollIntervalMs);
    }
  }

  private attach(retryWithServerIce = true): void {
    try {
      this.attachSession(retryWithServerIce);
    } catch (e) {
      console.error('onair: could not start playback', e);
      void this.fail(e instanceof Error ? e.message : String(e));
    }
  }

  private attachSession(retryWithServerIce: boolean): void {
    this.teardown();
    const gen = this.generation;
    this.mediaRecoveryUsed = false;
    this.reseeks = 0;
    this.sessionStartedAt = performance.now();
    this.lastProgressAt = this.sessionStartedAt;
    this.lastTime = -1;
    this.setState('loading');
    if (this.policy.next(webRtcSupported()) === 'webrtc') void this.startWebRtc(gen, retryWithServerIce);
    else this.startHls(gen);
  }

  private startHls(gen: number): void {
    const url = this.playlistUrl;
    if (Hls.isSupported()) {
      this.setTransport('llhls');
      const hls = new Hls({ ...LIVE_HLS_CONFIG, ...this.opts.hlsConfig });
      this.hls = hls;
      hls.on(Events.ERROR, (_evt, data) => this.onHlsError(gen, data));
      hls.on(Events.MANIFEST_PARSED, () => {
        if (gen === this.generation) this.tryPlay(gen);
      });
      hls.attachMedia(this.video);
      hls.loadSource(url);
      this.opts.onHlsChange?.(hls);
    } else if (this.video.canPlayType('application/vnd.apple.mpegurl')) {
      this.setTransport('native');
      this.video.src = url;
      this.tryPlay(gen);
    } else {
      this.setState('error', 'This browser cannot play HLS video.');
      return;
    }
    this.healthTimer = setInterval(() => this.health(gen), 1000);
  }

  /**
   * One WHEP attempt: offer + candidates (≤ 1 s; meanwhile /api/streams is
   * asked about B-frames), POST, answer, then `connected` within iceTimeoutMs
   * of the POST. Any failure goes to webRtcFailed().
   */
  private async startWebRtc(gen: number, retryWithServerIce: boolean): Promise<void> {
    this.setTransport('webrtc');
    if (this.learnedIceServers === null && !this.opts.iceServers) {
      // The server's STUN/TURN servers before the first offer, so a viewer whose network lets
      // only TURN through connects at the first try.
      const servers = await fetchIceServers(this.whepUrl, 1000);
      if (gen !== this.generation) return;
      this.learnedIceServers = servers ?? [];
    }
    let session: WhepSession;
    try {
      session = new WhepSession({
        url: this.whepUrl,
        iceServers: this.learnedIceServers ?? this.opts.iceServers ?? [],
        iceTransportPolicy: this.opts.iceTransportPolicy,
        onConnectionStateChange: (s) => this.onPcState(gen, s),
      });
    } catch (e) {
      this.webRtcFailed(gen, null, e, false);
      return;
    }
    this.whep = session;
    this.opts.onPeerConnectionChange?.(session.pc);
    this.healthTimer = setInterval(() => this.health(gen), 1000);
    try {
      const [, info] = await Promise.all([
        session.prepare(),
        this.policy.checksBframes ? fetchStreamInfo(this.stream, this.origin, 1500) : Promise.resolve(null),
      ]);
      if (gen !== this.generation) return;
      if (this.policy.streamInfo(info)) {
        console.info('onair: the stream has B-frames, which WebRTC players do not handle; using LL-HLS');
        this.attach();
        return;
      }
      const deadline = performance.now() + this.iceTimeoutMs;
      await session.negotiate(deadline);
      if (gen !== this.generation) return; // teardown closed (and DELETEd) it
      if (session.linkIceServers && session.linkIceServers.length > 0) this.learnedIceServers = session.linkIceServers;
      this.video.srcObject = session.stream;
      this.tryPlay(gen);
      await session.waitConnected(deadline);
      if (gen !== this.generation) return;
      this.rtcConnectedAt = performance.now();
      this.rtcLastMediaAt = this.rtcConnectedAt;
    } catch (e) {
      if (gen !== this.generation) return;
      this.webRtcFailed(gen, session, e, retryWithServerIce);
    }
  }

  /** A WHEP attempt failed before it played: retry, fall back to LL-HLS, or (forced WebRTC) back off. */
  private webRtcFailed(gen: number, session: WhepSession | null, err: unknown, retryWithServerIce: boolean): void {
    if (gen !== this.generation) return;
    const reason = err instanceof Error ? err.message : String(err);
    const action = this.policy.webRtcFailed({
      kind: err instanceof WhepError ? err.kind : 'ice',
      serverIceRetryAllowed: retryWithServerIce,
      usedIceServers: session?.iceServers ?? null,
      learnedIceServers: session?.linkIceServers ?? null,
    });
    switch (action) {
      case 'retry-with-server-ice':
        // This session gathered without the server's STUN/TURN servers (we only
        // learn them from its answer); one more try with them before giving up.
        console.warn(`onair: WebRTC ${reason}; retrying with the server's ICE servers`);
        this.attach(false);
        return;
      case 'unsupported':
        this.teardown();
        this.setState('error', 'This browser cannot play WebRTC.');
        return;
      case 'retry':
        void this.fail(`WebRTC: ${reason}`);
        return;
      case 'llhls': {
        const ms = Math.round(performance.now() - this.sessionStartedAt);
        console.warn(`onair: WebRTC unavailable (${reason}) after ${ms} ms; playing LL-HLS`);
        this.attach();
        return;
      }
    }
  }

  /** A connected WebRTC session broke: reconnect (WebRTC first again, unless it keeps breaking). */
  private webRtcDropped(gen: number, reason: string): void {
    if (gen !== this.generation) return;
    if (this.policy.webRtcDropped()) {
      console.warn(`onair: WebRTC dropped ${this.policy.webRtcDrops} times; using LL-HLS until the stream restarts`);
    }
    void this.fail(`WebRTC ${reason}`, true);
  }

  private onPcState(gen: number, s: RTCPeerConnectionState): void {
    // Before 'connected', startWebRtc() (waitConnected) is in charge.
    if (gen !== this.generation || !this.whep || this.rtcConnectedAt === 0) return;
    if (s === 'connected') {
      if (this.disconnectTimer !== null) clearTimeout(this.disconnectTimer);
      this.disconnectTimer = null;
    } else if (s === 'disconnected') {
      if (this.disconnectTimer !== null) return;
      this.disconnectTimer = setTimeout(() => {
        this.disconnectTimer = null;
        if (gen === this.generation && this.whep?.pc.connectionState !== 'connected') {
          this.webRtcDropped(gen, `disconnected for ${WEBRTC_DISCONNECT_GRACE_MS / 1000} s`);
        }
      }, WEBRTC_DISCONNECT_GRACE_MS);
    } else if (s === 'failed' || s === 'closed') {
      this.webRtcDropped(gen, `connection ${s}`);
    }
  }

  private setTransport(t: Transport): void {
    if (t === this.transport) return;
    this.transport = t;
    this.opts.onTransportChange?.(t);
  }

  /**
   * Destroy the current playback session (if any). `keepalive`: the WHEP
   * DELETE must outlive the page (pagehide).
   */
  private teardown(keepalive = false): void {
    this.generation++;
    this.clearSeekTimer();
    if (this.healthTimer !== null) {
      clearInterval(this.healthTimer);
      this.healthTimer = null;
    }
    if (this.disconnectTimer !== null) {
      clearTimeout(this.disconnectTimer);
      this.disconnectTimer = null;
    }
    const hadHls = this.hls !== null;
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
      this.video.playbackRate = 1;
    }
    if (hadHls) this.opts.onHlsChange?.(null);
    const session = this.whep;
    if (session) {
      this.whep = null;
      session.close(keepalive);
      this.opts.onPeerConnectionChange?.(null);
    }
    this.rtcConnectedAt = 0;
    this.rtcLastMediaAt = 0;
    this.rtcPackets = -1;
    this.rtcPrev = null;
    this.rtcLatency = null;
    const v = this.video;
    if (v.srcObject) {
      v.pause();
      v.srcObject = null;
    }
    if (v.getAttribute('src') !== null || v.currentSrc) {
      v.pause();
      v.removeAttribute('src');
      v.load();
    }
    this.setNeedsGesture(false);
  }

  private onPageHide(): void {
    // Leaving, or going into the back/forward cache: end the WHEP session now.
    // The DELETE is sent with keepalive so it survives the page.
    if (this.whep) {
      this.clearPoll();
      this.teardown(true);
    }
  }

  private onPageShow(e: PageTransitionEvent): void {
    if (!e.persisted || !this.running) return;
    // Back from the back/forward cache: whatever we had is stale; start over.
    this.teardown();
    this.setState('loading');
    this.schedulePoll(0);
  }

  private tryPlay(gen: number): void {
    const p = this.video.play();
    if (!p) return;
    p.then(
      () => {
        if (gen === this.generation) this.setNeedsGesture(false);
      },
      (err: unknown) => {
        if (gen !== this.generation) return;
        const name = err instanceof DOMException ? err.name : '';
        if (name !== 'NotAllowedError') return; // AbortError etc: a later play() wins
        if (!this.video.muted) {
          // Unmuted autoplay refused: fall back to muted autoplay.
          this.video.muted = true;
          this.tryPlay(gen);
        } else {
          this.setNeedsGesture(true);
        }
      },
    );
  }

  private noteProgress(): void {
    const t = this.video.currentTime;
    if (t !== this.lastTime) {
      this.lastTime = t;
      this.lastProgressAt = performance.now();
    }
  }

  /** A seek began: check on it once it has lasted SEEK_WATCH.stuckMs (seek-watch.ts). */
  private onSeeking(): void {
    this.seekingSince = performance.now();
    this.armSeekTimer();
  }

  private armSeekTimer(): void {
    this.clearSeekTimer();
    const gen = this.generation;
    this.seekTimer = setTimeout(() => {
      this.seekTimer = null;
      if (gen === this.generation) this.checkSeek();
    }, SEEK_WATCH.stuckMs);
  }

  private clearSeekTimer(): void {
    if (this.seekTimer !== null) {
      clearTimeout(this.seekTimer);
      this.seekTimer = null;
    }
  }

  /** A seek to buffered data that never completes (WebKitGTK, issue 9): seek again to the same place. */
  private checkSeek(): void {
    const v = this.video;
    const action = seekWatch({
      seeking: v.seeking,
      seekingForMs: performance.now() - this.seekingSince,
      targetBuffered: inRanges(v.buffered, v.currentTime),
      reseeks: this.reseeks,
    });
    if (action === 'wait') {
      if (v.seeking) this.armSeekTimer(); // e.g. its target is not buffered yet
      return;
    }
    if (action === 'give-up') {
      console.warn('onair: a seek never completed; leaving it to the stall check');
      return;
    }
    this.reseeks++;
    console.info(`onair: the seek to ${v.currentTime.toFixed(3)} s did not complete; seeking there again`);
    v.currentTime = v.currentTime; // fires `seeking` again, which re-arms the check
  }

  /** LL-HLS behind its target latency: play a little faster until back on it (catchup.ts). */
  private catchUp(): void {
    const hls = this.hls;
    if (!hls || !this.rateChangesSafe || this.state !== 'playing' || this.video.paused) return;
    const b = this.video.buffered;
    const ahead = b.length > 0 ? b.end(b.length - 1) - this.video.currentTime : 0;
    const rate = catchUpRate({
      latency: this.latency(),
      target: hls.targetLatency,
      bufferAhead: ahead,
      rate: this.video.playbackRate,
    });
    if (rate !== this.video.playbackRate) this.video.playbackRate = rate;
  }

  private onVideoPlaying(): void {
    if (this.healthTimer === null) return; // no session
    this.policy.resetRetries();
    this.setNeedsGesture(false);
    this.setState('playing');
  }

  private onVideoEnded(): void {
    if (this.healthTimer === null) return;
    if (this.whep) {
      // All WebRTC tracks ended: the server ended the session.
      this.webRtcDropped(this.generation, 'media ended');
      return;
    }
    // A live playlist got EXT-X-ENDLIST and we played to the end: stream over.
    this.policy.streamEnded();
    this.goOffline();
  }

  private onVideoError(): void {
    if (this.transport !== 'native' || this.healthTimer === null) return;
    void this.fail('Playback error');
  }

  private onHlsError(gen: number, data: ErrorData): void {
    if (gen !== this.generation || !data.fatal) return;
    if (data.type === ErrorTypes.MEDIA_ERROR && !this.mediaRecoveryUsed && this.hls) {
      this.mediaRecoveryUsed = true;
      console.warn(`onair: media error (${data.details}), trying to recover`);
      this.hls.recoverMediaError();
      return;
    }
    void this.fail(`${data.type}: ${data.details}`);
  }

  /**
   * Playback broke: drop the session; offline if the playlist is gone, else
   * retry with backoff. `quickFirstRetry`: after a session that played, the
   * first retry comes at once (a lost WebRTC session is usually fine to redo).
   */
  private async fail(reason: string, quickFirstRetry = false): Promise<void> {
    this.teardown();
    const gen = this.generation;
    const result = await this.probe();
    if (!this.running || gen !== this.generation) return;
    if (result === 'live') {
      const delay = this.policy.retryDelayMs(this.pollIntervalMs, quickFirstRetry);
      console.warn(`onair: playback failed (${reason}); retrying in ${Math.round(delay)} ms`);
      this.setState('error', 'Playback interrupted — reconnecting…');
      this.schedulePoll(delay);
    } else {
      this.policy.endLivePeriod();
      this.setState('offline');
      this.schedulePoll(this.pollIntervalMs);
    }
  }

  private goOffline(): void {
    this.teardown();
    this.policy.resetRetries();
    this.policy.endLivePeriod();
    this.setState('offline');
    this.schedulePoll(this.pollIntervalMs);
  }

  /** Once a second during a session: stats, stall and end-of-stream detection. */
  private health(gen: number): void {
    if (gen !== this.generation) return;
    if (this.whep) {
      void this.webRtcHealth(gen);
      return;
    }
    this.noteProgress();
    this.opts.onStats?.(this.stats());
    if (this.needsGesture || this.probing) return;
    const now = performance.now();
    const check = hlsCheck({
      now,
      lastProgressAt: this.lastProgressAt,
      sessionStartedAt: this.sessionStartedAt,
      loading: this.state === 'loading',
      lastProbeAt: this.lastHealthProbeAt,
    });
    if (check === 'fine') return;
    this.lastHealthProbeAt = now;
    this.probing = true;
    void this.probe().then((result) => {
      this.probing = false;
      if (gen !== this.generation || !this.running) return;
      // Still live but stuck: give the player a while longer, then restart it.
      const next = afterHlsProbe(check, result, now - this.lastProgressAt);
      if (next === 'offline') this.goOffline();
      else if (next === 'restart') {
        void this.fail(check === 'probe-not-started' ? 'playback did not start' : 'playback stalled');
      }
    });
  }

  /**
   * WebRTC flavour of health(): getStats() for the latency estimate, and RTP
   * arrival instead of currentTime (which a MediaStream advances regardless).
   * No RTP for a while → probe the playlist: gone → offline; still there for
   * long → reconnect.
   */
  private async webRtcHealth(gen: number): Promise<void> {
    const session = this.whep;
    if (!session || this.rtcStatsBusy) return;
    this.rtcStatsBusy = true;
    let st: WebRtcStats;
    try {
      st = await session.stats();
    } catch {
      return;
    } finally {
      this.rtcStatsBusy = false;
    }
    if (gen !== this.generation) return;
    const now = performance.now();
    const packets = st.videoPacketsReceived + st.audioPacketsReceived;
    if (packets > this.rtcPackets) {
      this.rtcPackets = packets;
      if (this.rtcConnectedAt > 0) this.rtcLastMediaAt = now;
    }
    this.rtcLatency = estimateWebRtcLatency(this.rtcPrev, st);
    this.rtcPrev = st;
    this.opts.onStats?.(this.stats());

    if (this.rtcConnectedAt === 0 || this.needsGesture || this.probing) return;
    const check = webRtcCheck({
      now,
      connectedAt: this.rtcConnectedAt,
      lastMediaAt: this.rtcLastMediaAt,
      loading: this.state === 'loading',
      lastProbeAt: this.lastHealthProbeAt,
    });
    if (check === 'no-picture') {
      this.webRtcFailed(gen, session, new WhepError('timeout', 'connected, but no picture'), false);
      return;
    }
    if (check === 'fine') return;
    this.lastHealthProbeAt = now;
    this.probing = true;
    const result = await this.probe();
    this.probing = false;
    if (gen !== this.generation || !this.running) return;
    const next = afterWebRtcProbe(result, performance.now() - this.rtcLastMediaAt);
    if (next === 'offline') this.goOffline();
    else if (next === 'reconnect') this.webRtcDropped(gen, 'no media');
  }
}

// ---------------------------------------------------------------------------
// PlayerView: the DOM around a LivePlayer

export interface PlayerViewOptions {
  stream: string;
  origin?: string;
  /** See LivePlayerOptions; the pages pass hlsBaseFromPage(). */
  hlsOrigin?: string;
  pollIntervalMs?: number;
  /** See LivePlayerOptions; the pages take them from playerOptionsFromQuery(). */
  transport?: TransportMode;
  iceTimeoutMs?: number;
  iceServers?: RTCIceServer[];
  iceTransportPolicy?: RTCIceTransportPolicy;
  onStateChange?: (state: PlayerState, message: string) => void;
  onTransportChange?: (transport: Transport) => void;
  onStats?: (stats: PlayerStats) => void;
  onPeerConnectionChange?: (pc: RTCPeerConnection | null) => void;
}

const TRANSPORT_LABELS: Record<Transport, string> = { webrtc: 'WebRTC', llhls: 'LL-HLS', native: 'HLS' };

/** "Latency 2.1 s" (LL-HLS, measured) or "Latency ≈ 0.2 s" (WebRTC, estimated). */
export function formatLatency(stats: Pick<PlayerStats, 'latency' | 'latencyEstimated'>): string {
  const l = stats.latency;
  if (l === null) return '';
  if (!stats.latencyEstimated) return `Latency ${l.toFixed(1)} s`;
  return l < 0.095 ? 'Latency < 0.1 s' : `Latency ≈ ${l.toFixed(1)} s`;
}

export interface PlayerView {
  root: HTMLElement;
  video: HTMLVideoElement;
  player: LivePlayer;
}

const ICON_SOUND_OFF =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 9v6h4l5 5V4L7 9H3z" fill="currentColor"/><path d="M16 9l5 6M21 9l-5 6" stroke="currentColor" stroke-width="2" stroke-linecap="round" fill="none"/></svg>';
const ICON_SOUND_ON =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 9v6h4l5 5V4L7 9H3z" fill="currentColor"/><path d="M15.5 8.5a5 5 0 0 1 0 7M18.5 5.5a9 9 0 0 1 0 13" stroke="currentColor" stroke-width="2" stroke-linecap="round" fill="none"/></svg>';
const ICON_FULLSCREEN =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9V4h5M20 9V4h-5M4 15v5h5M20 15v5h-5" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" fill="none"/></svg>';
const ICON_PLAY = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M8 5v14l11-7z" fill="currentColor"/></svg>';
const ICON_OFFLINE =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="2.5" y="5" width="14" height="14" rx="2.5" stroke="currentColor" stroke-width="1.6" fill="none"/><path d="M16.5 10l5-3v10l-5-3" stroke="currentColor" stroke-width="1.6" stroke-linejoin="round" fill="none"/><path d="M3 3l18 18" stroke="currentColor" stroke-width="1.6" stroke-linecap="round"/></svg>';

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, html?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (html !== undefined) e.innerHTML = html;
  return e;
}

/**
 * Build the player UI inside `container` and start it: video, offline /
 * loading / error overlays, LIVE and transport badges with latency, unmute and
 * fullscreen buttons. `container.dataset.state` mirrors the player state for CSS.
 */
export function mountPlayer(container: HTMLElement, opts: PlayerViewOptions): PlayerView {
  container.classList.add('player');
  container.dataset.state = 'loading';

  const video = el('video', 'player-video');
  video.setAttribute('aria-label', `Live stream ${opts.stream}`);

  // Offline overlay: "Offline — waiting for <stream> to go live"
  const offline = el('div', 'player-overlay overlay-offline');
  offline.setAttribute('role', 'status');
  const offIcon = el('div', 'overlay-icon', ICON_OFFLINE);
  const offTitle = el('p', 'overlay-title');
  const offName = el('strong');
  offName.textContent = opts.stream;
  offTitle.append('Offline — waiting for ', offName, ' to go live');
  const offSub = el('p', 'overlay-sub');
  offSub.innerHTML = '<span class="pulse-dot" aria-hidden="true"></span> Playback starts automatically';
  offline.append(offIcon, offTitle, offSub);

  const loading = el('div', 'player-overlay overlay-loading');
  loading.innerHTML = '<div class="spinner" aria-hidden="true"></div>';
  const loadingText = el('p', 'overlay-sub');
  loadingText.textContent = 'Connecting…';
  loading.append(loadingText);

  const errorBox = el('div', 'player-overlay overlay-error');
  errorBox.setAttribute('role', 'alert');
  const errorText = el('p', 'overlay-title');
  errorBox.append(errorText);

  const playBtn = el('button', 'player-bigplay', ICON_PLAY);
  playBtn.type = 'button';
  playBtn.setAttribute('aria-label', 'Play');
  playBtn.hidden = true;

  // Top-left corner: LIVE badge, transport badge, latency
  const corner = el('div', 'player-corner');
  const badge = el('span', 'live-badge', 'LIVE');
  const transportBadge = el('span', 'transport-badge');
  const latency = el('span', 'player-latency');
  latency.title = 'Delay behind the live edge';
  corner.append(badge, transportBadge, latency);

  // Bottom controls
  const controls = el('div', 'player-controls');
  const unmute = el('button', 'player-btn player-unmute');
  unmute.type = 'button';
  const fullscreen = el('button', 'player-btn player-fullscreen', ICON_FULLSCREEN);
  fullscreen.type = 'button';
  fullscreen.setAttribute('aria-label', 'Fullscreen');
  fullscreen.title = 'Fullscreen';
  controls.append(unmute, fullscreen);

  container.replaceChildren(video, corner, controls, offline, loading, errorBox, playBtn);

  const player = new LivePlayer({
    stream: opts.stream,
    video,
    origin: opts.origin,
    hlsOrigin: opts.hlsOrigin,
    pollIntervalMs: opts.pollIntervalMs,
    transport: opts.transport,
    iceTimeoutMs: opts.iceTimeoutMs,
    iceServers: opts.iceServers,
    iceTransportPolicy: opts.iceTransportPolicy,
    onStateChange: (state, message) => {
      container.dataset.state = state;
      errorText.textContent = message || 'Playback error';
      if (state !== 'playing') latency.textContent = '';
      opts.onStateChange?.(state, message);
    },
    onTransportChange: (t) => {
      container.dataset.transport = t;
      transportBadge.textContent = TRANSPORT_LABELS[t];
      transportBadge.dataset.transport = t;
      transportBadge.title = t === 'webrtc' ? 'Playing over WebRTC (WHEP)' : 'Playing over HTTP Live Streaming';
      latency.title =
        t === 'webrtc'
          ? 'Estimated delay: jitter buffer + half the round-trip time (encoder and server not included)'
          : 'Delay behind the live edge';
      loadingText.textContent = t === 'webrtc' ? 'Connecting (WebRTC)…' : 'Connecting…';
      opts.onTransportChange?.(t);
    },
    onStats: (stats) => {
      latency.textContent = formatLatency(stats);
      opts.onStats?.(stats);
    },
    onNeedsGesture: (needed) => {
      playBtn.hidden = !needed;
    },
    onPeerConnectionChange: (pc) => opts.onPeerConnectionChange?.(pc),
  });

  const renderMute = (): void => {
    const muted = video.muted || video.volume === 0;
    unmute.innerHTML = (muted ? ICON_SOUND_OFF : ICON_SOUND_ON) + `<span>${muted ? 'Unmute' : 'Mute'}</span>`;
    unmute.classList.toggle('is-muted', muted);
    unmute.setAttribute('aria-pressed', String(!muted));
  };
  renderMute();
  video.addEventListener('volumechange', renderMute);
  unmute.addEventListener('click', () => {
    const muted = video.muted || video.volume === 0;
    video.muted = !muted;
    if (muted && video.volume === 0) video.volume = 1;
    if (muted && video.paused) void player.playFromGesture();
  });

  playBtn.addEventListener('click', () => {
    video.muted = false;
    void player.playFromGesture();
  });

  if (!document.fullscreenEnabled) fullscreen.hidden = true;
  fullscreen.addEventListener('click', () => {
    if (document.fullscreenElement) void document.exitFullscreen();
    else void container.requestFullscreen().catch(() => undefined);
  });

  player.start();
  return { root: container, video, player };
}
