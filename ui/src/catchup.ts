// Live catch-up for LL-HLS, without DOM or timers: the playback rate that brings a player that
// has fallen behind its target latency (PART-HOLD-BACK) back to it.
//
// hls.js has its own catch-up, but it only engages with more than one second buffered ahead of
// the playhead, which a sub-second target never has: a player that started (or stalled) late
// stayed 0.3–0.55 s behind its target for good (measured, docs/llhls.md). This one engages with a
// few hundred milliseconds of buffer, speeds up gently (at most CATCH_UP.maxRate; browsers keep
// the audio's pitch) and has hysteresis, so the rate does not flap between two values. LivePlayer
// (player.ts) turns hls.js's catch-up off and asks this on every `timeupdate`.
//
// Not in WebKitGTK/WPE (Linux WebKit, media through GStreamer): there a change of playbackRate
// is a flushing seek of the whole pipeline, and during live MSE playback it left the video paused
// for good after a `pause`/`play`/`pause` burst, or deadlocked the web process at the start of a
// load (its main thread waiting in the flush for the source's streaming thread, which waited for
// the main thread) — the LL-HLS stall of issue 9, with hls.js's own catch-up as the trigger before
// this module existed. Safari (AVFoundation), Chromium and Firefox change the rate without a seek.

export const CATCH_UP = {
  /** Behind the target by more than this (seconds) → speed up. */
  start: 0.12,
  /** Speeding up goes on until behind by at most this. */
  stop: 0.03,
  /** Never speed up with less than this buffered ahead of the playhead (seconds). */
  minBuffer: 0.25,
  /** The fastest rate used. */
  maxRate: 1.15,
};

export interface CatchUpInput {
  /** Seconds behind the live edge (hls.js's `latency`), or null when unknown. */
  latency: number | null;
  /** The target latency (hls.js's `targetLatency`: PART-HOLD-BACK), or null when unknown. */
  target: number | null;
  /** Seconds buffered ahead of the playhead. */
  bufferAhead: number;
  /** The playback rate now. */
  rate: number;
}

/** The playback rate to use now: 1, or a little faster while catching up. */
export function catchUpRate({ latency, target, bufferAhead, rate }: CatchUpInput): number {
  if (latency === null || target === null || !Number.isFinite(latency) || !Number.isFinite(target)) return 1;
  if (bufferAhead < CATCH_UP.minBuffer) return 1;
  const behind = latency - target;
  const catchingUp = rate > 1;
  if (behind <= (catchingUp ? CATCH_UP.stop : CATCH_UP.start)) return 1;
  // 5 % faster per 0.2 s behind, in steps of 0.05, between 1.05 and maxRate.
  const steps = Math.max(1, Math.round(behind / 0.2));
  return Math.min(CATCH_UP.maxRate, 1 + 0.05 * steps);
}

/**
 * Whether this browser changes the playback rate without a seek of its media pipeline, i.e. it
 * is not WebKitGTK or WPE (Linux WebKit: AppleWebKit without Chrome, on X11/Linux, not Android).
 */
export function playbackRateChangesAreSafe(userAgent: string): boolean {
  const webkit = /AppleWebKit\//.test(userAgent) && !/(Chrome|Chromium|CriOS|Edg|OPR)\//.test(userAgent);
  const linux = /(X11|Linux|WPE)/.test(userAgent) && !/Android/.test(userAgent);
  return !(webkit && linux);
}
