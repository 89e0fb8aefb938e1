// The stuck-seek watch (src/seek-watch.ts): a seek to buffered data that lasts too long is made
// again, a bounded number of times; seeks still waiting for data, or quick ones, are left alone.

import { describe, expect, it } from 'vitest';
import { inRanges, SEEK_WATCH, seekWatch } from '../src/seek-watch';

const stuck = { seeking: true, seekingForMs: SEEK_WATCH.stuckMs, targetBuffered: true, reseeks: 0 };

describe('seekWatch', () => {
  it('seeks again when a seek to buffered data has lasted stuckMs', () => {
    expect(seekWatch(stuck)).toBe('reseek');
    expect(seekWatch({ ...stuck, seekingForMs: 10_000 })).toBe('reseek');
  });

  it('leaves a seek alone while it is young, waits for data, or is over', () => {
    expect(seekWatch({ ...stuck, seekingForMs: SEEK_WATCH.stuckMs - 1 })).toBe('wait');
    expect(seekWatch({ ...stuck, targetBuffered: false })).toBe('wait');
    expect(seekWatch({ ...stuck, seeking: false })).toBe('wait');
  });

  it('gives up after maxReseeks', () => {
    expect(seekWatch({ ...stuck, reseeks: SEEK_WATCH.maxReseeks - 1 })).toBe('reseek');
    expect(seekWatch({ ...stuck, reseeks: SEEK_WATCH.maxReseeks })).toBe('give-up');
  });
});

describe('inRanges', () => {
  const ranges = (...r: Array<[number, number]>) => ({
    length: r.length,
    start: (i: number) => r[i][0],
    end: (i: number) => r[i][1],
  });

  it('finds a time inside any range, end excluded', () => {
    const b = ranges([0.146, 5.8], [7, 9]);
    expect(inRanges(b, 1.5)).toBe(true);
    expect(inRanges(b, 0.146)).toBe(true);
    expect(inRanges(b, 8)).toBe(true);
    expect(inRanges(b, 5.8)).toBe(false);
    expect(inRanges(b, 0)).toBe(false);
    expect(inRanges(b, 6)).toBe(false);
    expect(inRanges(ranges(), 1)).toBe(false);
  });
});
