//! End-to-end tests: real and generated AAC in, Opus out, decoded back with libopus and measured.
//! The test files are described in `tests/data/README.md`.

use super::*;
use onair_media::{AudioTag, FlvTag, parse_audio_tag, read_flv};
use std::f32::consts::TAU;

const OBS_FLV: &[u8] = include_bytes!("../../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv");
const SINE_44K_MONO: &[u8] = include_bytes!("../tests/data/sine1k-44100-mono.aac");
const SINE_48K_STEREO: &[u8] = include_bytes!("../tests/data/sine-l1000-r1500-48000-stereo.aac");
const SINE_22K_MONO: &[u8] = include_bytes!("../tests/data/sine1k-22050-mono.aac");

/// An AAC elementary stream: its config and its raw frames with their pts.
struct Aac {
    config: AacConfig,
    frames: Vec<(Bytes, u64)>,
}

impl Aac {
    /// Duration of the frames, in ms.
    fn duration_ms(&self) -> f64 {
        self.frames.len() as f64 * self.config.frame_duration_ms()
    }
}

/// Parses an ADTS stream (ISO/IEC 13818-7 §6.2): strips each 7- or 9-byte header and builds the
/// AudioSpecificConfig from the first header's fields. pts are the frames' nominal times.
fn parse_adts(mut data: &[u8]) -> Aac {
    let mut asc = None;
    let mut frames = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 7 && data[0] == 0xff && data[1] & 0xf0 == 0xf0, "ADTS sync word");
        let protection_absent = data[1] & 1 == 1;
        let profile = data[2] >> 6; // audio object type − 1
        let sf_index = (data[2] >> 2) & 0xf;
        let channel_config = ((data[2] & 1) << 2) | (data[3] >> 6);
        let frame_length = (usize::from(data[3] & 3) << 11) | (usize::from(data[4]) << 3) | usize::from(data[5] >> 5);
        let raw_blocks = data[6] & 3;
        assert_eq!(raw_blocks, 0, "one raw data block per ADTS frame");
        let header = if protection_absent { 7 } else { 9 };
        assert!(frame_length > header && frame_length <= data.len(), "ADTS frame length {frame_length}");
        // AudioSpecificConfig: 5 bits object type, 4 bits frequency index, 4 bits channel
        // configuration, 3 bits of GASpecificConfig (all zero).
        let aot = profile + 1;
        let bits: u16 = (u16::from(aot) << 11) | (u16::from(sf_index) << 7) | (u16::from(channel_config) << 3);
        asc.get_or_insert(bits.to_be_bytes());
        frames.push(Bytes::copy_from_slice(&data[header..frame_length]));
        data = &data[frame_length..];
    }
    let config = AacConfig::parse(&asc.expect("at least one frame")).unwrap();
    let rate = u64::from(config.sample_rate);
    let frames = frames.into_iter().enumerate().map(|(i, f)| (f, i as u64 * 1024 * 1000 / rate)).collect();
    Aac { config, frames }
}

/// The AAC track of an FLV file.
fn parse_flv(file: &[u8]) -> Aac {
    let mut config = None;
    let mut frames = Vec::new();
    for tag in read_flv(file).unwrap() {
        if tag.tag_type != FlvTag::AUDIO {
            continue;
        }
        match parse_audio_tag(tag.body).unwrap() {
            AudioTag::Config(c) => config = Some(c),
            AudioTag::Frame(data) => frames.push((data, u64::from(tag.timestamp_ms))),
        }
    }
    Aac { config: config.expect("an AAC sequence header"), frames }
}

/// Transcodes every frame; panics on any error.
fn transcode(aac: &Aac) -> Vec<OpusPacket> {
    let mut t = Transcoder::new(&aac.config).unwrap();
    // A frame completes at most as many packets as its duration spans, plus one.
    let most = (aac.config.frame_duration_ms() / 20.0).ceil() as usize + 1;
    let mut packets = Vec::new();
    for (frame, pts) in &aac.frames {
        let out = t.push(frame, *pts).unwrap();
        assert!(out.len() <= most, "{} packets from one frame", out.len());
        packets.extend(out);
    }
    packets
}

