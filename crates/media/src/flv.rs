//! FLV: the audio and video tag bodies that RTMP carries (Adobe FLV spec v10.1, Annex E.4.2 and
//! E.4.3), and a reader of FLV files (E.2, E.3).

use std::iter::FusedIterator;

use bytes::Bytes;

use crate::{AacConfig, AvcConfig, MediaError, Result};

/// FLV video codec id of H.264/AVC.
pub const VIDEO_CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
pub const AUDIO_FORMAT_AAC: u8 = 10;

/// A parsed VIDEODATA body (H.264 only).
#[derive(Debug, Clone, PartialEq)]
pub enum VideoTag {
    /// AVC sequence header (AVCPacketType 0): the decoder configuration.
    Config(AvcConfig),
    /// AVC NALUs (AVCPacketType 1): one access unit.
    Frame {
        /// FrameType 1 (key frame).
        keyframe: bool,
        /// CompositionTime: pts - dts in milliseconds (negative values are sign-extended).
        composition_time_ms: i32,
        /// The access unit in AVCC form (length-prefixed NAL units); may be empty.
        data: Bytes,
    },
    /// AVC end of sequence (AVCPacketType 2).
    EndOfSequence,
}

/// Parses the body of an FLV video tag / RTMP video message.
///
/// Layout: `FrameType:4 CodecID:4 | AVCPacketType:8 | CompositionTime:SI24 | data`.
/// Only CodecID 7 (AVC) is supported ([`MediaError::UnsupportedVideoCodec`] otherwise), and
/// Enhanced RTMP tags (`IsExHeader`, the top bit of the first byte) are refused as
/// [`MediaError::Invalid`]. So are video info/command frames (FrameType 5), which carry no
/// picture.
pub fn parse_video_tag(body: Bytes) -> Result<VideoTag> {
    const WHAT: &str = "FLV video tag";
    let Some(&first) = body.first() else {
        return Err(MediaError::Truncated { what: WHAT, need: 1, have: 0 });
    };
    if first & 0x80 != 0 {
        return Err(MediaError::Invalid {
            what: WHAT,
            reason: format!(
                "Enhanced RTMP (IsExHeader) video tag, fourcc/packet type byte {first:#04x}, is not supported; publish H.264 with the legacy FLV codec id 7"
            ),
        });
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if codec_id != VIDEO_CODEC_AVC {
        return Err(MediaError::UnsupportedVideoCodec(codec_id));
    }
    match frame_type {
        1..=4 => {}
        5 => {
            return Err(MediaError::Invalid {
                what: WHAT,
                reason: "video info/command frame (FrameType 5) carries no picture".into(),
            });
        }
        other => {
            return Err(MediaError::Invalid { what: WHAT, reason: format!("FrameType {other}") });
        }
    }
    if body.len() < 5 {
        return Err(MediaError::Truncated { what: "FLV AVC video tag header", need: 5, have: body.len() });
    }
    let packet_type = body[1];
    // SI24, big-endian: put it in the top 24 bits and shift back arithmetically.
    let composition_time_ms = i32::from_be_bytes([body[2], body[3], body[4], 0]) >> 8;
    match packet_type {
        0 => AvcConfig::parse(&body[5..]).map(VideoTag::Config),
        1 => Ok(VideoTag::Frame { keyframe: frame_type == 1, composition_time_ms, data: body.slice(5..) }),
        2 => Ok(VideoTag::EndOfSequence),
        other => Err(MediaError::Invalid { what: WHAT, reason: format!("AVCPacketType {other}") }),
    }
}

/// A parsed AUDIODATA body (AAC only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AAC sequence header (AACPacketType 0): the AudioSpecificConfig.
    Config(AacConfig),
    /// AAC raw (AACPacketType 1): one raw AAC frame without ADTS header; may be empty.
    Frame(Bytes),
}

