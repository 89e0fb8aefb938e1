//! Drives `onair_audio::Transcoder` (AAC-LC → 20 ms Opus packets for WebRTC) with what a
//! publisher controls: the AudioSpecificConfig and the AAC frames with their timestamps.
//!
//! * The configuration: the real OBS stream's sequence header (with its SBR sync extension),
//!   `11 90` (AAC-LC 48 kHz stereo), one built from fuzzed fields (object type, sampling
//!   frequency index or an explicit 24-bit rate, channel configuration, GASpecificConfig flags,
//!   any trailing bytes such as a program config element), or input bytes as they are.
//! * Up to 64 pushes of a frame: a real AAC frame of the stream (48 kHz stereo, whatever the
//!   configuration says), one with bytes flipped or cut short, input bytes, or nothing; at a pts
//!   one frame after the previous one (as a publisher's clock gives them), the same, jittered,
//!   late or early by up to 255 ms, jumped by ±2^31 ms, any `u64`, or near `u64::MAX`. A push
//!   may be followed by `flush`.
//!
//! Besides "never panics", it checks what the crate documents:
//! * `new` accepts only AAC-LC, mono or stereo, 1024-sample frames at 1–192 kHz, and fails only
//!   with `Unsupported`; `push` fails only with `CorruptFrame` for that frame's pts (never
//!   `Internal`: "not expected with the parameters used here");
//! * every packet has 960 samples, is 1..=1275 bytes and fits one RTP packet
//!   (`12 + len ≤ RTP_MTU`); libopus decodes it to 960 finite samples per channel;
//! * pts: each packet is exactly 20 ms after the previous one, or starts a new run at the pts of
//!   a frame that was taken; packets never lie before the first frame taken nor after the last
//!   taken frame's end plus the resync margin;
//! * a push returns a bounded number of packets (at most the frame's duration, a resync's
//!   silence and the end of a run).
//!
//! With `ONAIR_FUZZ_STATS` set, each input that makes a transcoder prints one `transcoder:`
//! line to stderr (rate, channels, frames taken and refused, packets, runs): replay a corpus
//! with `-runs=0` to see what it reaches.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use onair_audio::{AudioError, OPUS_FRAME_MS, OPUS_FRAME_SAMPLES, OpusPacket, RESYNC_MS, Transcoder};
use onair_fuzz::REAL;
use onair_media::AacConfig;
use onair_webrtc::packetize::RTP_MTU;

#[derive(Arbitrary, Debug)]
struct Input {
    config: Asc,
    pushes: Vec<Push>,
}

#[derive(Arbitrary, Debug)]
enum Asc {
    /// The real stream's sequence header.
    Stream,
    /// `11 90`: AAC-LC, 48 kHz, stereo.
    Lc48k,
    Built(BuiltAsc),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct BuiltAsc {
    /// `None`: AAC-LC (2).
    object_type: Option<u8>,
    rate: Rate,
    /// `channelConfiguration`, 4 bits (0 = a program config element follows).
    channel_configuration: u8,
    frame_length_flag: bool,
    core_coder_delay: Option<u16>,
    extension_flag: bool,
    /// Bits after the GASpecificConfig header (a program config element, an extension, …).
    tail: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Rate {
    /// `samplingFrequencyIndex`, 4 bits (15 = explicit, then 24 bits from the tail).
    Index(u8),
    /// An explicit `samplingFrequency` (24 bits).
    Explicit(u32),
}

#[derive(Arbitrary, Debug)]
struct Push {
    frame: AacFrame,
    pts: Pts,
    flush_after: bool,
}

#[derive(Arbitrary, Debug)]
enum AacFrame {
    Real(u16),
    /// A real frame with `(position, xor)` changes.
    Flipped(u16, Vec<(u16, u8)>),
    /// A real frame cut to `len` bytes.
    Cut(u16, u16),
    Raw(Vec<u8>),
    Empty,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Pts {
    /// One frame after the previous frame on the publisher's clock (whole milliseconds).
    Next,
    Same,
    Jitter(i8),
    Late(u8),
    Early(u8),
    Jump(i32),
    Any(u64),
    NearMax(u16),
}

/// Writes bits most significant first.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    fn put(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            if self.used % 8 == 0 {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1 {
                *self.bytes.last_mut().expect("pushed above") |= 0x80 >> (self.used % 8);
            }
            self.used += 1;
        }
    }
}

