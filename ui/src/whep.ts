// WHEP client (WebRTC-HTTP Egress Protocol): one receive-only RTCPeerConnection
// for one viewer session. No DOM here; the player attaches `stream` to its
// <video>. Shared by the viewer, the embed page and (later) the desktop window.
//
// Non-trickle: gather our candidates (capped at ~1 s), POST the complete offer,
// apply the complete answer. ICE servers come back in `Link` headers of the 201
// (`<stun:…>; rel="ice-server"`, `<turn:…>; rel="ice-server"; username=…;
// credential=…`); they cannot change the session that received them (no PATCH /
// ICE restart), so the caller passes them to the next session (see LivePlayer).

export type WhepFailureKind =
  /** The browser has no RTCPeerConnection, or it refused our configuration. */
  | 'unsupported'
  /** The endpoint answered something other than 201 (`status` says what). */
  | 'http'
  /** The POST itself failed (connection refused, CORS, …). */
  | 'network'
  /** No answer / not connected before the deadline. */
  | 'timeout'
  /** ICE/DTLS failed (`connectionState` went `failed`), or the answer was unusable. */
  | 'ice'
  /** close() was called meanwhile. */
  | 'closed';

export class WhepError extends Error {
  readonly kind: WhepFailureKind;
  readonly status: number | undefined;
  constructor(kind: WhepFailureKind, message: string, status?: number) {
    super(message);
    this.name = 'WhepError';
    this.kind = kind;
    this.status = status;
  }
}

export interface WhepOptions {
  /** The WHEP endpoint, e.g. `/live/demo/whep` (resolved against the page). */
  url: string;
  /** ICE servers for this peer connection (e.g. learned from an earlier 201). */
  iceServers?: RTCIceServer[];
  /** 'relay': TURN only (default 'all'). */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Longest wait for our own candidates before POSTing (ms, default 1000). */
  gatherTimeoutMs?: number;
  /** `connectionState` changes, for the whole life of the session. */
  onConnectionStateChange?: (state: RTCPeerConnectionState) => void;
}

export function webRtcSupported(): boolean {
  return typeof RTCPeerConnection === 'function' && typeof MediaStream === 'function';
}

// ---------------------------------------------------------------------------
// Link header (RFC 8288) → RTCIceServer[]

