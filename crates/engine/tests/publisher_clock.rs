//! The publisher on a virtual clock. Arrival times are virtual (one per tag, in real time from a
//! fixed start), and the publisher misbehaves: its own clock — the RTMP/FLV timestamps — stalls,
//! freezes, goes back, jumps an hour ahead, wraps around 2^32; it sends absurdly large frames or
//! floods tiny ones. Whatever it does: no panic, no restart of the HLS session, the playlist's
//! media sequence and live edge never go backwards, the bytes the stream holds stay bounded, and
//! the stream keeps segmenting afterwards.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use onair_engine::hub::{Now, PlaylistKind, PlaylistRequest, Registry};
use onair_hls::{HlsConfig, Position, Resource};

/// The 8 s OBS capture (640x360p30, AAC 48 kHz, keyframes every 2 s), played `loops` times back
/// to back: (media time in ms, is video, tag body). Sequence headers are repeated each loop,
/// identical, as a reconnecting encoder would.
fn timeline(loops: u64) -> Vec<(u64, bool, Bytes)> {
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"
    ))
    .unwrap();
    let tags = onair_media::flv::read_flv(&file).unwrap();
    let span = tags.iter().map(|t| u64::from(t.timestamp_ms)).max().unwrap() + 34;
    let mut out = Vec::new();
    for i in 0..loops {
        for t in tags.iter().filter(|t| t.tag_type == 8 || t.tag_type == 9) {
            out.push((i * span + u64::from(t.timestamp_ms), t.tag_type == 9, t.body.clone()));
        }
    }
    out
}

/// The engine's log lines, captured for the whole test binary.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let for_writer = buf.clone();
        tracing_subscriber::fmt().with_ansi(false).with_writer(move || LogWriter(for_writer.clone())).init();
        buf
    });
}

/// How many log lines about stream `name` contain `text`.
fn log_lines(name: &str, text: &str) -> usize {
    let logs = String::from_utf8_lossy(&LOGS.get().unwrap().lock().unwrap()).into_owned();
    logs.lines().filter(|l| l.contains(&format!("stream={name}")) && l.contains(text)).count()
}

/// What one scenario came to.
#[derive(Debug)]
struct Outcome {
    /// The live edge when the clock misbehaved first, and at the end.
    at_anomaly: Option<Position>,
    end: Position,
    /// Longest segment (EXTINF) and part (EXT-X-PART DURATION) listed, in seconds.
    longest_segment_s: f64,
    longest_part_s: f64,
    /// Largest part body, in bytes (what one request for a part may carry).
    largest_part_bytes: usize,
    /// Most media bytes the stream held at once.
    most_held_bytes: usize,
    /// Longest EXT-X-TARGETDURATION served.
    target_duration_s: u64,
}

fn tag_value(line: &str, key: &str) -> Option<f64> {
    line.split([':', ',']).find(|f| f.starts_with(key))?.split('=').nth(1)?.parse().ok()
}

/// Publishes 32 s of media with the publisher's timestamp for media time `t` given by `clock`;
/// the clock misbehaves from media time `anomaly` on.
fn run(name: &str, clock: impl Fn(u64) -> u64, anomaly: u64) -> Outcome {
    run_with(name, 4, clock, anomaly, |_, _, body| vec![body])
}

