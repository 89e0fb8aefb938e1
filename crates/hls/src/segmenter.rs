//! The per-publish LL-HLS state: frames in, parts / segments / playlists out.
//!
//! See the crate documentation for the contract; the comments here explain the mechanics.

use std::collections::VecDeque;

use bytes::Bytes;
use onair_media::{AacConfig, AvcConfig, Frame, Track};

use crate::fmp4::{
    self, AAC_FRAME_SAMPLES, AUDIO_TRACK_ID, NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS, Sample, TrackRun,
    VIDEO_TIMESCALE, VIDEO_TRACK_ID,
};
use crate::playlist::{self, PartInfo, PlaylistSnapshot, SegmentInfo};
use crate::reload::{self, Reload, ReloadState};

/// Packaging parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsConfig {
    /// Target duration of a part (`PART-TARGET`), in milliseconds. Values below
    /// [`MIN_PART_TARGET_MS`] are raised to it.
    pub part_target_ms: u32,
    /// A video keyframe closes the segment in progress once it is at least this long.
    pub min_segment_ms: u32,
    /// How many complete segments are kept (and listed) besides the one in progress; at least 1.
    pub window_segments: usize,
    /// A part is cut once it holds this many bytes; a frame larger than this is dropped.
    pub max_part_bytes: usize,
    /// A segment is cut (at a part boundary, without waiting for a keyframe) once its parts
    /// hold this many bytes.
    pub max_segment_bytes: usize,
    /// The oldest complete segments are dropped while the window holds more bytes than this.
    pub max_window_bytes: usize,
}

impl Default for HlsConfig {
    /// Parts of 250 ms: with PART-HOLD-BACK at 3 × that, hls.js plays 0.8 s behind the camera
    /// (docs/llhls.md). Byte caps sized for 1080p60 at 20 Mb/s (2.5 MB/s) with a wide margin: a
    /// part carries ~0.6 MB (a keyframe part a few), a 4 s GOP ~10 MB, the window ~7 of those.
    fn default() -> Self {
        HlsConfig {
            part_target_ms: 250,
            min_segment_ms: 1000,
            window_segments: 6,
            max_part_bytes: 8 << 20,
            max_segment_bytes: 32 << 20,
            max_window_bytes: 96 << 20,
        }
    }
}

/// The smallest accepted part target.
pub const MIN_PART_TARGET_MS: u32 = 50;

/// A segment is cut once it has this many parts (tiny parts of a misbehaving publisher would
/// otherwise make each playlist, rendered per part, ever longer).
pub const MAX_PARTS_PER_SEGMENT: usize = 1024;

/// What a sample costs in memory besides its bytes (its `trun` entry, its bookkeeping): counted
/// toward the part cap, so that a flood of tiny frames is bounded too.
const SAMPLE_OVERHEAD_BYTES: usize = 64;

/// A part of a segment: `msn` is the media sequence number of the segment, `part` the index of
/// the part within it (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub msn: u64,
    pub part: u32,
}

/// What one [`Packager::push`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// At least one part completed (the LL-HLS playlist changed: wake blocked requests).
    pub part_completed: bool,
    /// At least one segment completed.
    pub segment_completed: bool,
}

/// The answer to a resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Ready(T),
    /// Not yet, but will exist soon (the preload-hinted part, the segment in progress): the
    /// caller may wait for the next completed part and ask again.
    Pending,
    /// Never will, or no longer does (older than the window, past the end of a closed segment,
    /// absurd numbers): 404.
    Gone,
}

/// A frame whose duration is not known yet (it needs the next frame's timestamp).
struct Held {
    frame: Frame,
    wall_ms: u64,
    /// Decode time in the track's timescale.
    time: u64,
}

/// The part being filled.
#[derive(Default)]
struct OpenPart {
    video: Vec<Sample>,
    video_base: u64,
    video_ticks: u64,
    audio: Vec<Sample>,
    audio_base: u64,
    audio_ticks: u64,
    /// The samples' bytes plus [`SAMPLE_OVERHEAD_BYTES`] each.
    bytes: usize,
}

impl OpenPart {
    fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty()
    }
}

struct Part {
    bytes: Bytes,
    duration_us: u64,
    independent: bool,
}

struct Segment {
    msn: u64,
    wall_ms: u64,
    /// Holds a video sample (only then may a keyframe close it; a video sample's wall clock
    /// also replaces that of earlier audio while no part was published).
    has_video_sample: bool,
    parts: Vec<Part>,
    duration_us: u64,
    /// The parts' bytes.
    bytes: usize,
    complete: bool,
    /// `EXT-X-DISCONTINUITY` before it.
    discontinuity: bool,
    /// The version of the init segment it needs.
    init: u32,
}

/// The LL-HLS packager of one broadcast (one URI session). See the crate documentation.
pub struct Packager {
    config: HlsConfig,
    session: String,
    video_config: Option<AvcConfig>,
    audio_config: Option<AacConfig>,
    init: Option<Bytes>,
    /// The version of `init` (its URI, see [`Resource::Init`](crate::Resource::Init)).
    init_version: u32,
    /// Earlier init segments still needed by segments in the window, oldest first.
    old_inits: VecDeque<(u32, Bytes)>,
    /// The next segment opened starts with `EXT-X-DISCONTINUITY`.
    pending_discontinuity: bool,
    /// Discontinuities of segments that left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuity_sequence: u64,
    /// Tracks in the init segment.
    has_video: bool,
    has_audio: bool,
    sample_rate: u32,
    started: bool,
    finished: bool,
    /// A video frame was dropped (too large): video frames are dropped up to the next keyframe.
    await_keyframe: bool,
    /// dts (ms) of the first frame packaged; earlier audio is dropped.
    start_dts: u64,
    held_video: Option<Held>,
    held_audio: Option<Held>,
    /// The last two video sample durations (ticks), to predict the next one.
    video_durations: [u32; 2],
    /// Where the last video sample ended, and the last audio sample (ticks, at which rate): the
    /// first sample after a discontinuity starts no earlier (decode times never go back).
    video_end: u64,
    audio_end: (u64, u32),
    /// The latest presentation time (ticks, `(dts + cts) × 90`) of the video samples so far.
    video_max_pts: i64,
    /// Ticks of video since the last clean cut (a point after which every frame is presented
    /// after every frame before it: not between a reference frame and the B-frames shown
    /// before it).
    video_run_ticks: u64,
    /// The last two runs between clean cuts (ticks), to predict the next one: a B-frame group
    /// (`P B B`, 3 frames) or, without B-frames, one frame.
    video_runs: [u64; 2],
    open: OpenPart,
    /// Complete segments, oldest first, then possibly the one in progress.
    segments: VecDeque<Segment>,
    /// The bytes of every part in `segments`.
    window_bytes: usize,
    next_msn: u64,
    sequence: u32,
    last_part: Option<Position>,
    last_complete_msn: Option<u64>,
    llhls: Option<Bytes>,
    hls: Option<Bytes>,
    part_completed: bool,
    segment_completed: bool,
}

fn ticks_to_us(ticks: u64, timescale: u32) -> u64 {
    let us = u128::from(ticks) * 1_000_000 / u128::from(timescale.max(1));
    u64::try_from(us).unwrap_or(u64::MAX)
}

