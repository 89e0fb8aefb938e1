//! The stream hub: one [`Stream`] per name, fed by exactly one [`Publisher`] at a time, and the
//! operations everyone else uses to read it.
//!
//! A publisher turns FLV tag bodies into [`Frame`]s, feeds the stream's LL-HLS packager and its
//! health figures, and wakes everyone waiting on the stream (blocking playlist reloads, preload
//! hints) whenever a part completes. While WebRTC sessions watch the stream it also broadcasts
//! the video frames and the audio transcoded once to Opus (never per viewer). While restream
//! destinations follow it, it broadcasts the FLV tags as published (H.264/AAC passed through) with
//! the stream's corrected decode times ([`Stream::restream_feed`], [`FlvTag`]). The publisher's
//! timestamps go through a [`Timeline`] that keeps them sane (jumps rebased, floods dropped).
//!
//! Dropping the publisher ends the broadcast: at once after a clean unpublish, End stream or an
//! expired key; after a **grace period** ([`Registry::set_publish_grace`]) when the connection
//! dropped ([`EndReason::Dropped`]: an error, a panic in the session, EOF without unpublish).
//! During the grace period the stream stays listed and served as it was (playlists, blocking
//! reloads, WebRTC sessions on the same broadcast, uptime), marked reconnecting; a publish of
//! the same name within it continues the same broadcast: the same packager and playlist, a
//! discontinuity, and decode times that go on from where they were (the new publisher's clock is
//! rebased). Without a return, [`Registry::expire`] ends it (the engine calls it when the grace
//! period is over).
//!
//! The live state of a stream is private: readers go through its operations — [`Stream::playlist`]
//! (with the blocking-reload decision), [`Stream::media`] (init, part and segment bodies),
//! [`Stream::webrtc_feed`], [`Stream::figures`] — and the waiting versions on the [`Registry`]
//! ([`Registry::serve_playlist`], [`Registry::serve_media`]). Each takes the stream's lock only
//! to clone `Bytes`/`Arc`s out (a segment is the sequence of its parts' buffers, never copied), so
//! the publisher never waits behind an HTTP request. Time comes in as arguments ([`Now`]): the
//! publisher and the operations read no clock, so tests run on a virtual one.
//!
//! The registry also holds the Go live gate (with `require_go_live`, a stream accepts a publisher
//! only after Go live; End stream disconnects it) and sends [`EngineEvent`]s as publishes start,
//! go live and end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use onair_hls::{HlsConfig, Lookup, Packager, Position, Reload, Resource};
use onair_media::{AacConfig, AudioTag, AvcConfig, Frame, MediaError, Track, VideoTag};
use onair_webrtc::{Sample, StreamTracks};
use tokio::sync::{broadcast, watch};

use crate::events::{EndReason, EngineEvent};
use crate::stats::{Snapshot, Stats};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("stream {0:?} is already live (another publisher holds it)")]
    AlreadyLive(String),
    #[error("stream {0:?} is not live in OnAir: press Go live first")]
    NotArmed(String),
}

/// Why a playlist or media request cannot be answered (yet).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServeError {
    #[error("stream {0:?} is offline")]
    Offline(String),
    /// The resource never existed, no longer exists (older than the window, an earlier
    /// publish) or never will.
    #[error("no such playlist, part or segment")]
    Gone,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("the requested part did not appear in time")]
    Timeout,
}

/// A moment as the caller's clock tells it: monotonic for durations, Unix time for what others
/// see (the playlists' program date-time, signed-URL expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The system clocks: for the I/O shells (servers), never for the state machines.
    pub fn system() -> Now {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Now { instant: Instant::now(), unix_ms }
    }

    /// This moment moved on by `d` (both clocks).
    pub fn after(self, d: Duration) -> Now {
        Now { instant: self.instant + d, unix_ms: self.unix_ms + d.as_millis() as u64 }
    }
}

/// Engine events kept for a slow subscriber before it starts missing some.
const EVENT_BUFFER: usize = 1024;

/// All streams by name.
pub struct Registry {
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    hls: HlsConfig,
    /// How long a dropped publisher's stream waits for it to come back (ms; 0: not at all).
    grace_ms: std::sync::atomic::AtomicU64,
    /// Publishes need Go live first (the tray app); otherwise a valid signed key suffices.
    require_go_live: AtomicBool,
    armed: Mutex<HashSet<String>>,
    events: broadcast::Sender<EngineEvent>,
}

/// One stream: offline, or live with a packager.
pub struct Stream {
    name: String,
    live: Mutex<Option<Live>>,
    /// Bumped whenever a part completes or the stream goes on/off air.
    changed: watch::Sender<u64>,
    /// HLS players by client key (address + user agent), with when they last loaded a playlist,
    /// and when expired entries were last dropped.
    hls_viewers: Mutex<(HashMap<u64, Instant>, Option<Instant>)>,
    /// Turns true when the streamer ends the stream: the publisher's connection closes.
    stop: watch::Sender<bool>,
}

/// A player that has not reloaded its playlist for this long is no longer counted.
const HLS_VIEWER_TIMEOUT: Duration = Duration::from_secs(10);

/// HLS players counted per stream at most: the map is keyed by what clients send (address and
/// user agent), so one client varying its user agent could otherwise grow it with every request
/// for a timeout period. Past this many the count stays at the cap (~2 MB of map).
const MAX_HLS_VIEWERS: usize = 50_000;

/// The state of a live stream (one broadcast: a publisher, and the ones continuing it after a
/// drop); only the hub sees it.
struct Live {
    session: String,
    packager: Packager,
    stats: Stats,
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    started_at: Instant,
    /// Media for WebRTC sessions; closed when the publish ends.
    media: broadcast::Sender<Arc<Sample>>,
    /// Whether the audio can be transcoded to Opus for WebRTC.
    opus: bool,
    /// FLV tags for restream destinations; closed when the broadcast ends.
    restream: broadcast::Sender<Arc<FlvTag>>,
    /// The current sequence headers (FLV tag bodies), sent first to each new destination.
    headers: SequenceHeaders,
    /// The publisher dropped: the stream waits for it until this moment.
    reconnecting: Option<Instant>,
    /// The dropped publisher's timeline, for the one that comes back.
    timeline: Option<Timeline>,
}

/// Samples buffered per WebRTC session before it counts as lagging (≈ 4 s at 30 fps + Opus).
const MEDIA_CAPACITY: usize = 320;

/// FLV tags buffered per restream destination before it counts as lagging (≈ 6 s of 30 fps video
/// with AAC at 48 kHz); each destination also bounds its own queue in bytes (`crate::restream`).
const RESTREAM_CAPACITY: usize = 512;

/// One FLV tag as published, for restream destinations: the body is passed through untouched
/// (H.264 with its composition time, AAC), the timestamp is the stream's corrected decode time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    pub kind: TagKind,
    /// Decode time on the stream's timeline (ms; monotonic per track, jumps rebased).
    pub dts: u64,
    /// A video keyframe (audio frames and sequence headers are `false`).
    pub keyframe: bool,
    /// A sequence header (AVC decoder configuration or AAC AudioSpecificConfig).
    pub header: bool,
    /// The FLV VIDEODATA/AUDIODATA body.
    pub body: Bytes,
}

/// The track of an [`FlvTag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Video,
    Audio,
}

