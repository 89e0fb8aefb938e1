//! Shared fixtures of the fuzz targets: the real OBS stream from onair-media's test data
//! (embedded at compile time), split into its codec configurations and media tags.

use std::sync::LazyLock;

use bytes::Bytes;
use onair_media::flv::{FlvTag, read_flv};
use onair_media::{AacConfig, AudioTag, AvcConfig, VideoTag, parse_audio_tag, parse_video_tag};

/// 8 s of OBS 29 output (H.264 High 640x360p30 + AAC-LC 48 kHz), see
/// `crates/media/tests/data/README.md`.
pub static FLV: &[u8] = include_bytes!("../../crates/media/tests/data/obs29-x264-high-640x360p30-aac48k.flv");

/// One audio or video tag of the real stream.
#[derive(Debug, Clone)]
pub struct RealTag {
    pub timestamp_ms: u32,
    /// The FLV tag body (what an RTMP video/audio message carries).
    pub body: Bytes,
    /// Video: a key frame; audio: always true.
    pub keyframe: bool,
    pub cts: i32,
    /// The payload after the FLV/AVC or FLV/AAC header (AVCC access unit, raw AAC frame).
    pub data: Bytes,
}

pub struct Real {
    /// The AVCDecoderConfigurationRecord, parsed by `AvcConfig::parse`.
    pub avc: AvcConfig,
    /// `AacConfig::parse(&[0x11, 0x90])` (AAC-LC 48 kHz stereo).
    pub aac: AacConfig,
    /// The stream's own AAC sequence header (with its SBR sync extension).
    pub aac_stream: AacConfig,
    /// The FLV bodies of the two sequence headers.
    pub video_config_tag: Bytes,
    pub audio_config_tag: Bytes,
    /// Media tags (frames only), in file order.
    pub video: Vec<RealTag>,
    pub audio: Vec<RealTag>,
}

pub static REAL: LazyLock<Real> = LazyLock::new(|| {
    let tags = read_flv(FLV).expect("the test FLV reads");
    let mut avc = None;
    let mut aac_stream = None;
    let mut video_config_tag = None;
    let mut audio_config_tag = None;
    let mut video = Vec::new();
    let mut audio = Vec::new();
    for tag in tags {
        match tag.tag_type {
            FlvTag::VIDEO => match parse_video_tag(tag.body.clone()).expect("video tag") {
                VideoTag::Config(c) => {
                    avc = Some(c);
                    video_config_tag = Some(tag.body);
                }
                VideoTag::Frame { keyframe, composition_time_ms, data } => video.push(RealTag {
                    timestamp_ms: tag.timestamp_ms,
                    body: tag.body,
                    keyframe,
                    cts: composition_time_ms,
                    data,
                }),
                VideoTag::EndOfSequence => {}
            },
            FlvTag::AUDIO => match parse_audio_tag(tag.body.clone()).expect("audio tag") {
                AudioTag::Config(c) => {
                    aac_stream = Some(c);
                    audio_config_tag = Some(tag.body);
                }
                AudioTag::Frame(data) => {
                    audio.push(RealTag { timestamp_ms: tag.timestamp_ms, body: tag.body, keyframe: true, cts: 0, data })
                }
            },
            _ => {}
        }
    }
    let avc = avc.expect("an AVC sequence header");
    assert_eq!(avc.record, AvcConfig::parse(&avc.record).expect("reparses").record);
    Real {
        avc,
        aac: AacConfig::parse(&[0x11, 0x90]).expect("AAC-LC 48 kHz stereo"),
        aac_stream: aac_stream.expect("an AAC sequence header"),
        video_config_tag: video_config_tag.expect("video config tag"),
        audio_config_tag: audio_config_tag.expect("audio config tag"),
        video,
        audio,
    }
});

/// With `ONAIR_FUZZ_ALLOW_RML_PANICS=1`, panics located in rml_rtmp / rml_amf0 unwind (and end
/// the connection, which the engine does too) instead of aborting through libfuzzer-sys' hook
/// (the RTMP targets: `rtmp_ingest`, `rtmp_push`).
pub fn allow_rml_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("ONAIR_FUZZ_ALLOW_RML_PANICS").is_none_or(|v| v != "1") {
            return;
        }
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The innermost frame outside the standard library (the panic location itself may
            // be in core, e.g. a slice index out of range).
            let bt = std::backtrace::Backtrace::force_capture().to_string();
            let from_panic = bt.find("rust_begin_unwind").map_or(&bt[..], |i| &bt[i..]);
            let third_party = from_panic
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix("at "))
                .find(|path| !path.starts_with("/rustc/"))
                .is_some_and(|path| path.contains("/rml_rtmp-") || path.contains("/rml_amf0-"));
            if !third_party {
                abort(info);
            }
        }));
    });
}