/// Decodes the packets with libopus into (left, right) at 48 kHz, checking each is 960 samples.
fn decode(packets: &[OpusPacket]) -> (Vec<f32>, Vec<f32>) {
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = vec![0.0f32; 2 * 5760];
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for p in packets {
        assert_eq!(p.samples, 960);
        assert!(!p.data.is_empty() && p.data.len() <= 1275);
        let n = decoder.decode_float(&p.data, &mut pcm, false).unwrap();
        assert_eq!(n, 960, "a packet decodes to 20 ms");
        for frame in pcm[..2 * n].chunks_exact(2) {
            left.push(frame[0]);
            right.push(frame[1]);
        }
    }
    (left, right)
}

/// Pushes `frames` with `offset` added to their pts; panics on any error.
fn push_all(t: &mut Transcoder, frames: &[(Bytes, u64)], offset: u64) -> Vec<OpusPacket> {
    let mut packets = Vec::new();
    for (frame, pts) in frames {
        packets.extend(t.push(frame, offset + pts).unwrap());
    }
    packets
}

/// Checks that pts advance by exactly 20 ms from `first`.
fn assert_continuous(packets: &[OpusPacket], first: u64) {
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.pts_ms, first + 20 * i as u64, "packet {i}");
    }
}

/// Checks the packets are one timeline from 0 that lasts as long as `aac`, give or take two
/// packets.
fn assert_timeline(packets: &[OpusPacket], aac: &Aac, what: &str) {
    assert_continuous(packets, 0);
    let opus_ms = packets.len() as f64 * 20.0;
    assert!(
        (opus_ms - aac.duration_ms()).abs() <= 40.0,
        "{what}: {opus_ms} ms of Opus, {} ms of AAC",
        aac.duration_ms()
    );
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Fraction of `x`'s energy at `freq` (Goertzel).
fn tone_fraction(x: &[f32], freq: f32) -> f32 {
    let coeff = 2.0 * (TAU * freq / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let energy: f32 = x.iter().map(|v| v * v).sum();
    2.0 * power / (x.len() as f32 * energy)
}

/// Frequency from the count of upward zero crossings.
fn zero_crossing_hz(x: &[f32]) -> f32 {
    let ups = x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    ups as f32 * 48_000.0 / x.len() as f32
}

/// Checks a decoded channel is a clean sine of `freq` Hz with the source's amplitude (lavfi's
/// `sine` is 1/8 full scale: RMS 0.088), skipping `skip` samples at each end.
fn assert_tone(x: &[f32], freq: f32, skip: usize, what: &str) {
    let x = &x[skip..x.len() - skip];
    let zc = zero_crossing_hz(x);
    assert!((zc - freq).abs() < freq * 0.01, "{what}: {zc} Hz by zero crossings, want {freq}");
    let fraction = tone_fraction(x, freq);
    assert!(fraction > 0.95, "{what}: {fraction} of the energy at {freq} Hz");
    let level = rms(x);
    assert!((level - 0.125 / 2f32.sqrt()).abs() < 0.015, "{what}: RMS {level}");
}

/// Decodes the packets and checks they carry `SINE_48K_STEREO`'s tones (1000 Hz left, 1500 Hz
/// right) from sample `from` on, skipping `skip` samples at each end.
fn assert_stereo_tones(packets: &[OpusPacket], from: usize, skip: usize, what: &str) {
    let (left, right) = decode(packets);
    assert_tone(&left[from..], 1000.0, skip, &format!("{what}, left"));
    assert_tone(&right[from..], 1500.0, skip, &format!("{what}, right"));
}

#[test]
fn obs_stream_transcodes() {
    let aac = parse_flv(OBS_FLV);
    assert_eq!((aac.config.sample_rate, aac.config.channels), (48_000, 2));
    let packets = transcode(&aac);

    let expected = aac.duration_ms() / 20.0;
    assert!((packets.len() as f64 - expected).abs() <= 1.0, "{} packets, {expected:.1} expected", packets.len());
    let first = aac.frames[0].1;
    assert_continuous(&packets, first);
    // The last packet starts within one packet of the end of the AAC audio.
    let end = first as f64 + aac.duration_ms();
    let last = packets.last().unwrap().pts_ms as f64;
    assert!(last <= end && end - last <= 40.0, "last packet at {last} ms, AAC ends at {end} ms");

    let (left, right) = decode(&packets);
    assert_eq!(left.len(), packets.len() * 960);
    let (l, r) = (rms(&left), rms(&right));
    assert!(l > 0.001 && r > 0.001, "the decoded signal has energy: RMS {l} / {r}");
    // Sound throughout, not one burst: most 1 s windows carry signal.
    let loud = left.chunks(48_000).filter(|w| rms(w) > 0.0005).count();
    assert!(loud * 10 >= left.len().div_ceil(48_000) * 8, "{loud} loud seconds");
    // Opus bitrate is in the ballpark of 96 kb/s.
    let bytes: usize = packets.iter().map(|p| p.data.len()).sum();
    let kbps = bytes as f64 * 8.0 / (packets.len() as f64 * 20.0);
    assert!((40.0..=130.0).contains(&kbps), "{kbps:.1} kb/s");
}

#[test]
fn sine_44100_mono_is_resampled() {
    let aac = parse_adts(SINE_44K_MONO);
    assert_eq!((aac.config.sample_rate, aac.config.channels), (44_100, 1));
    let packets = transcode(&aac);
    assert_timeline(&packets, &aac, "44.1 kHz mono");
    let (left, right) = decode(&packets);
    assert_tone(&left, 1000.0, 4800, "44.1 kHz mono, left");
    assert_tone(&right, 1000.0, 4800, "44.1 kHz mono, right");
    // Mono in: the packets code one channel, which a stereo decoder plays as L = R.
    for p in &packets {
        assert_eq!(opus::packet::get_nb_channels(&p.data).unwrap(), opus::Channels::Mono);
    }
    let diff = left.iter().zip(&right).map(|(l, r)| (l - r).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "L and R differ by {diff}");
}

#[test]
fn sine_22050_mono_is_resampled() {
    let aac = parse_adts(SINE_22K_MONO);
    assert_eq!((aac.config.sample_rate, aac.config.channels), (22_050, 1));
    let packets = transcode(&aac);
    assert_timeline(&packets, &aac, "22.05 kHz mono");
    let (left, _) = decode(&packets);
    assert_tone(&left, 1000.0, 4800, "22.05 kHz mono");
}

#[test]
fn sine_48000_stereo_keeps_its_channels() {
    let aac = parse_adts(SINE_48K_STEREO);
    assert_eq!((aac.config.sample_rate, aac.config.channels), (48_000, 2));
    let packets = transcode(&aac);
    assert_timeline(&packets, &aac, "48 kHz stereo");
    assert_stereo_tones(&packets, 0, 4800, "48 kHz stereo");
}

/// Frames that cannot decode: a truncated frame, and a coupling channel element (which the
/// decoder does not support).
fn corrupt_frames(good: &Bytes) -> Vec<Bytes> {
    vec![good.slice(..good.len().min(6)), Bytes::from_static(&[0x40, 0x00, 0x00, 0x00]), Bytes::new()]
}

#[test]
fn a_corrupt_frame_is_an_error_for_that_frame_only() {
    let aac = parse_adts(SINE_48K_STEREO);
    for (k, bad) in corrupt_frames(&aac.frames[40].0).into_iter().enumerate() {
        let mut t = Transcoder::new(&aac.config).unwrap();
        let mut packets = Vec::new();
        for (i, (frame, pts)) in aac.frames.iter().enumerate() {
            if i == 40 {
                let err = t.push(&bad, *pts).unwrap_err();
                assert!(matches!(err, AudioError::CorruptFrame { pts_ms, .. } if pts_ms == *pts), "{k}: {err}");
                continue;
            }
            packets.extend(t.push(frame, *pts).unwrap());
        }
        // The lost frame's time is filled: the timeline is unbroken and complete.
        assert_timeline(&packets, &aac, &format!("corrupt frame {k}"));
        // The tone is back after the corrupt frame (40 × 21.3 ms ≈ 853 ms; check from 1.0 s).
        assert_stereo_tones(&packets, 48_000, 2400, &format!("after corrupt frame {k}"));
    }
}

#[test]
fn a_frame_that_confuses_the_decoder_costs_only_itself() {
    // A mono frame (one SCE) parses on a fresh stereo decoder, and leaves Symphonia's decoder
    // expecting an SCE first: the stereo frames (a CPE) fail on it. The first of them is retried
    // on a fresh decoder, and none is lost.
    let stereo = parse_adts(SINE_48K_STEREO);
    let mono = parse_adts(SINE_44K_MONO);
    let mut t = Transcoder::new(&stereo.config).unwrap();
    let mut packets = t.push(&mono.frames[40].0, 0).unwrap();
    for (i, (frame, _)) in stereo.frames.iter().enumerate() {
        let pts = (i as u64 + 1) * 1024 * 1000 / 48_000;
        packets.extend(t.push(frame, pts).unwrap_or_else(|e| panic!("frame {i}: {e}")));
    }
    assert_continuous(&packets, 0);
    assert_stereo_tones(&packets, 4800, 2400, "after a mono frame");
}

#[test]
fn corrupt_first_frame_then_normal() {
    let aac = parse_adts(SINE_48K_STEREO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    assert!(t.push(&[0x40, 0, 0], 0).is_err());
    let packets = push_all(&mut t, &aac.frames[1..], 0);
    // The timeline starts at the first frame that decoded.
    assert_continuous(&packets, aac.frames[1].1);
}

/// A cheap deterministic generator for the fuzz-like tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
}

/// Pushes `rounds` passes over `source`'s frames into `t`, each frame damaged or not (bits
/// flipped, cut short, random bytes, with `one_byte` one byte replaced, or left whole: picked by
/// `rng`), pass `r` at `r × round_ms` + pts. Returns how many pushes failed.
fn push_damaged(t: &mut Transcoder, source: &Aac, rng: &mut Lcg, rounds: u64, round_ms: u64, one_byte: bool) -> u64 {
    let mut errs = 0;
    for round in 0..rounds {
        for (frame, pts) in &source.frames {
            let mut bad = frame.to_vec();
            match rng.next() % if one_byte { 5 } else { 4 } {
                0 => {
                    for _ in 0..1 + rng.next() % 8 {
                        let bit = rng.next() as usize % (bad.len() * 8);
                        bad[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                1 => bad.truncate(rng.next() as usize % bad.len()),
                2 => bad.iter_mut().for_each(|b| *b = rng.next() as u8),
                3 if one_byte => {
                    let i = rng.next() as usize % bad.len();
                    bad[i] = rng.next() as u8;
                }
                _ => {}
            }
            if t.push(&bad, round * round_ms + pts).is_err() {
                errs += 1;
            }
        }
    }
    errs
}

#[test]
fn damaged_frames_never_panic_and_the_stream_recovers() {
    let aac = parse_adts(SINE_44K_MONO);
    let stereo = parse_adts(SINE_48K_STEREO);
    let mut rng = Lcg(7);
    for source in [&aac, &stereo] {
        let mut t = Transcoder::new(&source.config).unwrap();
        push_damaged(&mut t, source, &mut rng, 6, 3000, false);
        // Afterwards, clean frames transcode cleanly again, on a new run (the pts jumped, so the
        // first push also returns the end of the damaged run, and renews the decoder).
        let mut packets = Vec::new();
        for (frame, pts) in &source.frames {
            packets.extend(t.push(frame, 100_000 + pts).unwrap().into_iter().filter(|p| p.pts_ms >= 100_000));
        }
        assert_continuous(&packets, 100_000);
        let (left, _) = decode(&packets);
        assert_tone(&left, 1000.0, 4800, "after damaged frames");
    }
}

#[test]
fn a_lost_frame_is_filled_with_silence() {
    let aac = parse_adts(SINE_48K_STEREO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    let mut packets = Vec::new();
    for (i, (frame, pts)) in aac.frames.iter().enumerate() {
        if i == 30 || i == 31 {
            continue; // lost upstream: 42.7 ms, under the resync threshold
        }
        packets.extend(t.push(frame, *pts).unwrap());
    }
    assert_timeline(&packets, &aac, "2 frames lost");
    // The silence is where the frames were (640–683 ms), so the audio after it stays in place.
    let (left, _) = decode(&packets);
    let gap = &left[31_500..32_500];
    assert!(rms(gap) < 0.02, "silence in the gap: RMS {}", rms(gap));
    assert_tone(&left[48_000..], 1000.0, 2400, "after the gap");
}

#[test]
fn a_gap_resyncs_the_timeline() {
    let aac = parse_adts(SINE_44K_MONO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    let split = 40;
    let gap_ms = 5_000;
    let mut before = push_all(&mut t, &aac.frames[..split], 1_000);
    let resume_pts = 1_000 + aac.frames[split].1 + gap_ms;
    let mut after = Vec::new();
    let mut first = true;
    for (frame, pts) in &aac.frames[split..] {
        let out = t.push(frame, 1_000 + pts + gap_ms).unwrap();
        if first {
            // The end of the first run comes out with the first frame after the gap.
            first = false;
            let (old, new): (Vec<_>, Vec<_>) = out.into_iter().partition(|p| p.pts_ms < resume_pts);
            before.extend(old);
            after.extend(new);
        } else {
            after.extend(out);
        }
    }
    // Before the gap: continuous from 1000 ms, covering the first run entirely (padded up to 20 ms).
    assert_continuous(&before, 1_000);
    let run1_ms = split as f64 * 1024.0 * 1000.0 / 44_100.0;
    let covered = before.len() as f64 * 20.0;
    assert!(covered >= run1_ms && covered < run1_ms + 20.0, "{covered} ms for a {run1_ms:.1} ms run");
    // After: a new timeline starting exactly at the first frame after the gap.
    assert_eq!(after[0].pts_ms, resume_pts);
    assert_continuous(&after, resume_pts);
    let run2_ms = (aac.frames.len() - split) as f64 * 1024.0 * 1000.0 / 44_100.0;
    let covered = after.len() as f64 * 20.0;
    assert!((covered - run2_ms).abs() <= 40.0, "{covered} ms for a {run2_ms:.1} ms run");
    // And the audio on both sides is the tone.
    let (left, _) = decode(&before);
    assert_tone(&left, 1000.0, 4800, "before the gap");
    let (left, _) = decode(&after);
    assert_tone(&left, 1000.0, 4800, "after the gap");
}

#[test]
fn a_backward_jump_resyncs_too() {
    let aac = parse_adts(SINE_48K_STEREO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    push_all(&mut t, &aac.frames[..50], 10_000);
    let out = t.push(&aac.frames[50].0, 2_000).unwrap();
    let new: Vec<_> = out.iter().filter(|p| p.pts_ms < 10_000).collect();
    assert_eq!(new.first().map(|p| p.pts_ms), Some(2_000));
}

#[test]
fn flush_emits_the_tail() {
    let aac = parse_adts(SINE_44K_MONO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    let mut packets = push_all(&mut t, &aac.frames, 0);
    packets.extend(t.flush().unwrap());
    assert_continuous(&packets, 0);
    let covered = packets.len() as f64 * 20.0;
    assert!(covered >= aac.duration_ms() && covered < aac.duration_ms() + 20.0, "{covered} ms");
    assert!(t.flush().unwrap().is_empty(), "nothing left");
}

/// Found by the `aac_opus` fuzz target (`fuzz/regressions/aac_opus/pts-near-u64-max`): a pts a
/// few ms short of `u64::MAX` overflowed the next packet's pts and the expected time of the next
/// frame. Times saturate instead.
#[test]
fn timestamps_at_the_end_of_u64_saturate() {
    let aac = parse_flv(OBS_FLV);
    let mut t = Transcoder::new(&aac.config).unwrap();
    let frame = &aac.frames[10].0;
    let mut packets = t.push(frame, u64::MAX - 1).unwrap();
    packets.extend(t.flush().unwrap());
    for pts in [u64::MAX, u64::MAX, u64::MAX - 30, 5, u64::MAX] {
        packets.extend(t.push(frame, pts).unwrap());
    }
    packets.extend(t.flush().unwrap());
    assert!(packets.len() >= 4);
    assert_eq!(packets[0].pts_ms, u64::MAX - 1);
    assert!(packets.iter().skip(1).all(|p| p.pts_ms == u64::MAX || p.pts_ms >= 5));
}

/// A frame whose pts ends the run but which is then refused must not take the old run's tail
/// with it: the tail comes out with the next call.
#[test]
fn a_refused_frame_after_a_gap_keeps_the_old_runs_tail() {
    let aac = parse_adts(SINE_44K_MONO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    let split = 40;
    let mut before = push_all(&mut t, &aac.frames[..split], 0);
    let resume = aac.frames[split].1 + 5_000;
    assert!(matches!(t.push(&[], resume), Err(AudioError::CorruptFrame { .. })));
    let out = t.push(&aac.frames[split].0, resume + 23).unwrap();
    let (old, new): (Vec<_>, Vec<_>) = out.into_iter().partition(|p| p.pts_ms < resume);
    before.extend(old);
    assert_continuous(&before, 0);
    let run_ms = split as f64 * 1024.0 * 1000.0 / 44_100.0;
    let covered = before.len() as f64 * 20.0;
    assert!(covered >= run_ms && covered < run_ms + 20.0, "{covered} ms for a {run_ms:.1} ms run");
    assert!(new.iter().all(|p| p.pts_ms >= resume + 23));
}

#[test]
fn small_jitter_does_not_resync() {
    // Timestamps that wobble by a few ms around the nominal time keep one continuous timeline.
    let aac = parse_adts(SINE_48K_STEREO);
    let mut t = Transcoder::new(&aac.config).unwrap();
    let mut packets = Vec::new();
    for (i, (frame, pts)) in aac.frames.iter().enumerate() {
        let wobble = [0, 3, 0, 0, 2, 0, 0, 4][i % 8];
        packets.extend(t.push(frame, pts + wobble).unwrap());
    }
    assert_timeline(&packets, &aac, "jittery timestamps");
}

#[test]
fn unsupported_configs_are_refused() {
    let he_aac = AacConfig::parse(&[0x2b, 0x11, 0x88, 0x00]).unwrap(); // AOT 5, 24 kHz core, 48 kHz SBR
    assert_eq!(he_aac.object_type, 5);
    assert!(matches!(Transcoder::new(&he_aac), Err(AudioError::Unsupported(_))));
    let surround = AacConfig::parse(&[0x11, 0xb0]).unwrap(); // AAC-LC 48 kHz, 6 channels
    assert_eq!(surround.channels, 6);
    assert!(matches!(Transcoder::new(&surround), Err(AudioError::Unsupported(_))));
    let short_frames = AacConfig::parse(&[0x11, 0x94]).unwrap(); // frameLengthFlag: 960
    assert_eq!(short_frames.samples_per_frame(), 960);
    assert!(matches!(Transcoder::new(&short_frames), Err(AudioError::Unsupported(_))));
    let main = AacConfig::parse(&[0x09, 0x90]).unwrap(); // AAC Main
    assert!(matches!(Transcoder::new(&main), Err(AudioError::Unsupported(_))));
}

#[test]
fn every_standard_rate_starts() {
    for (index, rate) in onair_media::aac::SAMPLE_RATES.iter().enumerate() {
        for channels in [1u16, 2] {
            let bits: u16 = (2 << 11) | ((index as u16) << 7) | (channels << 3);
            let config = AacConfig::parse(&bits.to_be_bytes()).unwrap();
            assert_eq!(config.sample_rate, *rate);
            let t = Transcoder::new(&config);
            assert!(t.is_ok(), "{rate} Hz × {channels}: {:?}", t.err());
        }
    }
}

#[test]
fn encoder_settings() {
    let mut stereo = new_encoder(2).unwrap();
    assert_eq!(stereo.get_lookahead().unwrap(), 312, "6.5 ms in Audio mode");
    assert_eq!(stereo.get_bitrate().unwrap(), opus::Bitrate::Bits(96_000));
    assert_eq!(stereo.get_complexity().unwrap(), 5);
    assert_eq!(stereo.get_force_channels().unwrap(), None);
    let mut mono = new_encoder(1).unwrap();
    assert_eq!(mono.get_force_channels().unwrap(), Some(opus::Channels::Mono));
    assert_eq!(mono.get_bitrate().unwrap(), opus::Bitrate::Bits(64_000));
}

#[test]
fn transcoder_is_send() {
    fn send<T: Send>() {}
    send::<Transcoder>();
    send::<OpusPacket>();
    send::<AudioError>();
}

/// Rough cost of `push`, per AAC frame. Run with
/// `cargo test -p onair-audio --release -- --ignored --nocapture push_cost`.
#[test]
#[ignore = "a measurement, not a check"]
fn push_cost() {
    for (name, aac) in [
        ("48 kHz stereo (OBS)", parse_flv(OBS_FLV)),
        ("44.1 kHz mono", parse_adts(SINE_44K_MONO)),
        ("48 kHz stereo (sine)", parse_adts(SINE_48K_STEREO)),
    ] {
        let mut t = Transcoder::new(&aac.config).unwrap();
        let mut frames = 0u64;
        let mut offset = 0;
        let start = std::time::Instant::now();
        while frames < 5_000 {
            for (frame, pts) in &aac.frames {
                std::hint::black_box(t.push(frame, offset + pts).unwrap());
                frames += 1;
            }
            offset += 1_000_000;
        }
        let per_frame = start.elapsed() / frames as u32;
        let audio_ms = aac.config.frame_duration_ms();
        println!(
            "{name}: {per_frame:?} per frame ({:.2}% of one core in real time)",
            per_frame.as_secs_f64() * 1000.0 / audio_ms * 100.0
        );
    }
}

/// A longer run of [`damaged_frames_never_panic_and_the_stream_recovers`] over all the test
/// streams (23 000 frames, ~15 s in release). Run with
/// `cargo test -p onair-audio --release -- --ignored --nocapture long_fuzz`.
#[test]
#[ignore = "slow"]
fn long_fuzz() {
    let sources =
        [parse_adts(SINE_44K_MONO), parse_adts(SINE_48K_STEREO), parse_flv(OBS_FLV), parse_adts(SINE_22K_MONO)];
    let mut rng = Lcg(12345);
    let mut errs = 0u64;
    let mut n = 0u64;
    for source in &sources {
        let mut t = Transcoder::new(&source.config).unwrap();
        errs += push_damaged(&mut t, source, &mut rng, 40, 100_000, true);
        n += 40 * source.frames.len() as u64;
    }
    println!("{n} damaged frames, {errs} rejected, no panic");
}