/// The sequence headers in force (FLV tag bodies), for a destination that starts mid-stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceHeaders {
    pub video: Option<Bytes>,
    pub audio: Option<Bytes>,
}

/// Which playlist a player asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// `llhls.m3u8`: parts, preload hint, blocking reload.
    LowLatency,
    /// `playlist.m3u8`: complete segments only.
    Plain,
}

/// A playlist request: which one, the blocking-reload parameters, and who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistRequest {
    pub kind: PlaylistKind,
    /// `_HLS_msn` (blocking reload, low-latency playlist only).
    pub msn: Option<u64>,
    /// `_HLS_part` (needs `msn`).
    pub part: Option<u32>,
    /// Tells HLS players apart for the viewer count (e.g. a hash of address and user agent).
    pub viewer: u64,
}

/// What the status API shows of a live stream, read in one short critical section.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Playable: an init segment and at least one part.
    pub playable: bool,
    pub session: String,
    pub video: Option<AvcConfig>,
    pub audio: Option<AacConfig>,
    pub stats: Snapshot,
    pub uptime: Duration,
    /// The last complete part.
    pub position: Option<Position>,
    /// Media bytes the stream holds (its packager's window and open part).
    pub held_bytes: usize,
    /// The publisher dropped and the stream waits for it to come back (the grace period).
    pub reconnecting: bool,
}

impl Registry {
    pub fn new(hls: HlsConfig) -> Arc<Self> {
        Arc::new(Self {
            streams: Mutex::new(HashMap::new()),
            hls,
            grace_ms: Default::default(),
            require_go_live: AtomicBool::new(false),
            armed: Mutex::new(HashSet::new()),
            events: broadcast::channel(EVENT_BUFFER).0,
        })
    }

