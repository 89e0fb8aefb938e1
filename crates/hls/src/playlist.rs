//! Media playlist rendering (RFC 8216bis, with the Low-Latency HLS tags), from plain data.
//!
//! Two flavours of the same window of segments:
//!
//! * [`render_llhls`]: `EXT-X-SERVER-CONTROL` (blocking reload, part hold-back), `EXT-X-PART-INF`,
//!   `EXT-X-PART` for the segments within three target durations of the live edge and for the
//!   segment in progress, and an `EXT-X-PRELOAD-HINT` for the next part;
//! * [`render_hls`]: complete segments only, no low-latency tags.
//!
//! Both declare `EXT-X-VERSION:6`, the lowest version that allows `EXT-X-MAP` in a playlist that
//! is not I-frame-only; none of the other tags used needs a higher one (no `EXT-X-SKIP`, no
//! variable substitution).

use std::fmt::Write as _;

use crate::uri;
use crate::{Position, Resource};

/// The playlist version written by both renderers.
pub const VERSION: u32 = 6;

/// One part as the playlist sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    pub duration_us: u64,
    /// The part starts with an independent frame (an IDR picture, or audio in an audio-only
    /// stream): `INDEPENDENT=YES`.
    pub independent: bool,
}

/// One segment as the playlist sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub msn: u64,
    /// Unix epoch milliseconds at which the segment's first frame arrived (`PROGRAM-DATE-TIME`).
    pub wall_ms: u64,
    /// Closed: has an `EXTINF` and a segment URI. The segment in progress (last) is not.
    pub complete: bool,
    /// The sum of the parts' durations.
    pub duration_us: u64,
    pub parts: Vec<PartInfo>,
    /// The stream breaks before this segment (`EXT-X-DISCONTINUITY`): the publisher reconnected
    /// or changed its codec configuration.
    pub discontinuity: bool,
    /// The version of the init segment it needs (`EXT-X-MAP` when it differs from the one
    /// before, see [`Resource::Init`]).
    pub init: u32,
}

/// Everything a playlist is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSnapshot<'a> {
    /// The URI directory of this publish (see [`crate::uri`]).
    pub session: &'a str,
    pub part_target_ms: u32,
    /// Oldest first: complete segments, then possibly the one in progress (with at least one
    /// part).
    pub segments: Vec<SegmentInfo>,
    /// The next part to be produced (`EXT-X-PRELOAD-HINT`), absent once the stream ended.
    pub preload_hint: Option<Position>,
    /// The publisher left: `EXT-X-ENDLIST`.
    pub ended: bool,
    /// Discontinuities before the first segment listed (`EXT-X-DISCONTINUITY-SEQUENCE`, written
    /// when not 0).
    pub discontinuity_sequence: u64,
    /// The init segment version in force (for a playlist with no segment yet).
    pub init: u32,
}

/// `EXT-X-TARGETDURATION`: the longest complete segment, rounded up to whole seconds, at least 1.
///
/// Durations are first rounded to milliseconds, as they are printed.
pub fn target_duration(segments: &[SegmentInfo]) -> u64 {
    segments.iter().filter(|s| s.complete).map(|s| us_to_ms(s.duration_us).div_ceil(1000)).max().unwrap_or(1).max(1)
}

fn us_to_ms(us: u64) -> u64 {
    us / 1000 + u64::from(us % 1000 >= 500)
}

/// Seconds with three decimals, from microseconds (rounded half up to the millisecond).
pub fn seconds_us(us: u64) -> String {
    seconds_ms(us_to_ms(us))
}