/// Parses the body of an FLV audio tag / RTMP audio message.
///
/// Layout: `SoundFormat:4 SoundRate:2 SoundSize:1 SoundType:1 | AACPacketType:8 | data`.
/// Only SoundFormat 10 (AAC) is supported ([`MediaError::UnsupportedAudioFormat`]
/// otherwise); rate, size and type are ignored, as the AudioSpecificConfig is authoritative.
pub fn parse_audio_tag(body: Bytes) -> Result<AudioTag> {
    const WHAT: &str = "FLV audio tag";
    let Some(&first) = body.first() else {
        return Err(MediaError::Truncated { what: WHAT, need: 1, have: 0 });
    };
    let format = first >> 4;
    if format != AUDIO_FORMAT_AAC {
        return Err(MediaError::UnsupportedAudioFormat(format));
    }
    let Some(&packet_type) = body.get(1) else {
        return Err(MediaError::Truncated { what: "FLV AAC audio tag header", need: 2, have: 1 });
    };
    match packet_type {
        0 => AacConfig::parse(&body[2..]).map(AudioTag::Config),
        1 => Ok(AudioTag::Frame(body.slice(2..))),
        other => Err(MediaError::Invalid { what: WHAT, reason: format!("AACPacketType {other}") }),
    }
}

/// One tag of an FLV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// [`FlvTag::AUDIO`] (8), [`FlvTag::VIDEO`] (9) or [`FlvTag::SCRIPT`] (18).
    pub tag_type: u8,
    /// Timestamp in milliseconds, with TimestampExtended as the upper 8 bits.
    pub timestamp_ms: u32,
    /// The tag body (for audio/video tags, what [`parse_audio_tag`]/[`parse_video_tag`] take).
    pub body: Bytes,
}

impl FlvTag {
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const SCRIPT: u8 = 18;
}

/// Reads an FLV file tag by tag, without copying the bodies.
///
/// Checks the header (signature `FLV`, version 1, DataOffset ≥ 9), that every
/// PreviousTagSize equals the size of the tag before it, and that no tag is encrypted
/// (Filter bit). The file must end right after a PreviousTagSize; a truncated file yields an
/// error as its last item. After an error the iterator ends.
#[derive(Debug, Clone)]
pub struct FlvReader {
    data: Bytes,
    pos: usize,
    has_audio: bool,
    has_video: bool,
    /// Size of the previous tag (header included), which the next PreviousTagSize must equal.
    previous_tag_size: u32,
    done: bool,
}

const FLV_HEADER_LEN: usize = 9;
const TAG_HEADER_LEN: usize = 11;

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

impl FlvReader {
    /// Checks the FLV header and positions the reader on the first PreviousTagSize.
    pub fn new(data: Bytes) -> Result<Self> {
        const WHAT: &str = "FLV header";
        if data.len() < FLV_HEADER_LEN {
            return Err(MediaError::Truncated { what: WHAT, need: FLV_HEADER_LEN, have: data.len() });
        }
        if &data[..3] != b"FLV" {
            return Err(MediaError::Invalid { what: WHAT, reason: "signature is not \"FLV\"".into() });
        }
        if data[3] != 1 {
            return Err(MediaError::Invalid { what: WHAT, reason: format!("version {}", data[3]) });
        }
        let flags = data[4];
        let data_offset = u32::from_be_bytes([data[5], data[6], data[7], data[8]]);
        let pos = usize::try_from(data_offset).unwrap_or(usize::MAX);
        if pos < FLV_HEADER_LEN {
            return Err(MediaError::Invalid {
                what: WHAT,
                reason: format!("DataOffset {data_offset} is smaller than the header"),
            });
        }
        if pos > data.len() {
            return Err(MediaError::Truncated { what: WHAT, need: pos, have: data.len() });
        }
        Ok(Self {
            data,
            pos,
            has_audio: flags & 0x04 != 0,
            has_video: flags & 0x01 != 0,
            previous_tag_size: 0,
            done: false,
        })
    }

    /// The header's TypeFlagsAudio.
    pub fn has_audio(&self) -> bool {
        self.has_audio
    }

    /// The header's TypeFlagsVideo.
    pub fn has_video(&self) -> bool {
        self.has_video
    }

    fn get(&self, len: usize, what: &'static str) -> Result<&[u8]> {
        let end = self.pos.saturating_add(len);
        self.data.get(self.pos..end).ok_or(MediaError::Truncated { what, need: end, have: self.data.len() })
    }

