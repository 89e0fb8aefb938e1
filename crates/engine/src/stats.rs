//! Stream health figures computed from the frames themselves (pure; time is the frames' dts).

use std::collections::VecDeque;

use onair_media::{Frame, Track};

/// How far back bitrate and frame rate look, in milliseconds of stream time.
const WINDOW_MS: u64 = 5_000;
/// At most this many recent frames are remembered, whatever the timestamps say (a frozen clock
/// would otherwise keep every frame "recent").
const MAX_RECENT: usize = 4096;

#[derive(Debug, Default)]
pub struct Stats {
    /// (dts, bytes, is_video) of recent frames, oldest first.
    recent: VecDeque<(u64, usize, bool)>,
    last_keyframe: Option<u64>,
    keyframe_interval_ms: Option<u64>,
    bframes: bool,
    total_bytes: u64,
}

/// A snapshot for the status API.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    pub bitrate_kbps: u64,
    pub fps: Option<f64>,
    pub keyframe_interval_s: Option<f64>,
    pub bframes: bool,
    pub total_bytes: u64,
}

impl Stats {
    /// Records a frame. Returns true the first time B-frames (composition offsets) are seen.
    pub fn observe(&mut self, frame: &Frame) -> bool {
        let video = frame.track == Track::Video;
        self.total_bytes += frame.data.len() as u64;
        self.recent.push_back((frame.dts, frame.data.len(), video));
        while let Some(&(dts, _, _)) = self.recent.front() {
            if dts + WINDOW_MS < frame.dts || self.recent.len() > MAX_RECENT {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let mut first_bframes = false;
        if video {
            if frame.keyframe {
                if let Some(prev) = self.last_keyframe
                    && frame.dts > prev
                {
                    self.keyframe_interval_ms = Some(frame.dts - prev);
                }
                self.last_keyframe = Some(frame.dts);
            }
            if frame.cts != 0 && !self.bframes {
                self.bframes = true;
                first_bframes = true;
            }
        }
        first_bframes
    }

    pub fn snapshot(&self) -> Snapshot {
        let span = match (self.recent.front(), self.recent.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => b.0 - a.0,
            _ => 0,
        };
        let bytes: usize = self.recent.iter().map(|r| r.1).sum();
        let video_frames = self.recent.iter().filter(|r| r.2).count();
        Snapshot {
            bitrate_kbps: (bytes as u64 * 8).checked_div(span).unwrap_or(0),
            fps: (span >= 500 && video_frames > 1).then(|| (video_frames - 1) as f64 * 1000.0 / span as f64),
            keyframe_interval_s: self.keyframe_interval_ms.map(|ms| ms as f64 / 1000.0),
            bframes: self.bframes,
            total_bytes: self.total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(dts: u64, keyframe: bool, cts: i32, len: usize) -> Frame {
        Frame { track: Track::Video, dts, cts, keyframe, data: Bytes::from(vec![0; len]) }
    }

    #[test]
    fn bitrate_fps_keyframe_interval() {
        let mut s = Stats::default();
        // 30 fps, 2 s GOP, 6250 bytes a frame = 1500 kb/s.
        for i in 0..300u64 {
            let dts = i * 1000 / 30;
            assert!(!s.observe(&video(dts, i % 60 == 0, 0, 6250)));
        }
        let snap = s.snapshot();
        assert!((1450..=1560).contains(&snap.bitrate_kbps), "{snap:?}");
        let fps = snap.fps.unwrap();
        assert!((29.5..=30.5).contains(&fps), "{fps}");
        assert_eq!(snap.keyframe_interval_s, Some(2.0));
        assert!(!snap.bframes);
    }

    #[test]
    fn a_frozen_clock_keeps_the_window_bounded() {
        let mut s = Stats::default();
        for _ in 0..10_000 {
            s.observe(&video(8_000, false, 0, 10));
        }
        assert_eq!(s.recent.len(), MAX_RECENT);
        assert_eq!(s.snapshot().total_bytes, 100_000);
    }

    #[test]
    fn bframes_are_flagged_once() {
        let mut s = Stats::default();
        assert!(!s.observe(&video(0, true, 0, 10)));
        assert!(s.observe(&video(33, false, 66, 10)));
        assert!(!s.observe(&video(66, false, 33, 10)));
        assert!(s.snapshot().bframes);
    }
}
