// The LL-HLS catch-up rate (src/catchup.ts): when it speeds up, how much, its hysteresis, and
// that it never eats the last of the buffer.

import { describe, expect, it } from 'vitest';
import { CATCH_UP, catchUpRate, playbackRateChangesAreSafe } from '../src/catchup';

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

describe('playbackRateChangesAreSafe', () => {
  it('is false only for Linux WebKit (GStreamer media)', () => {
    // Debian's MiniBrowser (WebKitGTK 2.50), as measured.
    expect(
      playbackRateChangesAreSafe(
        'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/60.5 Safari/605.1.15',
      ),
    ).toBe(false);
    expect(
      playbackRateChangesAreSafe(
        'Mozilla/5.0 (Linux; x86_64) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15 WPE',
      ),
    ).toBe(false);
  });

  it('is true for Safari, Chromium, Firefox and Android', () => {
    for (const ua of [
      'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
      'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
      'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36',
      'Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0',
      'Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36',
      'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0',
    ]) {
      expect(playbackRateChangesAreSafe(ua), ua).toBe(true);
    }
  });
});
