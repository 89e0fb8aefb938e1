//! `onair_hls::parse_uri` on arbitrary strings, `onair_hls::reload::decide` on arbitrary numbers
//! (and on states the packager can actually be in), and the playlist renderers on arbitrary
//! snapshots.
//!
//! Properties: a parsed name is the canonical spelling of its resource and every resource
//! parses back from its name; `advance_part_limit` is at least 3 and covers 3 s of parts; the
//! live edge is always `Ready`; an ended stream never makes a request wait; with a consistent
//! state, whatever is `Ready` stays `Ready` for every earlier request.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use onair_hls::playlist::{self, PartInfo, PlaylistSnapshot, SegmentInfo};
use onair_hls::reload::{self, ReloadState};
use onair_hls::{Position, Reload, Resource, parse_uri};

#[derive(Arbitrary, Debug)]
enum Res {
    Init,
    Segment(u64),
    Part(u64, u32),
}

#[derive(Arbitrary, Debug)]
struct Request {
    msn: u64,
    part: Option<u32>,
}

/// A state as the packager produces it: the newest complete segment is the live edge's
/// segment (just closed) or the one before it.
#[derive(Arbitrary, Debug)]
struct Consistent {
    edge: Option<(u64, u32)>,
    edge_segment_closed: bool,
    ended: bool,
    part_target_ms: u32,
}

#[derive(Arbitrary, Debug)]
struct Seg {
    msn_step: u8,
    wall_ms: u64,
    complete: bool,
    parts: Vec<(u64, bool)>,
    discontinuity: bool,
    init: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    name: String,
    names: Vec<String>,
    res: Res,
    raw_state: (Option<(u64, u32)>, Option<u64>, bool, u32),
    consistent: Consistent,
    requests: Vec<Request>,
    session: String,
    part_target_ms: u32,
    first_msn: u64,
    segments: Vec<Seg>,
    hint: Option<(u64, u32)>,
    epoch_ms: u64,
    discontinuity_sequence: u64,
    init: u32,
}

fn check_uri(name: &str) {
    if let Some(r) = parse_uri(name) {
        assert_eq!(r.to_string(), name, "non-canonical name accepted");
    }
}

fn ready(r: Reload) -> bool {
    r == Reload::Ready
}

fuzz_target!(|input: Input| {
    // ---- URIs ----
    check_uri(&input.name);
    for n in &input.names {
        check_uri(n);
    }
    let res = match input.res {
        Res::Init => Resource::Init(0),
        Res::Segment(m) => Resource::Segment(m),
        Res::Part(m, p) => Resource::Part(m, p),
    };
    assert_eq!(parse_uri(&res.to_string()), Some(res));
    let path = onair_hls::uri::path(&input.session, res);
    assert!(path.ends_with(&format!("/{res}")));

    // ---- blocking reload, arbitrary state ----
    let (last, complete, ended, pt) = input.raw_state;
    let limit = reload::advance_part_limit(pt);
    assert!(limit >= 3);
    if pt >= 1000 {
        assert_eq!(limit, 3);
    } else if pt > 0 {
        assert!(u64::from(limit) * u64::from(pt) >= 3000, "{limit} parts of {pt} ms");
    }
    let state = ReloadState {
        last_part: last.map(|(msn, part)| Position { msn, part }),
        last_complete_msn: complete,
        ended,
        advance_part_limit: limit,
    };
    for r in &input.requests {
        let d = reload::decide(&state, r.msn, r.part);
        if ended {
            assert_ne!(d, Reload::Wait);
        }
    }
    if let Some(p) = state.last_part {
        assert!(ready(reload::decide(&state, p.msn, Some(p.part))), "live edge not ready: {state:?}");
    }

    // ---- blocking reload, a consistent state ----
    let c = &input.consistent;
    let state = ReloadState {
        last_part: c.edge.map(|(msn, part)| Position { msn, part }),
        last_complete_msn: c
            .edge
            .and_then(|(msn, _)| if c.edge_segment_closed { Some(msn) } else { msn.checked_sub(1) }),
        ended: c.ended,
        advance_part_limit: reload::advance_part_limit(c.part_target_ms),
    };
    for r in &input.requests {
        let d = reload::decide(&state, r.msn, r.part);
        if state.ended {
            assert_ne!(d, Reload::Wait);
        }
        if state.ended || !ready(d) {
            continue;
        }
        // Every earlier request is ready too.
        let before = r.msn.checked_sub(1);
        let mut earlier: Vec<(u64, Option<u32>)> = Vec::new();
        match r.part {
            Some(p) => {
                if let Some(p) = p.checked_sub(1) {
                    earlier.push((r.msn, Some(p)));
                }
                if let Some(b) = before {
                    earlier.extend([(b, None), (b, Some(u32::MAX)), (b, Some(0))]);
                }
            }
            None => {
                earlier.push((r.msn, Some(0)));
                if let Some(b) = before {
                    earlier.extend([(b, None), (b, Some(0))]);
                }
            }
        }
        for (m, p) in earlier {
            assert!(ready(reload::decide(&state, m, p)), "{r:?} ready but not ({m}, {p:?}) in {state:?}");
        }
    }

    // ---- playlists from arbitrary snapshots ----
    let mut msn = input.first_msn;
    let segments: Vec<SegmentInfo> = input
        .segments
        .iter()
        .map(|s| {
            msn = msn.saturating_add(u64::from(s.msn_step));
            let parts: Vec<PartInfo> =
                s.parts.iter().map(|&(duration_us, independent)| PartInfo { duration_us, independent }).collect();
            SegmentInfo {
                msn,
                wall_ms: s.wall_ms,
                complete: s.complete,
                duration_us: parts.iter().fold(0u64, |a, p| a.saturating_add(p.duration_us)),
                parts,
                discontinuity: s.discontinuity,
                init: s.init,
            }
        })
        .collect();
    let snap = PlaylistSnapshot {
        session: &input.session,
        part_target_ms: input.part_target_ms,
        segments,
        preload_hint: input.hint.map(|(msn, part)| Position { msn, part }),
        ended: input.raw_state.2,
        discontinuity_sequence: input.discontinuity_sequence,
        init: input.init,
    };
    let ll = playlist::render_llhls(&snap);
    let plain = playlist::render_hls(&snap);
    assert!(ll.starts_with("#EXTM3U\n") && plain.starts_with("#EXTM3U\n"));
    assert!(playlist::target_duration(&snap.segments) >= 1);
    let date = playlist::iso8601_ms(input.epoch_ms);
    assert!(date.ends_with('Z'));
});
