//! Arbitrary bytes as an AVCDecoderConfigurationRecord, an SPS, and AVCC / Annex-B access units.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair_media::AvcConfig;
use onair_media::avc::{self, Sps};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = AvcConfig::parse(data) {
        let _ = config.codec_string();
        let _ = config.annexb_parameter_sets();
        assert!(config.width > 0 && config.height > 0);
    }
    let _ = Sps::parse(data);
    for size in [0, 1, 2, 3, 4, 5] {
        if let Ok(annexb) = avc::avcc_to_annexb(data, size) {
            let _ = avc::annexb_to_avcc(&annexb, 4);
        }
        let _ = avc::is_idr(data, size);
    }
    let _ = avc::annexb_to_avcc(data, 4);
});
