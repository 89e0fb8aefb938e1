// The desktop window's restream panel (src/restream-view.ts).

import { describe, expect, it } from 'vitest';
import type { RestreamStatus } from '../src/api/RestreamStatus';
import { destinationBody, restreamStateText } from '../src/restream-view';

function dest(over: Partial<RestreamStatus>): RestreamStatus {
  return {
    name: 'twitch',
    url: 'rtmp://live.twitch.tv/app',
    enabled: true,
    ome: false,
    state: 'idle',
    bitrate_kbps: 0,
    last_error: null,
    next_attempt_s: null,
    attempts: 0,
    dropped_frames: 0,
    queued_bytes: 0,
    ...over,
  };
}

describe('restream state text', () => {
  it('says each state in words', () => {
    expect(restreamStateText(dest({}))).toBe('starts with the broadcast');
    expect(restreamStateText(dest({ state: 'live', bitrate_kbps: 6000 }))).toBe('live, 6000 kb/s');
    expect(restreamStateText(dest({ state: 'live', bitrate_kbps: 900, dropped_frames: 40 }))).toBe(
      'live, 900 kb/s, 40 frames dropped (slow destination)',
    );
    expect(
      restreamStateText(dest({ state: 'retrying', next_attempt_s: 3.6, attempts: 2, last_error: 'connection refused' })),
    ).toBe('retrying in 4 s (attempt 2): connection refused');
    expect(restreamStateText(dest({ state: 'refused', last_error: 'NetStream.Publish.BadName' }))).toBe(
      'refused: NetStream.Publish.BadName',
    );
    expect(restreamStateText(dest({ state: 'live', enabled: false }))).toBe('disabled');
  });
});

describe('destination body', () => {
  it('keeps the stored key when the field is empty, and marks OME origins', () => {
    expect(destinationBody(' rtmp://h/app ', '  ', 0)).toEqual({
      url: 'rtmp://h/app',
      key: null,
      enabled: true,
      ome_policy_expires_s: 0,
    });
    expect(destinationBody('rtmp://o:1935/app/s', 'sec', 3600)).toEqual({
      url: 'rtmp://o:1935/app/s',
      key: 'sec',
      enabled: true,
      ome_policy_expires_s: 3600,
    });
  });
});
