//! Arbitrary bytes as an FLV video tag body, an audio tag body, and a whole FLV file whose tags
//! are parsed in turn.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair_media::flv::{FlvReader, FlvTag, read_flv};
use onair_media::{VideoTag, avc, parse_audio_tag, parse_video_tag};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(VideoTag::Frame { data, .. }) = parse_video_tag(body.clone()) {
        for size in [1, 2, 4] {
            let _ = avc::is_idr(&data, size);
        }
    }
    let _ = parse_audio_tag(body);

    let whole = read_flv(data);
    if let Ok(reader) = FlvReader::new(Bytes::copy_from_slice(data)) {
        let mut count = 0;
        for tag in reader {
            let Ok(tag) = tag else {
                assert!(whole.is_err(), "read_flv and FlvReader disagree");
                return;
            };
            count += 1;
            match tag.tag_type {
                FlvTag::VIDEO => {
                    let _ = parse_video_tag(tag.body);
                }
                FlvTag::AUDIO => {
                    let _ = parse_audio_tag(tag.body);
                }
                _ => {}
            }
        }
        assert_eq!(whole.map(|tags| tags.len()), Ok(count));
    }
});