/** Split a Link header value into its link-values (commas inside <…> or "…" don't count). */
function splitLinkValues(header: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inUri = false;
  let inQuote = false;
  for (let i = 0; i < header.length; i++) {
    const c = header[i];
    if (inQuote) {
      cur += c;
      if (c === '\\' && i + 1 < header.length) cur += header[++i];
      else if (c === '"') inQuote = false;
    } else if (inUri) {
      cur += c;
      if (c === '>') inUri = false;
    } else if (c === '<') {
      inUri = true;
      cur += c;
    } else if (c === '"') {
      inQuote = true;
      cur += c;
    } else if (c === ',') {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
    } else {
      cur += c;
    }
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/** `; a=b; c="d \" e"; f` → Map (names lower-cased, quoted strings unescaped, bare names → ''). */
function parseLinkParams(s: string): Map<string, string> {
  const params = new Map<string, string>();
  let i = 0;
  const n = s.length;
  const skipWs = (): void => {
    while (i < n && /\s/.test(s[i])) i++;
  };
  while (i < n) {
    skipWs();
    if (s[i] !== ';') {
      i++;
      continue;
    }
    i++;
    skipWs();
    let name = '';
    while (i < n && !/[\s=;]/.test(s[i])) name += s[i++];
    skipWs();
    let value = '';
    if (s[i] === '=') {
      i++;
      skipWs();
      if (s[i] === '"') {
        i++;
        while (i < n && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < n) i++;
          value += s[i++];
        }
        i++; // closing quote
      } else {
        while (i < n && !/[\s;]/.test(s[i])) value += s[i++];
      }
    }
    name = name.toLowerCase();
    if (name && !params.has(name)) params.set(name, value); // RFC 8288: first occurrence wins
  }
  return params;
}

/**
 * ICE servers from a WHEP/WHIP `Link` header (RFC 9725 §4.6). Only
 * `rel="ice-server"` links with stun:/stuns:/turn:/turns: URIs are used; TURN
 * entries without username + password credential are dropped (the browser
 * would refuse the whole configuration otherwise).
 */
export function parseLinkIceServers(header: string | null | undefined): RTCIceServer[] {
  if (!header) return [];
  const servers: RTCIceServer[] = [];
  for (const link of splitLinkValues(header)) {
    const m = /^<([^>]*)>(.*)$/s.exec(link);
    if (!m) continue;
    const uri = m[1].trim();
    const params = parseLinkParams(m[2]);
    const rel = (params.get('rel') ?? '').toLowerCase().split(/\s+/);
    if (!rel.includes('ice-server')) continue;
    if (!/^(stuns?|turns?):/i.test(uri)) continue;
    const server: RTCIceServer = { urls: uri };
    if (/^turns?:/i.test(uri)) {
      const username = params.get('username');
      const credential = params.get('credential');
      const type = (params.get('credential-type') ?? 'password').toLowerCase();
      if (username === undefined || credential === undefined || type !== 'password') continue;
      server.username = username;
      server.credential = credential;
    }
    servers.push(server);
  }
  return servers;
}

/**
 * The ICE servers a WHEP endpoint hands out, asked before the offer with `OPTIONS` (answered
 * with the same `Link` headers as the 201), so the first peer connection already has the TURN
 * server. Null when the endpoint does not say within `timeoutMs`.
 */
export async function fetchIceServers(url: string, timeoutMs: number): Promise<RTCIceServer[] | null> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetch(new URL(url, document.baseURI).href, { method: 'OPTIONS', signal: ctl.signal });
    return res.ok ? parseLinkIceServers(res.headers.get('Link')) : null;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

function iceServerKey(s: RTCIceServer): string {
  const urls = Array.isArray(s.urls) ? s.urls.join(' ') : s.urls;
  return `${urls}|${s.username ?? ''}|${s.credential ?? ''}`;
}

/** Same servers (order ignored). */
export function sameIceServers(a: readonly RTCIceServer[], b: readonly RTCIceServer[]): boolean {
  if (a.length !== b.length) return false;
  const ka = a.map(iceServerKey).sort();
  const kb = b.map(iceServerKey).sort();
  return ka.every((k, i) => k === kb[i]);
}

// ---------------------------------------------------------------------------
// Stats

export interface WebRtcStats {
  connectionState: RTCPeerConnectionState;
  framesDecoded: number;
  framesDropped: number;
  frameWidth: number;
  frameHeight: number;
  videoPacketsReceived: number;
  audioPacketsReceived: number;
  packetsLost: number;
  /** Cumulative seconds (inbound-rtp video), with the count of frames it covers. */
  jitterBufferDelay: number;
  jitterBufferEmittedCount: number;
  /** Selected candidate pair's current RTT in seconds, or null. */
  roundTripTime: number | null;
  /** Selected candidate pair: candidate types and transport protocol. */
  candidateType: { local: string; remote: string; protocol: string } | null;
}

type StatsEntry = Record<string, unknown>;

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The interesting bits of `pc.getStats()`. */
export async function readWebRtcStats(pc: RTCPeerConnection): Promise<WebRtcStats> {
  const report = await pc.getStats();
  const byId = new Map<string, StatsEntry>();
  report.forEach((s: StatsEntry) => byId.set(str(s.id), s));
  const out: WebRtcStats = {
    connectionState: pc.connectionState,
    framesDecoded: 0,
    framesDropped: 0,
    frameWidth: 0,
    frameHeight: 0,
    videoPacketsReceived: 0,
    audioPacketsReceived: 0,
    packetsLost: 0,
    jitterBufferDelay: 0,
    jitterBufferEmittedCount: 0,
    roundTripTime: null,
    candidateType: null,
  };
  let pair: StatsEntry | undefined;
  for (const s of byId.values()) {
    if (s.type === 'inbound-rtp') {
      out.packetsLost += num(s.packetsLost);
      if (s.kind === 'video') {
        out.videoPacketsReceived += num(s.packetsReceived);
        out.framesDecoded += num(s.framesDecoded);
        out.framesDropped += num(s.framesDropped);
        out.frameWidth = Math.max(out.frameWidth, num(s.frameWidth));
        out.frameHeight = Math.max(out.frameHeight, num(s.frameHeight));
        out.jitterBufferDelay += num(s.jitterBufferDelay);
        out.jitterBufferEmittedCount += num(s.jitterBufferEmittedCount);
      } else if (s.kind === 'audio') {
        out.audioPacketsReceived += num(s.packetsReceived);
      }
    } else if (s.type === 'transport' && !pair) {
      pair = byId.get(str(s.selectedCandidatePairId));
    }
  }
  if (!pair) {
    // No transport stats (older browsers): the nominated, succeeded pair.
    for (const s of byId.values()) {
      if (s.type === 'candidate-pair' && s.nominated === true && s.state === 'succeeded') {
        pair = s;
        break;
      }
    }
  }
  if (pair) {
    if (typeof pair.currentRoundTripTime === 'number') out.roundTripTime = pair.currentRoundTripTime;
    const local = byId.get(str(pair.localCandidateId));
    const remote = byId.get(str(pair.remoteCandidateId));
    if (local || remote) {
      out.candidateType = {
        local: str(local?.candidateType),
        remote: str(remote?.candidateType),
        protocol: str(local?.protocol) || str(remote?.protocol),
      };
    }
  }
  return out;
}

/**
 * Rough glass-to-glass share we can see: jitter-buffer delay per frame (over
 * the last interval when frames were emitted, else the running average) plus
 * half the round-trip time. Seconds, or null before any frame.
 */
export function estimateWebRtcLatency(prev: WebRtcStats | null, cur: WebRtcStats): number | null {
  let jb: number | null = null;
  const dCount = prev ? cur.jitterBufferEmittedCount - prev.jitterBufferEmittedCount : 0;
  if (prev && dCount > 0) jb = (cur.jitterBufferDelay - prev.jitterBufferDelay) / dCount;
  else if (cur.jitterBufferEmittedCount > 0) jb = cur.jitterBufferDelay / cur.jitterBufferEmittedCount;
  if (jb === null || !Number.isFinite(jb) || jb < 0) return null;
  return jb + (cur.roundTripTime ?? 0) / 2;
}

// ---------------------------------------------------------------------------
// WhepSession

/**
 * One WHEP viewer session. Typical use:
 *
 *     const s = new WhepSession({ url: '/live/demo/whep', iceServers });
 *     await s.prepare();                  // offer + candidates (≤ gatherTimeoutMs)
 *     await s.negotiate(deadline);        // POST → 201 + answer (else WhepError)
 *     video.srcObject = s.stream;
 *     await s.waitConnected(deadline);    // connectionState 'connected'
 *     …
 *     s.close();                          // pc.close() + DELETE <Location>
 *
 * `connect(timeoutMs)` does the three steps with one deadline.
 */
export class WhepSession {
  readonly pc: RTCPeerConnection;
  /** Receiver tracks (video + audio), filled by negotiate(). */
  readonly stream: MediaStream;
  /** Absolute endpoint URL. */
  readonly endpoint: string;
  /** The ICE servers this peer connection was created with. */
  readonly iceServers: RTCIceServer[];
  /** `Location` of the session resource (absolute), once the endpoint answered 201. */
  resourceUrl: string | null = null;
  /** ICE servers from the 201's `Link` headers (null before / when there was no 201). */
  linkIceServers: RTCIceServer[] | null = null;

  private readonly gatherTimeoutMs: number;
  private closed = false;
  private deleted = false;

  /** Throws WhepError('unsupported') when the browser cannot do it. */
  constructor(opts: WhepOptions) {
    if (!webRtcSupported()) throw new WhepError('unsupported', 'this browser has no WebRTC');
    this.endpoint = new URL(opts.url, document.baseURI).href;
    this.gatherTimeoutMs = opts.gatherTimeoutMs ?? 1000;
    let iceServers = opts.iceServers ?? [];
    const iceTransportPolicy = opts.iceTransportPolicy ?? 'all';
    let pc: RTCPeerConnection;
    try {
      pc = new RTCPeerConnection({ iceServers, iceTransportPolicy, bundlePolicy: 'max-bundle' });
    } catch (e) {
      if (iceServers.length === 0) throw new WhepError('unsupported', `RTCPeerConnection: ${String(e)}`);
      console.warn('onair: ICE servers refused, continuing without them', iceServers, e);
      iceServers = [];
      pc = new RTCPeerConnection({ iceTransportPolicy, bundlePolicy: 'max-bundle' });
    }
    this.pc = pc;
    this.iceServers = iceServers;
    this.stream = new MediaStream();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const onState = opts.onConnectionStateChange;
    if (onState) pc.addEventListener('connectionstatechange', () => onState(pc.connectionState));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Offer + local description, then wait for ICE gathering (≤ gatherTimeoutMs). */
  async prepare(): Promise<void> {
    const pc = this.pc;
    this.checkOpen();
    await pc.setLocalDescription(await pc.createOffer());
    this.checkOpen();
    if (pc.iceGatheringState === 'complete') return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', onChange);
        resolve();
      };
      const onChange = (): void => {
        if (pc.iceGatheringState === 'complete' || this.closed) done();
      };
      const timer = setTimeout(done, this.gatherTimeoutMs);
      pc.addEventListener('icegatheringstatechange', onChange);
    });
    this.checkOpen();
  }

  /**
   * POST the offer (with whatever candidates we have) and apply the answer.
   * `deadline` is a performance.now() timestamp; the POST is aborted at it.
   */
  async negotiate(deadline: number): Promise<void> {
    const pc = this.pc;
    this.checkOpen();
    const offer = pc.localDescription;
    if (!offer) throw new WhepError('ice', 'no local offer (prepare() first)');
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), Math.max(0, deadline - performance.now()));
    let res: Response;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', Accept: 'application/sdp' },
        body: offer.sdp,
        cache: 'no-store',
        signal: ctrl.signal,
      });
    } catch (e) {
      throw ctrl.signal.aborted
        ? new WhepError('timeout', 'no WHEP answer in time')
        : new WhepError('network', `WHEP request failed: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      clearTimeout(timer);
    }
    if (res.status !== 201) {
      let reason = '';
      try {
        reason = (await res.text()).trim().slice(0, 200);
      } catch {
        // no body
      }
      throw new WhepError('http', `WHEP answered ${res.status}${reason ? `: ${reason}` : ''}`, res.status);
    }
    const location = res.headers.get('Location');
    if (location) {
      try {
        this.resourceUrl = new URL(location, this.endpoint).href;
      } catch {
        console.warn('onair: unusable WHEP Location', location);
      }
    }
    this.linkIceServers = parseLinkIceServers(res.headers.get('Link'));
    let answer: string;
    try {
      answer = await res.text();
    } catch (e) {
      this.deleteResource(false);
      throw new WhepError('network', `WHEP answer unreadable: ${String(e)}`);
    }
    if (this.closed) {
      // close() ran while the POST was in flight: the server made a session for nothing.
      this.deleteResource(false);
      throw new WhepError('closed', 'closed');
    }
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    } catch (e) {
      throw new WhepError('ice', `bad SDP answer: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.checkOpen();
    for (const r of pc.getReceivers()) {
      if (r.track.readyState === 'live' && !this.stream.getTrackById(r.track.id)) this.stream.addTrack(r.track);
    }
  }

  /** Resolves once `connectionState` is 'connected'; rejects on failed/closed or at `deadline`. */
  waitConnected(deadline: number): Promise<void> {
    const pc = this.pc;
    if (pc.connectionState === 'connected') return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const finish = (err?: WhepError): void => {
        clearTimeout(timer);
        pc.removeEventListener('connectionstatechange', onChange);
        if (err) reject(err);
        else resolve();
      };
      const onChange = (): void => {
        const s = pc.connectionState;
        if (s === 'connected') finish();
        else if (s === 'failed') finish(new WhepError('ice', 'ICE/DTLS connection failed'));
        else if (s === 'closed' || this.closed) finish(new WhepError('closed', 'closed'));
      };
      const timer = setTimeout(
        () => finish(this.closed ? new WhepError('closed', 'closed') : new WhepError('timeout', `not connected in time (${pc.iceConnectionState})`)),
        Math.max(0, deadline - performance.now()),
      );
      pc.addEventListener('connectionstatechange', onChange);
    });
  }

  /** prepare + negotiate + waitConnected; the POST and the connection share `timeoutMs` (gathering comes first). */
  async connect(timeoutMs: number): Promise<void> {
    await this.prepare();
    const deadline = performance.now() + timeoutMs;
    await this.negotiate(deadline);
    await this.waitConnected(deadline);
  }

  stats(): Promise<WebRtcStats> {
    return readWebRtcStats(this.pc);
  }

  /**
   * End the session: close the peer connection and DELETE the resource.
   * `keepalive` lets the DELETE outlive the page (for `pagehide`). Idempotent.
   */
  close(keepalive = false): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.pc.close();
    } catch {
      // already closed
    }
    for (const t of this.stream.getTracks()) t.stop();
    this.deleteResource(keepalive);
  }

  private deleteResource(keepalive: boolean): void {
    const url = this.resourceUrl;
    if (!url || this.deleted) return;
    this.deleted = true;
    void fetch(url, { method: 'DELETE', keepalive, cache: 'no-store' }).then(
      (res) => void res.body?.cancel().catch(() => undefined),
      () => undefined,
    );
  }

  private checkOpen(): void {
    if (this.closed) throw new WhepError('closed', 'closed');
  }
}
