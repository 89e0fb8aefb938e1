//! A sans-IO RTMP publishing client for one restream destination: bytes from the destination
//! and the time come in, bytes to send and [`PushEvent`]s come out; no socket, no clock.
//!
//! The session does the client handshake, `connect`, `createStream` + `publish` (rml_rtmp's
//! `ClientSession`), then sends the stream's FLV tags: the sequence headers first, then media
//! from a video keyframe on, with timestamps starting near zero for each connection. Tags wait
//! in a queue bounded in bytes; when the destination cannot keep up (the queue is full, or the
//! hub's feed lagged), the queued media is dropped and sending resumes at the next keyframe
//! (sequence headers are never dropped), so a slow destination costs a bounded amount of memory
//! and never the others or the ingest anything. A destination that answers the publish with an
//! error status (`NetStream.Publish.BadName`, a rejected `connect`, …) has *refused* it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionError, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

use crate::hub::{FlvTag, SequenceHeaders, TagKind};

/// How long a destination has from the first byte to accepting the publish.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
/// The window over which the sending bitrate is measured.
const BITRATE_WINDOW: Duration = Duration::from_secs(2);

/// Where to publish: the RTMP application, the stream name (the key, possibly with a query such
/// as a signed policy) and the `tcUrl` (`rtmp://host:port/app`).
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub app: String,
    pub stream: String,
    pub tc_url: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("tc_url", &self.tc_url).field("stream", &"<redacted>").finish()
    }
}

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    Connecting,
    Publishing,
    Live,
}

/// What happened, for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// The destination accepted the publish: media flows.
    Live,
    /// The destination rejected the key or the publish (its status code or description).
    Refused(String),
}

/// Why a session cannot go on (the driver reconnects after a backoff).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("the destination did not accept the publish within {}s", PUBLISH_TIMEOUT.as_secs())]
    Timeout,
}

/// One connection's publishing session.
pub struct PushSession {
    target: Target,
    phase: Phase,
    handshake: Handshake,
    session: Option<ClientSession>,
    /// Serialized packets to send, in order (control messages, then media as it is released).
    out: VecDeque<Bytes>,
    /// Tags waiting to be serialized, and their body bytes.
    queue: VecDeque<Arc<FlvTag>>,
    queued_bytes: usize,
    max_queue_bytes: usize,
    headers: SequenceHeaders,
    /// Media is dropped up to the next video keyframe (at the start, and after a lag).
    need_keyframe: bool,
    /// …because the destination lagged (those frames count as dropped).
    lagging: bool,
    /// The decode time sent as timestamp 0 on this connection.
    base_dts: Option<u64>,
    dropped: u64,
    deadline: Instant,
    sent_bytes: u64,
    window: (Instant, u64),
    bitrate_kbps: u64,
}

impl PushSession {
    /// A session to `target` starting `now`, with the stream's sequence headers in force; its
    /// first output is the handshake's C0+C1.
    pub fn new(target: Target, headers: SequenceHeaders, max_queue_bytes: usize, now: Instant) -> PushSession {
        let mut handshake = Handshake::new(PeerType::Client);
        let mut out = VecDeque::new();
        if let Ok(c0c1) = handshake.generate_outbound_p0_and_p1() {
            out.push_back(Bytes::from(c0c1));
        }
        PushSession {
            target,
            phase: Phase::Handshake,
            handshake,
            session: None,
            out,
            queue: VecDeque::new(),
            queued_bytes: 0,
            max_queue_bytes,
            headers,
            need_keyframe: true,
            lagging: false,
            base_dts: None,
            dropped: 0,
            deadline: now + PUBLISH_TIMEOUT,
            sent_bytes: 0,
            window: (now, 0),
            bitrate_kbps: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Frames dropped so far because the destination lagged (not those before its first keyframe).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// Bytes of tags waiting to be sent.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The sending bitrate over the last measuring window.
    pub fn bitrate_kbps(&self) -> u64 {
        self.bitrate_kbps
    }

    /// Bytes the destination sent (the time plays no part: deadlines are checked by
    /// [`PushSession::handle_timeout`]).
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<Vec<PushEvent>, PushError> {
        if self.phase == Phase::Handshake {
            let result = self.handshake.process_bytes(bytes).map_err(|e| PushError::Handshake(format!("{e:?}")))?;
            return match result {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.send(response_bytes);
                    Ok(Vec::new())
                }
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    self.send(response_bytes);
                    self.connect()?;
                    if remaining_bytes.is_empty() { Ok(Vec::new()) } else { self.session_input(&remaining_bytes) }
                }
            };
        }
        self.session_input(bytes)
    }