    /// Engine events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.events.subscribe()
    }

    /// Sends an event to every subscriber (none listening is fine).
    pub fn emit(&self, event: EngineEvent) {
        let _ = self.events.send(event);
    }

    /// How long the stream of a publisher whose connection dropped waits for it to come back
    /// (zero, the default: it ends at once).
    pub fn set_publish_grace(&self, grace: Duration) {
        self.grace_ms.store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    /// Whether publishes need Go live first.
    pub fn set_require_go_live(&self, required: bool) {
        self.require_go_live.store(required, Ordering::Relaxed);
    }

    pub fn requires_go_live(&self) -> bool {
        self.require_go_live.load(Ordering::Relaxed)
    }

    fn armed_set(&self) -> MutexGuard<'_, HashSet<String>> {
        self.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `name` may be published now.
    pub fn is_armed(&self, name: &str) -> bool {
        !self.requires_go_live() || self.armed_set().contains(name)
    }

    /// Go live (`true`): publishes of `name` are accepted. End stream (`false`): its publisher
    /// is disconnected and new ones are refused until the next Go live (with `require_go_live`).
    /// Answers whether anything changed.
    pub fn set_armed(&self, name: &str, armed: bool) -> bool {
        let changed = if armed { self.armed_set().insert(name.into()) } else { self.armed_set().remove(name) };
        if !armed && let Some(stream) = self.get(name) {
            stream.stop.send_replace(true);
            if stream.is_reconnecting() {
                self.end(&stream, EndReason::EndedByStreamer);
            }
        }
        if changed {
            self.emit(EngineEvent::Armed { stream: name.into(), armed });
        }
        changed
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.map().get(name).cloned()
    }

    /// Live streams, sorted by name.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<_> = self.map().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Claims `name` for a new publisher; refused while another publisher holds it. A stream
    /// waiting for its dropped publisher is continued.
    pub fn publish(self: &Arc<Self>, name: &str, remote: SocketAddr, now: Now) -> Result<Publisher, HubError> {
        let mut map = self.map();
        let existing = map.get(name).cloned();
        if existing.as_ref().is_some_and(|s| !s.is_reconnecting()) {
            return Err(HubError::AlreadyLive(name.into()));
        }
        if !self.is_armed(name) {
            return Err(HubError::NotArmed(name.into()));
        }
        if let Some(stream) = existing {
            drop(map);
            return Ok(self.resume(stream, remote, now));
        }
        let session = new_session_id();
        let (media, _) = broadcast::channel(MEDIA_CAPACITY);
        let (restream, _) = broadcast::channel(RESTREAM_CAPACITY);
        let live = Live {
            media: media.clone(),
            opus: false,
            restream: restream.clone(),
            headers: SequenceHeaders::default(),
            packager: Packager::new(self.hls, &session),
            session,
            stats: Stats::default(),
            video: None,
            audio: None,
            started_at: now.instant,
            reconnecting: None,
            timeline: None,
        };
        let stream = Arc::new(Stream {
            name: name.into(),
            live: Mutex::new(Some(live)),
            changed: watch::Sender::new(0),
            hls_viewers: Mutex::new((HashMap::new(), None)),
            stop: watch::Sender::new(false),
        });
        map.insert(name.into(), stream.clone());
        drop(map);
        self.emit(EngineEvent::PublishStarted { stream: name.into(), remote: remote.to_string() });
        Ok(Publisher::new(self.clone(), stream, Timeline::default(), (media, restream), None, now))
    }

    /// A publisher continuing `stream` after its last one dropped.
    fn resume(self: &Arc<Self>, stream: Arc<Stream>, remote: SocketAddr, now: Now) -> Publisher {
        let resumed = stream.lock().as_mut().map(|live| {
            live.reconnecting = None;
            live.packager.discontinuity();
            let feeds = (live.media.clone(), live.restream.clone());
            (live.timeline.take().unwrap_or_default(), feeds, live.audio.clone())
        });
        let (timeline, feeds, audio) = resumed.unwrap_or_else(|| {
            let feeds = (broadcast::channel(MEDIA_CAPACITY).0, broadcast::channel(RESTREAM_CAPACITY).0);
            (Timeline::default(), feeds, None)
        });
        stream.notify();
        tracing::info!(stream = %stream.name, %remote, "the publisher is back: the broadcast goes on (a discontinuity)");
        self.emit(EngineEvent::PublishStarted { stream: stream.name.clone(), remote: remote.to_string() });
        let transcoder = audio.and_then(|cfg| onair_audio::Transcoder::new(&cfg).ok());
        let mut publisher = Publisher::new(self.clone(), stream, timeline, feeds, transcoder, now);
        // WebRTC viewers get its video from its first keyframe on (the packager waits for it too).
        publisher.video_gap = true;
        publisher
    }

    /// Ends `stream`'s broadcast: offline for everyone (playlists end, WebRTC sessions close).
    fn end(&self, stream: &Arc<Stream>, reason: EndReason) {
        {
            let mut map = self.map();
            if map.get(&stream.name).is_some_and(|s| Arc::ptr_eq(s, stream)) {
                map.remove(&stream.name);
            }
        }
        if let Some(mut live) = stream.lock().take() {
            live.packager.finish();
        }
        stream.notify();
        self.emit(EngineEvent::PublishEnded { stream: stream.name.clone(), reason });
    }

    /// Ends the broadcasts whose dropped publisher did not come back by `now`.
    pub fn expire(&self, now: Instant) {
        for stream in self.list() {
            if stream.lock().as_ref().and_then(|l| l.reconnecting).is_some_and(|deadline| deadline <= now) {
                tracing::info!(stream = %stream.name, "the publisher did not come back within the grace period: the broadcast ends");
                self.end(&stream, EndReason::Dropped);
            }
        }
    }

    /// A playlist, holding a blocking reload until the part it names exists (until `deadline`).
    /// Follows the stream across publishers: a waiter is answered when a new publish of the
    /// same name gets there.
    pub async fn serve_playlist(
        &self,
        name: &str,
        req: PlaylistRequest,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, ServeError> {
        loop {
            let stream = self.get(name).ok_or_else(|| ServeError::Offline(name.into()))?;
            let mut changed = stream.subscribe();
            if let Some(body) = stream.playlist(&req, Instant::now())? {
                return Ok(body);
            }
            wait(&mut changed, deadline).await?;
        }
    }

    /// `init.mp4`, a part or a segment of publish `session`, holding a request for the
    /// preload-hinted part or the segment in progress until it is complete (until `deadline`).
    /// The body is a sequence of buffers, back to back (a segment is its parts).
    pub async fn serve_media(
        &self,
        name: &str,
        session: &str,
        resource: Resource,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Bytes>, ServeError> {
        loop {
            let stream = self.get(name).ok_or_else(|| ServeError::Offline(name.into()))?;
            let mut changed = stream.subscribe();
            if let Some(body) = stream.media(session, resource)? {
                return Ok(body);
            }
            wait(&mut changed, deadline).await?;
        }
    }
}

/// Until the stream changes, or [`ServeError::Timeout`] at `deadline`.
async fn wait(changed: &mut watch::Receiver<u64>, deadline: tokio::time::Instant) -> Result<(), ServeError> {
    match tokio::time::timeout_at(deadline, changed.changed()).await {
        Ok(_) => Ok(()),
        Err(_) => Err(ServeError::Timeout),
    }
}

impl Stream {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn offline(&self) -> ServeError {
        ServeError::Offline(self.name.clone())
    }

    /// A receiver that sees every later change of the stream.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The publisher dropped and the stream waits for it to come back.
    pub fn is_reconnecting(&self) -> bool {
        self.lock().as_ref().is_some_and(|l| l.reconnecting.is_some())
    }

    /// Whether viewers can play it: live, with an init segment and at least one part.
    pub fn is_playable(&self) -> bool {
        self.lock().as_ref().is_some_and(|l| l.packager.is_ready())
    }

    /// The playlist `req` asks for: `Ok(None)` while a blocking reload must wait for its part.
    /// A served playlist counts its player as a viewer at `now`.
    pub fn playlist(&self, req: &PlaylistRequest, now: Instant) -> Result<Option<Bytes>, ServeError> {
        if req.part.is_some() && req.msn.is_none() {
            return Err(ServeError::BadRequest("_HLS_part needs _HLS_msn"));
        }
        let body = {
            let guard = self.lock();
            let live = guard.as_ref().ok_or_else(|| self.offline())?;
            let p = &live.packager;
            let reload = match (req.kind, req.msn) {
                (PlaylistKind::LowLatency, Some(msn)) => p.blocking_reload(msn, req.part),
                _ if p.is_ready() => Reload::Ready,
                _ => return Err(self.offline()),
            };
            match reload {
                Reload::Ready => match req.kind {
                    PlaylistKind::LowLatency => p.llhls_playlist(),
                    PlaylistKind::Plain => p.hls_playlist(),
                },
                Reload::BadRequest(why) => return Err(ServeError::BadRequest(why)),
                Reload::Wait => return Ok(None),
            }
        };
        let body = body.ok_or_else(|| self.offline())?;
        self.touch_hls_viewer(req.viewer, now);
        Ok(Some(body))
    }

    /// The body of a resource of publish `session`: `Ok(None)` while it is pending (the
    /// preload-hinted part, the segment in progress). A segment is the sequence of its parts.
    pub fn media(&self, session: &str, resource: Resource) -> Result<Option<Vec<Bytes>>, ServeError> {
        let guard = self.lock();
        let Some(live) = guard.as_ref().filter(|l| l.session == session) else { return Err(ServeError::Gone) };
        let p = &live.packager;
        let found = match resource {
            Resource::Init(version) => p.init_segment(version).map_or(Lookup::Gone, |b| Lookup::Ready(vec![b])),
            Resource::Part(msn, part) => match p.part(msn, part) {
                Lookup::Ready(b) => Lookup::Ready(vec![b]),
                Lookup::Pending => Lookup::Pending,
                Lookup::Gone => Lookup::Gone,
            },
            Resource::Segment(msn) => p.segment(msn),
        };
        match found {
            Lookup::Ready(body) => Ok(Some(body)),
            Lookup::Pending => Ok(None),
            Lookup::Gone => Err(ServeError::Gone),
        }
    }

    /// What WebRTC players can receive and a receiver of its media from now on, once the stream
    /// is playable.
    pub fn webrtc_feed(&self) -> Option<(StreamTracks, broadcast::Receiver<Arc<Sample>>)> {
        let guard = self.lock();
        let live = guard.as_ref().filter(|l| l.packager.is_ready())?;
        Some((StreamTracks { video: live.video.clone(), audio: live.opus }, live.media.subscribe()))
    }

    /// The sequence headers in force and a receiver of the stream's FLV tags from now on, once the
    /// stream is playable (restream destinations). The receiver closes when the broadcast ends.
    pub fn restream_feed(&self) -> Option<(SequenceHeaders, broadcast::Receiver<Arc<FlvTag>>)> {
        let guard = self.lock();
        let live = guard.as_ref().filter(|l| l.packager.is_ready())?;
        Some((live.headers.clone(), live.restream.subscribe()))
    }

    /// The figures of the publish in progress (`None` when offline), as of `now`.
    pub fn figures(&self, now: Instant) -> Option<Figures> {
        let guard = self.lock();
        let live = guard.as_ref()?;
        Some(Figures {
            playable: live.packager.is_ready(),
            session: live.session.clone(),
            video: live.video.clone(),
            audio: live.audio.clone(),
            stats: live.stats.snapshot(),
            uptime: now.saturating_duration_since(live.started_at),
            position: live.packager.position(),
            held_bytes: live.packager.held_bytes(),
            reconnecting: live.reconnecting.is_some(),
        })
    }

    /// Records that the HLS player identified by `client` loaded a playlist at `now`.
    fn touch_hls_viewer(&self, client: u64, now: Instant) {
        let mut guard = self.hls_viewers.lock().unwrap_or_else(|p| p.into_inner());
        let (viewers, pruned) = &mut *guard;
        if viewers.len() < MAX_HLS_VIEWERS || viewers.contains_key(&client) {
            viewers.insert(client, now);
        }
        // Drop expired players at most once a timeout period: O(1) per request on average, even
        // with thousands of players (a per-request sweep made every playlist request O(players)).
        if pruned.is_none_or(|at| now.saturating_duration_since(at) >= HLS_VIEWER_TIMEOUT) {
            viewers.retain(|_, seen| now.saturating_duration_since(*seen) < HLS_VIEWER_TIMEOUT);
            *pruned = Some(now);
        }
    }

    /// Whether the HLS player identified by `client` loaded a playlist within the last 10 s (it
    /// is watching: the upload budget admitted it already).
    pub fn is_hls_viewer(&self, client: u64, now: Instant) -> bool {
        let guard = self.hls_viewers.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(&client).is_some_and(|seen| now.saturating_duration_since(*seen) < HLS_VIEWER_TIMEOUT)
    }

    /// HLS players seen within the last 10 s (one per address and user agent).
    pub fn hls_viewers(&self, now: Instant) -> usize {
        let guard = self.hls_viewers.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.values().filter(|seen| now.saturating_duration_since(**seen) < HLS_VIEWER_TIMEOUT).count()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that turns true when the streamer ends the stream (End stream).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The one publisher of a stream. Dropping it takes the stream offline.
pub struct Publisher {
    registry: Arc<Registry>,
    stream: Arc<Stream>,
    timeline: Timeline,
    /// A video frame was dropped: video is dropped up to the next keyframe (it cannot be decoded).
    video_gap: bool,
    /// When each kind of [`Anomaly`] was last logged (one line per kind per [`ANOMALY_LOG_EVERY`]).
    logged: [Option<Instant>; 3],
    bad_tags: u64,
    media: broadcast::Sender<Arc<Sample>>,
    restream: broadcast::Sender<Arc<FlvTag>>,
    transcoder: Option<onair_audio::Transcoder>,
    transcode_failures: u64,
    /// Reported when the publisher is dropped; a drop without a reason is a broken connection.
    end_reason: EndReason,
    /// The time of the latest tag (when a dropped connection's grace period starts).
    last_now: Now,
}

/// What a pushed tag amounted to, for the ingest's logging.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// First sight of B-frames in this publish.
    pub bframes_detected: bool,
    /// The publisher changed its video configuration mid-stream: a discontinuity in the same
    /// playlist (a new init segment), and the WebRTC sessions were ended (their players
    /// reconnect and negotiate the new parameters).
    pub codec_changed: bool,
    /// The stream just became playable.
    pub went_live: bool,
}

impl Publisher {
    fn new(
        registry: Arc<Registry>,
        stream: Arc<Stream>,
        timeline: Timeline,
        (media, restream): (broadcast::Sender<Arc<Sample>>, broadcast::Sender<Arc<FlvTag>>),
        transcoder: Option<onair_audio::Transcoder>,
        now: Now,
    ) -> Publisher {
        Publisher {
            registry,
            stream,
            timeline,
            video_gap: false,
            logged: [None; 3],
            bad_tags: 0,
            media,
            restream,
            transcoder,
            transcode_failures: 0,
            end_reason: EndReason::Dropped,
            last_now: now,
        }
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Why the publish ends, reported when the publisher is dropped (default: dropped).
    pub fn set_end_reason(&mut self, reason: EndReason) {
        self.end_reason = reason;
    }

    /// Tags that could not be parsed so far.
    pub fn bad_tags(&self) -> u64 {
        self.bad_tags
    }

    /// One FLV VIDEODATA body with its RTMP timestamp (ms, 32-bit, may wrap), arrived at `now`.
    pub fn video(&mut self, body: Bytes, timestamp: u32, now: Now) -> Result<Pushed, MediaError> {
        self.last_now = now;
        let original = body.clone();
        let tag = onair_media::parse_video_tag(body).inspect_err(|_| self.bad_tags += 1)?;
        match tag {
            VideoTag::Config(cfg) => {
                let (changed, fresh) = self
                    .with_live(|live| {
                        let changed = live.video.as_ref().is_some_and(|old| *old != cfg);
                        let fresh = live.video.as_ref() != Some(&cfg);
                        if fresh {
                            live.video = Some(cfg.clone());
                            live.headers.video = Some(original.clone());
                            live.packager.set_video_config(cfg);
                        }
                        (changed, fresh)
                    })
                    .unwrap_or((false, false));
                if fresh {
                    self.relay(TagKind::Video, self.timeline.latest(), false, true, original);
                }
                if changed {
                    // WebRTC sessions were set up for the old parameters (their SPS/PPS go before
                    // every keyframe): end them by replacing the broadcast channel; their players
                    // reconnect and negotiate the new ones.
                    let (media, _) = broadcast::channel(MEDIA_CAPACITY);
                    self.with_live(|live| live.media = media.clone());
                    self.media = media;
                    self.stream.notify();
                }
                Ok(Pushed { codec_changed: changed, ..Pushed::default() })
            }
            VideoTag::EndOfSequence => Ok(Pushed::default()),
            VideoTag::Frame { keyframe, composition_time_ms, data } => {
                let Some(dts) = self.admit(Track::Video, timestamp, keyframe, data.len(), now) else {
                    return Ok(Pushed::default());
                };
                self.relay(TagKind::Video, dts, keyframe, false, original);
                Ok(self.push(Frame { track: Track::Video, dts, cts: composition_time_ms, keyframe, data }, now))
            }
        }
    }

    /// One FLV AUDIODATA body with its RTMP timestamp, arrived at `now`.
    pub fn audio(&mut self, body: Bytes, timestamp: u32, now: Now) -> Result<Pushed, MediaError> {
        self.last_now = now;
        let original = body.clone();
        let tag = onair_media::parse_audio_tag(body).inspect_err(|_| self.bad_tags += 1)?;
        match tag {
            AudioTag::Config(cfg) => {
                let changed = self.with_live(|live| live.audio.as_ref() != Some(&cfg)).unwrap_or(false);
                if changed {
                    self.relay(TagKind::Audio, self.timeline.latest(), false, true, original.clone());
                    self.transcoder = match onair_audio::Transcoder::new(&cfg) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(stream = %self.stream.name, error = %e, "audio cannot be sent to WebRTC viewers");
                            None
                        }
                    };
                    let opus = self.transcoder.is_some();
                    self.with_live(|live| {
                        live.audio = Some(cfg.clone());
                        live.headers.audio = Some(original);
                        live.opus = opus;
                        live.packager.set_audio_config(cfg);
                    });
                }
                Ok(Pushed::default())
            }
            AudioTag::Frame(data) => {
                let Some(dts) = self.admit(Track::Audio, timestamp, true, data.len(), now) else {
                    return Ok(Pushed::default());
                };
                if self.media.receiver_count() > 0 {
                    self.transcode(&data, dts);
                }
                self.relay(TagKind::Audio, dts, false, false, original);
                Ok(self.push(Frame { track: Track::Audio, dts, cts: 0, keyframe: true, data }, now))
            }
        }
    }

    /// The decode time of a frame, or `None` when it is dropped: larger than a part may hold,
    /// one too many for its second of media time (see [`Timeline`]), or video that depends on a
    /// dropped frame. Anomalies are logged once per kind and [`ANOMALY_LOG_EVERY`].
    fn admit(&mut self, track: Track, timestamp: u32, keyframe: bool, len: usize, now: Now) -> Option<u64> {
        let video = track == Track::Video;
        let (dts, anomaly) = if len > self.registry.hls.max_part_bytes {
            (None, Some(Anomaly::Oversized { bytes: len }))
        } else {
            self.timeline.map(track, timestamp, now.instant)
        };
        if let Some(a) = anomaly {
            self.log_anomaly(a, now.instant);
        }
        let Some(dts) = dts else {
            self.video_gap |= video;
            return None;
        };
        if video {
            if self.video_gap && !keyframe {
                return None;
            }
            self.video_gap = false;
        }
        Some(dts)
    }

    fn log_anomaly(&mut self, anomaly: Anomaly, now: Instant) {
        let kind = match anomaly {
            Anomaly::Jump { .. } => 0,
            Anomaly::Flood => 1,
            Anomaly::Oversized { .. } => 2,
        };
        let last = &mut self.logged[kind];
        if last.is_some_and(|at| now.saturating_duration_since(at) < ANOMALY_LOG_EVERY) {
            return;
        }
        *last = Some(now);
        let stream = &self.stream.name;
        match anomaly {
            Anomaly::Jump { step_ms } => tracing::warn!(
                %stream, step_ms,
                "the publisher's clock jumped: its timestamps are shifted so the stream's timeline goes on (further jumps within a minute are not logged)"
            ),
            Anomaly::Flood => tracing::warn!(
                %stream,
                limit = MAX_FRAMES_PER_MEDIA_SECOND,
                "the publisher sends more frames per second of media time than any real stream (a frozen clock or a flood): frames beyond the limit are dropped (logged once a minute)"
            ),
            Anomaly::Oversized { bytes } => tracing::warn!(
                %stream, bytes,
                max = self.registry.hls.max_part_bytes,
                "the publisher sent a frame larger than hls.max_part_bytes: dropped, with the video up to the next keyframe (logged once a minute)"
            ),
        }
    }

    /// Sends a tag to the restream destinations following the stream (none: nothing to do).
    fn relay(&self, kind: TagKind, dts: u64, keyframe: bool, header: bool, body: Bytes) {
        if self.restream.receiver_count() > 0 {
            let _ = self.restream.send(Arc::new(FlvTag { kind, dts, keyframe, header, body }));
        }
    }

    /// AAC → Opus for WebRTC sessions: once per stream, outside the stream lock.
    fn transcode(&mut self, aac: &[u8], pts_ms: u64) {
        let Some(t) = &mut self.transcoder else { return };
        match t.push(aac, pts_ms) {
            Ok(packets) => {
                for p in packets {
                    let _ =
                        self.media.send(Arc::new(Sample::Opus { data: p.data, pts_ms: p.pts_ms, samples: p.samples }));
                }
            }
            Err(e) => {
                self.transcode_failures += 1;
                if self.transcode_failures == 1 {
                    tracing::warn!(stream = %self.stream.name, error = %e, "an audio frame could not be transcoded for WebRTC (logged once)");
                }
            }
        }
    }

    fn with_live<R>(&self, f: impl FnOnce(&mut Live) -> R) -> Option<R> {
        self.stream.lock().as_mut().map(f)
    }

    fn push(&mut self, frame: Frame, now: Now) -> Pushed {
        if frame.track == Track::Video && self.media.receiver_count() > 0 {
            let _ = self.media.send(Arc::new(Sample::Video(frame.clone())));
        }
        let wall = now.unix_ms;
        let mut notify = false;
        let pushed = self
            .with_live(|live| {
                let was_ready = live.packager.is_ready();
                let bframes_detected = live.stats.observe(&frame);
                let out = live.packager.push(frame, wall);
                notify = out.part_completed;
                Pushed { bframes_detected, went_live: !was_ready && live.packager.is_ready(), ..Pushed::default() }
            })
            .unwrap_or_default();
        if notify {
            self.stream.notify();
        }
        if pushed.went_live {
            self.registry.emit(EngineEvent::Live { stream: self.stream.name.clone() });
        }
        if pushed.bframes_detected {
            self.registry.emit(EngineEvent::Bframes { stream: self.stream.name.clone() });
        }
        pushed
    }
}

impl Drop for Publisher {
    /// Ends the broadcast, or after a dropped connection starts its grace period (see the
    /// module documentation).
    fn drop(&mut self) {
        let grace = self.registry.grace();
        let wait = self.end_reason == EndReason::Dropped && !grace.is_zero() && !*self.stream.stop.borrow();
        if wait {
            let deadline = self.last_now.instant + grace;
            let timeline = self.timeline.resumed();
            if self.with_live(|live| (live.reconnecting, live.timeline) = (Some(deadline), Some(timeline))).is_some() {
                tracing::info!(stream = %self.stream.name, grace_s = grace.as_secs_f64(), "the publisher dropped: the broadcast waits for it to come back");
                // The I/O shell's timer; without a runtime (tests) the caller calls `expire`.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let registry = self.registry.clone();
                    rt.spawn(async move {
                        tokio::time::sleep_until(deadline.into()).await;
                        registry.expire(Instant::now());
                    });
                }
                return;
            }
        }
        self.registry.end(&self.stream, self.end_reason);
    }
}

/// A track's timestamps stepping forward by more than this (ms) is a jump of the publisher's
/// clock, not a gap in its media.
const MAX_FORWARD_STEP_MS: u64 = 5_000;
/// A track's timestamps stepping back by more than this (ms) is a jump of the publisher's clock.
const MAX_BACKWARD_STEP_MS: u64 = 1_000;
/// More frames of one track within one second of media time than any real stream has (video
/// tops out at a few hundred frames per second, AAC at 96 kHz has 94): a frozen clock or a flood.
pub const MAX_FRAMES_PER_MEDIA_SECOND: u32 = 500;
/// Consecutive frames of one track at the same decode time beyond the first and this many more
/// are dropped: a frozen clock or a flood (real frames are at least a millisecond apart; one
/// repeat is allowed for a clock that jitters back by a millisecond, clamped to the last time).
const MAX_SAME_DTS: u32 = 2;
/// A wall-clock gap counted when the timeline is rebased is at most this (ms).
const MAX_REBASE_GAP_MS: u64 = 60_000;
/// How often one kind of publisher anomaly is logged at most.
const ANOMALY_LOG_EVERY: Duration = Duration::from_secs(60);

/// Something a publisher did that its stream had to correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anomaly {
    /// The timestamps jumped by `step_ms` (negative: back): the timeline was rebased.
    Jump { step_ms: i64 },
    /// Too many frames for their second of media time: this one was dropped.
    Flood,
    /// A frame larger than a part may hold: dropped.
    Oversized { bytes: usize },
}

