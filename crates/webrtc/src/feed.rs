//! Per-stream feeders: one task per live stream (not one per viewer) reads the hub's broadcast
//! of samples, makes each sample into RTP payloads once ([`crate::packetize`]) and hands the
//! shared unit to every shard that has sessions of the stream; the shards stamp each session's
//! headers and encrypt.
//!
//! A shard whose media queue is full misses that unit (counted in its `media_dropped`) and its
//! next unit carries `gap`, so its sessions' video waits for the next keyframe; the other shards
//! are not held up. A feeder that lags behind the broadcast (or meets a malformed access unit)
//! flags a gap to every shard. It ends when the broadcast closes (its shards end the stream's
//! sessions) or when no session of its stream is left.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::debug;

use crate::packetize::{AudioTimeline, MediaUnit, VideoPayloader};
use crate::shard::Counters;
use crate::{Sample, StreamTracks, WhepError};

/// What a feeder hands to a shard.
#[derive(Debug)]
pub(crate) enum FeedMsg {
    /// A unit for the shard's sessions of `feed`; `gap`: this shard missed units before it.
    Media { feed: u64, gap: bool, unit: Arc<MediaUnit> },
    /// The stream ended: its sessions end.
    Ended { feed: u64 },
}

/// Sessions of one feed on each shard (the shards decrement as sessions end).
#[derive(Debug)]
pub(crate) struct Subscribers(Vec<AtomicUsize>);

impl Subscribers {
    pub(crate) fn new(shards: usize) -> Subscribers {
        Subscribers((0..shards).map(|_| AtomicUsize::new(0)).collect())
    }

    pub fn add(&self, shard: usize) {
        self.0[shard].fetch_add(1, Relaxed);
    }

    pub fn remove(&self, shard: usize) {
        let _ = self.0[shard].fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    pub(crate) fn on(&self, shard: usize) -> bool {
        self.0[shard].load(Relaxed) > 0
    }

    fn none(&self) -> bool {
        self.0.iter().all(|n| n.load(Relaxed) == 0)
    }
}

/// A session's place in a feed.
#[derive(Debug, Clone)]
pub(crate) struct Attached {
    pub feed: u64,
    pub subscribers: Arc<Subscribers>,
}

struct Join {
    shard: usize,
    media: broadcast::Receiver<Arc<Sample>>,
    /// `Err` gives the receiver back: it is another channel (the stream was published again).
    reply: oneshot::Sender<Result<Arc<Subscribers>, broadcast::Receiver<Arc<Sample>>>>,
}

#[derive(Clone)]
struct Handle {
    id: u64,
    joins: mpsc::Sender<Join>,
}

/// The live feeders, by stream name.
pub(crate) struct Feeds {
    shards: Arc<[mpsc::Sender<FeedMsg>]>,
    counters: Arc<[Arc<Counters>]>,
    by_stream: Arc<Mutex<HashMap<String, Handle>>>,
    next_id: AtomicU64,
    /// Samples feeders skipped because they lagged behind the broadcast.
    pub lagged_samples: Arc<AtomicU64>,
}

impl Feeds {
    pub fn new(shards: Arc<[mpsc::Sender<FeedMsg>]>, counters: Arc<[Arc<Counters>]>) -> Feeds {
        Feeds {
            shards,
            counters,
            by_stream: Arc::default(),
            next_id: AtomicU64::new(0),
            lagged_samples: Arc::default(),
        }
    }

