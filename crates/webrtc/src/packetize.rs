//! Samples → RTP packets for one session (payload type, SSRC, sequence numbers, timestamps).
//!
//! Video: AVCC access units become Annex-B (what `rtc`'s H.264 payloader scans), with the
//! stream's SPS/PPS put before every IDR that does not carry its own; the payloader sends those
//! as one STAP-A and fragments large NAL units as FU-A (RFC 6184, packetization mode 1).
//! RTP timestamp = offset + pts (dts + cts, ms) × 90. A session starts at a keyframe and goes
//! back to waiting for one whenever it lost samples.
//!
//! Audio: one Opus packet per RTP packet, timestamp = offset + pts_ms × 48, kept continuous
//! (`previous + samples`) while the publisher's timeline agrees within 2 ms.
//!
//! Both timestamps derive from the same publish timeline (ms since the publish started) and the
//! packets leave when the hub hands the samples out, so the RTCP sender reports of both tracks
//! map to the same wall clock: that is what players lip-sync on.

use bytes::Bytes;
use onair_media::{AvcConfig, Frame, avc};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp::{Header, Packet};

/// Largest RTP packet we build (header included), before SRTP; safe for any path MTU ≥ 1280.
pub const RTP_MTU: usize = 1200;
const RTP_HEADER_LEN: usize = 12;

/// Header state of one outgoing RTP stream.
#[derive(Debug, Clone)]
pub struct RtpStream {
    pub payload_type: u8,
    pub ssrc: u32,
    sequence: u16,
    ts_offset: u32,
}

impl RtpStream {
    /// A stream with a random initial sequence number and timestamp offset (RFC 3550 §5.1).
    pub fn new(payload_type: u8, ssrc: u32) -> RtpStream {
        RtpStream { payload_type, ssrc, sequence: rand::random(), ts_offset: rand::random() }
    }

    /// The random offset added to every RTP timestamp of this stream.
    pub fn ts_offset(&self) -> u32 {
        self.ts_offset
    }

    fn packets(&mut self, payloads: Vec<Bytes>, timestamp: u32, mark_last: bool) -> Vec<Packet> {
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let sequence_number = self.sequence;
                self.sequence = self.sequence.wrapping_add(1);
                Packet {
                    header: Header {
                        version: 2,
                        marker: mark_last && i + 1 == n,
                        payload_type: self.payload_type,
                        sequence_number,
                        timestamp: timestamp.wrapping_add(self.ts_offset),
                        ssrc: self.ssrc,
                        ..Default::default()
                    },
                    payload,
                }
            })
            .collect()
    }
}

/// What happened to a video frame.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoOutcome {
    /// Packets to send.
    Send(Vec<Packet>),
    /// Dropped: the session waits for a keyframe.
    WaitingForKeyframe,
    /// Dropped: the access unit could not be parsed.
    Malformed,
}

/// H.264 frames → RTP for one session.
#[derive(Debug)]
pub struct VideoPacketizer {
    rtp: RtpStream,
    payloader: H264Payloader,
    /// SPS then PPS, Annex-B, of the stream's decoder configuration.
    parameter_sets: Vec<u8>,
    nal_length_size: u8,
    waiting_for_keyframe: bool,
}

impl VideoPacketizer {
    pub fn new(rtp: RtpStream, avc: &AvcConfig) -> VideoPacketizer {
        VideoPacketizer {
            rtp,
            payloader: H264Payloader::default(),
            parameter_sets: avc.annexb_parameter_sets(),
            nal_length_size: avc.nal_length_size,
            waiting_for_keyframe: true,
        }
    }