/// A publisher's timestamps mapped to the stream's decode times (ms), kept sane whatever the
/// publisher's clock does. RTMP's 32-bit clock is unwrapped and each track kept monotonic; a
/// jump (a step forward by more than [`MAX_FORWARD_STEP_MS`] or back by more than
/// [`MAX_BACKWARD_STEP_MS`]) shifts every later timestamp so that the timeline goes on from the
/// latest decode time plus the wall-clock time that passed since the frame before (so no part,
/// segment or `EXT-X-TARGETDURATION` ever spans the jump, and WebRTC's RTP clock stays smooth);
/// frames beyond [`MAX_FRAMES_PER_MEDIA_SECOND`] of one track within one second of media time,
/// and beyond [`MAX_SAME_DTS`] in a row at the same decode time (a frozen clock gives an unbounded
/// number), are dropped. Pure: arrival times come in.
#[derive(Debug, Default, Clone)]
struct Timeline {
    clock: [Unwrap; 2],
    /// Added to the unwrapped timestamps.
    offset: i64,
    last: [Option<u64>; 2],
    last_arrival: Option<Instant>,
    /// Per track: the start of the current second of media time and the frames in it.
    second: [Option<(u64, u32)>; 2],
    /// Per track: consecutive frames at the same decode time.
    same: [u32; 2],
    /// The next frame continues the timeline whatever its timestamp (a returning publisher).
    rebase_next: bool,
}

