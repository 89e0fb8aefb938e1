//! `onair_obs`: OBS profile files and x264 option strings as OnAir reads them back from a user's
//! OBS (files OBS or the user may have written anything into).
//!
//! The input is split at `0xFF` bytes into `basic.ini`, `service.json`, `streamEncoder.json` and
//! an x264 option string (lossy UTF-8). Properties:
//! * `ProfileSettings::parse` and its checks never panic, whatever the files hold;
//! * merging OnAir's options into any x264 string yields one `check` finds nothing wrong with
//!   (the user's other options are kept, ours win), for any keyframe interval;
//! * `keyint_frames` is at least 1 for any frame rate, zero denominators included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair_obs::profile::{Ini, ProfileSettings, fps_of};
use onair_obs::{ObsTarget, x264};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xFF).map(|p| String::from_utf8_lossy(p).into_owned());
    let ini = parts.next().unwrap_or_default();
    let service = parts.next();
    let encoder = parts.next();
    let opts = parts.next().unwrap_or_default();

    let target = ObsTarget::new("rtmp://127.0.0.1:1935/live", "show?policy=p&signature=s");
    if let Ok(settings) = ProfileSettings::parse(&ini, service.as_deref(), encoder.as_deref()) {
        let _ = settings.problems(&target);
        let _ = settings.advanced_problems(&target);
        let (num, den) = fps_of(&settings.ini);
        assert!(x264::keyint_frames(target.keyint_s, num, den) >= 1);
    }
    let _ = fps_of(&Ini::parse(&opts));

    let keyint = data.first().map(|&b| u32::from(b) + 1);
    for k in [None, keyint] {
        let merged = x264::merge(&opts, k);
        assert!(x264::check(&merged, k).is_empty(), "merge({opts:?}, {k:?}) = {merged:?}: {:?}", x264::check(&merged, k));
    }
    let fps = data.get(1..9).map(|b| (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u32::from_le_bytes([b[4], b[5], b[6], b[7]])));
    if let Some((num, den)) = fps {
        assert!(x264::keyint_frames(data.len() as u32 % 11, num, den) >= 1);
    }
});
