// LivePlayer's stuck-seek watch wired to a media element (src/seek-watch.ts decides; this checks
// that the player asks it when a seek has lasted SEEK_WATCH.stuckMs and seeks again, at most
// maxReseeks times, and leaves completed seeks alone). A fake element: no DOM in these tests.

import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SEEK_WATCH } from '../src/seek-watch';

/** The parts of an HTMLVideoElement that LivePlayer's constructor and the seek watch touch. */
class FakeVideo extends EventTarget {
  muted = false;
  autoplay = false;
  playsInline = false;
  seeking = false;
  buffered = { length: 1, start: () => 0.1, end: () => 6 };
  seeks: number[] = [];
  private time = 0;
  setAttribute(): void {}
  get currentTime(): number {
    return this.time;
  }
  set currentTime(t: number) {
    this.time = t;
    this.seeks.push(t);
    this.seeking = true;
    this.dispatchEvent(new Event('seeking'));
  }
  finishSeek(): void {
    this.seeking = false;
    this.dispatchEvent(new Event('seeked'));
  }
}

let LivePlayer: typeof import('../src/player').LivePlayer;

beforeAll(async () => {
  const g = globalThis as Record<string, unknown>;
  g.window ??= new EventTarget();
  if (!('navigator' in g)) g.navigator = { userAgent: 'test' };
  ({ LivePlayer } = await import('../src/player'));
});

afterEach(() => {
  vi.useRealTimers();
});

function player(): FakeVideo {
  const video = new FakeVideo();
  new LivePlayer({ stream: 's', video: video as unknown as HTMLVideoElement });
  return video;
}

describe('LivePlayer seek watch', () => {
  it('seeks again to the same place when a seek to buffered data does not complete', () => {
    vi.useFakeTimers();
    const v = player();
    v.currentTime = 1.5; // hls.js's seek to the live position
    vi.advanceTimersByTime(SEEK_WATCH.stuckMs - 10);
    expect(v.seeks).toEqual([1.5]);
    vi.advanceTimersByTime(20);
    expect(v.seeks).toEqual([1.5, 1.5]);
    v.finishSeek();
    vi.advanceTimersByTime(SEEK_WATCH.stuckMs * 5);
    expect(v.seeks).toEqual([1.5, 1.5]);
  });

  it('leaves a seek that completes in time alone, and gives up after maxReseeks', () => {
    vi.useFakeTimers();
    const v = player();
    v.currentTime = 2;
    v.finishSeek();
    vi.advanceTimersByTime(SEEK_WATCH.stuckMs * 2);
    expect(v.seeks).toEqual([2]);
    v.currentTime = 3;
    vi.advanceTimersByTime(SEEK_WATCH.stuckMs * (SEEK_WATCH.maxReseeks + 3));
    expect(v.seeks).toEqual([2, ...Array(SEEK_WATCH.maxReseeks + 1).fill(3)]);
  });

  it('waits while the seek target is not buffered yet', () => {
    vi.useFakeTimers();
    const v = player();
    v.buffered = { length: 0, start: () => 0, end: () => 0 };
    v.currentTime = 4;
    vi.advanceTimersByTime(SEEK_WATCH.stuckMs * 3);
    expect(v.seeks).toEqual([4]);
    v.buffered = { length: 1, start: () => 3.9, end: () => 8 };
    vi.advanceTimersByTime(SEEK_WATCH.stuckMs + 10);
    expect(v.seeks).toEqual([4, 4]);
  });
});
