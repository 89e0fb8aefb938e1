// The LL-HLS catch-up rate (src/catchup.ts): when it speeds up, how much, its hysteresis, and
// that it never eats the last of the buffer.

import { describe, expect, it } from 'vitest';
import { CATCH_UP, catchUpRate } from '../src/catchup';

const at = (latency: number | null, rate = 1, bufferAhead = 0.8, target: number | null = 1.0) =>
  catchUpRate({ latency, target, bufferAhead, rate });

describe('catchUpRate', () => {
  it('plays at normal speed on target or unknown', () => {
    expect(at(1.0)).toBe(1);
    expect(at(1.1)).toBe(1);
    expect(at(null)).toBe(1);
    expect(at(1.5, 1, 0.8, null)).toBe(1);
    expect(at(Number.NaN)).toBe(1);
  });

  it('speeds up gently when behind, more when further behind, capped', () => {
    expect(at(1.2)).toBe(1.05);
    expect(at(1.4)).toBeCloseTo(1.1);
    expect(at(1.6)).toBeCloseTo(1.15);
    expect(at(5)).toBe(CATCH_UP.maxRate);
  });

  it('keeps catching up until nearly on target (hysteresis)', () => {
    expect(at(1.08, 1)).toBe(1); // not started below the start threshold
    expect(at(1.08, 1.05)).toBe(1.05); // but goes on once started
    expect(at(1.02, 1.05)).toBe(1); // stops near the target
  });

  it('never speeds up with little buffered ahead', () => {
    expect(at(2.0, 1, 0.1)).toBe(1);
    expect(at(2.0, 1.15, CATCH_UP.minBuffer - 0.01)).toBe(1);
  });
});