fn build_asc(b: &BuiltAsc) -> Vec<u8> {
    let mut w = Bits::default();
    let object_type = b.object_type.map_or(2, |t| t % 64);
    if object_type >= 31 {
        w.put(31, 5);
        w.put(u64::from(object_type - 31), 6);
    } else {
        w.put(u64::from(object_type), 5);
    }
    match b.rate {
        Rate::Index(i) => w.put(u64::from(i % 16), 4),
        Rate::Explicit(hz) => {
            w.put(15, 4);
            w.put(u64::from(hz & 0xff_ffff), 24);
        }
    }
    w.put(u64::from(b.channel_configuration % 16), 4);
    w.put(u64::from(b.frame_length_flag), 1);
    w.put(u64::from(b.core_coder_delay.is_some()), 1);
    if let Some(delay) = b.core_coder_delay {
        w.put(u64::from(delay & 0x3fff), 14);
    }
    w.put(u64::from(b.extension_flag), 1);
    for &byte in b.tail.iter().take(64) {
        w.put(u64::from(byte), 8);
    }
    w.bytes
}

fn real_frame(i: u16) -> Vec<u8> {
    REAL.audio[usize::from(i) % REAL.audio.len()].data.to_vec()
}

/// What has been observed of the packets so far.
struct Timeline {
    /// pts of every frame the transcoder took (`push` returned `Ok`).
    taken: HashSet<u64>,
    first_taken: Option<u64>,
    last_taken: Option<u64>,
    previous_packet: Option<u64>,
    /// Packets checked, and how many of them started a run.
    packets: u32,
    runs: u32,
    decoder: opus::Decoder,
    pcm: Vec<f32>,
}

impl Timeline {
    fn check(&mut self, packets: &[OpusPacket], frame_ms: u64) {
        for p in packets {
            assert_eq!(p.samples, OPUS_FRAME_SAMPLES);
            assert!((1..=1275).contains(&p.data.len()), "an Opus packet of {} bytes", p.data.len());
            assert!(12 + p.data.len() <= RTP_MTU, "an Opus packet of {} bytes does not fit RTP_MTU", p.data.len());
            let continued = self.previous_packet.is_some_and(|prev| p.pts_ms == prev.saturating_add(OPUS_FRAME_MS));
            assert!(
                continued || self.taken.contains(&p.pts_ms),
                "packet at {} ms: neither 20 ms after the previous one ({:?}) nor a run's start",
                p.pts_ms,
                self.previous_packet
            );
            let (first, last) = (self.first_taken.expect("a frame was taken"), self.last_taken.expect("taken"));
            assert!(p.pts_ms >= first, "packet at {} ms before the first frame ({first} ms)", p.pts_ms);
            let limit = last.saturating_add(frame_ms + RESYNC_MS + OPUS_FRAME_MS);
            assert!(p.pts_ms <= limit, "packet at {} ms after the last frame's end ({last} ms)", p.pts_ms);
            self.previous_packet = Some(p.pts_ms);
            self.packets += 1;
            self.runs += u32::from(!continued);

            let n = self.decoder.decode_float(&p.data, &mut self.pcm, false).expect("libopus decodes our packet");
            assert_eq!(n, OPUS_FRAME_SAMPLES as usize, "decoded samples per channel");
            assert!(self.pcm[..2 * n].iter().all(|v| v.is_finite()), "non-finite decoded audio");
        }
    }
}

