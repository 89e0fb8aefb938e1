//! Drives `onair_webrtc::packetize` — the stream's `VideoPayloader` (AVCC access units → RFC 6184
//! payloads), its `AudioTimeline` (Opus packets → RTP timestamps) and one session's `TrackOut`s
//! (RTP headers) — with a sequence of operations decoded from the input:
//!
//! * the decoder configuration: the real OBS stream's, the real one with fuzzed SPS/PPS lists
//!   and NAL length size, or whatever `AvcConfig::parse` accepts of input bytes;
//! * video access units built from fuzzed NAL units (real ones from the stream, byte patterns,
//!   input bytes; empty, tiny, around the MTU, up to 1 MiB), written as AVCC with the
//!   configuration's length size, or truncated, or raw input bytes; fuzzed dts/cts/key flag;
//! * Opus packets (up to 1275 bytes, the RFC 6716 maximum) with fuzzed pts and sample counts;
//! * `resync` of either track.
//!
//! Besides "never panics", it checks:
//! * every payload is non-empty and every RTP packet (12-byte header + payload) fits
//!   `RTP_MTU`; headers carry no CSRC/extension; sequence numbers are consecutive per track; a
//!   video unit's last packet, and only it, has the marker bit; timestamps are the unit's plus the
//!   session offset; video timestamp = (dts + cts) × 90, audio within 2 ms of pts × 48 and
//!   continuous (`previous + samples`) while the pts agrees;
//! * video waits for a keyframe at the start and after `resync`;
//! * the oracle: while every access unit so far was well-formed (see [`Clean`]), the payloads
//!   depacketized by the independent RFC 6184 depacketizer below give back exactly the NAL units
//!   that went in, in order (AUD and filler NAL units excepted: they are not sent), with the
//!   configuration's SPS and PPS in front of a keyframe that does not carry its own.
//!
//! With `ONAIR_FUZZ_STATS` set, each input prints one `oracle:` line to stderr (units compared,
//! and how many of them held FU-A / STAP-A / single NAL unit payloads): replay a corpus with
//! `-runs=0` to see how much of it reached the oracle.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair_fuzz::REAL;
use onair_media::{AvcConfig, Frame, Track, avc};
use onair_webrtc::packetize::{AudioTimeline, Kind, MediaUnit, RTP_MTU, RtpStream, TrackOut, VideoPayloader};

const RTP_HEADER: usize = 12;
const MAX_PAYLOAD: usize = RTP_MTU - RTP_HEADER;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;

/// The NAL units of the real stream's frames.
static REAL_NALS: LazyLock<Vec<Bytes>> = LazyLock::new(|| {
    let n = REAL.avc.nal_length_size;
    REAL.video
        .iter()
        .flat_map(|t| avc::nal_units(&t.data, n).map(|nal| t.data.slice_ref(nal.expect("real frame parses"))))
        .collect()
});