    fn read_tag(&mut self) -> Result<Option<FlvTag>> {
        let prev = self.get(4, "FLV PreviousTagSize")?;
        let prev = u32::from_be_bytes([prev[0], prev[1], prev[2], prev[3]]);
        if prev != self.previous_tag_size {
            return Err(MediaError::Invalid {
                what: "FLV PreviousTagSize",
                reason: format!("{prev}, but the previous tag was {} bytes", self.previous_tag_size),
            });
        }
        self.pos += 4;
        if self.pos == self.data.len() {
            return Ok(None);
        }

        let header = self.get(TAG_HEADER_LEN, "FLV tag header")?;
        let flags = header[0];
        let data_size = u24(&header[1..4]);
        let timestamp_ms = u24(&header[4..7]) | (u32::from(header[7]) << 24);
        // header[8..11] is StreamID, always 0; not worth rejecting files over.
        if flags & 0x20 != 0 {
            return Err(MediaError::Invalid {
                what: "FLV tag",
                reason: "encrypted tags (Filter bit) are not supported".into(),
            });
        }
        let tag_type = flags & 0x1f;
        self.pos += TAG_HEADER_LEN;
        let body_len = usize::try_from(data_size).unwrap_or(usize::MAX);
        let end = self.pos.saturating_add(body_len);
        if end > self.data.len() {
            return Err(MediaError::Truncated { what: "FLV tag body", need: end, have: self.data.len() });
        }
        let body = self.data.slice(self.pos..end);
        self.pos = end;
        // data_size < 2^24, so this cannot overflow.
        self.previous_tag_size = data_size + TAG_HEADER_LEN as u32;
        Ok(Some(FlvTag { tag_type, timestamp_ms, body }))
    }
}

