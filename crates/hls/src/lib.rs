//! Low-Latency HLS packaging for OnAir, without I/O, async or clocks: time comes in as arguments.
//!
//! A [`Packager`] holds the state of one broadcast (a publish, and the publishes continuing it
//! after a drop, see [`Packager::discontinuity`]). The engine feeds it codec configurations and
//! [`Frame`](onair_media::Frame)s; the server asks it for the init segment, parts, segments,
//! playlists and blocking-reload decisions. Everything is CMAF fMP4 (H.264 + AAC).
//!
//! # Contract
//!
//! **Start.** With a video configuration known, frames before the first video keyframe are
//! dropped and packaging starts at that keyframe (audio older than it is dropped too). With no
//! video configuration, the stream is audio-only and starts at the first audio frame (which
//! needs an audio configuration). The init segment is written at the start with the
//! configurations known then; frames of a track that is not in it are dropped.
//!
//! **Configuration changes.** Before the start a configuration may be replaced freely. After it,
//! a repeated identical configuration (same AVCDecoderConfigurationRecord / AudioSpecificConfig
//! bytes) is ignored; any other one (including a first configuration for a track missing from
//! the init segment) is a **discontinuity** ([`Packager::discontinuity`], which the caller also
//! calls when a publisher comes back): the held frames are packaged and the segment in progress
//! closed; frames are dropped up to the next video keyframe (the next audio frame in an
//! audio-only stream), where packaging starts again as at the start, in a segment preceded by
//! `EXT-X-DISCONTINUITY`. If the init segment written then differs from the last one it gets the
//! next version (`init.<n>.mp4`) and an `EXT-X-MAP` before that segment; earlier init segments
//! stay available while a segment in the window needs them. Media sequence numbers go on;
//! `EXT-X-DISCONTINUITY-SEQUENCE` counts the discontinuities that left the window.
//!
//! **Timing.** Video decode times are `dts_ms × 90` (timescale 90 000), composition offsets
//! `(dts + cts) × 90 − decode time` (signed, so B-frames come out right). A sample's duration is
//! known only from the next frame, so one frame per track is held back. Audio uses the sample
//! rate as timescale and 1024 samples per frame, starting at the first audio dts and then
//! accumulating; when the accumulated clock is more than 100 ms behind a frame's dts, the held
//! sample is stretched to resync (audio gaps). Decode times never go back.
//!
//! **Segments** start at a video keyframe: a keyframe closes the segment in progress once it is at
//! least `min_segment_ms` long, so segments follow the publisher's GOPs. Audio-only segments
//! close at the first part boundary at or after `min_segment_ms`. As a safety net a segment
//! reaching `max(10 × min_segment_ms, 30 s)` is cut at the next part boundary even without a
//! keyframe (only for streams with no keyframes for that long, or whose video stalled).
//!
//! **Bytes.** Whatever the timestamps say, memory is bounded in bytes ([`HlsConfig`]): a frame
//! larger than `max_part_bytes` is dropped (a video frame with the video after it up to the next
//! keyframe); a part is cut once its samples hold `max_part_bytes` (each sample counted with a
//! fixed overhead, so tiny frames count too); a segment is cut, with its open part, once it
//! holds `max_segment_bytes` or [`segmenter::MAX_PARTS_PER_SEGMENT`] parts, keyframe or not.
//! [`Packager::held_bytes`] tells what a packager holds.
//!
//! **Parts** are one `moof` (one `traf` per track with samples) + one `mdat`, holding the samples
//! of both tracks completed while the part was open. Video drives them: a part closes at a clean
//! cut (the next frame is presented after every frame so far) when one more run between clean
//! cuts of the predicted duration (the longer of the last two) would exceed `part_target_ms`, so
//! at ordinary frame rates (≥ 10 fps) parts last 0.7–1.0 × the part target and never exceed it.
//! Without B-frames every cut is clean and a run is one frame; with B-frames a run is a
//! reference frame and the B-frames shown before it (`P B B`), which stay in one part: each
//! part is presented after the one before it, with no hole for the next part to fill. (Only a
//! run longer than predicted is cut inside, where even one more frame would exceed the
//! target.) A part also closes at a segment boundary, and before a keyframe inside a
//! segment (a scene cut) unless the part already starts with one (all-intra video): so a part is
//! `INDEPENDENT=YES` exactly when it starts with a keyframe, and every keyframe is in such a
//! part. The last part of a segment may be short. Audio-only parts close the same way
//! on 1024-sample frames. In a video stream, audio alone closes a part only past three part
//! targets (stalled video). A part's duration is that of its video (of its audio if it has no
//! video).
//!
//! **Window.** `window_segments` complete segments are kept plus the one in progress, fewer while
//! the window's parts hold more than `max_window_bytes`; older segments are dropped and become
//! [`Lookup::Gone`].
//!
//! **URIs** (see [`uri`]), relative to the playlist: `<session>/init.mp4` (`init.<n>.mp4` after
//! a configuration change), `<session>/<msn>.m4s`,
//! `<session>/<msn>.<part>.m4s`; [`parse_uri`] maps a file name back to a [`Resource`]. Media
//! sequence numbers start at 0, parts at 0 within each segment.
//!
//! **Lookups.** [`Lookup::Pending`] for the part named by the preload hint and for the segment
//! in progress (or the one about to open); [`Lookup::Gone`] for a part beyond the end of a
//! closed segment, for anything older than the window and for numbers that will never exist.
//!
//! **Playlists** ([`playlist`]) are rendered when a part completes and served from a cache.
//! After [`Packager::finish`] they end with `EXT-X-ENDLIST` and carry no preload hint.
//!
//! **HTTP caching** ([`cache`]): the `Cache-Control` of each kind of answer and playlist `ETag`s,
//! for HTTP caches and CDNs in front of the server.
//!
//! **Blocking reload** ([`reload`]): `Ready` once the requested part (or, without `_HLS_part`,
//! the whole segment) is complete, `BadRequest` beyond two segments or the advance part limit
//! ahead, otherwise `Wait`.
//!
//! All public functions are panic-free on any input.

pub mod cache;
pub mod fmp4;
pub mod playlist;
pub mod reload;
pub mod segmenter;
pub mod uri;

pub use reload::Reload;
pub use segmenter::{HlsConfig, Lookup, Packager, Position, PushOutcome};
pub use uri::{Resource, parse_uri};
