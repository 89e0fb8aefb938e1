//! Drives `onair_hls::Packager` with a sequence of operations decoded from the input: codec
//! configurations (the real ones from the OBS test stream, variants of them, or whatever
//! `AvcConfig::parse` / `AacConfig::parse` make of input bytes), video and audio frames with
//! arbitrary timestamps (steps, jumps back and forth, huge values), composition offsets, key
//! flags, payloads and wall clocks, interleaved with every lookup (parts, segments, playlists,
//! blocking reloads) at arbitrary or nearby positions, and `finish`. `HlsConfig` is fuzzed too.
//!
//! Besides "never panics", it checks what the crate documents:
//! * the live edge (`position()`) never goes back, and its part is `Ready`, as is a blocking
//!   reload for it; the playlists exist once a part does;
//! * every part is a well-formed `moof` + `mdat` (sizes agree) and, per track, the decode
//!   timeline is contiguous from one fragment to the next ("decode times never go back");
//! * after `finish` no blocking reload waits and the playlists end with `EXT-X-ENDLIST`.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair_fuzz::REAL;
use onair_hls::{HlsConfig, Lookup, Packager, Position, Reload};
use onair_media::{AacConfig, AvcConfig, Frame, Track};

const T0: u64 = 1_795_599_000_123;

#[derive(Arbitrary, Debug)]
enum PartTarget {
    Default,
    Small(u8),
    Ms(u16),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Window {
    Default,
    Small(u8),
    Huge,
}

#[derive(Arbitrary, Debug)]
struct Input {
    part_target: PartTarget,
    /// `min_segment_ms`: `None` = the default (1000).
    min_segment_ms: Option<u32>,
    window: Window,
    session: Session,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Session {
    Plain,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum VideoConfig {
    Real,
    /// The real record with bytes appended (a different record: a discontinuity after the start).
    RealExtended(Vec<u8>),
    /// The real record with a frame rate the SPS parser could report (`time_scale / 2 units`),
    /// or none.
    RealFps(Option<(u32, u32)>),
    /// Whatever the parser accepts.
    Parsed(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum AudioConfig {
    /// `AacConfig::parse(&[0x11, 0x90])`.
    Lc48k,
    /// The stream's own sequence header (with SBR sync extension).
    Stream,
    Parsed(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dts {
    /// One frame later (33 ms video, 21 ms audio).
    Next,
    Same,
    Step(u16),
    Back(u16),
    Abs(u64),
    Extreme(bool),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Wall {
    Same,
    Step(u16),
    Abs(u64),
}

#[derive(Arbitrary, Debug)]
enum Data {
    /// A real frame of the track from the test stream (index modulo their count).
    Real(u16),
    Zeros(u16),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Msn {
    /// Relative to the live edge (or 0).
    Near(i8),
    Abs(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum PartNo {
    Near(i8),
    Abs(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    VideoConfig(VideoConfig),
    AudioConfig(AudioConfig),
    Video {
        dts: Dts,
        cts: i32,
        keyframe: bool,
        data: Data,
        wall: Wall,
    },
    Audio {
        dts: Dts,
        data: Data,
        wall: Wall,
    },
    /// `n` regular frames of both tracks (30 fps video, key every `gop` frames, 48 kHz audio).
    Run {
        n: u8,
        gop: u8,
    },
    Part(Msn, PartNo),
    Segment(Msn),
    Reload(Msn, Option<PartNo>),
    Playlists,
    Init,
    Finish,
}

fn video_config(c: VideoConfig) -> Option<AvcConfig> {
    let real = &REAL.avc;
    match c {
        VideoConfig::Real => Some(real.clone()),
        VideoConfig::RealExtended(extra) => {
            let mut c = real.clone();
            let mut record = c.record.to_vec();
            record.extend_from_slice(&extra);
            c.record = Bytes::from(record);
            Some(c)
        }
        VideoConfig::RealFps(rate) => {
            let mut c = real.clone();
            c.fps = rate.and_then(|(units, scale)| {
                (units != 0 && scale != 0).then(|| f64::from(scale) / (2.0 * f64::from(units)))
            });
            Some(c)
        }
        VideoConfig::Parsed(bytes) => AvcConfig::parse(&bytes).ok(),
    }
}

fn audio_config(c: AudioConfig) -> Option<AacConfig> {
    match c {
        AudioConfig::Lc48k => Some(REAL.aac.clone()),
        AudioConfig::Stream => Some(REAL.aac_stream.clone()),
        AudioConfig::Parsed(bytes) => AacConfig::parse(&bytes).ok(),
    }
}

fn data(d: Data, track: Track) -> Bytes {
    match d {
        Data::Real(i) => {
            let tags = if track == Track::Video { &REAL.video } else { &REAL.audio };
            tags[usize::from(i) % tags.len()].data.clone()
        }
        Data::Zeros(n) => Bytes::from(vec![0u8; usize::from(n % 4096)]),
        Data::Bytes(b) => Bytes::from(b),
    }
}

fn step(now: u64, d: Dts, frame_ms: u64) -> u64 {
    match d {
        Dts::Next => now.saturating_add(frame_ms),
        Dts::Same => now,
        Dts::Step(s) => now.saturating_add(u64::from(s)),
        Dts::Back(s) => now.saturating_sub(u64::from(s)),
        Dts::Abs(v) => v,
        Dts::Extreme(high) => {
            if high {
                u64::MAX - u64::from(u8::MAX)
            } else {
                0
            }
        }
    }
}

fn wall_step(now: u64, w: Wall) -> u64 {
    match w {
        Wall::Same => now,
        Wall::Step(s) => now.saturating_add(u64::from(s)),
        Wall::Abs(v) => v,
    }
}

fn msn(p: &Packager, m: Msn) -> u64 {
    match m {
        Msn::Near(d) => {
            let edge = p.position().map_or(0, |pos| pos.msn);
            edge.saturating_add_signed(i64::from(d))
        }
        Msn::Abs(v) => v,
    }
}

fn part_no(p: &Packager, n: PartNo) -> u32 {
    match n {
        PartNo::Near(d) => {
            let edge = p.position().map_or(0, |pos| pos.part);
            edge.saturating_add_signed(i32::from(d))
        }
        PartNo::Abs(v) => v,
    }
}

// ---- reading fragments back ----------------------------------------------------------------

struct Run {
    track: u32,
    base: u64,
    duration: u64,
    bytes: u64,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Boxes of `b` as (type, payload).
fn boxes(mut b: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 8, "truncated box header");
        let size = be32(b, 0) as usize;
        let kind: [u8; 4] = b[4..8].try_into().unwrap();
        let (header, size) = if size == 1 {
            let large = u64::from_be_bytes(b[8..16].try_into().unwrap());
            (16, usize::try_from(large).unwrap())
        } else {
            (8, size)
        };
        assert!(size >= header && size <= b.len(), "box {kind:?} size {size} of {}", b.len());
        out.push((kind, &b[header..size]));
        b = &b[size..];
    }
    out
}

/// Checks one part's `moof` + `mdat` and returns its track runs.
fn read_fragment(bytes: &[u8]) -> Vec<Run> {
    let top = boxes(bytes);
    assert_eq!(top.len(), 2, "a part is one moof and one mdat");
    assert_eq!(&top[0].0, b"moof");
    assert_eq!(&top[1].0, b"mdat");
    let moof_len = top[0].1.len() + 8;
    let mdat_header = bytes.len() - moof_len - top[1].1.len();
    let mut runs = Vec::new();
    let mut offset = (moof_len + mdat_header) as u64;
    for (kind, body) in boxes(top[0].1) {
        match &kind {
            b"mfhd" => {}
            b"traf" => {
                let mut track = None;
                let mut base = None;
                let mut run = None;
                for (kind, body) in boxes(body) {
                    match &kind {
                        b"tfhd" => track = Some(be32(body, 4)),
                        b"tfdt" => {
                            assert_eq!(body[0], 1, "tfdt version 1");
                            base = Some(u64::from_be_bytes(body[4..12].try_into().unwrap()));
                        }
                        b"trun" => {
                            let count = be32(body, 4) as usize;
                            let data_offset = be32(body, 8) as u64;
                            assert_eq!(data_offset, offset, "trun data offset");
                            assert!(count > 0, "empty trun");
                            assert_eq!(body.len(), 12 + 16 * count, "trun length");
                            let (mut duration, mut size) = (0u64, 0u64);
                            for i in 0..count {
                                duration += u64::from(be32(body, 12 + 16 * i));
                                size += u64::from(be32(body, 16 + 16 * i));
                            }
                            run = Some((duration, size));
                        }
                        other => panic!("unexpected box {other:?} in traf"),
                    }
                }
                let (duration, size) = run.expect("trun");
                offset += size;
                runs.push(Run { track: track.expect("tfhd"), base: base.expect("tfdt"), duration, bytes: size });
            }
            other => panic!("unexpected box {other:?} in moof"),
        }
    }
    assert!(!runs.is_empty(), "a part without samples");
    let total: u64 = runs.iter().map(|r| r.bytes).sum();
    assert_eq!(total, top[1].1.len() as u64, "mdat size = sum of sample sizes");
    runs
}

/// Follows the parts as they complete, checking each and the per-track decode timelines.
struct Follower {
    /// Next part to read.
    next: Position,
    /// Per track (video, audio): where the next run must start, if known.
    expect: [Option<u64>; 2],
    last_edge: Option<Position>,
}

impl Follower {
    fn new() -> Self {
        Follower { next: Position { msn: 0, part: 0 }, expect: [None, None], last_edge: None }
    }

    fn check(&mut self, p: &Packager) {
        let edge = p.position();
        assert!(edge >= self.last_edge, "the live edge went back: {:?} -> {edge:?}", self.last_edge);
        self.last_edge = edge;
        let Some(edge) = edge else {
            assert!(p.llhls_playlist().is_none() && p.hls_playlist().is_none());
            return;
        };
        assert!(p.init_segment(p.snapshot().init).is_some(), "a part without an init segment");
        assert!(p.llhls_playlist().is_some() && p.hls_playlist().is_some(), "no playlist at {edge:?}");
        assert!(matches!(p.part(edge.msn, edge.part), Lookup::Ready(_)), "live edge {edge:?} not ready");
        assert_eq!(p.blocking_reload(edge.msn, Some(edge.part)), Reload::Ready);
        while self.next <= edge {
            let Position { msn, part } = self.next;
            match p.part(msn, part) {
                Lookup::Ready(bytes) => {
                    if part == 0 && p.snapshot().segments.iter().any(|s| s.msn == msn && s.discontinuity) {
                        // A discontinuity (a configuration change): a new timeline may start.
                        self.expect = [None, None];
                    }
                    for run in read_fragment(&bytes) {
                        let i = match run.track {
                            1 => 0,
                            2 => 1,
                            t => panic!("track id {t}"),
                        };
                        if let Some(e) = self.expect[i] {
                            assert_eq!(run.base, e, "track {} decode time discontinuity at {msn}.{part}", run.track);
                        }
                        self.expect[i] = Some(run.base.saturating_add(run.duration));
                    }
                    self.next.part += 1;
                }
                _ => {
                    let ended_here = matches!(p.segment(msn), Lookup::Ready(parts) if parts.len() == part as usize);
                    if !ended_here && msn < edge.msn {
                        // The rest of the segment left the window before it was read: the
                        // timeline continues somewhere we have not seen.
                        self.expect = [None, None];
                    }
                    if msn >= edge.msn {
                        break;
                    }
                    self.next = Position { msn: msn + 1, part: 0 };
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let config = HlsConfig {
        part_target_ms: match input.part_target {
            PartTarget::Default => 334,
            PartTarget::Small(v) => u32::from(v),
            PartTarget::Ms(v) => u32::from(v),
            PartTarget::Raw(v) => v,
        },
        min_segment_ms: input.min_segment_ms.unwrap_or(1000),
        window_segments: match input.window {
            Window::Default => 6,
            Window::Small(v) => usize::from(v % 16),
            Window::Huge => usize::MAX,
        },
        ..HlsConfig::default()
    };
    let session = match &input.session {
        Session::Plain => "fz",
        Session::Any(s) => s.as_str(),
    };
    let mut p = Packager::new(config, session);
    let mut follower = Follower::new();
    let (mut vdts, mut adts, mut wall) = (0u64, 0u64, T0);
    let mut finished = false;

    for op in input.ops {
        match op {
            Op::VideoConfig(c) => {
                if let Some(c) = video_config(c) {
                    p.set_video_config(c);
                }
            }
            Op::AudioConfig(c) => {
                if let Some(c) = audio_config(c) {
                    p.set_audio_config(c);
                }
            }
            Op::Video { dts, cts, keyframe, data: d, wall: w } => {
                vdts = step(vdts, dts, 33);
                wall = wall_step(wall, w);
                let frame = Frame { track: Track::Video, dts: vdts, cts, keyframe, data: data(d, Track::Video) };
                let out = p.push(frame, wall);
                if finished {
                    assert!(!out.part_completed && !out.segment_completed);
                }
            }
            Op::Audio { dts, data: d, wall: w } => {
                adts = step(adts, dts, 21);
                wall = wall_step(wall, w);
                let frame =
                    Frame { track: Track::Audio, dts: adts, cts: 0, keyframe: true, data: data(d, Track::Audio) };
                p.push(frame, wall);
            }
            Op::Run { n, gop } => {
                let gop = u64::from(gop.max(1));
                for i in 0..u64::from(n % 64) {
                    vdts = vdts.saturating_add(if i % 3 == 2 { 34 } else { 33 });
                    wall = wall.saturating_add(33);
                    let real = &REAL.video[(i as usize) % REAL.video.len()];
                    let keyframe = (vdts / 33) % gop == 0;
                    p.push(Frame { track: Track::Video, dts: vdts, cts: 0, keyframe, data: real.data.clone() }, wall);
                    // Audio far behind (after a jump of the video clock) catches up in one step.
                    if vdts.saturating_sub(adts) > 1000 {
                        adts = vdts - 1000;
                    }
                    while adts < vdts {
                        adts = adts.saturating_add(if adts % 3 == 0 { 22 } else { 21 });
                        let real = &REAL.audio[(adts as usize / 21) % REAL.audio.len()];
                        p.push(
                            Frame { track: Track::Audio, dts: adts, cts: 0, keyframe: true, data: real.data.clone() },
                            wall,
                        );
                    }
                    follower.check(&p);
                }
            }
            Op::Part(m, n) => {
                let (m, n) = (msn(&p, m), part_no(&p, n));
                if let Lookup::Ready(bytes) = p.part(m, n) {
                    read_fragment(&bytes);
                }
            }
            Op::Segment(m) => {
                let m = msn(&p, m);
                if let Lookup::Ready(parts) = p.segment(m) {
                    assert!(!parts.is_empty(), "segment {m} without parts");
                    for (i, part) in parts.iter().enumerate() {
                        assert_eq!(p.part(m, i as u32), Lookup::Ready(part.clone()));
                    }
                    assert_eq!(p.part(m, parts.len() as u32), Lookup::Gone, "past the end of segment {m}");
                }
            }
            Op::Reload(m, n) => {
                let m = msn(&p, m);
                let n = n.map(|n| part_no(&p, n));
                let r = p.blocking_reload(m, n);
                if finished {
                    assert_ne!(r, Reload::Wait, "waiting after the end");
                }
            }
            Op::Playlists => {
                for pl in [p.llhls_playlist(), p.hls_playlist()].into_iter().flatten() {
                    let text = std::str::from_utf8(&pl).expect("playlists are UTF-8");
                    assert!(text.starts_with("#EXTM3U\n"));
                    if finished {
                        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
                    }
                }
                let _ = p.snapshot();
            }
            Op::Init => {
                let _ = p.init_segment(p.snapshot().init);
                let _ = p.is_ready();
            }
            Op::Finish => {
                p.finish();
                finished = true;
            }
        }
        follower.check(&p);
    }
    p.finish();
    follower.check(&p);
    for pl in [p.llhls_playlist(), p.hls_playlist()].into_iter().flatten() {
        assert!(pl.ends_with(b"#EXT-X-ENDLIST\n"));
    }
});
