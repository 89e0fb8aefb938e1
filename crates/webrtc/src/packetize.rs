//! Samples → RTP, split in two: the payloads of a sample are made **once per stream**
//! ([`VideoPayloader`], [`AudioTimeline`] → a shared [`MediaUnit`]); each session only stamps its
//! own RTP header on them ([`TrackOut`]: payload type, SSRC, sequence number, timestamp offset),
//! and SRTP follows in its peer connection.
//!
//! Video: AVCC access units become Annex-B (what `rtc`'s H.264 payloader scans), with the
//! stream's SPS/PPS put before every IDR that does not carry its own; the payloader sends those
//! as one STAP-A and fragments large NAL units as FU-A (RFC 6184, packetization mode 1).
//! RTP timestamp = offset + pts (dts + cts, ms) × 90. A session's video starts at a keyframe and
//! goes back to waiting for one whenever it missed units ([`TrackOut::resync`]).
//!
//! Audio: one Opus packet per RTP packet, timestamp = offset + pts_ms × 48, kept continuous
//! (`previous + samples`) while the publisher's timeline agrees within 2 ms.
//!
//! Both timestamps derive from the same publish timeline (ms since the publish started), which
//! is what the RTCP sender reports map to the wall clock (see [`crate::report`]).

use bytes::Bytes;
use onair_media::{AvcConfig, Frame, avc};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp::{Header, Packet};

/// Largest RTP packet we build (header included), before SRTP; safe for any path MTU ≥ 1280.
pub const RTP_MTU: usize = 1200;
const RTP_HEADER_LEN: usize = 12;

/// Which track a unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Video { keyframe: bool },
    Audio,
}

/// One sample as RTP payloads, the same for every session of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaUnit {
    pub kind: Kind,
    /// Where the sample sits on the publish timeline when the hub hands it out (video dts,
    /// audio pts), ms: what the sender reports anchor on.
    pub media_ms: u64,
    /// RTP timestamp before a session's random offset is added.
    pub timestamp: u32,
    /// The payloads, in order; the last one of a video frame carries the marker bit.
    pub payloads: Vec<Bytes>,
}

impl MediaUnit {
    /// Payload bytes in all.
    pub fn octets(&self) -> usize {
        self.payloads.iter().map(Bytes::len).sum()
    }
}

/// H.264 access units → RTP payloads, once per stream.
#[derive(Debug)]
pub struct VideoPayloader {
    payloader: H264Payloader,
    /// SPS then PPS, Annex-B, of the stream's decoder configuration.
    parameter_sets: Vec<u8>,
    nal_length_size: u8,
}

impl VideoPayloader {
    pub fn new(avc: &AvcConfig) -> VideoPayloader {
        VideoPayloader {
            payloader: H264Payloader::default(),
            parameter_sets: avc.annexb_parameter_sets(),
            nal_length_size: avc.nal_length_size,
        }
    }

    /// The payloads of one access unit; `None` when it cannot be parsed (dropped: sessions must
    /// then wait for the next keyframe).
    pub fn push(&mut self, frame: &Frame) -> Option<MediaUnit> {
        let keyframe = frame.keyframe || avc::is_idr(&frame.data, self.nal_length_size);
        let Ok(annexb) = avc::avcc_to_annexb(&frame.data, self.nal_length_size) else {
            self.payloader = H264Payloader::default();
            return None;
        };
        let mut unit = Vec::with_capacity(annexb.len() + self.parameter_sets.len());
        if keyframe && !has_parameter_sets(&frame.data, self.nal_length_size) {
            unit.extend_from_slice(&self.parameter_sets);
        }
        unit.extend_from_slice(&annexb);
        let payloads = match self.payloader.payload(RTP_MTU - RTP_HEADER_LEN, &Bytes::from(unit)) {
            Ok(p) if !p.is_empty() => p,
            _ => {
                self.payloader = H264Payloader::default();
                return None;
            }
        };
        let pts = frame.dts.saturating_add_signed(i64::from(frame.cts));
        Some(MediaUnit {
            kind: Kind::Video { keyframe },
            media_ms: frame.dts,
            // RTP timestamps wrap modulo 2^32 by design.
            timestamp: pts.wrapping_mul(90) as u32,
            payloads,
        })
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

/// Opus packets → RTP payloads and continuous timestamps, once per stream.
#[derive(Debug, Default)]
pub struct AudioTimeline {
    /// Timestamp (without offset) and sample count of the previous packet.
    previous: Option<(u32, u32)>,
}

/// How far (in 48 kHz samples) the publisher's pts may drift from `previous + samples` before
/// the timestamp follows the pts instead (a gap or a jump in the publish).
const AUDIO_SLACK: i64 = 96;

impl AudioTimeline {
    /// Forget continuity (after lost samples).
    pub fn resync(&mut self) {
        self.previous = None;
    }

    /// The unit of one Opus packet; `None` for an empty one.
    pub fn push(&mut self, data: &Bytes, pts_ms: u64, samples: u32) -> Option<MediaUnit> {
        if data.is_empty() {
            return None;
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
        Some(MediaUnit { kind: Kind::Audio, media_ms: pts_ms, timestamp, payloads: vec![data.clone()] })
    }
}

/// Header state of one outgoing RTP stream of one session.
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

    /// The next packet's header.
    fn header(&mut self, timestamp: u32, marker: bool) -> Header {
        let sequence_number = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number,
            timestamp: timestamp.wrapping_add(self.ts_offset),
            ssrc: self.ssrc,
            ..Default::default()
        }
    }
}

/// One session's outgoing track: its RTP header state and, for video, whether it has started
/// (at a keyframe) and whether it fell behind (missed units: skipped to the next keyframe).
#[derive(Debug, Clone)]
pub struct TrackOut {
    pub rtp: RtpStream,
    video: bool,
    waiting_for_keyframe: bool,
    /// Waiting because units were missed (not because it has not started yet).
    behind: bool,
}

impl TrackOut {
    pub fn video(rtp: RtpStream) -> TrackOut {
        TrackOut { rtp, video: true, waiting_for_keyframe: true, behind: false }
    }

