//! Arbitrary bytes as an AAC AudioSpecificConfig.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair_media::AacConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = AacConfig::parse(data) {
        assert!(config.sample_rate > 0 && config.channels > 0);
        let _ = config.codec_string();
        let spf = config.samples_per_frame();
        assert!(matches!(spf, 480 | 512 | 960 | 1024));
        let _ = config.frame_duration_ms();
    }
});