    /// Counts a new session of `stream` on `shard` in the stream's feeder, starting one if the
    /// stream has none (or only one of an earlier publish: `media` is a different channel).
    pub async fn attach(
        &self,
        stream: &str,
        shard: usize,
        tracks: &StreamTracks,
        mut media: broadcast::Receiver<Arc<Sample>>,
    ) -> Result<Attached, WhepError> {
        let existing = self.lock().get(stream).cloned();
        if let Some(handle) = existing {
            let (reply, replied) = oneshot::channel();
            match handle.joins.send(Join { shard, media, reply }).await {
                Ok(()) => match replied.await {
                    Ok(Ok(subscribers)) => return Ok(Attached { feed: handle.id, subscribers }),
                    Ok(Err(rx)) => media = rx,
                    Err(_) => return Err(WhepError::Internal("the stream's feeder stopped".into())),
                },
                Err(mpsc::error::SendError(join)) => media = join.media,
            }
        }
        if media.is_closed() {
            return Err(WhepError::Offline);
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let subscribers = Arc::new(Subscribers::new(self.shards.len()));
        subscribers.add(shard);
        let (joins, joins_rx) = mpsc::channel(16);
        self.lock().insert(stream.to_owned(), Handle { id, joins });
        let feeder = Feeder {
            id,
            stream: stream.to_owned(),
            media,
            joins: joins_rx,
            subscribers: subscribers.clone(),
            shards: self.shards.clone(),
            counters: self.counters.clone(),
            registry: self.by_stream.clone(),
            lagged_samples: self.lagged_samples.clone(),
            video: tracks.video.as_ref().map(VideoPayloader::new),
            audio: AudioTimeline::default(),
            gap: vec![false; self.shards.len()],
        };
        tokio::spawn(feeder.run());
        Ok(Attached { feed: id, subscribers })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.by_stream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Feeder {
    id: u64,
    stream: String,
    media: broadcast::Receiver<Arc<Sample>>,
    joins: mpsc::Receiver<Join>,
    subscribers: Arc<Subscribers>,
    shards: Arc<[mpsc::Sender<FeedMsg>]>,
    counters: Arc<[Arc<Counters>]>,
    registry: Arc<Mutex<HashMap<String, Handle>>>,
    lagged_samples: Arc<AtomicU64>,
    video: Option<VideoPayloader>,
    audio: AudioTimeline,
    /// Per shard: it missed a unit, so its next one carries `gap`.
    gap: Vec<bool>,
}

impl Feeder {
    async fn run(mut self) {
        loop {
            let received = tokio::select! {
                biased;
                Some(join) = self.joins.recv() => {
                    self.join(join);
                    continue;
                }
                received = self.media.recv() => received,
            };
            match received {
                Ok(sample) => {
                    if let Some(unit) = self.unit(&sample) {
                        self.fan_out(Arc::new(unit));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged_samples.fetch_add(n, Relaxed);
                    debug!("WebRTC: the feeder of {:?} lagged {n} samples: video waits for a keyframe", self.stream);
                    self.gap.fill(true);
                    self.audio.resync();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.stop();
                    for (shard, tx) in self.shards.iter().enumerate() {
                        if self.subscribers.on(shard) {
                            let _ = tx.send(FeedMsg::Ended { feed: self.id }).await;
                        }
                    }
                    self.refuse_joins();
                    return;
                }
            }
            if self.subscribers.none() || self.shards.iter().all(|s| s.is_closed()) {
                // Out of the registry first, so no new join can find it; a join already queued
                // gets its receiver back and starts a new feeder.
                self.stop();
                self.refuse_joins();
                return;
            }
        }
    }

    fn join(&mut self, join: Join) {
        if join.media.same_channel(&self.media) {
            self.subscribers.add(join.shard);
            let _ = join.reply.send(Ok(self.subscribers.clone()));
        } else {
            let _ = join.reply.send(Err(join.media));
        }
    }

    fn unit(&mut self, sample: &Sample) -> Option<MediaUnit> {
        match sample {
            Sample::Video(frame) => {
                let unit = self.video.as_mut()?.push(frame);
                if unit.is_none() {
                    debug!("WebRTC: {:?}: malformed access unit dropped", self.stream);
                    self.gap.fill(true);
                }
                unit
            }
            Sample::Opus { data, pts_ms, samples } => self.audio.push(data, *pts_ms, *samples),
        }
    }

    /// Hands `unit` to every shard with sessions of the stream, never waiting for one.
    fn fan_out(&mut self, unit: Arc<MediaUnit>) {
        for (shard, tx) in self.shards.iter().enumerate() {
            if !self.subscribers.on(shard) {
                self.gap[shard] = false;
                continue;
            }
            let msg = FeedMsg::Media { feed: self.id, gap: self.gap[shard], unit: unit.clone() };
            match tx.try_send(msg) {
                Ok(()) => self.gap[shard] = false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.gap[shard] = true;
                    self.counters[shard].media_dropped.fetch_add(1, Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Leaves the registry (if it is still this feeder there).
    fn stop(&self) {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if registry.get(&self.stream).is_some_and(|h| h.id == self.id) {
            registry.remove(&self.stream);
        }
    }

    /// No more joins: each waiting one gets its receiver back (and starts a new feeder).
    fn refuse_joins(&mut self) {
        self.joins.close();
        while let Ok(join) = self.joins.try_recv() {
            let _ = join.reply.send(Err(join.media));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::packetize::Kind;
    use crate::packetize::tests::obs_capture;

    /// One feeder for two shards: the shard whose queue is full misses units (counted) and is
    /// told so with its next one; the other gets every unit, and both get the same payloads.
    #[tokio::test]
    async fn a_full_shard_misses_units_without_holding_up_the_other() {
        let (avc, frames) = obs_capture();
        let (tx0, mut rx0) = mpsc::channel(1);
        let (tx1, mut rx1) = mpsc::channel(64);
        let counters: Arc<[Arc<Counters>]> = vec![Arc::default(), Arc::default()].into();
        let feeds = Feeds::new(vec![tx0, tx1].into(), counters.clone());
        let (media, _) = broadcast::channel::<Arc<Sample>>(64);
        let tracks = StreamTracks { video: Some(avc), audio: false };
        let a = feeds.attach("live", 0, &tracks, media.subscribe()).await.unwrap();
        let b = feeds.attach("live", 1, &tracks, media.subscribe()).await.unwrap();
        assert_eq!(a.feed, b.feed, "one feeder per stream");
        let unit = |m: Option<FeedMsg>| match m {
            Some(FeedMsg::Media { gap, unit, .. }) => (gap, unit),
            other => panic!("{other:?}"),
        };
        for f in &frames[..3] {
            media.send(Arc::new(Sample::Video(f.clone()))).unwrap();
        }
        let mut got1 = Vec::new();
        for _ in 0..3 {
            got1.push(unit(tokio::time::timeout(Duration::from_secs(2), rx1.recv()).await.unwrap()));
        }
        assert!(got1.iter().all(|(gap, _)| !gap));
        assert_eq!(got1[0].1.kind, Kind::Video { keyframe: true });
        let (gap, first) = unit(rx0.recv().await);
        assert!(!gap);
        assert!(Arc::ptr_eq(&first, &got1[0].1), "the same unit, made once");
        assert_eq!(counters[0].media_dropped.load(Relaxed), 2);
        assert_eq!(counters[1].media_dropped.load(Relaxed), 0);
        // Shard 0 has room again: its next unit says it missed some.
        media.send(Arc::new(Sample::Video(frames[3].clone()))).unwrap();
        let (gap, _) = unit(tokio::time::timeout(Duration::from_secs(2), rx0.recv()).await.unwrap());
        assert!(gap);
        let (gap, _) = unit(rx1.recv().await);
        assert!(!gap);
        // The stream ends: each shard with sessions of it is told.
        drop(media);
        assert!(matches!(rx0.recv().await, Some(FeedMsg::Ended { .. })));
        assert!(matches!(rx1.recv().await, Some(FeedMsg::Ended { .. })));
        // A new publish (another channel) gets a feeder of its own.
        let (again, _) = broadcast::channel::<Arc<Sample>>(8);
        let c = feeds.attach("live", 0, &tracks, again.subscribe()).await.unwrap();
        assert_ne!(c.feed, a.feed);
    }
}
