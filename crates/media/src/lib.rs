//! Codec facts and parsers, without any I/O.
//!
//! * [`flv`]: FLV tag bodies as RTMP carries them (video `0x17|0x27 …`, audio `0xAF …`) and an FLV
//!   file reader (for golden tests, the benchmark and fuzzing).
//! * [`avc`]: the AVCDecoderConfigurationRecord, the SPS fields we need, AVCC ↔ Annex-B.
//! * [`aac`]: the AudioSpecificConfig.
//!
//! Every parser takes bytes and returns a value or a [`MediaError`]; none panics on any input.

pub mod aac;
pub mod avc;
mod bits;
pub mod flv;

pub use aac::AacConfig;
pub use avc::AvcConfig;
pub use flv::{AudioTag, FlvReader, FlvTag, VideoTag, parse_audio_tag, parse_video_tag, read_flv};

use bytes::Bytes;

/// Why a piece of media could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("{what}: truncated (need {need} bytes, have {have})")]
    Truncated { what: &'static str, need: usize, have: usize },
    #[error("unsupported video codec id {0} (only H.264/AVC, id 7, is supported)")]
    UnsupportedVideoCodec(u8),
    #[error("unsupported audio format {0} (only AAC, format 10, is supported)")]
    UnsupportedAudioFormat(u8),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

pub type Result<T, E = MediaError> = std::result::Result<T, E>;

/// Which elementary stream a [`Frame`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    Video,
    Audio,
}

/// One compressed access unit on its way from an ingest to the packagers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    /// Decode timestamp in milliseconds since the publish started (already unwrapped, monotonic).
    pub dts: u64,
    /// Composition offset in milliseconds (pts = dts + cts); non-zero only with B-frames.
    pub cts: i32,
    /// An IDR picture (video); always true for audio.
    pub keyframe: bool,
    /// Video: AVCC, length-prefixed NAL units (length size from [`AvcConfig::nal_length_size`]).
    /// Audio: one raw AAC frame (no ADTS header).
    pub data: Bytes,
}