impl Iterator for FlvReader {
    type Item = Result<FlvTag>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_tag() {
            Ok(Some(tag)) => Some(Ok(tag)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for FlvReader {}

/// Reads a whole FLV file into its tags; see [`FlvReader`] for what is checked.
pub fn read_flv(file: &[u8]) -> Result<Vec<FlvTag>> {
    FlvReader::new(Bytes::copy_from_slice(file))?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00,
        0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: [u8; 6] = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn avc_record() -> Vec<u8> {
        let mut r = vec![1, 0x64, 0x00, 0x1e, 0xff, 0xe1, 0, SPS.len() as u8];
        r.extend_from_slice(&SPS);
        r.extend_from_slice(&[1, 0, PPS.len() as u8]);
        r.extend_from_slice(&PPS);
        r
    }

    fn video(b0: u8, packet_type: u8, cts: [u8; 3], data: &[u8]) -> Bytes {
        let mut v = vec![b0, packet_type, cts[0], cts[1], cts[2]];
        v.extend_from_slice(data);
        Bytes::from(v)
    }

    #[test]
    fn video_config() {
        let tag = parse_video_tag(video(0x17, 0, [0; 3], &avc_record())).unwrap();
        let VideoTag::Config(cfg) = tag else { panic!("{tag:?}") };
        assert_eq!((cfg.width, cfg.height, cfg.nal_length_size), (640, 360, 4));
        assert_eq!(cfg.codec_string(), "avc1.64001e");
        // A broken record is an error, not a Config.
        assert!(parse_video_tag(video(0x17, 0, [0; 3], &[1, 0x64])).is_err());
    }

    #[test]
    fn video_frames_and_composition_time() {
        let au = [0, 0, 0, 2, 0x65, 0x88];
        let tag = parse_video_tag(video(0x17, 1, [0, 0, 0x42], &au)).unwrap();
        assert_eq!(tag, VideoTag::Frame { keyframe: true, composition_time_ms: 66, data: Bytes::copy_from_slice(&au) });
        let cases = [
            ([0xff, 0xff, 0xfe], -2),
            ([0xff, 0xff, 0xff], -1),
            ([0x80, 0x00, 0x00], -8_388_608),
            ([0x7f, 0xff, 0xff], 8_388_607),
            ([0x00, 0x01, 0x00], 256),
        ];
        for (cts, expected) in cases {
            let tag = parse_video_tag(video(0x27, 1, cts, &[])).unwrap();
            let VideoTag::Frame { keyframe, composition_time_ms, data } = tag else { panic!("{tag:?}") };
            assert!(!keyframe);
            assert_eq!(composition_time_ms, expected, "{cts:02x?}");
            assert!(data.is_empty());
        }
        // Disposable inter frame and generated key frame are frames but not key frames.
        for b0 in [0x37, 0x47] {
            let tag = parse_video_tag(video(b0, 1, [0; 3], &au)).unwrap();
            assert!(matches!(tag, VideoTag::Frame { keyframe: false, .. }));
        }
    }

    #[test]
    fn video_end_of_sequence() {
        assert_eq!(parse_video_tag(video(0x17, 2, [0; 3], &[])).unwrap(), VideoTag::EndOfSequence);
    }

    #[test]
    fn video_errors() {
        assert!(matches!(parse_video_tag(Bytes::new()), Err(MediaError::Truncated { need: 1, have: 0, .. })));
        for len in 1..5 {
            let body = Bytes::copy_from_slice(&[0x17, 1, 0, 0][..len]);
            assert!(matches!(parse_video_tag(body), Err(MediaError::Truncated { need: 5, .. })), "len {len}");
        }
        // Sorenson H.263 (2), VP6 (4), HEVC-by-convention (12).
        for (b0, codec) in [(0x12, 2), (0x24, 4), (0x1c, 12)] {
            assert_eq!(parse_video_tag(video(b0, 1, [0; 3], &[])), Err(MediaError::UnsupportedVideoCodec(codec)));
        }
        // Enhanced RTMP: IsExHeader | key frame, PacketTypeCodedFrames, 'hvc1'.
        let ex = Bytes::from_static(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 0]);
        let err = parse_video_tag(ex).unwrap_err();
        assert!(matches!(err, MediaError::Invalid { .. }));
        assert!(err.to_string().contains("Enhanced RTMP"), "{err}");
        // Command frame, bad frame types, bad packet type.
        for b0 in [0x57, 0x07, 0x67, 0x77] {
            assert!(matches!(parse_video_tag(video(b0, 1, [0; 3], &[])), Err(MediaError::Invalid { .. })));
        }
        assert!(matches!(parse_video_tag(video(0x17, 3, [0; 3], &[])), Err(MediaError::Invalid { .. })));
    }

    #[test]
    fn audio_tags() {
        let tag = parse_audio_tag(Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap();
        let AudioTag::Config(cfg) = tag else { panic!("{tag:?}") };
        assert_eq!((cfg.sample_rate, cfg.channels, cfg.object_type), (44100, 2, 2));

        let tag = parse_audio_tag(Bytes::from_static(&[0xaf, 1, 0x21, 0x1a])).unwrap();
        assert_eq!(tag, AudioTag::Frame(Bytes::from_static(&[0x21, 0x1a])));
        // SoundRate/Size/Type bits are ignored.
        let tag = parse_audio_tag(Bytes::from_static(&[0xa0, 1])).unwrap();
        assert_eq!(tag, AudioTag::Frame(Bytes::new()));
    }

    #[test]
    fn audio_errors() {
        assert!(matches!(parse_audio_tag(Bytes::new()), Err(MediaError::Truncated { .. })));
        assert!(matches!(
            parse_audio_tag(Bytes::from_static(&[0xaf])),
            Err(MediaError::Truncated { need: 2, have: 1, .. })
        ));
        assert_eq!(parse_audio_tag(Bytes::from_static(&[0x2f, 1, 0])), Err(MediaError::UnsupportedAudioFormat(2)));
        assert_eq!(parse_audio_tag(Bytes::from_static(&[0x9f, 1, 0])), Err(MediaError::UnsupportedAudioFormat(9)));
        assert!(matches!(parse_audio_tag(Bytes::from_static(&[0xaf, 2])), Err(MediaError::Invalid { .. })));
        assert!(parse_audio_tag(Bytes::from_static(&[0xaf, 0])).is_err());
        assert!(parse_audio_tag(Bytes::from_static(&[0xaf, 0, 0x12])).is_err());
    }

    /// Builds an FLV file: header, then each (type, timestamp, body) tag with sizes.
    fn flv(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09".to_vec();
        f.extend_from_slice(&0u32.to_be_bytes());
        for &(tag_type, ts, body) in tags {
            f.push(tag_type);
            f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(&ts.to_be_bytes()[1..]);
            f.push((ts >> 24) as u8);
            f.extend_from_slice(&[0, 0, 0]);
            f.extend_from_slice(body);
            f.extend_from_slice(&(body.len() as u32 + 11).to_be_bytes());
        }
        f
    }

    #[test]
    fn reads_flv_files() {
        let file = flv(&[
            (18, 0, b"\x02\x00\x0aonMetaData"),
            (9, 0, &[0x17, 2, 0, 0, 0]),
            (8, 23, &[0xaf, 1, 0x21]),
            (9, 0x0123_4567, &[]),
        ]);
        let reader = FlvReader::new(Bytes::from(file.clone())).unwrap();
        assert!(reader.has_audio() && reader.has_video());
        let tags = read_flv(&file).unwrap();
        assert_eq!(tags.len(), 4);
        assert_eq!(tags[0].tag_type, FlvTag::SCRIPT);
        assert_eq!(tags[1].tag_type, FlvTag::VIDEO);
        assert_eq!(parse_video_tag(tags[1].body.clone()).unwrap(), VideoTag::EndOfSequence);
        assert_eq!(
            tags[2],
            FlvTag { tag_type: FlvTag::AUDIO, timestamp_ms: 23, body: Bytes::from_static(&[0xaf, 1, 0x21]) }
        );
        assert_eq!(tags[3].timestamp_ms, 0x0123_4567);
        assert!(tags[3].body.is_empty());

        // A header-only file has no tags.
        assert_eq!(read_flv(&flv(&[])).unwrap(), []);
        // A larger DataOffset skips the extra header bytes.
        let mut f = b"FLV\x01\x01\x00\x00\x00\x0cxyz".to_vec();
        f.extend_from_slice(&flv(&[(8, 1, &[0xaf, 1])])[9..]);
        let reader = FlvReader::new(Bytes::from(f)).unwrap();
        assert!(!reader.has_audio() && reader.has_video());
        assert_eq!(reader.map(Result::unwrap).count(), 1);
    }

    #[test]
    fn truncated_flv_files_are_errors() {
        let file = flv(&[(9, 0, &[0x17, 2, 0, 0, 0]), (8, 23, &[0xaf, 1, 0x21])]);
        let boundaries = [13, 13 + 11 + 5 + 4, file.len()];
        for len in 0..file.len() {
            let result = read_flv(&file[..len]);
            if boundaries.contains(&len) {
                assert!(result.is_ok(), "len {len}");
            } else {
                assert!(matches!(result, Err(MediaError::Truncated { .. })), "len {len}: {result:?}");
            }
        }
    }

    #[test]
    fn bad_flv_files() {
        let good = flv(&[(9, 0, &[0x17, 2, 0, 0, 0])]);
        let mut bad = good.clone();
        bad[0] = b'G';
        assert!(matches!(read_flv(&bad), Err(MediaError::Invalid { .. })));
        let mut bad = good.clone();
        bad[3] = 2;
        assert!(matches!(read_flv(&bad), Err(MediaError::Invalid { .. })));
        let mut bad = good.clone();
        bad[8] = 8;
        assert!(matches!(read_flv(&bad), Err(MediaError::Invalid { .. })));
        let mut bad = good.clone();
        bad[5] = 0xff; // DataOffset past the end
        assert!(matches!(read_flv(&bad), Err(MediaError::Truncated { .. })));
        let mut bad = good.clone();
        bad[12] = 1; // PreviousTagSize0 must be 0
        assert!(matches!(read_flv(&bad), Err(MediaError::Invalid { .. })));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() += 1;
        assert!(matches!(read_flv(&bad), Err(MediaError::Invalid { .. })));
        let mut bad = good.clone();
        bad[13] |= 0x20; // Filter
        assert!(matches!(read_flv(&bad), Err(MediaError::Invalid { .. })));
        // The reader stops after the first error.
        let mut reader = FlvReader::new(Bytes::from(bad)).unwrap();
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
    }
}