    pub fn audio(rtp: RtpStream) -> TrackOut {
        TrackOut { rtp, video: false, waiting_for_keyframe: false, behind: false }
    }

    /// Video waits for the next keyframe (after missed units); audio just goes on.
    pub fn resync(&mut self) {
        self.waiting_for_keyframe = self.video;
        self.behind = self.video;
    }

    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Whether `unit` is a video frame this track skips because it fell behind ([`resync`]
    /// until the next keyframe); frames before the first keyframe are not "skipped".
    ///
    /// [`resync`]: TrackOut::resync
    pub fn skips(&self, unit: &MediaUnit) -> bool {
        self.behind && unit.kind == Kind::Video { keyframe: false }
    }

    /// This session's packets of `unit` (shared payloads, own headers), handed to `out`; none
    /// while video waits for a keyframe. Returns how many.
    pub fn packets(&mut self, unit: &MediaUnit, mut out: impl FnMut(Packet)) -> usize {
        let marker = match unit.kind {
            Kind::Video { keyframe } => {
                if self.waiting_for_keyframe && !keyframe {
                    return 0;
                }
                self.waiting_for_keyframe = false;
                self.behind = false;
                true
            }
            Kind::Audio => false,
        };
        let n = unit.payloads.len();
        for (i, payload) in unit.payloads.iter().enumerate() {
            out(Packet { header: self.rtp.header(unit.timestamp, marker && i + 1 == n), payload: payload.clone() });
        }
        n
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

    /// Every unit of a capture through one session's track.
    fn session_packets(avc: &AvcConfig, frames: &[Frame], track: &mut TrackOut) -> Vec<(usize, Vec<Packet>)> {
        let mut v = VideoPayloader::new(avc);
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let unit = v.push(f).unwrap_or_else(|| panic!("frame {i} malformed"));
            let mut packets = Vec::new();
            track.packets(&unit, |p| packets.push(p));
            if !packets.is_empty() {
                out.push((i, packets));
            }
        }
        out
    }

    #[test]
    fn video_starts_at_a_keyframe_with_parameter_sets() {
        let (avc, frames) = obs_capture();
        let mut track = TrackOut::video(RtpStream::new(102, 7));
        let sent = session_packets(&avc, &frames[1..], &mut track);
        let first_key = frames.iter().skip(1).position(|f| f.keyframe).unwrap();
        assert_eq!(sent[0].0, first_key, "nothing before the first keyframe");
        // STAP-A (NAL type 24) carrying SPS then PPS leads the IDR.
        let p = &sent[0].1[0].payload;
        assert_eq!(p[0] & 0x1f, 24);
        assert_eq!(p[3] & 0x1f, 7);
        let mut last_seq = None;
        for (_, packets) in &sent {
            assert!(packets.iter().all(|p| p.payload.len() + RTP_HEADER_LEN <= RTP_MTU));
            assert!(packets.last().unwrap().header.marker);
            assert!(packets.iter().rev().skip(1).all(|p| !p.header.marker));
            assert!(packets.iter().all(|p| p.header.ssrc == 7 && p.header.payload_type == 102));
            let ts = packets[0].header.timestamp;
            assert!(packets.iter().all(|p| p.header.timestamp == ts));
            for p in packets {
                if let Some(prev) = last_seq {
                    assert_eq!(p.header.sequence_number, u16::wrapping_add(prev, 1));
                }
                last_seq = Some(p.header.sequence_number);
            }
        }
        assert!(sent.len() > 30);
    }

    #[test]
    fn video_timestamps_are_pts_times_90() {
        let (avc, frames) = obs_capture();
        let mut track = TrackOut::video(RtpStream::new(96, 1));
        let sent = session_packets(&avc, &frames, &mut track);
        let pts = |i: usize| frames[i].dts.saturating_add_signed(i64::from(frames[i].cts));
        let (i0, p0) = &sent[0];
        for (i, p) in &sent {
            assert_eq!(p[0].header.timestamp.wrapping_sub(p0[0].header.timestamp), ((pts(*i) - pts(*i0)) * 90) as u32);
        }
    }

    /// Payloads are made once: two sessions get the same bytes (not copies) under their own
    /// headers.
    #[test]
    fn sessions_share_the_payloads_and_stamp_their_own_headers() {
        let (avc, frames) = obs_capture();
        let unit = VideoPayloader::new(&avc).push(&frames[0]).unwrap();
        assert_eq!(unit.kind, Kind::Video { keyframe: true });
        let (mut a, mut b) = (TrackOut::video(RtpStream::new(96, 1)), TrackOut::video(RtpStream::new(102, 2)));
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        assert_eq!(a.packets(&unit, |p| pa.push(p)), unit.payloads.len());
        assert_eq!(b.packets(&unit, |p| pb.push(p)), unit.payloads.len());
        for ((x, y), shared) in pa.iter().zip(&pb).zip(&unit.payloads) {
            assert_eq!(x.payload.as_ptr(), shared.as_ptr());
            assert_eq!(y.payload.as_ptr(), shared.as_ptr());
            assert_eq!((x.header.ssrc, x.header.payload_type), (1, 96));
            assert_eq!((y.header.ssrc, y.header.payload_type), (2, 102));
            assert_eq!(x.header.timestamp.wrapping_sub(a.rtp.ts_offset()), unit.timestamp);
            assert_eq!(y.header.timestamp.wrapping_sub(b.rtp.ts_offset()), unit.timestamp);
        }
    }

    #[test]
    fn resync_waits_for_the_next_keyframe() {
        let (avc, frames) = obs_capture();
        let mut v = VideoPayloader::new(&avc);
        let mut track = TrackOut::video(RtpStream::new(96, 1));
        let keys: Vec<usize> = frames.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
        assert!(keys.len() >= 2, "the capture has {} keyframes", keys.len());
        let units: Vec<MediaUnit> = frames.iter().map(|f| v.push(f).unwrap()).collect();
        assert!(track.packets(&units[keys[0]], |_| {}) > 0);
        assert!(track.packets(&units[keys[0] + 1], |_| {}) > 0);
        assert!(!track.skips(&units[keys[0] + 2]));
        track.resync();
        assert!(track.waiting_for_keyframe());
        assert!(track.skips(&units[keys[0] + 2]));
        assert_eq!(track.packets(&units[keys[0] + 2], |_| {}), 0);
        assert!(!track.skips(&units[keys[1]]), "a keyframe is never skipped");
        assert!(track.packets(&units[keys[1]], |_| {}) > 0);
        assert!(!track.skips(&units[keys[1] + 1]));
        let fresh = TrackOut::video(RtpStream::new(96, 2));
        assert!(!fresh.skips(&units[keys[0] + 1]), "not started is not behind");
        // Audio never waits.
        let mut audio = TrackOut::audio(RtpStream::new(111, 3));
        audio.resync();
        assert!(!audio.waiting_for_keyframe());
    }

    #[test]
    fn garbage_access_units_are_dropped() {
        let (avc, _) = obs_capture();
        let mut v = VideoPayloader::new(&avc);
        let bad =
            Frame { track: Track::Video, dts: 0, cts: 0, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 9, 1]) };
        assert_eq!(v.push(&bad), None);
        let empty = Frame { data: Bytes::new(), ..bad };
        assert_eq!(v.push(&empty), None);
    }

    #[test]
    fn audio_timestamps_follow_pts_and_stay_continuous() {
        let mut a = AudioTimeline::default();
        let mut track = TrackOut::audio(RtpStream::new(111, 9));
        let data = Bytes::from_static(&[0xf8, 0xff, 0xfe]);
        let mut ts = |u: Option<MediaUnit>| {
            let mut out = Vec::new();
            track.packets(&u.unwrap(), |p| out.push(p));
            assert!(!out[0].header.marker);
            out[0].header.timestamp
        };
        let t0 = ts(a.push(&data, 1000, 960));
        // 20 ms frames whose ms pts jitter by ±1 ms stay exactly 960 apart.
        assert_eq!(ts(a.push(&data, 1021, 960)).wrapping_sub(t0), 960);
        assert_eq!(ts(a.push(&data, 1039, 960)).wrapping_sub(t0), 1920);
        // A 500 ms gap follows the pts.
        assert_eq!(ts(a.push(&data, 1560, 960)).wrapping_sub(t0), 560 * 48);
        assert!(a.push(&Bytes::new(), 1580, 960).is_none());
    }
}