impl Timeline {
    /// The latest decode time of either track (0 before the first frame).
    fn latest(&self) -> u64 {
        self.last[0].max(self.last[1]).unwrap_or(0)
    }

    /// The timeline for a publisher that continues this one's stream: its clock starts afresh
    /// and its first frame goes on from the latest decode time (plus the time that passed).
    fn resumed(&self) -> Timeline {
        Timeline { clock: Default::default(), rebase_next: true, same: [0; 2], ..self.clone() }
    }

    /// The decode time of a frame of `track` with RTMP timestamp `ts` arrived at `now` (`None`:
    /// drop it), and what had to be corrected.
    fn map(&mut self, track: Track, ts: u32, now: Instant) -> (Option<u64>, Option<Anomaly>) {
        let i = track as usize;
        let raw = i64::try_from(self.clock[i].unwrap(ts)).unwrap_or(i64::MAX);
        let mut dts = u64::try_from(raw.saturating_add(self.offset)).unwrap_or(0);
        let mut anomaly = None;
        // A jump is judged against the track's own last time; the timeline goes on from the
        // latest time of either track.
        let step = self.last[i].map(|last| (dts as i64).saturating_sub(last as i64));
        let jumped = step.is_some_and(|d| d > MAX_FORWARD_STEP_MS as i64 || d < -(MAX_BACKWARD_STEP_MS as i64));
        if let Some(latest) = self.last[0].max(self.last[1])
            && (jumped || self.rebase_next)
        {
            let gap = self.last_arrival.map_or(0, |at| now.saturating_duration_since(at).as_millis() as u64);
            let continued = latest.saturating_add(gap.clamp(1, MAX_REBASE_GAP_MS));
            self.offset = i64::try_from(continued).unwrap_or(i64::MAX).saturating_sub(raw);
            if jumped && !self.rebase_next {
                anomaly = step.map(|step_ms| Anomaly::Jump { step_ms });
            }
            self.rebase_next = false;
            dts = continued;
        }
        self.last_arrival = Some(now);
        let dts = self.last[i].map_or(dts, |l| dts.max(l));
        self.same[i] = if self.last[i] == Some(dts) { self.same[i].saturating_add(1) } else { 0 };
        self.last[i] = Some(dts);
        if self.same[i] >= MAX_SAME_DTS {
            return (None, Some(Anomaly::Flood));
        }
        let second = match self.second[i] {
            Some((start, n)) if dts < start.saturating_add(1000) => (start, n.saturating_add(1)),
            _ => (dts, 1),
        };
        self.second[i] = Some(second);
        if second.1 > MAX_FRAMES_PER_MEDIA_SECOND {
            return (None, Some(Anomaly::Flood));
        }
        (Some(dts), anomaly)
    }
}