/// Seconds with three decimals, from milliseconds.
pub fn seconds_ms(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// ISO 8601 UTC date-time with milliseconds (`2026-11-25T09:30:00.123Z`) of a Unix epoch time.
pub fn iso8601_ms(epoch_ms: u64) -> String {
    let ms = epoch_ms % 1000;
    let secs = epoch_ms / 1000;
    let (h, mi, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, d) = civil_from_days(secs / 86_400);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Counts from 1601-01-01, the first day of a 400-year cycle, then peels off whole 400-, 100-,
/// 4- and 1-year periods (146097, 36524, 1461 and 365 days).
fn civil_from_days(days_since_1970: u64) -> (u64, u64, u64) {
    const DAYS_1601_TO_1970: u64 = 134_774;
    let mut d = days_since_1970 + DAYS_1601_TO_1970;
    let c400 = d / 146_097;
    d %= 146_097;
    let c100 = (d / 36_524).min(3); // the 4th century of a cycle is a day longer
    d -= c100 * 36_524;
    let c4 = d / 1461;
    d %= 1461;
    let c1 = (d / 365).min(3); // the 4th year of a 4-year period is the leap year
    d -= c1 * 365;
    let year = 1601 + 400 * c400 + 100 * c100 + 4 * c4 + c1;
    let feb = if is_leap(year) { 29 } else { 28 };
    let months = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 1;
    for len in months {
        if d < len {
            break;
        }
        d -= len;
        month += 1;
    }
    (year, month, d + 1)
}

fn header(
    out: &mut String,
    s: &PlaylistSnapshot<'_>,
    first: Option<&SegmentInfo>,
    media_sequence: u64,
    target: u64,
    ll: bool,
) {
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    if ll {
        let pt = u64::from(s.part_target_ms);
        let _ = writeln!(out, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}", seconds_ms(pt * 3));
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", seconds_ms(pt));
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
    if s.discontinuity_sequence > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", s.discontinuity_sequence);
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let init = first.map_or(s.init, |g| g.init);
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", uri::path(s.session, Resource::Init(init)));
}

/// A segment's lines; `init` is the init version of the segment listed before it (updated).
fn segment_lines(out: &mut String, session: &str, seg: &SegmentInfo, with_parts: bool, init: &mut u32) {
    if seg.discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if seg.init != *init {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", uri::path(session, Resource::Init(seg.init)));
        *init = seg.init;
    }
    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(seg.wall_ms));
    if with_parts {
        for (i, p) in seg.parts.iter().enumerate() {
            let part = u32::try_from(i).unwrap_or(u32::MAX);
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"{}\"",
                seconds_us(p.duration_us),
                uri::path(session, Resource::Part(seg.msn, part))
            );
            out.push_str(if p.independent { ",INDEPENDENT=YES\n" } else { "\n" });
        }
    }
    if seg.complete {
        let _ = writeln!(out, "#EXTINF:{},", seconds_us(seg.duration_us));
        let _ = writeln!(out, "{}", uri::path(session, Resource::Segment(seg.msn)));
    }
}

/// The Low-Latency HLS media playlist.
///
/// Parts are listed for the segment in progress and for every complete segment that ends less
/// than three target durations before the end of the playlist (RFC 8216bis §4.4.4.9).
pub fn render_llhls(s: &PlaylistSnapshot<'_>) -> String {
    let target = target_duration(&s.segments);
    let media_sequence = s.segments.first().map(|g| g.msn).or(s.preload_hint.map(|h| h.msn)).unwrap_or(0);
    let mut out = String::with_capacity(256 + 96 * s.segments.len() * 8);
    let first = s.segments.first();
    header(&mut out, s, first, media_sequence, target, true);
    let mut init = first.map_or(s.init, |g| g.init);
    // Walk back from the end: a segment keeps its parts while the media after its end is
    // shorter than three target durations.
    let horizon_us = target.saturating_mul(3_000_000);
    let mut after_us = 0u64;
    let mut with_parts = vec![false; s.segments.len()];
    for (i, seg) in s.segments.iter().enumerate().rev() {
        with_parts[i] = !seg.complete || after_us < horizon_us;
        after_us = after_us.saturating_add(seg.duration_us);
    }
    for (seg, parts) in s.segments.iter().zip(with_parts) {
        segment_lines(&mut out, s.session, seg, parts, &mut init);
    }
    if let Some(h) = s.preload_hint {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            uri::path(s.session, Resource::Part(h.msn, h.part))
        );
    }
    if s.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The plain HLS media playlist: the complete segments only (valid with none).
pub fn render_hls(s: &PlaylistSnapshot<'_>) -> String {
    let target = target_duration(&s.segments);
    let media_sequence = s
        .segments
        .iter()
        .find(|g| g.complete)
        .or(s.segments.first())
        .map(|g| g.msn)
        .or(s.preload_hint.map(|h| h.msn))
        .unwrap_or(0);
    let mut out = String::with_capacity(256 + 96 * s.segments.len());
    let first = s.segments.iter().find(|g| g.complete);
    header(&mut out, s, first, media_sequence, target, false);
    let mut init = first.map_or(s.init, |g| g.init);
    for seg in s.segments.iter().filter(|g| g.complete) {
        segment_lines(&mut out, s.session, seg, false, &mut init);
    }
    if s.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(iso8601_ms(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(iso8601_ms(1_795_599_000_123), "2026-11-25T09:30:00.123Z");
        assert_eq!(iso8601_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(4_107_456_000_000), "2100-02-28T00:00:00.000Z");
        assert_eq!(iso8601_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Far future: still a date, no panic.
        assert!(iso8601_ms(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn dates_walk_every_day() {
        // Day by day over 1970..2401 the date advances by exactly one calendar day.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for day in 0..157_000u64 {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let feb = if is_leap(y) { 29 } else { 28 };
            let len = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(m - 1) as usize];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(seconds_us(0), "0.000");
        assert_eq!(seconds_us(333_333), "0.333");
        assert_eq!(seconds_us(333_500), "0.334");
        assert_eq!(seconds_us(2_000_000), "2.000");
        assert_eq!(seconds_ms(1002), "1.002");
    }

    fn part(ms: u64, independent: bool) -> PartInfo {
        PartInfo { duration_us: ms * 1000, independent }
    }

    fn seg(msn: u64, wall_ms: u64, complete: bool, parts: Vec<PartInfo>) -> SegmentInfo {
        let duration_us = parts.iter().map(|p| p.duration_us).sum();
        SegmentInfo { msn, wall_ms, complete, duration_us, parts, discontinuity: false, init: 0 }
    }

    const T0: u64 = 1_795_599_000_123; // 2026-11-25T09:30:00.123Z

    fn six_parts() -> Vec<PartInfo> {
        vec![part(333, true), part(334, false), part(333, false), part(333, false), part(334, false), part(333, false)]
    }

    #[test]
    fn llhls_literal() {
        let snap = PlaylistSnapshot {
            session: "s1",
            part_target_ms: 334,
            segments: vec![
                seg(7, T0, true, six_parts()),
                seg(8, T0 + 2000, true, six_parts()),
                seg(9, T0 + 4000, true, six_parts()),
                seg(10, T0 + 6000, false, vec![part(333, true), part(334, false)]),
            ],
            preload_hint: Some(Position { msn: 10, part: 2 }),
            ended: false,
            discontinuity_sequence: 0,
            init: 0,
        };
        // Target 2 s, horizon 6 s: segment 7 ends 4.667 s before the end -> parts kept; it is
        // the oldest, so all four segments list their parts.
        let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"s1/init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:00.123Z
#EXT-X-PART:DURATION=0.333,URI=\"s1/7.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.334,URI=\"s1/7.1.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/7.2.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/7.3.m4s\"
#EXT-X-PART:DURATION=0.334,URI=\"s1/7.4.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/7.5.m4s\"
#EXTINF:2.000,
s1/7.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:02.123Z
#EXT-X-PART:DURATION=0.333,URI=\"s1/8.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.334,URI=\"s1/8.1.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/8.2.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/8.3.m4s\"
#EXT-X-PART:DURATION=0.334,URI=\"s1/8.4.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/8.5.m4s\"
#EXTINF:2.000,
s1/8.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:04.123Z
#EXT-X-PART:DURATION=0.333,URI=\"s1/9.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.334,URI=\"s1/9.1.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/9.2.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/9.3.m4s\"
#EXT-X-PART:DURATION=0.334,URI=\"s1/9.4.m4s\"
#EXT-X-PART:DURATION=0.333,URI=\"s1/9.5.m4s\"
#EXTINF:2.000,
s1/9.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:06.123Z
#EXT-X-PART:DURATION=0.333,URI=\"s1/10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.334,URI=\"s1/10.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1/10.2.m4s\"
";
        assert_eq!(render_llhls(&snap), want);

        let want_plain = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"s1/init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:00.123Z
#EXTINF:2.000,
s1/7.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:02.123Z
#EXTINF:2.000,
s1/8.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:04.123Z
#EXTINF:2.000,
s1/9.m4s
";
        assert_eq!(render_hls(&snap), want_plain);
    }

    #[test]
    fn llhls_old_parts_dropped_and_ended() {
        // Target 1 s (segments of 1.000 s), horizon 3 s: only segments ending < 3 s before the
        // end keep their parts (segment 1 ends 2.4 s before, segment 0 3.4 s).
        let p = || vec![part(500, true), part(500, false)];
        let snap = PlaylistSnapshot {
            session: "ab",
            part_target_ms: 500,
            segments: vec![
                seg(0, 0, true, p()),
                seg(1, 1000, true, p()),
                seg(2, 2000, true, p()),
                seg(3, 3000, true, p()),
                seg(4, 4000, true, vec![part(400, true)]),
            ],
            preload_hint: None,
            ended: true,
            discontinuity_sequence: 0,
            init: 0,
        };
        let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"ab/init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z
#EXTINF:1.000,
ab/0.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:01.000Z
#EXT-X-PART:DURATION=0.500,URI=\"ab/1.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"ab/1.1.m4s\"
#EXTINF:1.000,
ab/1.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:02.000Z
#EXT-X-PART:DURATION=0.500,URI=\"ab/2.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"ab/2.1.m4s\"
#EXTINF:1.000,
ab/2.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:03.000Z
#EXT-X-PART:DURATION=0.500,URI=\"ab/3.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"ab/3.1.m4s\"
#EXTINF:1.000,
ab/3.m4s
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:04.000Z
#EXT-X-PART:DURATION=0.400,URI=\"ab/4.0.m4s\",INDEPENDENT=YES
#EXTINF:0.400,
ab/4.m4s
#EXT-X-ENDLIST
";
        assert_eq!(render_llhls(&snap), want);
    }

    #[test]
    fn discontinuities_and_init_versions() {
        let p = || vec![part(500, true), part(500, false)];
        let mut segments =
            vec![seg(4, 0, true, p()), seg(5, 1000, true, p()), seg(6, 2000, false, vec![part(500, true)])];
        segments[0].init = 1;
        segments[1].init = 1;
        segments[1].discontinuity = true;
        segments[2].discontinuity = true;
        segments[2].init = 2;
        let snap = PlaylistSnapshot {
            session: "d",
            part_target_ms: 500,
            segments,
            preload_hint: Some(Position { msn: 6, part: 1 }),
            ended: false,
            discontinuity_sequence: 3,
            init: 2,
        };
        let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:4
#EXT-X-DISCONTINUITY-SEQUENCE:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"d/init.1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z
#EXT-X-PART:DURATION=0.500,URI=\"d/4.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"d/4.1.m4s\"
#EXTINF:1.000,
d/4.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:01.000Z
#EXT-X-PART:DURATION=0.500,URI=\"d/5.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"d/5.1.m4s\"
#EXTINF:1.000,
d/5.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"d/init.2.mp4\"
#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:02.000Z
#EXT-X-PART:DURATION=0.500,URI=\"d/6.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"d/6.1.m4s\"
";
        assert_eq!(render_llhls(&snap), want);
        let plain = render_hls(&snap);
        assert!(plain.contains("#EXT-X-MAP:URI=\"d/init.1.mp4\"\n"), "{plain}");
        assert!(!plain.contains("init.2"), "{plain}");
    }

    #[test]
    fn target_duration_rounds_up() {
        let segs = vec![seg(0, 0, true, vec![part(2001, true)]), seg(1, 0, false, vec![part(9000, true)])];
        assert_eq!(target_duration(&segs), 3);
        // The segment in progress does not count; none complete -> 1.
        assert_eq!(target_duration(&segs[1..]), 1);
        // 2.0004 s prints as 2.000 and counts as 2.
        let segs = vec![SegmentInfo {
            msn: 0,
            wall_ms: 0,
            complete: true,
            duration_us: 2_000_400,
            parts: vec![],
            discontinuity: false,
            init: 0,
        }];
        assert_eq!(target_duration(&segs), 2);
    }

    #[test]
    fn empty_playlists() {
        let snap = PlaylistSnapshot {
            session: "x",
            part_target_ms: 334,
            segments: vec![seg(0, T0, false, vec![part(300, true)])],
            preload_hint: Some(Position { msn: 0, part: 1 }),
            ended: false,
            discontinuity_sequence: 0,
            init: 0,
        };
        let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"x/init.mp4\"
";
        assert_eq!(render_hls(&snap), want);
        let want = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"x/init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:00.123Z
#EXT-X-PART:DURATION=0.300,URI=\"x/0.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"x/0.1.m4s\"
";
        assert_eq!(render_llhls(&snap), want);
    }
}