#[derive(Arbitrary, Debug)]
struct Input {
    config: Config,
    /// `None`: the configuration's own; else 1 + (n % 4) (3 is accepted by the AVCC reader).
    nal_length_size: Option<u8>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Config {
    Real,
    /// The real configuration with these parameter sets instead of its own.
    Sets { sps: Vec<NalSpec>, pps: Vec<NalSpec> },
    /// Whatever `AvcConfig::parse` accepts (the real one when it refuses).
    Record(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Video { dts: Dts, cts: Cts, keyframe: bool, body: Body },
    Audio { data: Vec<u8>, fill: Option<(u8, u16)>, pts: Dts, samples: Samples },
    VideoResync,
    AudioResync,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dts {
    /// A frame later.
    Next,
    Same,
    Step(i16),
    Any(u64),
    NearMax(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Cts {
    Zero,
    Small(i8),
    Any(i32),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Samples {
    Opus20ms,
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// Well-formed AVCC of these NAL units.
    Avcc(Vec<NalSpec>),
    /// The same, cut short after `cut` bytes.
    Truncated(Vec<NalSpec>, u16),
    /// The same, with one more length prefix that claims more bytes than follow.
    Overlong(Vec<NalSpec>, u32),
    /// Any bytes.
    Raw(Vec<u8>),
    /// One real access unit of the stream.
    RealFrame(u16),
}

#[derive(Arbitrary, Debug, Clone)]
struct NalSpec {
    /// The NAL header byte; when `clean`, F = 0 and the type is forced into 1..=23.
    header: u8,
    size: Size,
    fill: Fill,
    /// Whether to make it a well-formed NAL unit (emulation prevention applied, no trailing
    /// zero byte, a type H.264 defines); otherwise the bytes go in as they are.
    clean: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Empty,
    HeaderOnly,
    Tiny(u8),
    /// Around the largest single-NAL payload (1188 bytes): 1188 + (n % 16) − 8, so 1165..=1195.
    NearMtu(i8),
    Medium(u16),
    /// (n % 16 + 1) × 64 KiB.
    Huge(u8),
}

#[derive(Arbitrary, Debug, Clone)]
enum Fill {
    Byte(u8),
    Counter(u8),
    Repeat(Vec<u8>),
    /// A real NAL unit of the stream (its own size; `size` is ignored).
    Real(u16),
}

/// Builds a NAL unit of at most `max_len` bytes (it may come out empty).
fn make_nal(spec: &NalSpec, max_len: usize) -> Vec<u8> {
    if let Fill::Real(i) = spec.fill {
        let nals = &*REAL_NALS;
        let mut nal = nals[usize::from(i) % nals.len()].to_vec();
        nal.truncate(max_len);
        return nal;
    }
    let len = match spec.size {
        Size::Empty => 0,
        Size::HeaderOnly => 1,
        Size::Tiny(n) => usize::from(n),
        Size::NearMtu(n) => (MAX_PAYLOAD as isize + isize::from(n % 16) - 8) as usize,
        Size::Medium(n) => usize::from(n),
        Size::Huge(n) => (usize::from(n % 16) + 1) << 16,
    };
    let mut nal = Vec::with_capacity(len);
    if len > 0 {
        nal.push(spec.header);
    }
    let mut i = 0usize;
    while nal.len() < len {
        let b = match &spec.fill {
            Fill::Byte(b) => *b,
            Fill::Counter(start) => start.wrapping_add(i as u8),
            Fill::Repeat(v) if v.is_empty() => 0,
            Fill::Repeat(v) => v[i % v.len()],
            Fill::Real(_) => unreachable!(),
        };
        nal.push(b);
        i += 1;
    }
    if spec.clean && !nal.is_empty() {
        nal = sanitize(nal);
    }
    nal.truncate(max_len);
    if spec.clean
        && let Some(last) = nal.last_mut()
        && *last == 0
    {
        *last = 0x80;
    }
    nal
}

/// A well-formed NAL unit from `nal`: F = 0, a type in 1..=23, emulation prevention (no
/// `00 00 0x` with x ≤ 2 inside), and a non-zero last byte (`rbsp_stop_one_bit`).
fn sanitize(nal: Vec<u8>) -> Vec<u8> {
    let mut header = nal[0] & 0x7f;
    if !(1..=23).contains(&(header & 0x1f)) {
        header = (header & 0x60) | (1 + (header & 0x1f) % 23);
    }
    let mut out = Vec::with_capacity(nal.len() + nal.len() / 64 + 2);
    out.push(header);
    let mut zeros = 0;
    for &b in &nal[1..] {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    if out.last() == Some(&0) {
        out.push(0x80);
    }
    out
}

/// Whether a NAL unit survives the trip through Annex-B and RFC 6184 unchanged: non-empty,
/// F = 0, a type H.264 defines (1..=23; 24..=31 are the RTP aggregation/fragmentation types),
/// no start code or `00 00 00`/`00 00 02` inside and no trailing zero byte.
fn well_formed(nal: &[u8]) -> bool {
    let Some(&h) = nal.first() else { return false };
    h & 0x80 == 0
        && (1..=23).contains(&(h & 0x1f))
        && nal.last() != Some(&0)
        && !nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2)
}

fn nal_type(nal: &[u8]) -> u8 {
    nal[0] & 0x1f
}

fn max_nal_len(nal_length_size: u8) -> usize {
    match nal_length_size {
        1 => 0xff,
        2 => 0xffff,
        3 => 0xff_ffff,
        _ => usize::MAX,
    }
}

fn write_avcc(nals: &[Vec<u8>], nal_length_size: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let n = usize::from(nal_length_size);
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u64).to_be_bytes()[8 - n..]);
        out.extend_from_slice(nal);
    }
    out
}

/// RFC 6184 depacketizer (packetization mode 1) for one access unit's payloads: single NAL
/// unit packets, STAP-A, FU-A. Written from the RFC, independently of the payloader.
fn depacketize(payloads: &[Bytes]) -> Result<Vec<Vec<u8>>, String> {
    let mut nals = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    for (i, p) in payloads.iter().enumerate() {
        let Some(&b0) = p.first() else { return Err(format!("payload {i} is empty")) };
        match b0 & 0x1f {
            24 => {
                if fu.is_some() {
                    return Err(format!("payload {i}: STAP-A inside an FU-A"));
                }
                let mut rest = &p[1..];
                if rest.is_empty() {
                    return Err(format!("payload {i}: empty STAP-A"));
                }
                while !rest.is_empty() {
                    let [a, b, tail @ ..] = rest else { return Err(format!("payload {i}: STAP-A size cut")) };
                    let size = usize::from(u16::from_be_bytes([*a, *b]));
                    if size == 0 || size > tail.len() {
                        return Err(format!("payload {i}: STAP-A unit of {size} bytes, {} left", tail.len()));
                    }
                    nals.push(tail[..size].to_vec());
                    rest = &tail[size..];
                }
            }
            28 => {
                let Some(&fu_header) = p.get(1) else { return Err(format!("payload {i}: FU-A without header")) };
                let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
                if fu_header & 0x20 != 0 {
                    return Err(format!("payload {i}: FU header R bit set"));
                }
                if start && end {
                    return Err(format!("payload {i}: FU-A with both S and E"));
                }
                if start {
                    if fu.is_some() {
                        return Err(format!("payload {i}: FU-A start inside an FU-A"));
                    }
                    fu = Some(vec![(b0 & 0xe0) | (fu_header & 0x1f)]);
                }
                let Some(nal) = fu.as_mut() else { return Err(format!("payload {i}: FU-A without a start")) };
                if p.len() == 2 {
                    return Err(format!("payload {i}: FU-A fragment without data"));
                }
                nal.extend_from_slice(&p[2..]);
                if end {
                    nals.push(fu.take().unwrap_or_default());
                }
            }
            25..=27 | 29 => return Err(format!("payload {i}: NAL type {} is not used in mode 1", b0 & 0x1f)),
            _ => {
                if fu.is_some() {
                    return Err(format!("payload {i}: single NAL unit inside an FU-A"));
                }
                nals.push(p.to_vec());
            }
        }
    }
    if fu.is_some() {
        return Err("unfinished FU-A".into());
    }
    Ok(nals)
}

/// What a receiver should get for an access unit of well-formed NAL units: the configuration's
/// SPS and PPS first on a keyframe without its own, then the unit's NAL units, AUD and filler
/// left out. `None` when the sequence is not one the oracle decides: parameter sets other than
/// an SPS directly followed by a PPS and then another NAL unit (several SPS, a PPS alone, sets
/// at the end) or a parameter-set aggregate larger than a payload.
fn expected_nals(config: &AvcConfig, nals: &[Vec<u8>], keyframe: bool) -> Option<Vec<Vec<u8>>> {
    let has_sps = nals.iter().any(|n| nal_type(n) == NAL_SPS);
    let has_pps = nals.iter().any(|n| nal_type(n) == NAL_PPS);
    let mut seq: Vec<Vec<u8>> = Vec::new();
    if keyframe && !(has_sps && has_pps) {
        seq.extend(config.sps.iter().chain(&config.pps).map(|n| n.to_vec()));
    }
    seq.extend(nals.iter().filter(|n| !matches!(nal_type(n), NAL_AUD | NAL_FILLER)).cloned());
    if !seq.iter().any(|n| !matches!(nal_type(n), NAL_SPS | NAL_PPS)) {
        // Parameter sets only (or nothing): nothing to send.
        return Some(Vec::new());
    }
    let mut i = 0;
    while i < seq.len() {
        match nal_type(&seq[i]) {
            NAL_SPS => {
                let pps = seq.get(i + 1)?;
                let next = seq.get(i + 2)?;
                if nal_type(pps) != NAL_PPS || matches!(nal_type(next), NAL_SPS | NAL_PPS) {
                    return None;
                }
                if 1 + 2 + seq[i].len() + 2 + pps.len() > MAX_PAYLOAD {
                    return None;
                }
                i += 2;
            }
            NAL_PPS => return None,
            _ => i += 1,
        }
    }
    Some(seq)
}

fn next_ts(prev: u64, step: u64, d: Dts) -> u64 {
    match d {
        Dts::Next => prev.saturating_add(step),
        Dts::Same => prev,
        Dts::Step(s) => prev.saturating_add_signed(i64::from(s) * 1000),
        Dts::Any(v) => v,
        Dts::NearMax(v) => u64::MAX - u64::from(v),
    }
}

/// One session's track and the next sequence number it must use.
struct SessionTrack {
    out: TrackOut,
    next_seq: Option<u16>,
}

impl SessionTrack {
    /// Sends `unit` through the session track and checks the packets; returns how many.
    fn send(&mut self, unit: &MediaUnit) -> usize {
        let offset = self.out.rtp.ts_offset();
        let was_waiting = self.out.waiting_for_keyframe();
        let mut packets = Vec::new();
        let n = self.out.packets(unit, |p| packets.push(p));
        assert_eq!(n, packets.len());
        let video = matches!(unit.kind, Kind::Video { .. });
        if let Kind::Video { keyframe } = unit.kind
            && was_waiting
            && !keyframe
        {
            assert_eq!(n, 0, "video sent before a keyframe");
            assert!(self.out.waiting_for_keyframe());
            return 0;
        }
        assert!(!self.out.waiting_for_keyframe());
        assert_eq!(n, unit.payloads.len());
        for (i, (p, shared)) in packets.iter().zip(&unit.payloads).enumerate() {
            assert_eq!(p.payload, *shared);
            assert!(!p.payload.is_empty(), "empty payload");
            assert!(RTP_HEADER + p.payload.len() <= RTP_MTU, "packet of {} bytes", RTP_HEADER + p.payload.len());
            assert!(p.header.csrc.is_empty() && !p.header.extension && !p.header.padding);
            assert_eq!(p.header.version, 2);
            assert_eq!(p.header.timestamp, unit.timestamp.wrapping_add(offset));
            assert_eq!(p.header.marker, video && i + 1 == n, "marker on packet {i} of {n}");
            if let Some(seq) = self.next_seq {
                assert_eq!(p.header.sequence_number, seq, "sequence numbers not consecutive");
            }
            self.next_seq = Some(p.header.sequence_number.wrapping_add(1));
        }
        n
    }
}

fn config_of(input: &Input) -> AvcConfig {
    let mut config = match &input.config {
        Config::Real => REAL.avc.clone(),
        Config::Sets { sps, pps } => {
            let mut c = REAL.avc.clone();
            let set = |specs: &[NalSpec], t: u8| -> Vec<Bytes> {
                specs
                    .iter()
                    .take(4)
                    .map(|s| {
                        // Parameter sets are at most 64 KiB in a record.
                        let mut nal = make_nal(s, 0xffff);
                        if s.clean && !nal.is_empty() {
                            nal[0] = (nal[0] & 0x60) | t;
                        }
                        Bytes::from(nal)
                    })
                    .filter(|n| !n.is_empty())
                    .collect()
            };
            c.sps = set(sps, NAL_SPS);
            c.pps = set(pps, NAL_PPS);
            c
        }
        Config::Record(bytes) => AvcConfig::parse(bytes).unwrap_or_else(|_| REAL.avc.clone()),
    };
    if let Some(n) = input.nal_length_size {
        config.nal_length_size = 1 + n % 4;
    }
    config
}

fuzz_target!(|input: Input| {
    let config = config_of(&input);
    let nls = config.nal_length_size;
    let mut payloader = VideoPayloader::new(&config);
    let mut audio = AudioTimeline::default();
    let mut video_track = SessionTrack { out: TrackOut::video(RtpStream::new(102, 1)), next_seq: None };
    let mut audio_track = SessionTrack { out: TrackOut::audio(RtpStream::new(111, 2)), next_seq: None };
    assert!(video_track.out.waiting_for_keyframe());

    // The oracle applies while the configuration and every access unit so far were such that the
    // payloader's output is exactly determined (see `expected_nals`); it needs well-formed
    // parameter sets.
    let mut clean = (1..=4).contains(&nls)
            && config.sps.iter().chain(&config.pps).all(|n| well_formed(n) && n.len() <= 0xffff)
            && config.sps.iter().all(|n| nal_type(n) == NAL_SPS)
            && config.pps.iter().all(|n| nal_type(n) == NAL_PPS);
    let (mut dts, mut pts) = (0u64, 0u64);
    let mut previous_audio: Option<(u32, u32)> = None;
    let mut frames_left = 64usize;
    // (units compared by the oracle, with FU-A, with STAP-A, single NAL unit payloads)
    let mut stats = (0u32, 0u32, 0u32, 0u32);
    let mut bytes_left = 8usize << 20;

    for op in input.ops {
        match op {
            Op::Video { dts: d, cts, keyframe, body } => {
                frames_left = match frames_left.checked_sub(1) {
                    Some(n) => n,
                    None => break,
                };
                dts = next_ts(dts, 33, d);
                let cts = match cts {
                    Cts::Zero => 0,
                    Cts::Small(c) => i32::from(c) * 33,
                    Cts::Any(c) => c,
                };
                let max = max_nal_len(nls);
                // At most 2 MiB of NAL units per access unit.
                let build = |specs: &[NalSpec]| -> Vec<Vec<u8>> {
                    let mut total = 0usize;
                    specs
                        .iter()
                        .map_while(|s| {
                            (total <= 2 << 20).then(|| make_nal(s, max)).inspect(|n| total += n.len())
                        })
                        .collect()
                };
                // `nals` is what a well-formed AVCC unit carries; `None` for the others.
                let (data, nals) = match body {
                    Body::Avcc(specs) => {
                        let nals = build(&specs);
                        (write_avcc(&nals, nls), Some(nals))
                    }
                    Body::Truncated(specs, cut) => {
                        let mut data = write_avcc(&build(&specs), nls);
                        data.truncate(usize::from(cut));
                        (data, None)
                    }
                    Body::Overlong(specs, extra) => {
                        let mut data = write_avcc(&build(&specs), nls);
                        let claim = (u64::from(extra) + 1).min(max as u64);
                        data.extend_from_slice(&claim.to_be_bytes()[8 - usize::from(nls)..]);
                        (data, None)
                    }
                    Body::Raw(bytes) => (bytes, None),
                    Body::RealFrame(i) => {
                        let data = REAL.video[usize::from(i) % REAL.video.len()].data.to_vec();
                        let nals = if nls == REAL.avc.nal_length_size {
                            Some(avc::nal_units(&data, nls).map(|n| n.unwrap().to_vec()).collect())
                        } else {
                            None
                        };
                        (data, nals)
                    }
                };
                bytes_left = match bytes_left.checked_sub(data.len()) {
                    Some(n) => n,
                    None => break,
                };
                let frame = Frame { track: Track::Video, dts, cts, keyframe, data: Bytes::from(data) };
                let unit = payloader.push(&frame);
                let nals: Option<Vec<Vec<u8>>> = nals.map(|v| v.into_iter().filter(|n| !n.is_empty()).collect());

                if let Some(unit) = &unit {
                    let is_key = frame.keyframe || avc::is_idr(&frame.data, nls);
                    assert_eq!(unit.kind, Kind::Video { keyframe: is_key });
                    assert_eq!(unit.media_ms, dts);
                    assert_eq!(unit.timestamp, dts.saturating_add_signed(i64::from(cts)).wrapping_mul(90) as u32);
                    assert!(!unit.payloads.is_empty());
                    assert!(unit.payloads.iter().all(|p| !p.is_empty() && p.len() <= MAX_PAYLOAD));
                    assert_eq!(unit.octets(), unit.payloads.iter().map(Bytes::len).sum::<usize>());
                    video_track.send(unit);
                }

                // The oracle.
                let expected = match &nals {
                    Some(nals) if clean && nals.iter().all(|n| well_formed(n)) => {
                        let is_key = keyframe || nals.iter().any(|n| nal_type(n) == avc::NAL_IDR);
                        expected_nals(&config, nals, is_key)
                    }
                    _ => None,
                };
                match expected {
                    Some(expected) => match &unit {
                        None => assert!(expected.is_empty(), "a well-formed unit of {} NAL units was dropped", expected.len()),
                        Some(unit) => {
                            let got = depacketize(&unit.payloads).unwrap_or_else(|e| panic!("depacketize: {e}"));
                            let types = || unit.payloads.iter().map(|p| p[0] & 0x1f);
                            stats.0 += 1;
                            stats.1 += u32::from(types().any(|t| t == 28));
                            stats.2 += u32::from(types().any(|t| t == 24));
                            stats.3 += types().filter(|t| (1..=23).contains(t)).count() as u32;
                            assert_eq!(got.len(), expected.len(), "NAL unit count");
                            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                                assert!(g == e, "NAL unit {i} differs: got {} bytes, sent {} bytes", g.len(), e.len());
                            }
                        }
                    },
                    None => clean = false,
                }
            }
            Op::Audio { data, fill, pts: p, samples } => {
                // An Opus packet is at most 1275 bytes (RFC 6716 §3.2.1).
                let mut data = data;
                if let Some((byte, len)) = fill {
                    data.resize(usize::from(len % 1276), byte);
                }
                data.truncate(1275);
                let data = Bytes::from(data);
                pts = next_ts(pts, 20, p);
                let samples = match samples {
                    Samples::Opus20ms => 960,
                    Samples::Any(n) => n,
                };
                let unit = audio.push(&data, pts, samples);
                if data.is_empty() {
                    assert!(unit.is_none());
                    continue;
                }
                let unit = unit.expect("a non-empty Opus packet gives a unit");
                assert_eq!(unit.kind, Kind::Audio);
                assert_eq!(unit.media_ms, pts);
                assert_eq!(unit.payloads, vec![data.clone()], "one Opus packet per RTP packet, as it is");
                let from_pts = pts.wrapping_mul(48) as u32;
                let drift = unit.timestamp.wrapping_sub(from_pts) as i32;
                assert!(drift.unsigned_abs() <= 96, "audio timestamp {drift} samples off its pts");
                if let Some((ts, n)) = previous_audio {
                    let expected = ts.wrapping_add(n);
                    if (from_pts.wrapping_sub(expected) as i32).unsigned_abs() <= 96 {
                        assert_eq!(unit.timestamp, expected, "audio timestamps not continuous");
                    }
                }
                previous_audio = Some((unit.timestamp, samples));
                if data.len() <= MAX_PAYLOAD {
                    audio_track.send(&unit);
                }
            }
            Op::VideoResync => {
                video_track.out.resync();
                assert!(video_track.out.waiting_for_keyframe());
            }
            Op::AudioResync => {
                audio.resync();
                audio_track.out.resync();
                assert!(!audio_track.out.waiting_for_keyframe());
                previous_audio = None;
            }
        }
    }
    if std::env::var_os("ONAIR_FUZZ_STATS").is_some() {
        let (units, fua, stapa, single) = stats;
        eprintln!("oracle: units={units} fu_a={fua} stap_a={stapa} single={single} clean_to_end={clean}");
    }
});