    /// Drops everything up to the next keyframe (after lost samples).
    pub fn resync(&mut self) {
        self.waiting_for_keyframe = true;
        self.payloader = H264Payloader::default();
    }

    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    pub fn push(&mut self, frame: &Frame) -> VideoOutcome {
        let keyframe = frame.keyframe || avc::is_idr(&frame.data, self.nal_length_size);
        if self.waiting_for_keyframe && !keyframe {
            return VideoOutcome::WaitingForKeyframe;
        }
        let Ok(annexb) = avc::avcc_to_annexb(&frame.data, self.nal_length_size) else {
            self.resync();
            return VideoOutcome::Malformed;
        };
        let mut unit = Vec::with_capacity(annexb.len() + self.parameter_sets.len());
        if keyframe && !has_parameter_sets(&frame.data, self.nal_length_size) {
            unit.extend_from_slice(&self.parameter_sets);
        }
        unit.extend_from_slice(&annexb);
        let payloads = match self.payloader.payload(RTP_MTU - RTP_HEADER_LEN, &Bytes::from(unit)) {
            Ok(p) if !p.is_empty() => p,
            _ => {
                self.resync();
                return VideoOutcome::Malformed;
            }
        };
        self.waiting_for_keyframe = false;
        let pts = frame.dts.saturating_add_signed(i64::from(frame.cts));
        // RTP timestamps wrap modulo 2^32 by design.
        let timestamp = pts.wrapping_mul(90) as u32;
        VideoOutcome::Send(self.rtp.packets(payloads, timestamp, true))
    }
}

/// Whether an AVCC access unit carries both an SPS and a PPS in band.
fn has_parameter_sets(data: &[u8], nal_length_size: u8) -> bool {
    let (mut sps, mut pps) = (false, false);
    for nal in avc::nal_units(data, nal_length_size).map_while(Result::ok) {
        match avc::nal_type(nal) {
            Some(avc::NAL_SPS) => sps = true,
            Some(avc::NAL_PPS) => pps = true,
            _ => {}
        }
    }
    sps && pps
}

/// Opus packets → RTP for one session.
#[derive(Debug)]
pub struct AudioPacketizer {
    rtp: RtpStream,
    /// Timestamp (without offset) and sample count of the previous packet.
    previous: Option<(u32, u32)>,
}

/// How far (in 48 kHz samples) the publisher's pts may drift from `previous + samples` before
/// the timestamp follows the pts instead (a gap or a jump in the publish).
const AUDIO_SLACK: i64 = 96;

impl AudioPacketizer {
    pub fn new(rtp: RtpStream) -> AudioPacketizer {
        AudioPacketizer { rtp, previous: None }
    }

    /// Forget continuity (after lost samples).
    pub fn resync(&mut self) {
        self.previous = None;
    }

    pub fn push(&mut self, data: &Bytes, pts_ms: u64, samples: u32) -> Vec<Packet> {
        if data.is_empty() {
            return Vec::new();
        }
        let from_pts = pts_ms.wrapping_mul(48) as u32;
        let timestamp = match self.previous {
            Some((ts, n)) => {
                let expected = ts.wrapping_add(n);
                let drift = i64::from(from_pts.wrapping_sub(expected) as i32);
                if drift.abs() <= AUDIO_SLACK { expected } else { from_pts }
            }
            None => from_pts,
        };
        self.previous = Some((timestamp, samples));
        self.rtp.packets(vec![data.clone()], timestamp, false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use onair_media::{Track, VideoTag, parse_video_tag, read_flv};

    use super::*;

    /// The video of the real OBS capture in `onair-media`'s test data: its AVC configuration and
    /// frames (keyframes at 0, 60, 120, 180, 225).
    pub(crate) fn obs_capture() -> (AvcConfig, Vec<Frame>) {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"
        ))
        .unwrap();
        let mut config = None;
        let mut frames = Vec::new();
        for tag in read_flv(&file).unwrap().into_iter().filter(|t| t.tag_type == 9) {
            match parse_video_tag(tag.body).unwrap() {
                VideoTag::Config(c) => config = Some(c),
                VideoTag::Frame { keyframe, composition_time_ms, data } => frames.push(Frame {
                    track: Track::Video,
                    dts: u64::from(tag.timestamp_ms),
                    cts: composition_time_ms,
                    keyframe,
                    data,
                }),
                _ => {}
            }
        }
        (config.unwrap(), frames)
    }