/// Publishes `loops` × 8 s of media; `alter(t, is video, body)` gives the tag bodies actually
/// sent for each tag of the capture (the same timestamp for all of them).
fn run_with(
    name: &str,
    loops: u64,
    clock: impl Fn(u64) -> u64,
    anomaly: u64,
    alter: impl Fn(u64, bool, Bytes) -> Vec<Bytes>,
) -> Outcome {
    capture_logs();
    let registry = Registry::new(HlsConfig::default());
    let start = Now { instant: std::time::Instant::now(), unix_ms: 1_900_000_000_000 };
    let mut publisher = registry.publish(name, "127.0.0.1:9".parse().unwrap(), start).unwrap();
    let stream = publisher.stream().clone();
    let ask = PlaylistRequest { kind: PlaylistKind::LowLatency, msn: None, part: None, viewer: 1 };
    let (mut session, mut edge, mut sequence) = (None::<String>, None::<Position>, 0u64);
    let (mut at_anomaly, mut longest_segment_s, mut longest_part_s, mut largest_part_bytes) = (None, 0f64, 0f64, 0);
    let (mut most_held_bytes, mut target_duration_s) = (0, 0);
    for (t, video, body) in timeline(loops) {
        let now = start.after(Duration::from_millis(t));
        let ts = clock(t) as u32; // RTMP timestamps are 32-bit: wrap like a publisher's would.
        for body in alter(t, video, body) {
            let pushed = if video { publisher.video(body, ts, now) } else { publisher.audio(body, ts, now) };
            assert!(!pushed.unwrap().codec_changed, "a clock anomaly is not a codec change");
        }
        if t >= anomaly && at_anomaly.is_none() {
            at_anomaly = Some(edge);
        }
        let Some(figures) = stream.figures(now.instant) else { panic!("offline while publishing") };
        most_held_bytes = most_held_bytes.max(figures.held_bytes);
        let Ok(Some(playlist)) = stream.playlist(&ask, now.instant) else { continue };
        if let Some(s) = &session {
            assert_eq!(s, &figures.session, "same session throughout");
        }
        session = Some(figures.session.clone());
        let text = String::from_utf8(playlist.to_vec()).unwrap();
        let seq: u64 = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap();
        assert!(seq >= sequence, "media sequence went back from {sequence} to {seq} at {t} ms");
        sequence = seq;
        let position = figures.position.expect("a playable stream has a part");
        assert!(edge.is_none_or(|e| position >= e), "the live edge went back from {edge:?} to {position:?}");
        if edge != Some(position) {
            let part = stream.media(&figures.session, Resource::Part(position.msn, position.part)).unwrap().unwrap();
            largest_part_bytes = largest_part_bytes.max(part.iter().map(Bytes::len).sum());
        }
        edge = Some(position);
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                target_duration_s = target_duration_s.max(d.parse().unwrap());
            }
            if let Some(d) = line.strip_prefix("#EXTINF:").and_then(|d| d.trim_end_matches(',').parse::<f64>().ok()) {
                longest_segment_s = longest_segment_s.max(d);
            }
            if line.starts_with("#EXT-X-PART:") {
                longest_part_s = longest_part_s.max(tag_value(line, "DURATION").unwrap());
            }
        }
    }
    let end = edge.unwrap();
    Outcome {
        at_anomaly: at_anomaly.flatten(),
        end,
        longest_segment_s,
        longest_part_s,
        largest_part_bytes,
        most_held_bytes,
        target_duration_s,
    }
}

/// The stream went on segmenting after the anomaly: at least `segments` more segments.
fn kept_segmenting(o: &Outcome, segments: u64) {
    let from = o.at_anomaly.expect("live before the anomaly").msn;
    assert!(o.end.msn >= from + segments, "stuck after the anomaly: {o:?}");
}

/// Segments follow the capture's GOPs (mostly 2 s, one 2.5 s), parts stay within the target.
fn like_a_steady_clock(o: &Outcome) {
    assert!(o.end.msn >= 14, "{o:?}");
    assert!(o.longest_segment_s <= 2.6, "{o:?}");
    assert!(o.longest_part_s <= 0.334, "{o:?}");
    assert!(o.largest_part_bytes < 100_000, "{o:?}");
    assert!(o.target_duration_s <= 3, "{o:?}");
    // The capture is ~1.6 Mb/s: 7 segments of 2 s hold ~3 MB.
    assert!(o.most_held_bytes < 4_000_000, "{o:?}");
}

#[test]
fn steady_clock() {
    let o = run("steady", |t| t, u64::MAX);
    eprintln!("steady: {o:?}");
    assert_eq!(log_lines("steady", "publisher"), 0, "nothing to correct");
    like_a_steady_clock(&o);
}

#[test]
fn clock_that_stalls_for_three_seconds() {
    // Timestamps freeze at 8 s for 3 s of media, then carry on where media time is.
    let o = run("stall", |t| if (8_000..11_000).contains(&t) { 8_000 } else { t }, 8_000);
    eprintln!("stall: {o:?}");
    kept_segmenting(&o, 8);
    // The frames of the stall (all at the same time) are dropped, and the video after them up to
    // the next keyframe (at 12 s): the picture holds from 8 s to 12 s in one part. The stall's
    // frames are not kept (a clock frozen for good holds no more than this, see below).
    assert!(o.longest_part_s <= 4.1 && o.longest_segment_s <= 4.0 + 2.6, "{o:?}");
    assert!(o.largest_part_bytes < 100_000, "{o:?}");
}

