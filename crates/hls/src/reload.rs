//! Blocking playlist reload decisions (RFC 8216bis §6.2.5.2), as a pure function.
//!
//! A client asks for the playlist with `_HLS_msn=<M>[&_HLS_part=<P>]`; the server answers once the
//! playlist contains segment `M` (part `P`) or anything later, and rejects requests too far in the
//! future.

use crate::Position;

/// What the server should do with a blocking playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The playlist already satisfies the request: serve it now.
    Ready,
    /// Not yet: hold the request and ask again when a part completes (the server bounds the wait).
    Wait,
    /// Too far ahead of the live edge (HTTP 400), with a reason.
    BadRequest(&'static str),
}

/// What the decision needs to know about the packager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadState {
    /// The last complete part (the live edge), if any.
    pub last_part: Option<Position>,
    /// The newest complete segment, if any.
    pub last_complete_msn: Option<u64>,
    /// The stream ended: nothing more will come, so waiting is pointless.
    pub ended: bool,
    /// How many parts beyond the last one a request may ask for (see [`advance_part_limit`]).
    pub advance_part_limit: u32,
}

/// The Advance Part Limit: three divided by the part target in seconds when that is below one
/// second (rounded up), three otherwise.
pub fn advance_part_limit(part_target_ms: u32) -> u32 {
    if part_target_ms == 0 {
        3000
    } else if part_target_ms < 1000 {
        3000u32.div_ceil(part_target_ms)
    } else {
        3
    }
}

/// Decides a blocking reload for `_HLS_msn=msn` and optional `_HLS_part=part`.
///
/// * `BadRequest` when `msn` is more than two segments after the last segment of the playlist
///   (the one holding the last complete part, which may be the segment in progress), or when
///   `part` is more than the advance part limit beyond the last part;
/// * `Ready` when segment `msn` is complete (whatever `part` asks, the playlist already shows that
///   segment in full), when the part `(msn, part)` is complete, or when the stream ended;
/// * `Wait` otherwise (including a whole-segment request for the segment in progress).
pub fn decide(state: &ReloadState, msn: u64, part: Option<u32>) -> Reload {
    let limit = u64::from(state.advance_part_limit);
    let (last_msn, last_part) = match state.last_part {
        Some(p) => (Some(p.msn), Some(p.part)),
        None => (None, None),
    };
    // With nothing in the playlist yet, the "last segment" is taken as the first to come (0).
    let last_msn_or_0 = last_msn.unwrap_or(0);
    if msn > last_msn_or_0.saturating_add(2) {
        return Reload::BadRequest("_HLS_msn is more than two segments ahead of the playlist");
    }
    if let Some(p) = part {
        let p = u64::from(p);
        // How many parts beyond the last complete one the request reaches (counting at least
        // one per segment boundary crossed, the length of the segments in between unknown).
        let ahead = match (last_msn, last_part) {
            (Some(m), Some(lp)) if msn == m => p.saturating_sub(u64::from(lp)),
            (Some(m), _) if msn < m => 0,
            (Some(m), _) => (msn - m) + p,
            (None, _) => msn + p + 1,
        };
        if ahead > limit {
            return Reload::BadRequest("_HLS_part is beyond the advance part limit");
        }
    }
    if state.ended {
        return Reload::Ready;
    }
    if state.last_complete_msn.is_some_and(|c| msn <= c) {
        return Reload::Ready;
    }
    match (part, state.last_part) {
        (Some(p), Some(last)) if (msn, p) <= (last.msn, last.part) => Reload::Ready,
        _ => Reload::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(last: Option<(u64, u32)>, complete: Option<u64>) -> ReloadState {
        ReloadState {
            last_part: last.map(|(msn, part)| Position { msn, part }),
            last_complete_msn: complete,
            ended: false,
            advance_part_limit: advance_part_limit(334),
        }
    }

    #[test]
    fn limit() {
        assert_eq!(advance_part_limit(334), 9);
        assert_eq!(advance_part_limit(500), 6);
        assert_eq!(advance_part_limit(1000), 3);
        assert_eq!(advance_part_limit(4000), 3);
        assert_eq!(advance_part_limit(0), 3000);
    }

    #[test]
    fn decisions() {
        use Reload::*;
        // Segment 5 in progress with parts 0..=2 complete; segment 4 is the newest complete one.
        let s = state(Some((5, 2)), Some(4));
        let bad = |r: Reload| matches!(r, BadRequest(_));
        // Parts already there.
        assert_eq!(decide(&s, 5, Some(0)), Ready);
        assert_eq!(decide(&s, 5, Some(2)), Ready);
        assert_eq!(decide(&s, 4, Some(5)), Ready);
        assert_eq!(decide(&s, 4, Some(100)), Ready, "segment 4 is complete: later state exists");
        assert_eq!(decide(&s, 0, None), Ready);
        assert_eq!(decide(&s, 4, None), Ready);
        // The next part, the segment in progress, the next segments: wait.
        assert_eq!(decide(&s, 5, Some(3)), Wait);
        assert_eq!(decide(&s, 5, None), Wait);
        assert_eq!(decide(&s, 6, Some(0)), Wait);
        assert_eq!(decide(&s, 6, None), Wait);
        assert_eq!(decide(&s, 7, None), Wait);
        assert_eq!(decide(&s, 7, Some(0)), Wait);
        // Too far.
        assert!(bad(decide(&s, 8, None)));
        assert!(bad(decide(&s, 8, Some(0))));
        assert!(bad(decide(&s, u64::MAX, Some(u32::MAX))));
        assert_eq!(decide(&s, 5, Some(11)), Wait);
        assert!(bad(decide(&s, 5, Some(12))));
        assert!(bad(decide(&s, 5, Some(u32::MAX))));
        assert_eq!(decide(&s, 6, Some(8)), Wait);
        assert!(bad(decide(&s, 6, Some(9))));

        // The segment in progress has no part yet: the last part is the end of segment 5.
        let s = state(Some((5, 5)), Some(5));
        assert_eq!(decide(&s, 5, Some(6)), Ready, "segment 5 closed with 6 parts");
        assert_eq!(decide(&s, 5, None), Ready);
        assert_eq!(decide(&s, 6, Some(0)), Wait);
        assert_eq!(decide(&s, 6, None), Wait);
        assert!(bad(decide(&s, 8, None)));

        // Nothing yet.
        let s = state(None, None);
        assert_eq!(decide(&s, 0, Some(0)), Wait);
        assert_eq!(decide(&s, 0, None), Wait);
        assert_eq!(decide(&s, 2, None), Wait);
        assert!(bad(decide(&s, 3, None)));
        assert!(bad(decide(&s, 0, Some(9))));

        // Ended: no waiting.
        let mut s = state(Some((5, 2)), Some(5));
        s.ended = true;
        assert_eq!(decide(&s, 6, Some(0)), Ready);
        assert_eq!(decide(&s, 7, None), Ready);
        assert!(bad(decide(&s, 8, None)));
    }
}
