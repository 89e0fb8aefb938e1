// A seek that never completes although its target is buffered, without DOM or timers: when to
// seek again to the same position, and when to stop trying.
//
// WebKitGTK/WPE (Linux WebKit: media through GStreamer 1.22, Debian 12's) can stay `seeking` at
// HAVE_METADATA for good at the start of an LL-HLS load (issue 9). hls.js seeks to the live
// position right after `loadedmetadata`, while GStreamer is still building the pipeline. The
// seek flushes the audio and the video stream one after the other; in the pipeline's
// `streamsynchronizer` a FLUSH_STOP clears the "waiting for the other streams" flag of a stream
// that has already announced itself (STREAM_START). When the flush falls between the two streams'
// announcements, the second one waits for the first for ever, and the pipeline never prerolls
// (seen in GST_DEBUG=streamsynchronizer:6 logs and gdb backtraces, docs/llhls.md). Newer GStreamer
// clears the flag only for streams at EOS. Another seek flushes the waiting stream, which
// releases it, so LivePlayer (player.ts) asks this whenever a seek has lasted SEEK_WATCH.stuckMs.
// Other engines complete a seek to buffered data in milliseconds and never get here.

export const SEEK_WATCH = {
  /** A seek to buffered data that has lasted this long (ms) is stuck. */
  stuckMs: 750,
  /** At most this many seeks again per player session. */
  maxReseeks: 3,
};

export interface SeekWatchInput {
  /** The element is seeking (`video.seeking`). */
  seeking: boolean;
  /** How long the current seek has lasted (ms). */
  seekingForMs: number;
  /** The seek's target (`currentTime`) lies inside a buffered range. */
  targetBuffered: boolean;
  /** Seeks again made in this session so far. */
  reseeks: number;
}

/** What to do about the current seek: nothing yet, seek again to the same target, or give up. */
export function seekWatch({ seeking, seekingForMs, targetBuffered, reseeks }: SeekWatchInput): 'wait' | 'reseek' | 'give-up' {
  if (!seeking || !targetBuffered || seekingForMs < SEEK_WATCH.stuckMs) return 'wait';
  return reseeks < SEEK_WATCH.maxReseeks ? 'reseek' : 'give-up';
}

/** Whether `t` lies inside one of `ranges` (a TimeRanges-like list of [start, end)). */
export function inRanges(ranges: { length: number; start(i: number): number; end(i: number): number }, t: number): boolean {
  for (let i = 0; i < ranges.length; i++) {
    if (t >= ranges.start(i) && t < ranges.end(i)) return true;
  }
  return false;
}