fn ms_to_ticks(ms: u64, timescale: u32) -> u64 {
    let t = u128::from(ms) * u128::from(timescale) / 1000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// A frame's presentation time in video ticks: `(dts + cts) × 90`.
fn presentation_ticks(frame: &Frame) -> i64 {
    i64::try_from(frame.dts).unwrap_or(i64::MAX).saturating_add(i64::from(frame.cts)).saturating_mul(90)
}

/// The video frame after the one being completed.
struct Following {
    keyframe: bool,
    /// Its presentation time, see [`presentation_ticks`].
    pts: i64,
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Packager {
    /// A packager for one broadcast. `session` is the URI directory of its resources
    /// (a short URI-safe id, e.g. `[A-Za-z0-9_-]+`), see [`crate::uri`].
    pub fn new(config: HlsConfig, session: &str) -> Self {
        let config = HlsConfig {
            part_target_ms: config.part_target_ms.max(MIN_PART_TARGET_MS),
            min_segment_ms: config.min_segment_ms,
            window_segments: config.window_segments.max(1),
            max_part_bytes: config.max_part_bytes.max(1),
            max_segment_bytes: config.max_segment_bytes.max(1),
            max_window_bytes: config.max_window_bytes.max(1),
        };
        Packager {
            config,
            session: session.to_owned(),
            video_config: None,
            audio_config: None,
            init: None,
            init_version: 0,
            old_inits: VecDeque::new(),
            pending_discontinuity: false,
            discontinuity_sequence: 0,
            has_video: false,
            has_audio: false,
            sample_rate: 0,
            started: false,
            finished: false,
            await_keyframe: false,
            start_dts: 0,
            held_video: None,
            held_audio: None,
            video_durations: [0; 2],
            video_end: 0,
            audio_end: (0, 1),
            video_max_pts: i64::MIN,
            video_run_ticks: 0,
            video_runs: [0; 2],
            open: OpenPart::default(),
            segments: VecDeque::new(),
            window_bytes: 0,
            next_msn: 0,
            sequence: 1,
            last_part: None,
            last_complete_msn: None,
            llhls: None,
            hls: None,
            part_completed: false,
            segment_completed: false,
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &HlsConfig {
        &self.config
    }

    /// Sets the H.264 configuration. Before the start it replaces any earlier one; after the
    /// start an identical record is ignored and a different one is a [`discontinuity`](Self::discontinuity).
    pub fn set_video_config(&mut self, c: AvcConfig) {
        if self.started && self.video_config.as_ref().is_none_or(|old| old.record != c.record) {
            self.discontinuity();
        }
        if !self.started {
            self.video_config = Some(c);
        }
    }

    /// Sets the AAC configuration. Before the start it replaces any earlier one; after the
    /// start an identical AudioSpecificConfig is ignored and a different one is a
    /// [`discontinuity`](Self::discontinuity).
    pub fn set_audio_config(&mut self, c: AacConfig) {
        if self.started && self.audio_config.as_ref().is_none_or(|old| old.asc != c.asc) {
            self.discontinuity();
        }
        if !self.started {
            self.audio_config = Some(c);
        }
    }

    /// The stream breaks here (the publisher reconnected, or changed its codec configuration):
    /// the held frames are packaged and the part and segment in progress closed, frames are then
    /// dropped up to the next video keyframe (the first audio frame for audio-only streams),
    /// where the next segment starts with `EXT-X-DISCONTINUITY` — and a new init segment
    /// (`init.<n>.mp4`, with an `EXT-X-MAP` before that segment) if the configurations differ
    /// from the last one's. Media sequence numbers go on; decode times are the caller's (they
    /// should go on too). Nothing happens before the start or after [`finish`](Self::finish).
    pub fn discontinuity(&mut self) {
        if !self.started || self.finished {
            return;
        }
        self.flush();
        self.started = false;
        self.pending_discontinuity = true;
        self.await_keyframe = false;
        self.video_max_pts = i64::MIN;
        self.video_run_ticks = 0;
        self.render();
        self.part_completed = false;
        self.segment_completed = false;
    }

    /// Feeds one frame (frames of one track in decode order; the two tracks interleaved as
    /// they come). `wall_ms` is the Unix epoch time of its arrival.
    pub fn push(&mut self, frame: Frame, wall_ms: u64) -> PushOutcome {
        let video = frame.track == Track::Video;
        if frame.data.len() > self.config.max_part_bytes {
            // Dropped; the video frames after it cannot be decoded without it: up to a keyframe.
            self.await_keyframe |= video;
        } else if !(self.finished || video && self.await_keyframe && !frame.keyframe) {
            self.await_keyframe &= !video;
            match frame.track {
                Track::Video => self.push_video(frame, wall_ms),
                Track::Audio => self.push_audio(frame, wall_ms),
            }
        }
        self.outcome()
    }

    /// The publisher left: packages the held frames, closes the last part and segment, and
    /// ends the playlists (`EXT-X-ENDLIST`, no preload hint). Later pushes are ignored.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        if self.started {
            self.flush();
        }
        self.finished = true;
        self.render();
        self.part_completed = false;
        self.segment_completed = false;
    }

    /// Packages the held frames and closes the part and the segment in progress.
    fn flush(&mut self) {
        // Audio first: it joins the open part, which the last video sample may then close.
        if let Some(h) = self.held_audio.take() {
            self.complete_audio(h, AAC_FRAME_SAMPLES);
        }
        if let Some(h) = self.held_video.take() {
            let duration = self.predicted_video_duration();
            self.complete_video(h, duration, None);
        }
        self.close_part();
        if self.in_progress().is_some() {
            self.close_segment();
        }
    }

    /// The init segment exists and at least one part is complete.
    pub fn is_ready(&self) -> bool {
        self.init.is_some() && self.last_part.is_some()
    }

    /// The bytes this packager holds: its window's parts, the part being filled and the held
    /// frames. Bounded by the byte caps of [`HlsConfig`] (plus two frames).
    pub fn held_bytes(&self) -> usize {
        let held =
            [&self.held_video, &self.held_audio].into_iter().filter_map(|h| h.as_ref()).map(|h| h.frame.data.len());
        self.window_bytes.saturating_add(self.open.bytes).saturating_add(held.sum())
    }

    /// The last complete part.
    pub fn position(&self) -> Option<Position> {
        self.last_part
    }

    /// The init segment of version `version` (`init.mp4` is 0), once the stream started: the
    /// current one, or an earlier one still needed by a segment in the window.
    pub fn init_segment(&self, version: u32) -> Option<Bytes> {
        if version == self.init_version {
            return self.init.clone();
        }
        self.old_inits.iter().find(|(v, _)| *v == version).map(|(_, b)| b.clone())
    }

    /// A part's bytes (one `moof` + `mdat`).
    pub fn part(&self, msn: u64, part: u32) -> Lookup<Bytes> {
        match self.find(msn) {
            Some(seg) => match seg.parts.get(part as usize) {
                Some(p) => Lookup::Ready(p.bytes.clone()),
                None if !seg.complete && part as usize == seg.parts.len() => Lookup::Pending,
                None => Lookup::Gone,
            },
            None if self.is_next_segment(msn) && part == 0 => Lookup::Pending,
            None => Lookup::Gone,
        }
    }

    /// A complete segment: its parts' bytes in order (back to back they form the segment).
    pub fn segment(&self, msn: u64) -> Lookup<Vec<Bytes>> {
        match self.find(msn) {
            Some(seg) if seg.complete => Lookup::Ready(seg.parts.iter().map(|p| p.bytes.clone()).collect()),
            Some(_) => Lookup::Pending,
            None if self.is_next_segment(msn) => Lookup::Pending,
            None => Lookup::Gone,
        }
    }

    /// The LL-HLS playlist, once [`is_ready`](Self::is_ready). Rendered when a part completes.
    pub fn llhls_playlist(&self) -> Option<Bytes> {
        self.llhls.clone()
    }

    /// The plain HLS playlist (complete segments only), once [`is_ready`](Self::is_ready).
    pub fn hls_playlist(&self) -> Option<Bytes> {
        self.hls.clone()
    }

    /// Decides a blocking playlist reload (`_HLS_msn`, `_HLS_part`), see [`reload::decide`].
    pub fn blocking_reload(&self, msn: u64, part: Option<u32>) -> Reload {
        let state = ReloadState {
            last_part: self.last_part,
            last_complete_msn: self.last_complete_msn,
            ended: self.finished,
            advance_part_limit: reload::advance_part_limit(self.config.part_target_ms),
        };
        reload::decide(&state, msn, part)
    }

    /// The data the playlists are rendered from.
    pub fn snapshot(&self) -> PlaylistSnapshot<'_> {
        PlaylistSnapshot {
            session: &self.session,
            part_target_ms: self.config.part_target_ms,
            segments: self
                .segments
                .iter()
                .filter(|s| !s.parts.is_empty())
                .map(|s| SegmentInfo {
                    msn: s.msn,
                    wall_ms: s.wall_ms,
                    complete: s.complete,
                    duration_us: s.duration_us,
                    discontinuity: s.discontinuity,
                    init: s.init,
                    parts: s
                        .parts
                        .iter()
                        .map(|p| PartInfo { duration_us: p.duration_us, independent: p.independent })
                        .collect(),
                })
                .collect(),
            preload_hint: self.preload_hint(),
            ended: self.finished,
            discontinuity_sequence: self.discontinuity_sequence,
            init: self.init_version,
        }
    }

    // ---- internals -------------------------------------------------------------------------

    fn outcome(&mut self) -> PushOutcome {
        let out = PushOutcome { part_completed: self.part_completed, segment_completed: self.segment_completed };
        if self.part_completed {
            self.render();
        }
        self.part_completed = false;
        self.segment_completed = false;
        out
    }

    fn render(&mut self) {
        if !self.is_ready() {
            return;
        }
        let snap = self.snapshot();
        let ll = playlist::render_llhls(&snap);
        let plain =
            (self.hls.is_none() || self.segment_completed || self.finished).then(|| playlist::render_hls(&snap));
        self.llhls = Some(Bytes::from(ll));
        if let Some(p) = plain {
            self.hls = Some(Bytes::from(p));
        }
    }

    fn preload_hint(&self) -> Option<Position> {
        if self.finished {
            return None;
        }
        Some(match self.in_progress() {
            Some(s) => Position { msn: s.msn, part: clamp_u32(s.parts.len() as u64) },
            None => Position { msn: self.next_msn, part: 0 },
        })
    }

    fn find(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let idx = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(idx)
    }

    /// `msn` is the segment that the next sample will open (none in progress right now).
    fn is_next_segment(&self, msn: u64) -> bool {
        !self.finished && self.in_progress().is_none() && msn == self.next_msn
    }

    fn in_progress(&self) -> Option<&Segment> {
        self.segments.back().filter(|s| !s.complete)
    }

    fn part_target_ticks(&self, timescale: u32) -> u64 {
        ms_to_ticks(u64::from(self.config.part_target_ms), timescale)
    }

    /// Segments longer than this are cut at the next part boundary even without a keyframe (a
    /// safety net for streams without keyframes, or whose video stalled, to bound memory).
    fn max_segment_us(&self) -> u64 {
        u64::from(self.config.min_segment_ms).saturating_mul(10).max(30_000) * 1000
    }

    /// The duration of the segment in progress so far, including the open part (measured on
    /// the video when the stream has video).
    fn current_segment_us(&self) -> u64 {
        let closed = self.in_progress().map_or(0, |s| s.duration_us);
        let open = if self.has_video {
            ticks_to_us(self.open.video_ticks, VIDEO_TIMESCALE)
        } else {
            ticks_to_us(self.open.audio_ticks, self.sample_rate)
        };
        closed.saturating_add(open)
    }

    fn predicted_video_duration(&self) -> u32 {
        let [a, b] = self.video_durations;
        match a.max(b) {
            0 => {
                let fps = self.video_config.as_ref().and_then(|c| c.fps).unwrap_or(30.0);
                if fps.is_finite() && fps >= 1.0 { (90_000.0 / fps) as u32 } else { 3000 }
            }
            d => d,
        }
    }

    fn start(&mut self, dts: u64) {
        let init = fmp4::init_segment(self.video_config.as_ref(), self.audio_config.as_ref());
        if let Some(old) = self.init.take_if(|old| *old != init) {
            self.old_inits.push_back((self.init_version, old));
            self.init_version = self.init_version.wrapping_add(1);
        }
        self.init = Some(init);
        self.has_video = self.video_config.is_some();
        self.has_audio = self.audio_config.is_some();
        self.sample_rate = self.audio_config.as_ref().map_or(0, |c| c.sample_rate.max(1));
        self.start_dts = dts;
        self.started = true;
    }

    fn push_video(&mut self, frame: Frame, wall_ms: u64) {
        if !self.started {
            if self.video_config.is_none() || !frame.keyframe {
                return;
            }
            self.start(frame.dts);
        }
        if !self.has_video {
            return;
        }
        let t = ms_to_ticks(frame.dts, VIDEO_TIMESCALE);
        let following = Following { keyframe: frame.keyframe, pts: presentation_ticks(&frame) };
        let time = match self.held_video.take() {
            None => t.max(self.video_end),
            Some(h) => {
                // At least one tick, so decode times strictly increase.
                let duration = clamp_u32(t.saturating_sub(h.time).max(1));
                let next = h.time.saturating_add(u64::from(duration));
                self.video_durations = [self.video_durations[1], duration];
                self.complete_video(h, duration, Some(following));
                next
            }
        };
        self.held_video = Some(Held { frame, wall_ms, time });
    }

    fn push_audio(&mut self, frame: Frame, wall_ms: u64) {
        if !self.started {
            if self.video_config.is_some() || self.audio_config.is_none() {
                return;
            }
            self.start(frame.dts);
        }
        if !self.has_audio || frame.dts < self.start_dts {
            return;
        }
        let rate = self.sample_rate;
        let t = ms_to_ticks(frame.dts, rate);
        let time = match self.held_audio.take() {
            None => {
                let (end, end_rate) = self.audio_end;
                let end = u64::try_from(u128::from(end) * u128::from(rate) / u128::from(end_rate.max(1)).max(1));
                t.max(end.unwrap_or(u64::MAX))
            }
            Some(h) => {
                let expected = h.time.saturating_add(u64::from(AAC_FRAME_SAMPLES));
                let drift_ms = ticks_to_us(expected.abs_diff(t), rate) / 1000;
                // Resync forward jumps (a gap in the audio) by stretching the held sample;
                // backward drift keeps the accumulated clock (decode times never go back).
                let duration = if drift_ms > 100 && t > h.time { clamp_u32(t - h.time) } else { AAC_FRAME_SAMPLES };
                let next = h.time.saturating_add(u64::from(duration));
                self.complete_audio(h, duration);
                next
            }
        };
        self.held_audio = Some(Held { frame, wall_ms, time });
    }

    /// A video sample whose duration is now known; `following` describes the frame after it
    /// (None at the end of the stream).
    fn complete_video(&mut self, h: Held, duration: u32, following: Option<Following>) {
        let key = h.frame.keyframe;
        if key {
            if self.keyframe_closes_segment() {
                self.close_part();
                self.close_segment();
            } else if self.keyframe_closes_part() {
                self.close_part();
            }
        }
        self.open_segment(h.wall_ms, true);
        let pts = presentation_ticks(&h.frame);
        let composition = pts.saturating_sub(i64::try_from(h.time).unwrap_or(i64::MAX));
        let sample = Sample {
            duration,
            flags: if key { SYNC_SAMPLE_FLAGS } else { NON_SYNC_SAMPLE_FLAGS },
            composition_offset: i32::try_from(composition).unwrap_or(if composition < 0 { i32::MIN } else { i32::MAX }),
            data: h.frame.data,
        };
        if self.open.video.is_empty() {
            self.open.video_base = h.time;
        }
        self.open.bytes = self.open.bytes.saturating_add(sample.data.len() + SAMPLE_OVERHEAD_BYTES);
        self.open.video.push(sample);
        self.open.video_ticks = self.open.video_ticks.saturating_add(u64::from(duration));
        self.video_end = h.time.saturating_add(u64::from(duration));
        self.video_max_pts = self.video_max_pts.max(pts);
        self.video_run_ticks = self.video_run_ticks.saturating_add(u64::from(duration));
        // A cut here is clean when the next frame is presented after everything so far. With
        // B-frames it is not after a reference frame (`P`) whose B-frames (shown before it) come
        // next: a part ending there would leave a hole in its presentation range that the next
        // part fills, and an MSE implementation that forgets the highest presentation time
        // between appends (WebKit's) then deletes the `P` as overlapped, and every frame
        // depending on it up to the next keyframe: the picture stops.
        let clean = following.as_ref().is_none_or(|f| f.pts > self.video_max_pts);
        if clean {
            self.video_runs = [self.video_runs[1], self.video_run_ticks];
            self.video_run_ticks = 0;
        }
        let target = self.part_target_ticks(VIDEO_TIMESCALE);
        let frame = u64::from(self.predicted_video_duration().max(duration));
        // At a clean cut, close when the next run (as long as the longer of the last two) would
        // overshoot the target; elsewhere only when even the next frame would (a run longer than
        // predicted: the target is a hard limit).
        let next = if clean { frame.max(self.video_runs[0]).max(self.video_runs[1]) } else { frame };
        let full = self.open.video_ticks.saturating_add(next) > target;
        // A keyframe next closes the part anyway: then it stays open for the audio until then.
        let next_is_key = following.is_some_and(|f| f.keyframe);
        if full && !(next_is_key && (self.keyframe_closes_segment() || self.keyframe_closes_part())) {
            self.close_part_on_size();
        }
        self.enforce_byte_caps();
    }

    /// A keyframe completing now would close the segment in progress: it has video and is at
    /// least `min_segment_ms` long.
    fn keyframe_closes_segment(&self) -> bool {
        self.in_progress().is_some_and(|s| s.has_video_sample)
            && self.current_segment_us() >= u64::from(self.config.min_segment_ms) * 1000
    }

    /// A keyframe inside a segment closes the open part when that part does not start with a
    /// keyframe, so that the keyframe starts its own part and `INDEPENDENT=YES` stays exact
    /// (a part that already starts with one, as in all-intra streams, simply goes on).
    fn keyframe_closes_part(&self) -> bool {
        self.open.video.first().is_some_and(|s| s.flags != SYNC_SAMPLE_FLAGS)
    }

    fn complete_audio(&mut self, h: Held, duration: u32) {
        self.open_segment(h.wall_ms, false);
        if self.open.audio.is_empty() {
            self.open.audio_base = h.time;
        }
        self.open.bytes = self.open.bytes.saturating_add(h.frame.data.len() + SAMPLE_OVERHEAD_BYTES);
        self.open.audio.push(Sample { duration, flags: SYNC_SAMPLE_FLAGS, composition_offset: 0, data: h.frame.data });
        self.open.audio_ticks = self.open.audio_ticks.saturating_add(u64::from(duration));
        self.audio_end = (h.time.saturating_add(u64::from(duration)), self.sample_rate);
        let target = self.part_target_ticks(self.sample_rate);
        let close = if self.has_video {
            // Video drives the parts; this only bounds a part when the video stalled.
            self.open.audio_ticks > target.saturating_mul(3)
        } else {
            self.open.audio_ticks.saturating_add(u64::from(AAC_FRAME_SAMPLES)) > target
        };
        if close {
            self.close_part_on_size();
        }
        self.enforce_byte_caps();
    }

    /// Cuts the part at its byte cap, and the segment (with the part) at its byte or part-count
    /// cap, whatever the timestamps say: a frozen clock or a flood of frames cannot grow them.
    fn enforce_byte_caps(&mut self) {
        if self.open.bytes >= self.config.max_part_bytes {
            self.close_part();
        }
        let open = self.open.bytes;
        let full = self.in_progress().is_some_and(|s| {
            s.bytes.saturating_add(open) >= self.config.max_segment_bytes || s.parts.len() >= MAX_PARTS_PER_SEGMENT
        });
        if full {
            self.close_part();
            self.close_segment();
        }
    }

    /// Drops the oldest complete segments beyond `window_segments` or while the window holds
    /// more than `max_window_bytes` (the segment in progress stays).
    fn trim_window(&mut self) {
        loop {
            let complete = self.segments.iter().filter(|s| s.complete).count();
            let over = complete > self.config.window_segments || self.window_bytes > self.config.max_window_bytes;
            if !over || !self.segments.front().is_some_and(|s| s.complete) {
                break;
            }
            if let Some(s) = self.segments.pop_front() {
                self.window_bytes = self.window_bytes.saturating_sub(s.bytes);
                self.discontinuity_sequence += u64::from(s.discontinuity);
            }
            // Init segments no listed segment needs any more.
            let oldest = self.segments.front().map_or(self.init_version, |s| s.init);
            self.old_inits.retain(|(v, _)| *v >= oldest);
        }
    }

    /// Closes the part because it is full; at such a boundary an audio-only segment closes once
    /// it is long enough, and any segment once it hits the safety limit.
    fn close_part_on_size(&mut self) {
        self.close_part();
        let seg_us = self.current_segment_us();
        let long_enough = !self.has_video && seg_us >= u64::from(self.config.min_segment_ms) * 1000;
        if self.in_progress().is_some() && (long_enough || seg_us >= self.max_segment_us()) {
            self.close_segment();
        }
    }

    /// Makes sure a segment is in progress (opened by the sample about to be added).
    fn open_segment(&mut self, wall_ms: u64, video: bool) {
        match self.segments.back_mut() {
            Some(s) if !s.complete => {
                if video && !s.has_video_sample {
                    if s.parts.is_empty() {
                        s.wall_ms = wall_ms;
                    }
                    s.has_video_sample = true;
                }
            }
            _ => {
                self.segments.push_back(Segment {
                    msn: self.next_msn,
                    wall_ms,
                    has_video_sample: video,
                    parts: Vec::new(),
                    duration_us: 0,
                    bytes: 0,
                    complete: false,
                    discontinuity: std::mem::take(&mut self.pending_discontinuity),
                    init: self.init_version,
                });
                self.next_msn = self.next_msn.saturating_add(1);
            }
        }
    }

    fn close_part(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let open = std::mem::take(&mut self.open);
        let duration_us = if self.has_video && !open.video.is_empty() {
            ticks_to_us(open.video_ticks, VIDEO_TIMESCALE)
        } else {
            ticks_to_us(open.audio_ticks, self.sample_rate)
        };
        let independent =
            if self.has_video { open.video.first().is_some_and(|s| s.flags == SYNC_SAMPLE_FLAGS) } else { true };
        let bytes = fmp4::fragment(
            self.sequence,
            &[
                TrackRun { track_id: VIDEO_TRACK_ID, base_decode_time: open.video_base, samples: &open.video },
                TrackRun { track_id: AUDIO_TRACK_ID, base_decode_time: open.audio_base, samples: &open.audio },
            ],
        );
        self.sequence = self.sequence.wrapping_add(1);
        let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) else {
            return; // unreachable: samples are only added with a segment in progress
        };
        let size = bytes.len();
        seg.parts.push(Part { bytes, duration_us, independent });
        seg.duration_us = seg.duration_us.saturating_add(duration_us);
        seg.bytes = seg.bytes.saturating_add(size);
        self.window_bytes = self.window_bytes.saturating_add(size);
        self.last_part = Some(Position { msn: seg.msn, part: clamp_u32(seg.parts.len() as u64 - 1) });
        self.part_completed = true;
        self.trim_window();
    }

    fn close_segment(&mut self) {
        let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) else {
            return;
        };
        if seg.parts.is_empty() {
            // Nothing in it (cannot happen: a segment is opened by a sample); forget it and
            // reuse its number.
            self.next_msn = seg.msn;
            self.segments.pop_back();
            return;
        }
        seg.complete = true;
        self.last_complete_msn = Some(seg.msn);
        self.segment_completed = true;
        self.trim_window();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part target these tests' figures are worked out for (the default was 334 ms).
    fn parts_334() -> HlsConfig {
        HlsConfig { part_target_ms: 334, ..HlsConfig::default() }
    }
    use crate::fmp4::tests::{Traf, aac_config, avc_config, parse_fragment};

    const T0: u64 = 1_795_599_000_123; // 2026-11-25T09:30:00.123Z

    fn video(dts: u64, cts: i32, keyframe: bool, tag: u8) -> Frame {
        Frame { track: Track::Video, dts, cts, keyframe, data: Bytes::from(vec![tag; 50]) }
    }

    fn audio(dts: u64) -> Frame {
        Frame { track: Track::Audio, dts, cts: 0, keyframe: true, data: Bytes::from_static(&[0xAA; 7]) }
    }

    /// 30 fps video with a keyframe every 60 frames and 48 kHz AAC, interleaved in dts order,
    /// for `secs` seconds. `cts(i)` gives each video frame's composition offset.
    fn timeline(secs: u64, cts: impl Fn(u64) -> i32) -> Vec<Frame> {
        let mut frames = Vec::new();
        let (mut v, mut a) = (0u64, 0u64);
        loop {
            let vd = v * 100 / 3;
            let ad = a * 64 / 3; // 1024 samples at 48 kHz = 21.333 ms
            if vd >= secs * 1000 && ad >= secs * 1000 {
                break;
            }
            if vd <= ad {
                frames.push(video(vd, cts(v), v % 60 == 0, (v % 251) as u8));
                v += 1;
            } else {
                frames.push(audio(ad));
                a += 1;
            }
        }
        frames
    }

    fn packager() -> Packager {
        let mut p = Packager::new(parts_334(), "sess");
        p.set_video_config(avc_config());
        p.set_audio_config(aac_config());
        p
    }

    fn feed(p: &mut Packager, frames: Vec<Frame>) -> (usize, usize) {
        let (mut parts, mut segments) = (0, 0);
        for f in frames {
            let wall = T0 + f.dts + 5;
            let out = p.push(f, wall);
            parts += usize::from(out.part_completed);
            segments += usize::from(out.segment_completed);
        }
        (parts, segments)
    }

    fn text(b: Option<Bytes>) -> String {
        String::from_utf8(b.expect("playlist").to_vec()).unwrap()
    }

    /// A parsed part: its trafs and, per traf, its samples' bytes.
    type ParsedPart = (Vec<Traf>, Vec<Vec<Vec<u8>>>);

    fn parts_of(p: &Packager, msn: u64) -> Vec<ParsedPart> {
        let Lookup::Ready(parts) = p.segment(msn) else { panic!("segment {msn} not ready") };
        parts
            .iter()
            .map(|b| {
                let (_, trafs, bytes) = parse_fragment(b);
                (trafs, bytes)
            })
            .collect()
    }

    #[test]
    fn av_timeline() {
        let mut p = packager();
        assert!(!p.is_ready());
        assert_eq!(p.llhls_playlist(), None);
        assert_eq!(p.part(0, 0), Lookup::Pending);
        let (parts, segments) = feed(&mut p, timeline(21, |_| 0));
        assert!(p.is_ready());
        // Keyframes at 0, 2, …, 20 s: segments 0..=9 complete, 10 in progress.
        assert_eq!(segments, 10);
        assert_eq!(p.snapshot().segments.iter().filter(|s| s.complete).count(), 6);
        let snap = p.snapshot();
        assert_eq!(snap.segments.first().unwrap().msn, 4);
        assert_eq!(snap.segments.last().unwrap().msn, 10);
        assert!(!snap.segments.last().unwrap().complete);
        assert!(parts >= 10 * 6);

        let mut video_next = None;
        let mut audio_next = None;
        for seg in snap.segments.iter().filter(|s| s.complete) {
            // 60 frames of 33.3 ms: exactly 2 s; PDT of the keyframe's arrival.
            assert_eq!(seg.duration_us, 2_000_000, "segment {}", seg.msn);
            assert_eq!(seg.wall_ms, T0 + seg.msn * 2000 + 5);
            assert_eq!(seg.parts.len(), 6);
            for (i, part) in seg.parts.iter().enumerate() {
                assert!(part.duration_us <= 334_000, "{} > part target", part.duration_us);
                assert!(part.duration_us >= 300_000, "{} too short", part.duration_us);
                assert_eq!(part.independent, i == 0);
            }
            let parsed = parts_of(&p, seg.msn);
            for (i, (trafs, bytes)) in parsed.iter().enumerate() {
                let v = trafs.iter().find(|t| t.track_id == VIDEO_TRACK_ID).expect("video in every part");
                // Segments start on keyframes; keyframes only start segments here.
                for (k, s) in v.samples.iter().enumerate() {
                    let sync = s.2 == SYNC_SAMPLE_FLAGS;
                    assert_eq!(sync, i == 0 && k == 0, "msn {} part {i} sample {k}", seg.msn);
                    assert_eq!(s.3, 0);
                }
                // Decode times are continuous across parts and segments.
                if let Some(n) = video_next {
                    assert_eq!(v.base_decode_time, n);
                }
                video_next = Some(v.base_decode_time + v.samples.iter().map(|s| u64::from(s.0)).sum::<u64>());
                if let Some(a) = trafs.iter().find(|t| t.track_id == AUDIO_TRACK_ID) {
                    assert!(a.samples.iter().all(|s| s.0 == 1024 && s.1 == 7 && s.2 == SYNC_SAMPLE_FLAGS));
                    if let Some(n) = audio_next {
                        assert_eq!(a.base_decode_time, n);
                    }
                    audio_next = Some(a.base_decode_time + 1024 * a.samples.len() as u64);
                }
                // Sample bytes come back through the data offsets.
                let vi = trafs.iter().position(|t| t.track_id == VIDEO_TRACK_ID).unwrap();
                assert!(bytes[vi].iter().all(|b| b.len() == 50));
            }
        }
        // Segment 4 starts at 8 s: video tfdt 8 s × 90 kHz; its audio near 8 s at 48 kHz.
        let first = &parts_of(&p, 4)[0].0;
        assert_eq!(first[0].base_decode_time, 8 * 90_000);
        let a = first.iter().find(|t| t.track_id == AUDIO_TRACK_ID).unwrap();
        assert!(a.base_decode_time.abs_diff(8 * 48_000) < 2 * 1024, "{}", a.base_decode_time);

        // The playlists.
        let ll = text(p.llhls_playlist());
        assert!(ll.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n"));
        assert!(ll.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        assert!(ll.contains("#EXT-X-MAP:URI=\"sess/init.mp4\"\n"));
        assert!(ll.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:08.128Z\n#EXTINF:2.000,\nsess/4.m4s\n"));
        assert!(ll.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:30:20.128Z\n#EXT-X-PART:DURATION=0.333,URI=\"sess/10.0.m4s\",INDEPENDENT=YES\n"));
        assert_eq!(ll.matches("INDEPENDENT=YES").count(), ll.matches("#EXT-X-PART:").count().div_ceil(6));
        let hint = p.snapshot().preload_hint.unwrap();
        assert!(ll.ends_with(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"sess/10.{}.m4s\"\n", hint.part)));
        let plain = text(p.hls_playlist());
        assert!(plain.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        assert_eq!(plain.matches("#EXTINF:2.000,").count(), 6);
        assert!(!plain.contains("PART"));
        assert!(!plain.contains("SERVER-CONTROL"));

        // Lookups.
        assert_eq!(p.position(), Some(Position { msn: 10, part: hint.part - 1 }));
        assert!(matches!(p.part(10, 0), Lookup::Ready(_)));
        assert_eq!(p.part(10, hint.part), Lookup::Pending);
        assert_eq!(p.part(10, hint.part + 1), Lookup::Gone);
        assert_eq!(p.part(11, 0), Lookup::Gone);
        assert_eq!(p.segment(10), Lookup::Pending);
        assert!(matches!(p.segment(4), Lookup::Ready(v) if v.len() == 6));
        assert_eq!(p.part(9, 6), Lookup::Gone, "past the end of a closed segment");
        assert_eq!(p.segment(3), Lookup::Gone, "fell out of the window");
        assert_eq!(p.part(0, 0), Lookup::Gone);
        assert_eq!(p.segment(u64::MAX), Lookup::Gone);
        assert_eq!(p.part(u64::MAX, u32::MAX), Lookup::Gone);
        assert!(p.init_segment(0).is_some());

        // Blocking reload.
        assert_eq!(p.blocking_reload(10, Some(0)), Reload::Ready);
        assert_eq!(p.blocking_reload(10, Some(hint.part)), Reload::Wait);
        assert_eq!(p.blocking_reload(10, None), Reload::Wait);
        assert_eq!(p.blocking_reload(9, None), Reload::Ready);
        assert_eq!(p.blocking_reload(12, None), Reload::Wait);
        assert!(matches!(p.blocking_reload(13, None), Reload::BadRequest(_)));

        // The publisher leaves: the last segment closes, the playlists end.
        p.finish();
        assert_eq!(p.part(10, hint.part + 1), Lookup::Gone);
        assert!(matches!(p.segment(10), Lookup::Ready(_)));
        assert_eq!(p.segment(11), Lookup::Gone);
        let ll = text(p.llhls_playlist());
        assert!(ll.ends_with("sess/10.m4s\n#EXT-X-ENDLIST\n"), "{ll}");
        assert!(!ll.contains("PRELOAD-HINT"));
        assert!(text(p.hls_playlist()).ends_with("sess/10.m4s\n#EXT-X-ENDLIST\n"));
        assert_eq!(p.blocking_reload(11, Some(0)), Reload::Ready);
        // Pushing after the end does nothing.
        assert_eq!(p.push(video(30_000, 0, true, 1), T0), PushOutcome::default());
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = packager();
        feed(&mut p, timeline(120, |_| 0));
        assert_eq!(p.segments.len(), 7);
        assert_eq!(p.segments.front().unwrap().msn, 53);
        assert_eq!(p.segment(52), Lookup::Gone);
        assert!(matches!(p.segment(53), Lookup::Ready(_)));
        let ll = text(p.llhls_playlist());
        assert!(ll.contains("#EXT-X-MEDIA-SEQUENCE:53\n"));
        // Parts only for the last three target durations (and the segment in progress).
        assert!(!ll.contains("sess/55.0.m4s"), "{ll}");
        assert!(ll.contains("sess/56.0.m4s"), "{ll}");
    }

    /// 30 fps video as x264 with 2 B-frames encodes it (decode order `I P B B P B B …`, closed
    /// GOPs of `gop` frames, a composition delay of 2 frames) and 48 kHz AAC, timestamps in
    /// whole milliseconds as RTMP carries them, for `secs` seconds.
    fn b_frame_timeline(secs: u64, gop: u64) -> Vec<Frame> {
        let ms = |frame: u64| (frame * 100 + 1) / 3; // rounded to the nearest millisecond
        let mut frames = Vec::new();
        let (mut v, mut a) = (0u64, 0u64);
        while ms(v) < secs * 1000 || a * 64 / 3 < secs * 1000 {
            let ad = a * 64 / 3;
            if ms(v) <= ad {
                let k = v % gop;
                // Display index within the GOP: I, then groups P(+3) B(+1) B(+2).
                let shown = if k == 0 { 0 } else { 3 * ((k - 1) / 3) + [3, 1, 2][((k - 1) % 3) as usize] };
                let pts = ms(v - k + shown + 2);
                frames.push(video(ms(v), (pts - ms(v)) as i32, k == 0, (v % 251) as u8));
                v += 1;
            } else {
                frames.push(audio(ad));
                a += 1;
            }
        }
        frames
    }

    /// Presentation times (ticks) of each part's video samples, over `msns`, in order.
    fn part_presentation_times(p: &Packager, msns: std::ops::Range<u64>) -> Vec<Vec<i64>> {
        let mut out = Vec::new();
        for msn in msns {
            for (trafs, _) in parts_of(p, msn) {
                let v = trafs.iter().find(|t| t.track_id == VIDEO_TRACK_ID).unwrap();
                let mut dts = v.base_decode_time as i64;
                let mut pts = Vec::new();
                for s in &v.samples {
                    pts.push(dts + i64::from(s.3));
                    dts += i64::from(s.0);
                }
                out.push(pts);
            }
        }
        out
    }

    #[test]
    fn b_frame_parts_do_not_split_a_group() {
        // GOPs of 64 frames (1 + 21 groups of P B B): segments of 2.133 s.
        let mut p = packager();
        feed(&mut p, b_frame_timeline(12, 64));
        p.finish();
        let parts = part_presentation_times(&p, 0..6);
        assert!(parts.len() >= 6 * 6, "{} parts", parts.len());
        // Every part is presented after the one before it: no part ends with a P frame whose
        // B-frames (shown before it) are in the next part.
        for (i, pair) in parts.windows(2).enumerate() {
            let before = pair[0].iter().max().unwrap();
            let after = pair[1].iter().min().unwrap();
            assert!(after > before, "part {} ends at {before}, part {} starts at {after}", i, i + 1);
        }
        // Whole groups of 3 frames still fill the parts: 0.7–1.0 × the part target except the
        // last part of a segment.
        for seg in p.snapshot().segments.iter() {
            for (i, part) in seg.parts.iter().enumerate() {
                assert!(part.duration_us <= 334_000, "{}", part.duration_us);
                if i + 1 < seg.parts.len() {
                    assert!(part.duration_us >= 234_000, "{}", part.duration_us);
                }
            }
        }
    }

    #[test]
    fn b_frames_composition_offsets() {
        // Decode order I P B B P B B …: pts - dts of 100 ms on I/P frames, 0 on B frames, 33 ms
        // added on the second B frame.
        let cts = |i: u64| match i % 3 {
            0 => 100,
            1 => 0,
            _ => 33,
        };
        let mut p = packager();
        feed(&mut p, timeline(5, cts));
        let mut i = 0u64;
        for msn in 0..2 {
            for (trafs, _) in parts_of(&p, msn) {
                let v = trafs.iter().find(|t| t.track_id == VIDEO_TRACK_ID).unwrap();
                for s in &v.samples {
                    assert_eq!(s.3, cts(i) * 90, "frame {i}");
                    i += 1;
                }
            }
        }
        assert_eq!(i, 120);
    }

    #[test]
    fn drops_before_first_keyframe() {
        let mut p = packager();
        // Audio and non-key video before the first keyframe are dropped.
        assert_eq!(p.push(audio(0), T0), PushOutcome::default());
        p.push(video(0, 0, false, 1), T0);
        p.push(audio(21), T0);
        assert!(p.init_segment(0).is_none());
        let mut frames = timeline(3, |_| 0);
        frames.retain(|f| f.dts >= 40);
        for f in &mut frames {
            if f.track == Track::Video {
                f.keyframe = f.dts == 1000 || f.dts == 2000;
            }
        }
        feed(&mut p, frames);
        assert!(p.init_segment(0).is_some());
        let (trafs, _) = &parts_of(&p, 0)[0];
        assert_eq!(trafs[0].track_id, VIDEO_TRACK_ID);
        assert_eq!(trafs[0].base_decode_time, 90_000, "starts at the keyframe at 1 s");
        let a = trafs.iter().find(|t| t.track_id == AUDIO_TRACK_ID).unwrap();
        assert!(a.base_decode_time >= 48_000, "no audio from before the keyframe");
        assert_eq!(p.snapshot().segments[0].wall_ms, T0 + 1005);
    }

    #[test]
    fn scene_cut_keyframe_starts_a_part_not_a_segment() {
        let mut p = packager();
        let mut frames = timeline(5, |_| 0);
        // An extra keyframe at frame 75 (2.5 s): only 0.5 s into segment 1.
        for f in &mut frames {
            if f.track == Track::Video && f.dts == 2500 {
                f.keyframe = true;
            }
        }
        feed(&mut p, frames);
        let snap = p.snapshot();
        let seg1 = snap.segments.iter().find(|s| s.msn == 1).unwrap();
        assert!(seg1.complete);
        assert_eq!(seg1.duration_us, 2_000_000);
        let flags: Vec<bool> = seg1.parts.iter().map(|p| p.independent).collect();
        assert_eq!(flags.iter().filter(|&&f| f).count(), 2);
        assert!(flags[0]);
        for (trafs, _) in parts_of(&p, 1) {
            let v = trafs.iter().find(|t| t.track_id == VIDEO_TRACK_ID).unwrap();
            assert!(v.samples[1..].iter().all(|s| s.2 != SYNC_SAMPLE_FLAGS));
        }
        assert!(seg1.parts.iter().all(|p| p.duration_us <= 334_000));
    }

    #[test]
    fn all_intra_video_keeps_full_parts() {
        let mut p = Packager::new(parts_334(), "i");
        p.set_video_config(avc_config());
        for i in 0..200u64 {
            p.push(video(i * 100 / 3, 0, true, 1), T0);
        }
        let snap = p.snapshot();
        let complete: Vec<_> = snap.segments.iter().filter(|s| s.complete).collect();
        assert_eq!(complete.len(), 6);
        for seg in complete {
            // Segments close at the first keyframe past min_segment_ms: 30 frames.
            assert_eq!(seg.duration_us, 1_000_000);
            assert_eq!(seg.parts.len(), 3);
            assert!(seg.parts.iter().all(|p| p.independent));
        }
    }

    #[test]
    fn audio_only() {
        let mut p = Packager::new(parts_334(), "a");
        p.set_audio_config(aac_config());
        let mut segments = 0;
        for j in 0..500u64 {
            // ~10.7 s of audio
            let out = p.push(audio(j * 64 / 3), T0 + j * 64 / 3);
            segments += usize::from(out.segment_completed);
        }
        assert!(p.is_ready());
        let snap = p.snapshot();
        assert!(segments >= 8, "{segments}");
        for seg in snap.segments.iter().filter(|s| s.complete) {
            // Parts of 15 frames (0.320 s), segments close at the first boundary past 1 s.
            assert_eq!(seg.parts.len(), 4);
            assert_eq!(seg.duration_us, 1_280_000);
            assert!(seg.parts.iter().all(|p| p.independent && p.duration_us == 320_000));
        }
        let first = snap.segments[0].msn;
        assert!(first >= 2, "the window slid");
        let (trafs, _) = &parts_of(&p, first)[0];
        assert_eq!(trafs.len(), 1);
        assert_eq!(trafs[0].track_id, AUDIO_TRACK_ID);
        assert_eq!(trafs[0].base_decode_time, first * 60 * 1024);
        let ll = text(p.llhls_playlist());
        assert!(ll.contains("#EXT-X-TARGETDURATION:2\n"));
        // Video frames without a video config are ignored.
        assert!(!p.push(video(11_000, 0, true, 1), T0).part_completed);
    }

    #[test]
    fn audio_resync_on_gap() {
        let mut p = Packager::new(parts_334(), "a");
        p.set_audio_config(aac_config());
        for j in 0..10u64 {
            p.push(audio(j * 64 / 3), T0);
        }
        // A 500 ms hole, then regular again.
        for j in 0..40u64 {
            p.push(audio(700 + j * 64 / 3), T0);
        }
        p.finish();
        let mut samples = Vec::new();
        let mut next = 0u64;
        for msn in 0..2 {
            for (trafs, _) in parts_of(&p, msn) {
                assert_eq!(trafs[0].base_decode_time, next);
                for s in &trafs[0].samples {
                    samples.push(s.0);
                    next += u64::from(s.0);
                }
            }
        }
        assert_eq!(samples.len(), 50);
        // The sample before the hole is stretched to reach 700 ms exactly.
        assert_eq!(samples[9], (700 * 48 - 9 * 1024) as u32);
        assert!(samples.iter().enumerate().all(|(i, &d)| i == 9 || d == 1024));
    }

    #[test]
    fn config_changes_are_discontinuities() {
        let mut p = packager();
        // Before the start, configs are replaced freely.
        let mut other = avc_config();
        other.width = 1280;
        p.set_video_config(other);
        p.set_video_config(avc_config());
        feed(&mut p, timeline(3, |_| 0));
        // Identical ones after the start are ignored.
        p.set_video_config(avc_config());
        p.set_audio_config(aac_config());
        let before = p.snapshot();
        assert!(before.segments.iter().all(|s| !s.discontinuity && s.init == 0));
        // A different one: the segment in progress closes, frames wait for a keyframe, the next
        // segment is a discontinuity with a new init segment.
        let mut changed = avc_config();
        changed.record = Bytes::from_static(&[1, 0x64, 0, 0x20, 0xFF, 0xE0, 0]);
        p.set_video_config(changed);
        let last = p.snapshot().segments.last().cloned().unwrap();
        assert!(last.complete, "closed at the change");
        let mut frames = timeline(8, |_| 0);
        frames.retain(|f| f.dts >= 3_000);
        for f in &mut frames {
            if f.track == Track::Video {
                f.keyframe = f.dts == 3_500 || f.dts % 2_000 == 0;
            }
        }
        // Frames before the keyframe at 3.5 s are dropped (audio too).
        let (early, later): (Vec<Frame>, Vec<Frame>) = frames.into_iter().partition(|f| f.dts < 3_500);
        for f in early {
            assert!(!p.push(f, T0).part_completed);
        }
        feed(&mut p, later);
        let snap = p.snapshot();
        let next = snap.segments.iter().find(|s| s.msn == last.msn + 1).unwrap();
        assert!(next.discontinuity);
        assert_eq!(next.init, 1);
        let ll = text(p.llhls_playlist());
        assert!(ll.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"sess/init.1.mp4\"\n"), "{ll}");
        let (trafs, _) = &parts_of(&p, next.msn)[0];
        assert_eq!(trafs[0].base_decode_time, 3_500 * 90, "decode times go on");
        assert_ne!(p.init_segment(1), p.init_segment(0));
        assert!(p.init_segment(0).is_some(), "still needed by the window");
        assert!(p.init_segment(2).is_none());
        // Once the old segments left the window, so did their init segment; the discontinuity
        // sequence counts the tag that left with them.
        feed(&mut p, timeline(30, |_| 0).into_iter().filter(|f| f.dts >= 8_000).collect());
        assert!(p.init_segment(0).is_none());
        let ll = text(p.llhls_playlist());
        assert!(
            ll.contains(
                "#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"sess/init.1.mp4\"\n"
            ),
            "{ll}"
        );

        // A discontinuity with the same configuration (a publisher that came back): the same
        // init segment, a discontinuity tag.
        let mut p = packager();
        feed(&mut p, timeline(3, |_| 0));
        p.discontinuity();
        p.discontinuity();
        feed(&mut p, timeline(6, |_| 0).into_iter().filter(|f| f.dts >= 4_000).collect());
        let snap = p.snapshot();
        assert_eq!(snap.segments.iter().filter(|s| s.discontinuity).count(), 1);
        assert!(snap.segments.iter().all(|s| s.init == 0));

        // New timestamps earlier than the old ones (a caller that does not rebase): decode times
        // still never go back.
        let mut p = packager();
        feed(&mut p, timeline(3, |_| 0));
        let end = p.snapshot().segments.last().unwrap().msn;
        p.discontinuity();
        feed(&mut p, timeline(3, |_| 0));
        p.finish();
        let mut ends = std::collections::HashMap::new();
        for (trafs, _) in parts_of(&p, end) {
            for t in trafs {
                let d: u64 = t.samples.iter().map(|s| u64::from(s.0)).sum();
                ends.insert(t.track_id, t.base_decode_time + d);
            }
        }
        let (trafs, _) = &parts_of(&p, end + 1)[0];
        for t in trafs {
            assert!(
                t.base_decode_time >= ends[&t.track_id],
                "track {}: {} < {}",
                t.track_id,
                t.base_decode_time,
                ends[&t.track_id]
            );
        }

        // An audio config arriving after a video-only start: a new init with both tracks.
        let mut p = Packager::new(parts_334(), "s");
        p.set_video_config(avc_config());
        p.push(video(0, 0, true, 1), T0);
        p.push(video(33, 0, false, 1), T0);
        p.set_audio_config(aac_config());
        p.push(video(66, 0, true, 1), T0);
        p.push(video(99, 0, false, 1), T0);
        let init = p.init_segment(1).unwrap();
        assert!(init.windows(4).any(|w| w == b"mp4a"));
    }

    #[test]
    fn video_only_and_playlist_before_any_segment() {
        let mut p = Packager::new(parts_334(), "v");
        p.set_video_config(avc_config());
        let mut first_part = None;
        for i in 0..20u64 {
            let out = p.push(video(i * 100 / 3, 0, i == 0, 1), T0 + i * 33);
            if out.part_completed && first_part.is_none() {
                first_part = Some(i);
            }
        }
        // The first part (10 frames) completes when frame 10 arrives (frame 9 completes).
        assert_eq!(first_part, Some(10));
        let plain = text(p.hls_playlist());
        assert_eq!(
            plain,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"v/init.mp4\"\n"
        );
        let ll = text(p.llhls_playlist());
        assert!(ll.contains("#EXT-X-PART:DURATION=0.333,URI=\"v/0.0.m4s\",INDEPENDENT=YES\n"));
        assert!(ll.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v/0.1.m4s\"\n"));
        let init = p.init_segment(0).unwrap();
        assert!(init.windows(4).any(|w| w == b"avc1"));
        assert!(!init.windows(4).any(|w| w == b"mp4a"));
    }

    #[test]
    fn low_frame_rates_respect_part_target() {
        for fps in [10u64, 12, 15, 24, 25, 30, 50, 60] {
            let mut p = Packager::new(parts_334(), "f");
            p.set_video_config(avc_config());
            // 29.97-style jitter: dts in ms rounded from an exact rate.
            for i in 0..(fps * 7) {
                let dts = (i * 1001 + fps / 2) / fps; // a rate of fps / 1.001
                p.push(video(dts, 0, i % (fps * 2) == 0, 1), T0 + dts);
            }
            let snap = p.snapshot();
            for seg in &snap.segments {
                for (i, part) in seg.parts.iter().enumerate() {
                    assert!(part.duration_us <= 334_000, "{fps} fps: {}", part.duration_us);
                    // The last part of a segment takes what is left before the keyframe.
                    if i + 1 < seg.parts.len() {
                        assert!(part.duration_us >= 200_000, "{fps} fps: {}", part.duration_us);
                    }
                }
            }
        }
    }

    /// Small caps, so that a test reaches them quickly.
    fn capped() -> HlsConfig {
        HlsConfig {
            max_part_bytes: 20_000,
            max_segment_bytes: 100_000,
            max_window_bytes: 300_000,
            ..HlsConfig::default()
        }
    }

    fn sized(mut f: Frame, len: usize) -> Frame {
        f.data = Bytes::from(vec![1u8; len]);
        f
    }

    #[test]
    fn frozen_clock_is_bounded_in_bytes() {
        // 60 s of 30 fps video (5 kB frames) and audio whose timestamps never move.
        let mut p = Packager::new(capped(), "z");
        p.set_video_config(avc_config());
        p.set_audio_config(aac_config());
        let mut most = 0;
        for i in 0..1800u64 {
            p.push(sized(video(8_000, 0, i % 60 == 0, 1), 5_000), T0 + i * 33);
            p.push(audio(8_000), T0 + i * 33);
            p.push(audio(8_000), T0 + i * 33);
            most = most.max(p.held_bytes());
        }
        // The window's cap, plus the part being filled, plus the held frames.
        assert!(most <= 300_000 + 20_000 + 6_000, "held {most} bytes");
        let snap = p.snapshot();
        assert!(snap.segments.len() >= 3, "segments were cut by size");
        for seg in snap.segments.iter().filter(|s| s.complete) {
            let Lookup::Ready(parts) = p.segment(seg.msn) else { panic!() };
            // A part is cut at its cap: at most the cap plus one frame.
            assert!(
                parts.iter().all(|b| b.len() <= 20_000 + 5_000 + 200),
                "{:?}",
                parts.iter().map(Bytes::len).collect::<Vec<_>>()
            );
            // A segment is cut at its cap: at most the cap plus one part.
            assert!(parts.iter().map(Bytes::len).sum::<usize>() <= 100_000 + 25_200);
        }
        // Tiny frames count their overhead: a flood of 1-byte frames is cut too.
        let mut p = Packager::new(capped(), "t");
        p.set_video_config(avc_config());
        for i in 0..100_000u64 {
            p.push(sized(video(i / 1000, 0, i == 0, 1), 1), T0);
        }
        // 100 000 × 65 accounted bytes: ~325 parts of ~300 frames (~5 kB written each), ~16
        // segments of 100 kB, most of them gone by now.
        let snap = p.snapshot();
        assert!(snap.segments.last().unwrap().msn >= 15, "{}", snap.segments.last().unwrap().msn);
        assert!(snap.segments.iter().all(|s| s.parts.len() <= 25));
        assert!(p.held_bytes() <= 300_000 + 20_000 + 2, "{}", p.held_bytes());
    }

    #[test]
    fn window_is_trimmed_by_bytes() {
        // 19 kB frames, 2 s GOPs: a segment of ~1.1 MB would exceed the caps; segments are cut at
        // ~100 kB and the window keeps ~300 kB, fewer than `window_segments` segments.
        let mut p = Packager::new(capped(), "w");
        p.set_video_config(avc_config());
        for i in 0..600u64 {
            p.push(sized(video(i * 100 / 3, 0, i % 60 == 0, 1), 19_000), T0 + i * 33);
            assert!(p.held_bytes() <= 300_000 + 20_000 + 20_000);
        }
        let snap = p.snapshot();
        let complete: Vec<_> = snap.segments.iter().filter(|s| s.complete).collect();
        assert!((1..6).contains(&complete.len()), "{}", complete.len());
        let ll = text(p.llhls_playlist());
        let first = snap.segments[0].msn;
        assert!(ll.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")));
        assert_eq!(p.segment(first - 1), Lookup::Gone);
    }

    #[test]
    fn oversized_frames_are_dropped_up_to_the_next_keyframe() {
        let mut p = Packager::new(capped(), "o");
        p.set_video_config(avc_config());
        for i in 0..120u64 {
            // Frame 10 is absurdly large: it and the frames depending on it (to frame 60) go.
            let len = if i == 10 { 20_001 } else { 100 };
            p.push(sized(video(i * 100 / 3, 0, i % 60 == 0, 1), len), T0 + i * 33);
        }
        p.finish();
        let mut samples = 0;
        for seg in p.snapshot().segments {
            for (trafs, _) in parts_of(&p, seg.msn) {
                samples += trafs[0].samples.len();
            }
        }
        assert_eq!(samples, 10 + 60);
        // The hole (frames 10..60) became the duration of the sample before it.
        let (trafs, _) = &parts_of(&p, 0)[0];
        assert_eq!(trafs[0].base_decode_time, 0);
    }

    #[test]
    fn garbage_does_not_panic() {
        // A deterministic pseudo-random stream of odd frames and requests.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4 {
            let config = HlsConfig {
                part_target_ms: [0, 1, 334, u32::MAX][round],
                min_segment_ms: [0, 1, 1000, u32::MAX][round],
                window_segments: [0, 1, 6, usize::MAX][round],
                max_part_bytes: [0, 100, 8 << 20, usize::MAX][round],
                max_segment_bytes: [0, 1000, 32 << 20, usize::MAX][round],
                max_window_bytes: [0, 5000, 96 << 20, usize::MAX][round],
            };
            let mut p = Packager::new(config, "g");
            p.set_video_config(avc_config());
            p.set_audio_config(aac_config());
            let mut dts = 0u64;
            for _ in 0..3000 {
                let r = next();
                dts = match r % 7 {
                    0 => dts.wrapping_sub(r % 500),
                    1 => r,
                    _ => dts.saturating_add(r % 60),
                };
                let f = Frame {
                    track: if r & 1 == 0 { Track::Video } else { Track::Audio },
                    dts,
                    cts: (r >> 8) as i32,
                    keyframe: r % 5 == 0,
                    data: Bytes::from(vec![0u8; (r % 40) as usize]),
                };
                p.push(f, r >> 3);
                let (m, q) = (next(), next());
                let _ = p.part(m % 64, (q % 16) as u32);
                let _ = p.part(m, q as u32);
                let _ = p.segment(m % 64);
                let _ = p.blocking_reload(m, Some(q as u32));
                let _ = p.blocking_reload(m % 64, None);
            }
            p.finish();
            p.finish();
            let _ = p.llhls_playlist();
            let _ = p.hls_playlist();
        }
    }
}