#[test]
fn clock_frozen_for_a_minute() {
    // Timestamps freeze at 8 s and never move again, for 56 s of input: frames at the same decode
    // time beyond a handful are dropped, so the stream holds no more than before.
    let o = run_with("frozen", 8, |t| t.min(8_000), 8_000, |_, _, body| vec![body]);
    eprintln!("frozen: {o:?}");
    // One line says why (at most one a minute, not one per frame).
    assert_eq!(log_lines("frozen", "a frozen clock or a flood"), 1);
    assert!(o.most_held_bytes < 4_000_000, "{o:?}");
    assert!(o.largest_part_bytes < 1_000_000, "{o:?}");
    assert!(o.target_duration_s <= 3, "{o:?}");
}

#[test]
fn clock_frozen_then_moving_again() {
    // Frozen from 8 s to 40 s of input, then on at media time: the 32 s jump is rebased, the
    // stream goes on segmenting with sane durations.
    let o = run_with(
        "unfrozen",
        8,
        |t| if (8_000..40_000).contains(&t) { 8_000 } else { t },
        8_000,
        |_, _, body| vec![body],
    );
    eprintln!("frozen, then moving: {o:?}");
    kept_segmenting(&o, 8);
    assert!(o.most_held_bytes < 4_000_000, "{o:?}");
    assert!(o.target_duration_s <= 3, "{o:?}");
}

#[test]
fn absurd_frame_sizes() {
    // From 8 s to 16 s, every tenth video frame and every tenth audio frame is 9 MB (more than
    // a part may hold, 8 MiB by default): dropped, with the video up to the next keyframe.
    let huge = Bytes::from(vec![0u8; 9 << 20]);
    let o = run_with(
        "huge",
        4,
        |t| t,
        8_000,
        |t, video, body| {
            if (8_000..16_000).contains(&t) && (t / 33) % 10 == 0 {
                let mut b = body[..if video { 5 } else { 2 }].to_vec();
                b.extend_from_slice(&huge);
                vec![Bytes::from(b)]
            } else {
                vec![body]
            }
        },
    );
    eprintln!("absurd sizes: {o:?}");
    assert_eq!(log_lines("huge", "larger than hls.max_part_bytes"), 1);
    kept_segmenting(&o, 4);
    assert!(o.largest_part_bytes < 100_000, "{o:?}");
    assert!(o.most_held_bytes < 4_000_000, "{o:?}");
}

#[test]
fn flood_of_tiny_frames() {
    // From 8 s to 16 s, 200 tiny video and audio frames come with every real one, at its
    // timestamp: ~15 000 frames a second of media. Repeats of a decode time beyond one are
    // dropped; afterwards the stream plays on.
    let tiny_video = Bytes::from_static(&[0x27, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x01]);
    let tiny_audio = Bytes::from_static(&[0xAF, 0x01, 0x21]);
    let o = run_with(
        "flood",
        4,
        |t| t,
        8_000,
        |t, video, body| {
            let mut out = vec![body];
            if (8_000..16_000).contains(&t) {
                out.extend(std::iter::repeat_n(if video { tiny_video.clone() } else { tiny_audio.clone() }, 200));
            }
            out
        },
    );
    eprintln!("flood: {o:?}");
    assert_eq!(log_lines("flood", "a frozen clock or a flood"), 1);
    kept_segmenting(&o, 4);
    assert!(o.most_held_bytes < 4_000_000, "{o:?}");
    // During the flood the video is its keyframes (every frame after a dropped one is dropped up
    // to the next keyframe) and the admitted tiny audio frames count 1024 samples each: segments
    // stretch to a few seconds, never more.
    assert!(o.target_duration_s <= 8, "{o:?}");
}

#[test]
fn clock_that_goes_back_five_seconds() {
    // From 12 s on, timestamps are 5 s behind: a jump back, rebased so the timeline goes on.
    let o = run("back", |t| if t >= 12_000 { t - 5_000 } else { t }, 12_000);
    eprintln!("back: {o:?}");
    kept_segmenting(&o, 4);
    like_a_steady_clock(&o);
}

#[test]
fn clock_that_jumps_an_hour_ahead() {
    // The jump is rebased: no part or segment spans it, EXT-X-TARGETDURATION stays small.
    let o = run("ahead", |t| if t >= 12_000 { t + 3_600_000 } else { t }, 12_000);
    eprintln!("jump: {o:?}");
    assert_eq!(log_lines("ahead", "clock jumped"), 1);
    kept_segmenting(&o, 6);
    like_a_steady_clock(&o);
}

#[test]
fn clock_that_wraps_around_32_bits() {
    // Starts 10 s before 2^32 ms: the wrap happens at 10 s of media.
    let o = run("wrap", |t| t + u64::from(u32::MAX) - 10_000, 10_000);
    eprintln!("wrap: {o:?}");
    kept_segmenting(&o, 8);
    like_a_steady_clock(&o);
}
