//! Golden test: a real OBS 29 stream saved as FLV (see `tests/data/README.md`), parsed tag by tag.

use onair_media::avc::{avcc_to_annexb, is_idr, nal_units};
use onair_media::flv::{FlvReader, FlvTag, read_flv};
use onair_media::{AacConfig, AudioTag, AvcConfig, VideoTag, parse_audio_tag, parse_video_tag};

const FILE: &[u8] = include_bytes!("data/obs29-x264-high-640x360p30-aac48k.flv");

struct Video {
    timestamp_ms: u32,
    keyframe: bool,
}

#[test]
fn golden_obs29_flv() {
    let tags = read_flv(FILE).expect("the golden file reads");
    assert!(tags.len() > 500, "{} tags", tags.len());
    assert_eq!(tags[0].tag_type, FlvTag::SCRIPT, "onMetaData comes first");

    let mut avc: Option<AvcConfig> = None;
    let mut aac: Option<AacConfig> = None;
    let mut video = Vec::new();
    let mut audio_timestamps = Vec::new();
    for tag in &tags {
        match tag.tag_type {
            FlvTag::VIDEO => match parse_video_tag(tag.body.clone()).expect("video tag parses") {
                VideoTag::Config(cfg) => {
                    assert!(avc.is_none(), "a single AVC sequence header");
                    avc = Some(cfg);
                }
                VideoTag::Frame { keyframe, composition_time_ms, data } => {
                    let cfg = avc.as_ref().expect("the sequence header precedes frames");
                    assert_eq!(composition_time_ms, 0, "bframes=0: no composition offsets");
                    let n = cfg.nal_length_size;
                    assert_eq!(is_idr(&data, n), keyframe, "at {} ms", tag.timestamp_ms);
                    let nals: Vec<&[u8]> =
                        nal_units(&data, n).collect::<Result<_, _>>().expect("well-formed access unit");
                    assert!(!nals.is_empty());
                    let annexb = avcc_to_annexb(&data, n).unwrap();
                    assert_eq!(annexb.len(), data.len(), "4-byte lengths become 4-byte start codes");
                    video.push(Video { timestamp_ms: tag.timestamp_ms, keyframe });
                }
                VideoTag::EndOfSequence => {}
            },
            FlvTag::AUDIO => match parse_audio_tag(tag.body.clone()).expect("audio tag parses") {
                AudioTag::Config(cfg) => {
                    assert!(aac.is_none(), "a single AAC sequence header");
                    aac = Some(cfg);
                }
                AudioTag::Frame(data) => {
                    assert!(aac.is_some(), "the sequence header precedes frames");
                    assert!(!data.is_empty());
                    audio_timestamps.push(tag.timestamp_ms);
                }
            },
            other => assert_eq!(other, FlvTag::SCRIPT, "only audio, video and script tags"),
        }
    }

    let avc = avc.expect("an AVC sequence header");
    assert_eq!(avc.profile_idc, 100, "High profile");
    assert_eq!((avc.width, avc.height), (640, 360));
    assert_eq!(avc.nal_length_size, 4);
    assert!(avc.codec_string().starts_with("avc1.64"), "{}", avc.codec_string());
    assert_eq!((avc.sps.len(), avc.pps.len()), (1, 1));
    assert_eq!(avc.fps, Some(30.0));

    let aac = aac.expect("an AAC sequence header");
    assert_eq!(aac.object_type, 2, "AAC-LC");
    assert_eq!((aac.sample_rate, aac.channels), (48000, 2));
    assert_eq!(aac.codec_string(), "mp4a.40.2");
    assert_eq!(aac.samples_per_frame(), 1024);

    // keyint=60 at 30 fps: an IDR every 60 frames (2 s), and never a longer GOP. x264's scene-cut
    // detection (on in OBS) adds one more IDR at frame 225 (7.5 s) in this recording.
    let keys: Vec<usize> = (0..video.len()).filter(|&i| video[i].keyframe).collect();
    assert_eq!(keys, [0, 60, 120, 180, 225]);
    for pair in keys.windows(2) {
        let gap = video[pair[1]].timestamp_ms - video[pair[0]].timestamp_ms;
        assert!(gap <= 2050, "GOP {pair:?} lasts {gap} ms");
        if pair[1] - pair[0] == 60 {
            assert!((1950..=2050).contains(&gap), "GOP {pair:?} lasts {gap} ms");
        }
    }
    assert_eq!(video.len(), 240, "8 s at 30 fps");
    // About 30 fps, with monotonic decode timestamps.
    for pair in video.windows(2) {
        let delta = pair[1].timestamp_ms.checked_sub(pair[0].timestamp_ms).expect("monotonic");
        assert!((25..=45).contains(&delta), "video frame delta {delta} ms");
    }

    // About 8 s of media; audio frames every 1024 / 48000 s.
    let video_span = video.last().unwrap().timestamp_ms - video[0].timestamp_ms;
    let audio_span = audio_timestamps.last().unwrap() - audio_timestamps[0];
    assert!((7500..=8500).contains(&video_span), "video lasts {video_span} ms");
    assert!((7500..=8500).contains(&audio_span), "audio lasts {audio_span} ms");
    let expected_frames = f64::from(audio_span) / aac.frame_duration_ms();
    let frames = audio_timestamps.len() as f64;
    assert!((frames - expected_frames).abs() < 3.0, "{frames} audio frames, {expected_frames} expected");
    assert!((frames / (f64::from(video_span) / 1000.0) - 46.875).abs() < 1.0);
}

#[test]
fn golden_streams_through_the_reader_too() {
    let reader = FlvReader::new(bytes::Bytes::from_static(FILE)).unwrap();
    assert!(reader.has_audio() && reader.has_video());
    let tags: Vec<FlvTag> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(tags, read_flv(FILE).unwrap());
}

#[test]
fn golden_truncated_is_an_error_not_a_panic() {
    for cut in [1, 100, 1000, FILE.len() / 2, FILE.len() - 1] {
        assert!(read_flv(&FILE[..cut]).is_err(), "cut at {cut}");
    }
}
