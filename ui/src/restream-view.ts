// The desktop window's restream panel, pure: a destination's state in words, and the body of an
// add/replace request from the form's values (the key stays out when left empty: the stored one
// is kept). Unit-tested in test/restream-view.test.ts.
import type { DestinationBody } from './api/DestinationBody';
import type { RestreamStatus } from './api/RestreamStatus';

/** `live, 6000 kb/s`, `retrying in 4 s (attempt 2): …`, `refused: …`, `disabled`, … */
export function restreamStateText(d: RestreamStatus): string {
  if (!d.enabled) return 'disabled';
  const dropped = d.dropped_frames > 0 ? `, ${d.dropped_frames} frames dropped (slow destination)` : '';
  switch (d.state) {
    case 'live':
      return `live, ${d.bitrate_kbps} kb/s${dropped}`;
    case 'retrying': {
      const next = d.next_attempt_s === null ? '' : ` in ${Math.round(d.next_attempt_s)} s`;
      return `retrying${next} (attempt ${d.attempts}): ${d.last_error ?? ''}`;
    }
    case 'refused':
      return `refused: ${d.last_error ?? 'the destination rejected the stream key'}`;
    case 'connecting':
      return 'connecting…';
    case 'idle':
      return 'starts with the broadcast';
  }
}

/** The form's values as a request body; `omeValidityS` > 0 makes it an OME origin. */
export function destinationBody(url: string, key: string, omeValidityS: number): DestinationBody {
  return {
    url: url.trim(),
    key: key.trim() === '' ? null : key.trim(),
    enabled: true,
    ome_policy_expires_s: omeValidityS > 0 ? Math.round(omeValidityS) : 0,
  };
}