    #[test]
    fn video_starts_at_a_keyframe_with_parameter_sets() {
        let (avc, frames) = obs_capture();
        let mut v = VideoPacketizer::new(RtpStream::new(102, 7), &avc);
        let first_key = frames.iter().position(|f| f.keyframe).unwrap();
        let mut sent = 0;
        let mut last_seq = None;
        for (i, f) in frames.iter().enumerate().skip(1) {
            match v.push(f) {
                VideoOutcome::Send(packets) => {
                    if sent == 0 {
                        assert!(i >= first_key && f.keyframe);
                        // STAP-A (NAL type 24) carrying SPS then PPS leads the IDR.
                        let p = &packets[0].payload;
                        assert_eq!(p[0] & 0x1f, 24);
                        assert_eq!(p[3] & 0x1f, 7);
                    }
                    sent += 1;
                    assert!(packets.iter().all(|p| p.payload.len() + RTP_HEADER_LEN <= RTP_MTU));
                    assert!(packets.last().unwrap().header.marker);
                    assert!(packets.iter().rev().skip(1).all(|p| !p.header.marker));
                    assert!(packets.iter().all(|p| p.header.ssrc == 7 && p.header.payload_type == 102));
                    let ts = packets[0].header.timestamp;
                    assert!(packets.iter().all(|p| p.header.timestamp == ts));
                    for p in &packets {
                        if let Some(prev) = last_seq {
                            assert_eq!(p.header.sequence_number, u16::wrapping_add(prev, 1));
                        }
                        last_seq = Some(p.header.sequence_number);
                    }
                }
                VideoOutcome::WaitingForKeyframe => assert_eq!(sent, 0),
                VideoOutcome::Malformed => panic!("frame {i} malformed"),
            }
        }
        assert!(sent > 30);
    }

    #[test]
    fn video_timestamps_are_pts_times_90() {
        let (avc, frames) = obs_capture();
        let mut v = VideoPacketizer::new(RtpStream::new(96, 1), &avc);
        let mut first: Option<(u64, u32)> = None;
        for f in &frames {
            if let VideoOutcome::Send(p) = v.push(f) {
                let pts = f.dts.saturating_add_signed(i64::from(f.cts));
                match first {
                    None => first = Some((pts, p[0].header.timestamp)),
                    Some((pts0, ts0)) => {
                        assert_eq!(p[0].header.timestamp.wrapping_sub(ts0), ((pts - pts0) * 90) as u32)
                    }
                }
            }
        }
    }

    #[test]
    fn resync_waits_for_the_next_keyframe() {
        let (avc, frames) = obs_capture();
        let mut v = VideoPacketizer::new(RtpStream::new(96, 1), &avc);
        let keys: Vec<usize> = frames.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
        assert!(keys.len() >= 2, "the capture has {} keyframes", keys.len());
        assert!(matches!(v.push(&frames[keys[0]]), VideoOutcome::Send(_)));
        assert!(matches!(v.push(&frames[keys[0] + 1]), VideoOutcome::Send(_)));
        v.resync();
        assert_eq!(v.push(&frames[keys[0] + 2]), VideoOutcome::WaitingForKeyframe);
        assert!(matches!(v.push(&frames[keys[1]]), VideoOutcome::Send(_)));
    }

    #[test]
    fn garbage_access_units_are_dropped() {
        let (avc, _) = obs_capture();
        let mut v = VideoPacketizer::new(RtpStream::new(96, 1), &avc);
        let bad =
            Frame { track: Track::Video, dts: 0, cts: 0, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 9, 1]) };
        assert_eq!(v.push(&bad), VideoOutcome::Malformed);
        let empty = Frame { data: Bytes::new(), ..bad };
        assert_eq!(v.push(&empty), VideoOutcome::Malformed);
        assert!(v.waiting_for_keyframe());
    }

    #[test]
    fn audio_timestamps_follow_pts_and_stay_continuous() {
        let mut a = AudioPacketizer::new(RtpStream::new(111, 9));
        let data = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
        let ts = |p: Vec<Packet>| p[0].header.timestamp;
        let t0 = ts(a.push(&data, 1000, 960));
        // 20 ms frames whose ms pts jitter by ±1 ms stay exactly 960 apart.
        assert_eq!(ts(a.push(&data, 1021, 960)).wrapping_sub(t0), 960);
        assert_eq!(ts(a.push(&data, 1039, 960)).wrapping_sub(t0), 1920);
        // A 500 ms gap follows the pts.
        assert_eq!(ts(a.push(&data, 1560, 960)).wrapping_sub(t0), 560 * 48);
        assert!(a.push(&Bytes::new(), 1580, 960).is_empty());
    }
}