/// Extends RTMP's 32-bit millisecond clock to 64 bits across wrap-arounds.
#[derive(Debug, Default, Clone, Copy)]
struct Unwrap {
    last: Option<u32>,
    high: u64,
}

impl Unwrap {
    fn unwrap(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last
            && ts < last
            && last - ts > u32::MAX / 2
        {
            self.high += 1 << 32;
        }
        self.last = Some(ts);
        self.high + u64::from(ts)
    }
}

fn new_session_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_unwraps() {
        let mut u = Unwrap::default();
        assert_eq!(u.unwrap(10), 10);
        assert_eq!(u.unwrap(u32::MAX - 5), u64::from(u32::MAX) - 5);
        assert_eq!(u.unwrap(3), (1u64 << 32) + 3);
        // A small step back is jitter, not a wrap.
        assert_eq!(u.unwrap(1), (1u64 << 32) + 1);
    }

    #[test]
    fn timeline_rebases_jumps_and_drops_floods() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = Timeline::default();
        assert_eq!(t.map(Track::Video, 1000, at(0)), (Some(1000), None));
        assert_eq!(t.map(Track::Audio, 1010, at(10)), (Some(1010), None));
        // An hour ahead, 33 ms later: the timeline goes on 33 ms after the latest time.
        let (dts, a) = t.map(Track::Video, 3_601_033, at(43));
        assert_eq!(dts, Some(1043));
        assert_eq!(a, Some(Anomaly::Jump { step_ms: 3_600_033 }));
        // The other track, on the new clock, follows without another jump.
        assert_eq!(t.map(Track::Audio, 3_601_040, at(50)), (Some(1050), None));
        // Five seconds back: rebased too.
        let (dts, a) = t.map(Track::Video, 3_596_076, at(76));
        assert_eq!(dts, Some(1076));
        assert!(matches!(a, Some(Anomaly::Jump { step_ms }) if step_ms < 0));
        // A gap under the limit is media, kept as it is.
        assert_eq!(t.map(Track::Video, 3_600_076, at(100)), (Some(5076), None));
        // A frozen clock: one repeat, then dropped.
        assert_eq!(t.map(Track::Video, 3_600_076, at(133)), (Some(5076), None));
        assert_eq!(t.map(Track::Video, 3_600_076, at(166)), (None, Some(Anomaly::Flood)));
        assert_eq!(t.map(Track::Video, 3_600_109, at(199)), (Some(5109), None));
        // A flood with increasing times: the frames beyond the limit in one second go.
        let mut t = Timeline::default();
        let admitted = (0..2000u32).filter(|i| t.map(Track::Audio, i / 2, at(0)).0.is_some()).count();
        assert_eq!(admitted, MAX_FRAMES_PER_MEDIA_SECOND as usize);
        // A returning publisher continues the timeline, whatever its first timestamp.
        let mut t = Timeline::default();
        t.map(Track::Video, 50_000, at(0));
        t.rebase_next = true;
        t.clock = Default::default();
        assert_eq!(t.map(Track::Video, 0, at(3000)), (Some(53_000), None));
        assert_eq!(t.map(Track::Video, 33, at(3033)), (Some(53_033), None));
    }

    #[test]
    fn second_publisher_is_refused_and_drop_frees_the_name() {
        let reg = Registry::new(HlsConfig::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let p = reg.publish("a", addr, Now::system()).unwrap();
        assert_eq!(reg.publish("a", addr, Now::system()).err(), Some(HubError::AlreadyLive("a".into())));
        let _b = reg.publish("b", addr, Now::system()).unwrap();
        assert_eq!(reg.list().len(), 2);
        let stream = p.stream().clone();
        let rx = stream.subscribe();
        drop(p);
        assert!(rx.has_changed().unwrap());
        assert!(stream.figures(Instant::now()).is_none());
        assert!(reg.get("a").is_none());
        assert!(reg.publish("a", addr, Now::system()).is_ok());
    }

    #[test]
    fn go_live_gate_and_events() {
        let reg = Registry::new(HlsConfig::default());
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut events = reg.subscribe();
        reg.set_require_go_live(true);
        assert_eq!(reg.publish("a", addr, Now::system()).err(), Some(HubError::NotArmed("a".into())));
        assert!(reg.set_armed("a", true));
        assert!(!reg.set_armed("a", true), "already armed");
        let mut p = reg.publish("a", addr, Now::system()).unwrap();
        let stop = p.stream().stop_signal();
        assert!(!*stop.borrow());
        // End stream: the publisher is told to stop and new publishes are refused.
        assert!(reg.set_armed("a", false));
        assert!(*stop.borrow());
        p.set_end_reason(EndReason::EndedByStreamer);
        drop(p);
        assert_eq!(reg.publish("a", addr, Now::system()).err(), Some(HubError::NotArmed("a".into())));
        let got: Vec<EngineEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                EngineEvent::Armed { stream: "a".into(), armed: true },
                EngineEvent::PublishStarted { stream: "a".into(), remote: addr.to_string() },
                EngineEvent::Armed { stream: "a".into(), armed: false },
                EngineEvent::PublishEnded { stream: "a".into(), reason: EndReason::EndedByStreamer },
            ]
        );
        // Without the gate any (signed) publish is accepted.
        reg.set_require_go_live(false);
        assert!(reg.publish("a", addr, Now::system()).is_ok());
    }

    #[test]
    fn hls_viewers_expire() {
        let reg = Registry::new(HlsConfig::default());
        let p = reg.publish("v", "127.0.0.1:1".parse().unwrap(), Now::system()).unwrap();
        let s = p.stream();
        let t0 = Instant::now();
        s.touch_hls_viewer(1, t0);
        s.touch_hls_viewer(2, t0);
        s.touch_hls_viewer(1, t0 + std::time::Duration::from_secs(5));
        assert_eq!(s.hls_viewers(t0 + std::time::Duration::from_secs(6)), 2);
        assert_eq!(s.hls_viewers(t0 + std::time::Duration::from_secs(12)), 1);
        assert_eq!(s.hls_viewers(t0 + std::time::Duration::from_secs(16)), 0);
        // Expired players are dropped (memory stays bounded), at most once per timeout period.
        for k in 100..1100 {
            s.touch_hls_viewer(k, t0 + std::time::Duration::from_secs(20));
        }
        s.touch_hls_viewer(7, t0 + std::time::Duration::from_secs(40));
        assert_eq!(s.hls_viewers.lock().unwrap().0.len(), 1);
        // Clients that vary what identifies them cannot grow the map past its cap.
        let t1 = t0 + std::time::Duration::from_secs(41);
        for k in 0..(MAX_HLS_VIEWERS as u64 + 1000) {
            s.touch_hls_viewer(1_000_000 + k, t1);
        }
        assert_eq!(s.hls_viewers(t1), MAX_HLS_VIEWERS);
    }

    fn capture() -> Vec<onair_media::flv::FlvTag> {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"
        ))
        .unwrap();
        onair_media::flv::read_flv(&file).unwrap()
    }

    /// Publishes the capture's tags in `range` (ms), each arriving at `start` + its timestamp.
    fn feed(p: &mut Publisher, tags: &[onair_media::flv::FlvTag], range: std::ops::Range<u32>, start: Now) {
        for t in tags.iter().filter(|t| range.contains(&t.timestamp_ms)) {
            let now = start.after(Duration::from_millis(u64::from(t.timestamp_ms)));
            match t.tag_type {
                9 => drop(p.video(t.body.clone(), t.timestamp_ms, now)),
                8 => drop(p.audio(t.body.clone(), t.timestamp_ms, now)),
                _ => {}
            }
        }
    }

    fn llhls(stream: &Stream, now: Instant) -> String {
        let ask = PlaylistRequest { kind: PlaylistKind::LowLatency, msn: None, part: None, viewer: 1 };
        String::from_utf8(stream.playlist(&ask, now).unwrap().unwrap().to_vec()).unwrap()
    }

    fn media_sequence(playlist: &str) -> u64 {
        playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap()
    }

    /// The decode times (ms) of the video samples in `rx` so far; panics if it closed.
    fn video_dts(rx: &mut broadcast::Receiver<Arc<Sample>>) -> Vec<u64> {
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(s) => {
                    if let Sample::Video(f) = &*s {
                        out.push(f.dts);
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return out,
                Err(e) => panic!("the WebRTC feed ended: {e:?}"),
            }
        }
    }

    fn closed(rx: &mut broadcast::Receiver<Arc<Sample>>) -> bool {
        loop {
            match rx.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(e) => return e == broadcast::error::TryRecvError::Closed,
            }
        }
    }

    #[test]
    fn a_dropped_publisher_that_returns_continues_the_broadcast() {
        let tags = capture();
        let reg = Registry::new(HlsConfig::default());
        reg.set_publish_grace(Duration::from_secs(10));
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut events = reg.subscribe();
        let t0 = Now::system();
        let mut p = reg.publish("g", addr, t0).unwrap();
        feed(&mut p, &tags, 0..6000, t0);
        let stream = p.stream().clone();
        let (_, mut rx) = stream.webrtc_feed().unwrap();
        let before = stream.figures(t0.after(Duration::from_secs(6)).instant).unwrap();
        let at_drop = llhls(&stream, t0.instant);
        feed(&mut p, &tags, 6000..7000, t0);
        let last_dts = *video_dts(&mut rx).last().unwrap();
        // The connection breaks (no unpublish): the stream stays, served and reconnecting.
        drop(p);
        let got = reg.get("g").unwrap();
        assert!(Arc::ptr_eq(&got, &stream));
        assert!(stream.figures(t0.instant).unwrap().reconnecting);
        assert!(!llhls(&stream, t0.instant).contains("#EXT-X-ENDLIST"));
        reg.expire(t0.after(Duration::from_millis(16_900)).instant);
        assert!(reg.get("g").is_some(), "within the grace period");
        // Another publisher of another name is no business of this stream's.
        assert!(reg.publish("other", addr, t0).is_ok());
        // Back 3 s later, its clock from 0.
        let t1 = t0.after(Duration::from_secs(10));
        let mut p = reg.publish("g", addr, t1).unwrap();
        assert!(Arc::ptr_eq(p.stream(), &stream), "the same stream");
        assert_eq!(reg.publish("g", addr, t1).err(), Some(HubError::AlreadyLive("g".into())));
        feed(&mut p, &tags, 0..6000, t1);
        let after = stream.figures(t1.after(Duration::from_secs(6)).instant).unwrap();
        assert_eq!(after.session, before.session, "the same playlist URIs");
        assert!(!after.reconnecting);
        assert!(after.position.unwrap().msn > before.position.unwrap().msn + 2);
        assert!(after.uptime >= Duration::from_secs(16), "uptime goes on: {:?}", after.uptime);
        let text = llhls(&stream, t1.instant);
        assert!(media_sequence(&text) >= media_sequence(&at_drop));
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        assert!(!text.contains("init.1.mp4"), "the same configuration: the same init segment");
        // WebRTC sessions kept their feed; decode times went on from before the drop, plus the
        // time the publisher was away.
        let dts = video_dts(&mut rx);
        assert!(dts.len() > 100, "{}", dts.len());
        assert!(dts[0] >= last_dts + 2_900 && dts[0] <= last_dts + 3_100, "{last_dts} then {}", dts[0]);
        assert!(dts.windows(2).all(|w| w[1] >= w[0]));
        // One broadcast: no end event.
        let got: Vec<EngineEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert!(!got.iter().any(|e| matches!(e, EngineEvent::PublishEnded { stream, .. } if stream == "g")), "{got:?}");
        assert_eq!(got.iter().filter(|e| matches!(e, EngineEvent::Live { .. })).count(), 1, "{got:?}");
        // A clean unpublish ends it at once, whatever the grace period.
        p.set_end_reason(EndReason::Finished);
        drop(p);
        assert!(reg.get("g").is_none());
        assert!(closed(&mut rx));
        assert!(matches!(events.try_recv(), Ok(EngineEvent::PublishEnded { reason: EndReason::Finished, .. })));
    }

    #[test]
    fn a_dropped_publisher_that_does_not_return_ends_after_the_grace_period() {
        let tags = capture();
        let reg = Registry::new(HlsConfig::default());
        reg.set_publish_grace(Duration::from_secs(10));
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let t0 = Now::system();
        let mut p = reg.publish("g", addr, t0).unwrap();
        feed(&mut p, &tags, 0..4000, t0);
        let stream = p.stream().clone();
        let (_, mut rx) = stream.webrtc_feed().unwrap();
        let mut events = reg.subscribe();
        drop(p);
        reg.expire(t0.after(Duration::from_millis(13_900)).instant);
        assert!(reg.get("g").is_some());
        assert!(events.try_recv().is_err());
        reg.expire(t0.after(Duration::from_millis(14_000)).instant);
        assert!(reg.get("g").is_none());
        assert!(stream.figures(t0.instant).is_none());
        assert!(closed(&mut rx));
        assert_eq!(
            events.try_recv().unwrap(),
            EngineEvent::PublishEnded { stream: "g".into(), reason: EndReason::Dropped }
        );
        // A new publish is a new broadcast.
        let p = reg.publish("g", addr, t0).unwrap();
        assert!(!Arc::ptr_eq(p.stream(), &stream));
    }

    #[test]
    fn end_stream_during_the_grace_period_ends_it_at_once() {
        let tags = capture();
        let reg = Registry::new(HlsConfig::default());
        reg.set_publish_grace(Duration::from_secs(10));
        reg.set_require_go_live(true);
        reg.set_armed("g", true);
        let t0 = Now::system();
        let mut p = reg.publish("g", "127.0.0.1:5000".parse().unwrap(), t0).unwrap();
        feed(&mut p, &tags, 0..3000, t0);
        drop(p);
        assert!(reg.get("g").is_some());
        let mut events = reg.subscribe();
        reg.set_armed("g", false);
        assert!(reg.get("g").is_none());
        let got: Vec<EngineEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert!(got.contains(&EngineEvent::PublishEnded { stream: "g".into(), reason: EndReason::EndedByStreamer }));
        // Without a grace period a drop ends the broadcast at once (the default).
        let reg = Registry::new(HlsConfig::default());
        let p = reg.publish("g", "127.0.0.1:5000".parse().unwrap(), t0).unwrap();
        drop(p);
        assert!(reg.get("g").is_none());
    }

    #[test]
    fn codec_change_is_a_discontinuity_and_ends_webrtc_sessions() {
        let tags = capture();
        let reg = Registry::new(HlsConfig::default());
        let t0 = Now::system();
        let mut p = reg.publish("c", "127.0.0.1:1".parse().unwrap(), t0).unwrap();
        feed(&mut p, &tags, 0..3000, t0);
        let (tracks, mut rx) = p.stream().webrtc_feed().unwrap();
        assert_eq!(tracks.video.as_ref().unwrap().width, 640);
        assert!(tracks.audio, "AAC-LC is transcoded to Opus");
        let session = p.stream().figures(Instant::now()).unwrap().session;
        // A different decoder configuration arrives mid-stream (here: the record's level byte;
        // FLV header 0x17 0x00 + 3 bytes, then version, profile, compatibility, level).
        let mut other = tags.iter().find(|t| t.tag_type == 9).unwrap().body.to_vec();
        other[8] ^= 0x01;
        let r = p.video(Bytes::from(other), 3000, t0.after(Duration::from_secs(3))).unwrap();
        assert!(r.codec_changed);
        feed(&mut p, &tags, 3000..8000, t0);
        let f = p.stream().figures(Instant::now()).unwrap();
        assert_eq!(f.session, session, "the same playlist");
        let text = llhls(p.stream(), Instant::now());
        assert!(text.contains(&format!("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"{session}/init.1.mp4\"\n")), "{text}");
        assert!(p.stream().media(&session, Resource::Init(1)).unwrap().is_some());
        assert!(p.stream().media(&session, Resource::Init(0)).unwrap().is_some(), "still listed");
        // The old WebRTC feed is closed once its buffered samples are read.
        assert!(closed(&mut rx));
    }

    #[test]
    fn restream_feed_has_the_headers_and_the_tags_as_published_on_the_stream_timeline() {
        let tags = capture();
        let reg = Registry::new(HlsConfig::default());
        let t0 = Now::system();
        let mut p = reg.publish("r", "127.0.0.1:1".parse().unwrap(), t0).unwrap();
        assert!(p.stream().restream_feed().is_none(), "not playable yet");
        feed(&mut p, &tags, 0..3000, t0);
        let (headers, mut rx) = p.stream().restream_feed().unwrap();
        let config = |kind| tags.iter().find(|t| t.tag_type == kind && t.body.get(1) == Some(&0)).unwrap().body.clone();
        assert_eq!(headers.video, Some(config(9)));
        assert_eq!(headers.audio, Some(config(8)));
        feed(&mut p, &tags, 3000..6000, t0);
        let got: Vec<Arc<FlvTag>> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let sent: Vec<&onair_media::flv::FlvTag> =
            tags.iter().filter(|t| (3000..6000).contains(&t.timestamp_ms) && matches!(t.tag_type, 8 | 9)).collect();
        assert_eq!(got.len(), sent.len());
        for (g, t) in got.iter().zip(&sent) {
            assert_eq!(g.body, t.body, "passed through untouched");
            assert_eq!(g.kind, if t.tag_type == 9 { TagKind::Video } else { TagKind::Audio });
            assert_eq!(g.dts, u64::from(t.timestamp_ms), "a clean clock maps to itself");
            assert_eq!(g.keyframe, t.tag_type == 9 && t.body[0] >> 4 == 1);
            assert!(!g.header);
        }
        assert!(got.iter().any(|g| g.keyframe));
        // A new decoder configuration goes through the feed too, marked as a header.
        let mut other = config(9).to_vec();
        other[8] ^= 0x01;
        p.video(Bytes::from(other.clone()), 6000, t0.after(Duration::from_secs(6))).unwrap();
        let h = rx.try_recv().unwrap();
        assert!(h.header && h.kind == TagKind::Video && h.body == other);
        // The broadcast ends: the feed closes.
        p.set_end_reason(EndReason::Finished);
        drop(p);
        assert_eq!(rx.try_recv().unwrap_err(), broadcast::error::TryRecvError::Closed);
    }

    #[test]
    fn garbage_tags_are_errors_not_panics() {
        let reg = Registry::new(HlsConfig::default());
        let mut p = reg.publish("g", "127.0.0.1:1".parse().unwrap(), Now::system()).unwrap();
        for body in [&b""[..], b"\x17", b"\x17\x00\x00\x00\x00\x01", b"\x27\x01\x00", b"\xaf", b"\x2f\x01"] {
            let _ = p.video(Bytes::copy_from_slice(body), 0, Now::system());
            let _ = p.audio(Bytes::copy_from_slice(body), 0, Now::system());
        }
        assert!(p.bad_tags() > 0);
    }
}