    /// The handshake is done: `connect` to the application.
    fn connect(&mut self) -> Result<(), PushError> {
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(self.target.tc_url.clone());
        config.flash_version = "FMLE/3.0 (compatible; OnAir)".into();
        let (mut session, results) = ClientSession::new(config).map_err(protocol)?;
        let request = session.request_connection(self.target.app.clone()).map_err(protocol)?;
        self.session = Some(session);
        self.phase = Phase::Connecting;
        self.apply(results)?;
        self.apply(vec![request])?;
        Ok(())
    }

    fn session_input(&mut self, bytes: &[u8]) -> Result<Vec<PushEvent>, PushError> {
        let Some(session) = &mut self.session else { return Ok(Vec::new()) };
        // rml_rtmp 0.8 panics on some malformed messages (see the ingest, `crate::rtmp`): such a
        // panic ends this connection as an error, like any unreadable input.
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle_input(bytes)))
            .map_err(|_| PushError::Protocol("malformed RTMP message (the RTMP library panicked on it)".into()))?;
        let results = match results {
            Ok(r) => r,
            // The server answered createStream with an error: it does not let us publish.
            Err(ClientSessionError::CreateStreamFailed) => {
                return Ok(vec![PushEvent::Refused("createStream was rejected".into())]);
            }
            Err(e) => return Err(protocol(e)),
        };
        self.apply(results)
    }

    /// Queues the packets of `results` and acts on its events.
    fn apply(&mut self, results: Vec<ClientSessionResult>) -> Result<Vec<PushEvent>, PushError> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.send(p.bytes),
                ClientSessionResult::RaisedEvent(e) => {
                    if let Some(ev) = self.on_event(e)? {
                        events.push(ev);
                    }
                }
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    fn on_event(&mut self, event: ClientSessionEvent) -> Result<Option<PushEvent>, PushError> {
        match event {
            ClientSessionEvent::ConnectionRequestAccepted => {
                let session = self.session.as_mut().expect("connected sessions exist");
                let request = session
                    .request_publishing(self.target.stream.clone(), PublishRequestType::Live)
                    .map_err(protocol)?;
                self.phase = Phase::Publishing;
                self.apply(vec![request])?;
                Ok(None)
            }
            ClientSessionEvent::ConnectionRequestRejected { description } => {
                Ok(Some(PushEvent::Refused(format!("connect rejected: {}", redact(&description, &self.target)))))
            }
            ClientSessionEvent::PublishRequestAccepted => {
                self.phase = Phase::Live;
                self.need_keyframe = true;
                let headers =
                    [(TagKind::Video, self.headers.video.clone()), (TagKind::Audio, self.headers.audio.clone())];
                for (kind, body) in headers {
                    if let Some(body) = body {
                        let tag = FlvTag { kind, dts: 0, keyframe: false, header: true, body };
                        self.enqueue(Arc::new(tag));
                    }
                }
                Ok(Some(PushEvent::Live))
            }
            ClientSessionEvent::UnhandleableOnStatusCode { code } if is_refusal(&code) => {
                Ok(Some(PushEvent::Refused(code)))
            }
            // A publish rejected with `_error` (transaction 0) arrives as an unknown transaction.
            ClientSessionEvent::UnknownTransactionResultReceived { additional_values, .. } => {
                let code = additional_values.into_iter().find_map(|v| match v {
                    rml_rtmp::rml_amf0::Amf0Value::Object(mut o) => match o.remove("code") {
                        Some(rml_rtmp::rml_amf0::Amf0Value::Utf8String(c)) => Some(c),
                        _ => None,
                    },
                    _ => None,
                });
                Ok(code.filter(|c| self.phase != Phase::Live || is_refusal(c)).map(PushEvent::Refused))
            }
            _ => Ok(None),
        }
    }

    fn send(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.out.push_back(Bytes::from(bytes));
        }
    }

    /// A tag of the stream, in order. Before the destination is live only the sequence headers
    /// are kept (media starts at a keyframe once it is).
    pub fn push(&mut self, tag: Arc<FlvTag>) {
        if tag.header {
            match tag.kind {
                TagKind::Video => self.headers.video = Some(tag.body.clone()),
                TagKind::Audio => self.headers.audio = Some(tag.body.clone()),
            }
            if self.phase == Phase::Live {
                self.enqueue(tag);
            }
            return;
        }
        if self.phase != Phase::Live {
            return;
        }
        if self.need_keyframe {
            if !(tag.kind == TagKind::Video && tag.keyframe) {
                self.dropped += u64::from(self.lagging);
                return;
            }
            self.need_keyframe = false;
            self.lagging = false;
        }
        self.enqueue(tag);
        if self.queued_bytes > self.max_queue_bytes {
            self.skip_to_keyframe(0);
        }
    }

    /// The hub's feed skipped `missed` tags for this destination (it read too slowly): the
    /// queued media goes too, and sending resumes at the next keyframe.
    pub fn lagged(&mut self, missed: u64) {
        self.skip_to_keyframe(missed);
    }

    fn skip_to_keyframe(&mut self, missed: u64) {
        let before = self.queue.len();
        self.queue.retain(|t| t.header);
        self.queued_bytes = self.queue.iter().map(|t| t.body.len()).sum();
        self.dropped += missed + (before - self.queue.len()) as u64;
        self.need_keyframe = true;
        self.lagging = true;
    }

    fn enqueue(&mut self, tag: Arc<FlvTag>) {
        self.queued_bytes += tag.body.len();
        self.queue.push_back(tag);
    }

    /// The next bytes to send at `now`, if any: control messages first, then the queued tags.
    pub fn poll_output(&mut self, now: Instant) -> Option<Bytes> {
        let bytes = match self.out.pop_front() {
            Some(b) => b,
            None => {
                if self.phase != Phase::Live {
                    return None;
                }
                let tag = self.queue.pop_front()?;
                self.queued_bytes -= tag.body.len();
                self.serialize(&tag)?
            }
        };
        self.sent_bytes += bytes.len() as u64;
        self.measure(now);
        Some(bytes)
    }

    fn serialize(&mut self, tag: &FlvTag) -> Option<Bytes> {
        let base = if tag.header { self.base_dts.unwrap_or(tag.dts) } else { *self.base_dts.get_or_insert(tag.dts) };
        let ts = RtmpTimestamp::new(tag.dts.saturating_sub(base) as u32);
        let session = self.session.as_mut()?;
        let result = match tag.kind {
            TagKind::Video => session.publish_video_data(tag.body.clone(), ts, false),
            TagKind::Audio => session.publish_audio_data(tag.body.clone(), ts, false),
        };
        match result {
            Ok(ClientSessionResult::OutboundResponse(p)) => Some(Bytes::from(p.bytes)),
            _ => None,
        }
    }

    fn measure(&mut self, now: Instant) {
        let (start, at_start) = self.window;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= BITRATE_WINDOW {
            let bits = (self.sent_bytes - at_start) * 8;
            self.bitrate_kbps = bits / elapsed.as_millis().max(1) as u64;
            self.window = (now, self.sent_bytes);
        }
    }

    /// Checks the publish deadline at `now` (call about once a second).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PushError> {
        if self.phase != Phase::Live && now >= self.deadline {
            return Err(PushError::Timeout);
        }
        if now.saturating_duration_since(self.window.0) >= BITRATE_WINDOW * 2 {
            // Nothing sent for a while: the rate is zero.
            self.measure(now);
        }
        Ok(())
    }

    /// Ends the publish (`deleteStream`): the bytes to send before closing.
    pub fn finish(&mut self) -> Vec<Bytes> {
        self.queue.clear();
        self.queued_bytes = 0;
        if let Some(session) = &mut self.session
            && let Ok(results) = session.stop_publishing()
        {
            for r in results {
                if let ClientSessionResult::OutboundResponse(p) = r {
                    self.out.push_back(Bytes::from(p.bytes));
                }
            }
        }
        self.out.drain(..).collect()
    }
}