fuzz_target!(|input: Input| {
    let asc = match &input.config {
        Asc::Stream => REAL.aac_stream.asc.to_vec(),
        Asc::Lc48k => REAL.aac.asc.to_vec(),
        Asc::Built(b) => build_asc(b),
        Asc::Bytes(bytes) => bytes.clone(),
    };
    let Ok(config) = AacConfig::parse(&asc) else { return };
    let mut transcoder = match Transcoder::new(&config) {
        Ok(t) => t,
        Err(AudioError::Unsupported(_)) => return,
        Err(e) => panic!("Transcoder::new({config:?}): {e}"),
    };
    // What `new` documents it takes.
    assert_eq!(config.object_type, 2);
    assert!(matches!(config.channels, 1 | 2));
    assert_eq!(config.samples_per_frame(), 1024);
    assert!((1000..=192_000).contains(&config.sample_rate));
    let rate = u64::from(config.sample_rate);
    let frame_ms = (1024 * 1000u64).div_ceil(rate);
    // At most: the frame, the silence filling a gap before it, and the end of a run (what the
    // FIFO and the resampler hold: under two frames at the lowest rates, plus 20 ms of padding).
    let max_packets_per_push = (4 * frame_ms + 2 * RESYNC_MS + 100).div_ceil(OPUS_FRAME_MS) as usize;

    let mut timeline = Timeline {
        taken: HashSet::new(),
        first_taken: None,
        last_taken: None,
        previous_packet: None,
        packets: 0,
        runs: 0,
        decoder: opus::Decoder::new(48_000, opus::Channels::Stereo).expect("an Opus decoder"),
        pcm: vec![0.0; 2 * 5760],
    };
    // The publisher's clock: `origin` + `samples` at the stream's rate.
    let (mut origin, mut samples) = (0u64, 0u64);
    let mut pts = 0u64;
    let (mut taken, mut refused) = (0u32, 0u32);

    for push in input.pushes.into_iter().take(64) {
        let frame = match push.frame {
            AacFrame::Real(i) => real_frame(i),
            AacFrame::Flipped(i, flips) => {
                let mut f = real_frame(i);
                for (at, x) in flips.into_iter().take(32) {
                    let len = f.len();
                    f[usize::from(at) % len] ^= x;
                }
                f
            }
            AacFrame::Cut(i, len) => {
                let mut f = real_frame(i);
                f.truncate(usize::from(len));
                f
            }
            AacFrame::Raw(bytes) => bytes,
            AacFrame::Empty => Vec::new(),
        };
        pts = match push.pts {
            Pts::Next => {
                samples += 1024;
                origin.saturating_add(samples * 1000 / rate)
            }
            other => {
                let next = match other {
                    Pts::Same => pts,
                    Pts::Jitter(j) => pts.saturating_add_signed(i64::from(j)),
                    Pts::Late(ms) => pts.saturating_add(frame_ms + u64::from(ms)),
                    Pts::Early(ms) => pts.saturating_add(frame_ms).saturating_sub(u64::from(ms)),
                    Pts::Jump(ms) => pts.saturating_add_signed(i64::from(ms)),
                    Pts::Any(v) => v,
                    Pts::NearMax(v) => u64::MAX - u64::from(v),
                    Pts::Next => unreachable!(),
                };
                (origin, samples) = (next, 0);
                next
            }
        };

        match transcoder.push(&frame, pts) {
            Ok(packets) => {
                assert!(packets.len() <= max_packets_per_push, "{} packets from one push", packets.len());
                timeline.taken.insert(pts);
                timeline.first_taken = Some(timeline.first_taken.map_or(pts, |f| f.min(pts)));
                timeline.last_taken = Some(timeline.last_taken.map_or(pts, |l| l.max(pts)));
                timeline.check(&packets, frame_ms);
                taken += 1;
            }
            Err(AudioError::CorruptFrame { pts_ms, .. }) => {
                assert_eq!(pts_ms, pts);
                refused += 1;
            }
            Err(e) => panic!("push at {pts} ms: {e}"),
        }
        if push.flush_after {
            match transcoder.flush() {
                Ok(packets) => {
                    assert!(packets.len() <= max_packets_per_push, "{} packets from a flush", packets.len());
                    timeline.check(&packets, frame_ms);
                }
                Err(e) => panic!("flush: {e}"),
            }
        }
    }
    if std::env::var_os("ONAIR_FUZZ_STATS").is_some() {
        eprintln!(
            "transcoder: rate={} channels={} taken={taken} refused={refused} packets={} runs={}",
            config.sample_rate, config.channels, timeline.packets, timeline.runs
        );
    }
});