/// Whether an `onStatus`/`_error` code means the destination does not let us publish.
fn is_refusal(code: &str) -> bool {
    matches!(
        code,
        "NetStream.Publish.BadName"
            | "NetStream.Publish.Rejected"
            | "NetStream.Publish.Denied"
            | "NetStream.Publish.Failed"
            | "NetConnection.Connect.Rejected"
            | "NetStream.Publish.Unauthorized"
    )
}

/// A server's description with the stream key taken out (servers often repeat it).
fn redact(text: &str, target: &Target) -> String {
    let key = target.stream.split('?').next().unwrap_or_default();
    if key.len() < 4 { text.to_owned() } else { text.replace(key, "<key>") }
}

fn protocol(e: ClientSessionError) -> PushError {
    PushError::Protocol(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};

    fn target() -> Target {
        Target { app: "app".into(), stream: "secret-key".into(), tc_url: "rtmp://127.0.0.1:1935/app".into() }
    }

    fn tag(kind: TagKind, dts: u64, keyframe: bool, len: usize) -> Arc<FlvTag> {
        Arc::new(FlvTag { kind, dts, keyframe, header: false, body: Bytes::from(vec![0x27u8; len]) })
    }

    fn header(kind: TagKind, first: u8) -> Arc<FlvTag> {
        Arc::new(FlvTag { kind, dts: 0, keyframe: false, header: true, body: Bytes::from(vec![first, 0, 1, 2]) })
    }

    /// An in-memory RTMP server (rml_rtmp's `ServerSession`) that the session talks to.
    struct Server {
        handshake: Handshake,
        session: Option<ServerSession>,
        /// What the server does with a publish: accept, or reject with this code.
        reject_publish: Option<&'static str>,
        /// Media received: (is video, timestamp, first body byte).
        media: Vec<(bool, u32, u8)>,
        published_key: Option<String>,
    }

    impl Server {
        fn new(reject_publish: Option<&'static str>) -> Server {
            Server {
                handshake: Handshake::new(PeerType::Server),
                session: None,
                reject_publish,
                media: Vec::new(),
                published_key: None,
            }
        }

        /// Bytes from the client; answers the server's bytes.
        fn input(&mut self, bytes: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let rest = match &mut self.session {
                None => match self.handshake.process_bytes(bytes).unwrap() {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        out.extend(response_bytes);
                        return out;
                    }
                    HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                        out.extend(response_bytes);
                        let (s, results) = ServerSession::new(ServerSessionConfig::new()).unwrap();
                        self.session = Some(s);
                        self.results(results, &mut out);
                        remaining_bytes
                    }
                },
                Some(_) => bytes.to_vec(),
            };
            if !rest.is_empty() {
                let results = self.session.as_mut().unwrap().handle_input(&rest).unwrap();
                self.results(results, &mut out);
            }
            out
        }

        fn results(&mut self, results: Vec<ServerSessionResult>, out: &mut Vec<u8>) {
            for r in results {
                match r {
                    ServerSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                    ServerSessionResult::RaisedEvent(e) => {
                        let more = match e {
                            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                                self.session.as_mut().unwrap().accept_request(request_id).unwrap()
                            }
                            ServerSessionEvent::PublishStreamRequested { request_id, stream_key, .. } => {
                                self.published_key = Some(stream_key);
                                let s = self.session.as_mut().unwrap();
                                match self.reject_publish {
                                    None => s.accept_request(request_id).unwrap(),
                                    Some(code) => s.reject_request(request_id, code, "bad key secret-key").unwrap(),
                                }
                            }
                            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                                self.media.push((true, timestamp.value, data[0]));
                                Vec::new()
                            }
                            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                                self.media.push((false, timestamp.value, data[0]));
                                Vec::new()
                            }
                            _ => Vec::new(),
                        };
                        self.results(more, out);
                    }
                    ServerSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }
    }

    /// Runs client ↔ server until neither has anything to say; answers the client's events.
    fn pump(client: &mut PushSession, server: &mut Server, now: Instant) -> Vec<PushEvent> {
        let mut events = Vec::new();
        for _ in 0..100 {
            let mut to_server = Vec::new();
            while let Some(b) = client.poll_output(now) {
                to_server.extend_from_slice(&b);
            }
            if to_server.is_empty() {
                return events;
            }
            let back = server.input(&to_server);
            if !back.is_empty() {
                events.extend(client.handle_input(&back).unwrap());
            }
        }
        panic!("no quiet after 100 rounds");
    }

    #[test]
    fn publishes_headers_first_then_from_a_keyframe_with_timestamps_from_zero() {
        let t0 = Instant::now();
        let headers = SequenceHeaders { video: Some(Bytes::from_static(b"\x17\x00cfg")), audio: None };
        let mut c = PushSession::new(target(), headers, 1 << 20, t0);
        let mut s = Server::new(None);
        // Media before the destination is live is not kept; an audio header is.
        c.push(tag(TagKind::Video, 1000, true, 10));
        c.push(header(TagKind::Audio, 0xaf));
        assert_eq!(c.phase(), Phase::Handshake);
        let events = pump(&mut c, &mut s, t0);
        assert_eq!(events, [PushEvent::Live]);
        assert_eq!(c.phase(), Phase::Live);
        assert_eq!(s.published_key.as_deref(), Some("secret-key"));
        // Before the first keyframe: dropped.
        c.push(tag(TagKind::Audio, 5000, false, 10));
        c.push(tag(TagKind::Video, 5010, false, 10));
        c.push(tag(TagKind::Video, 5043, true, 10));
        c.push(tag(TagKind::Audio, 5050, false, 10));
        c.push(tag(TagKind::Video, 5076, false, 10));
        pump(&mut c, &mut s, t0);
        assert_eq!(c.dropped_frames(), 0, "waiting for the first keyframe is not lagging");
        assert_eq!(s.media, [(true, 0, 0x17), (false, 0, 0xaf), (true, 0, 0x27), (false, 7, 0x27), (true, 33, 0x27)]);
    }

    #[test]
    fn a_full_queue_or_a_lagging_feed_skips_to_the_next_keyframe() {
        let t0 = Instant::now();
        let mut c = PushSession::new(target(), SequenceHeaders::default(), 100, t0);
        let mut s = Server::new(None);
        pump(&mut c, &mut s, t0);
        assert_eq!(c.phase(), Phase::Live);
        c.push(tag(TagKind::Video, 0, true, 40));
        c.push(tag(TagKind::Video, 33, false, 40));
        assert_eq!(c.queued_bytes(), 80);
        // The destination does not read: one more frame overflows the queue, which is emptied.
        c.push(tag(TagKind::Video, 66, false, 40));
        assert_eq!((c.queued_bytes(), c.dropped_frames()), (0, 3));
        // A header is kept whatever happens; frames up to the next keyframe are dropped.
        c.push(header(TagKind::Video, 0x17));
        c.push(tag(TagKind::Video, 99, false, 40));
        c.push(tag(TagKind::Audio, 100, false, 10));
        assert_eq!(c.dropped_frames(), 5);
        c.push(tag(TagKind::Video, 132, true, 40));
        c.push(tag(TagKind::Audio, 140, false, 10));
        // The feed lagged: queued media goes, the header stays.
        c.lagged(7);
        assert_eq!(c.dropped_frames(), 5 + 7 + 2);
        assert_eq!(c.queued_bytes(), 4);
        c.push(tag(TagKind::Video, 165, false, 40));
        c.push(tag(TagKind::Video, 198, true, 40));
        pump(&mut c, &mut s, t0);
        // Nothing was sent before: the keyframe is this connection's time 0.
        assert_eq!(s.media, [(true, 0, 0x17), (true, 0, 0x27)]);
        c.push(tag(TagKind::Video, 231, false, 40));
        pump(&mut c, &mut s, t0);
        assert_eq!(s.media[2], (true, 33, 0x27));
        assert_eq!(c.queued_bytes(), 0);
    }

    #[test]
    fn a_rejected_publish_is_a_refusal_without_the_key() {
        let t0 = Instant::now();
        let mut c = PushSession::new(target(), SequenceHeaders::default(), 1 << 20, t0);
        let mut s = Server::new(Some("NetStream.Publish.BadName"));
        let events = pump(&mut c, &mut s, t0);
        assert_eq!(events, [PushEvent::Refused("NetStream.Publish.BadName".into())]);
        assert_ne!(c.phase(), Phase::Live);
        assert!(is_refusal("NetConnection.Connect.Rejected"));
        assert!(!is_refusal("NetStream.Publish.Start"));
        assert_eq!(redact("bad key secret-key", &target()), "bad key <key>");
        assert!(!format!("{:?}", target()).contains("secret-key"));
    }

    #[test]
    fn a_silent_destination_times_out() {
        let t0 = Instant::now();
        let mut c = PushSession::new(target(), SequenceHeaders::default(), 1 << 20, t0);
        assert!(c.poll_output(t0).is_some(), "C0+C1");
        assert_eq!(c.handle_timeout(t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(c.handle_timeout(t0 + PUBLISH_TIMEOUT), Err(PushError::Timeout));
        // Garbage instead of a handshake is an error, not a panic.
        let mut c = PushSession::new(target(), SequenceHeaders::default(), 1 << 20, t0);
        let _ = c.handle_input(&[0xffu8; 4000]);
    }

    /// A server's chunk stream on which rml_rtmp 0.8 panics (a subtraction overflow in its chunk
    /// deserializer, found by fuzz/fuzz_targets/rtmp_push.rs): an error, not a crash. The input's
    /// first byte is the fuzz target's mode: a valid handshake first, then chunks of 18 bytes.
    #[test]
    fn a_chunk_stream_that_makes_rml_rtmp_panic_is_an_error() {
        let input = include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/regressions/rtmp_push/rml-chunk-subtract-overflow"
        ));
        let t0 = Instant::now();
        let mut c = PushSession::new(target(), SequenceHeaders::default(), 1 << 20, t0);
        let mut server = Handshake::new(PeerType::Server);
        let s012 = match server.process_bytes(&c.poll_output(t0).unwrap()).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes }
            | HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
        };
        c.handle_input(&s012).unwrap();
        let errors: Vec<PushError> = input[1..]
            .chunks(usize::from(input[0] >> 1))
            .filter_map(|chunk| {
                while c.poll_output(t0).is_some() {}
                c.handle_input(chunk).err()
            })
            .collect();
        assert!(matches!(errors.first(), Some(PushError::Protocol(m)) if m.contains("panicked")), "{errors:?}");
    }

    #[test]
    fn bitrate_is_measured_on_the_virtual_clock() {
        let t0 = Instant::now();
        let mut c = PushSession::new(target(), SequenceHeaders::default(), 1 << 20, t0);
        let mut s = Server::new(None);
        pump(&mut c, &mut s, t0);
        c.push(tag(TagKind::Video, 0, true, 1000));
        let mut now = t0;
        for i in 1..=100u64 {
            now = t0 + Duration::from_millis(i * 40);
            c.push(tag(TagKind::Video, i * 40, false, 1000));
            while c.poll_output(now).is_some() {}
        }
        // 1000-byte frames every 40 ms ≈ 200 kb/s (plus chunk headers).
        assert!((200..230).contains(&c.bitrate_kbps()), "{}", c.bitrate_kbps());
        c.handle_timeout(now + Duration::from_secs(5)).unwrap();
        assert_eq!(c.bitrate_kbps(), 0);
        assert!(!c.finish().is_empty(), "deleteStream");
    }
}
