//! RTMP ingest: a sans-IO [`Ingest`] state machine per connection (handshake, rml_rtmp session,
//! signed-URL check, hub publisher) and the tokio server that drives it. The server bounds what
//! an unauthenticated client can hold ([`RtmpLimits`]): connections that have not published yet
//! are capped in total and per client network at accept (the excess is closed before any task or
//! buffer exists for it), and one that has not published within the deadline is closed.
//!
//! Contract of [`Ingest`]: feed it every byte the client sends, in order, with
//! [`Ingest::handle_input`] and the time they arrived ([`Now`]; the state machine reads no clock,
//! so tests run on a virtual one); after each call send [`Ingest::take_output`] to the client,
//! then close the connection if [`Ingest::closing`] says so. A publish is only accepted after the
//! signed URL checks out (at that time), so no media of a refused publisher ever reaches the hub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use onair_policy::Policy;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::LimitsSettings;
use crate::events::{EndReason, EngineEvent};
use crate::hub::{HubError, Now, Publisher, Registry};
use crate::limits::{Full, Refusal, Refusals, Slot, Slots};
use crate::secrets::SigningKey;

/// What every connection needs to know.
pub struct IngestContext {
    pub registry: Arc<Registry>,
    pub signing_key: SigningKey,
    pub app: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP session error: {0}")]
    Session(String),
}

enum Stage {
    Handshake(Box<Handshake>),
    Session(Box<ServerSession>),
}

/// One RTMP connection, without sockets.
pub struct Ingest {
    ctx: Arc<IngestContext>,
    remote: SocketAddr,
    local: SocketAddr,
    stage: Stage,
    /// Reads the client's `connect` command for its tcUrl, which rml_rtmp does not expose.
    sniffer: Option<ChunkDeserializer>,
    tc_url: Option<String>,
    publisher: Option<Publisher>,
    stream_name: Option<String>,
    policy: Option<Policy>,
    out: Vec<u8>,
    closing: bool,
    bad_tag_logged: bool,
    /// `rtmp` or `rtmps`: the scheme of the URL a signed key is checked against when the client
    /// sent no tcUrl.
    scheme: &'static str,
}

impl Ingest {
    pub fn new(ctx: Arc<IngestContext>, remote: SocketAddr, local: SocketAddr) -> Self {
        Self {
            ctx,
            remote,
            local,
            stage: Stage::Handshake(Box::new(Handshake::new(PeerType::Server))),
            sniffer: Some(ChunkDeserializer::new()),
            tc_url: None,
            publisher: None,
            stream_name: None,
            policy: None,
            out: Vec::new(),
            closing: false,
            bad_tag_logged: false,
            scheme: "rtmp",
        }
    }

    /// The connection came over `scheme` (`rtmps` inside TLS).
    pub fn with_scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = scheme;
        self
    }

    /// Bytes to send to the client now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The connection should be closed (after sending the pending output).
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// The stream this connection publishes, once accepted.
    pub fn stream_name(&self) -> Option<&str> {
        self.publisher.as_ref().map(|p| p.stream().name())
    }

    /// When the policy's `stream_expire` ends this publish (epoch ms).
    pub fn stream_expire(&self) -> Option<u64> {
        self.publisher.as_ref().and(self.policy.as_ref()).and_then(|p| p.stream_expire)
    }

    /// Ends the publish if its `stream_expire` has passed; returns whether it did.
    pub fn enforce_expiry(&mut self, now_ms: u64) -> bool {
        let Some(policy) = &self.policy else { return false };
        if let Err(e) = onair_policy::check_stream_expire(policy, now_ms) {
            info!(stream = self.stream_name.as_deref().unwrap_or(""), remote = %self.remote, reason = %e, "publish ended");
            self.end_publish(EndReason::Expired);
            return true;
        }
        false
    }

    /// Turns true when the streamer ends this connection's stream (End stream).
    pub fn stop_signal(&self) -> Option<watch::Receiver<bool>> {
        self.publisher.as_ref().map(|p| p.stream().stop_signal())
    }

    /// End stream: disconnects the publisher.
    pub fn end_by_streamer(&mut self) {
        if self.publisher.is_some() {
            info!(stream = self.stream_name.as_deref().unwrap_or(""), remote = %self.remote, "publish ended by the streamer (End stream)");
            self.end_publish(EndReason::EndedByStreamer);
        }
    }

    fn end_publish(&mut self, reason: EndReason) {
        if let Some(mut p) = self.publisher.take() {
            p.set_end_reason(reason);
        }
        self.closing = true;
    }

    /// Bytes from the client, arrived at `now`.
    pub fn handle_input(&mut self, bytes: &[u8], now: Now) -> Result<(), IngestError> {
        match &mut self.stage {
            Stage::Handshake(hs) => {
                match hs.process_bytes(bytes).map_err(|e| IngestError::Handshake(format!("{e:?}")))? {
                    HandshakeProcessResult::InProgress { response_bytes } => self.out.extend(response_bytes),
                    HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                        self.out.extend(response_bytes);
                        let (session, results) = ServerSession::new(ServerSessionConfig::new())
                            .map_err(|e| IngestError::Session(format!("{e:?}")))?;
                        self.stage = Stage::Session(Box::new(session));
                        self.handle_results(results, now)?;
                        if !remaining_bytes.is_empty() {
                            self.handle_session_bytes(&remaining_bytes, now)?;
                        }
                    }
                }
                Ok(())
            }
            Stage::Session(_) => self.handle_session_bytes(bytes, now),
        }
    }

    fn session(&mut self) -> &mut ServerSession {
        match &mut self.stage {
            Stage::Session(s) => s,
            Stage::Handshake(_) => unreachable!("only called after the handshake"),
        }
    }

    fn handle_session_bytes(&mut self, bytes: &[u8], now: Now) -> Result<(), IngestError> {
        // rml_rtmp 0.8 panics on some malformed messages (e.g. a command with fewer than three
        // AMF values: `arguments.drain(..3)`). Such a panic ends this connection as an error; the
        // session is not used again.
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sniff_tc_url(bytes);
            self.session().handle_input(bytes)
        }))
        .map_err(|_| {
            self.closing = true;
            IngestError::Session("malformed RTMP message (the RTMP library rejected it by panicking)".into())
        })?
        .map_err(|e| IngestError::Session(format!("{e:?}")))?;
        self.handle_results(results, now)
    }

    fn sniff_tc_url(&mut self, bytes: &[u8]) {
        let Some(de) = &mut self.sniffer else { return };
        let mut input = bytes;
        loop {
            match de.get_next_message(input) {
                Ok(Some(payload)) => {
                    input = &[];
                    match payload.to_rtmp_message() {
                        Ok(RtmpMessage::SetChunkSize { size }) if de.set_max_chunk_size(size as usize).is_err() => {
                            self.sniffer = None;
                            return;
                        }
                        Ok(RtmpMessage::Amf0Command { command_name, command_object, .. })
                            if command_name == "connect" =>
                        {
                            if let rml_rtmp::rml_amf0::Amf0Value::Object(props) = command_object
                                && let Some(rml_rtmp::rml_amf0::Amf0Value::Utf8String(url)) = props.get("tcUrl")
                            {
                                self.tc_url = Some(url.clone());
                            }
                            self.sniffer = None;
                            return;
                        }
                        _ => {}
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.sniffer = None;
                    return;
                }
            }
        }
    }

    fn handle_results(&mut self, results: Vec<ServerSessionResult>, now: Now) -> Result<(), IngestError> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => self.out.extend_from_slice(&packet.bytes),
                ServerSessionResult::RaisedEvent(event) => self.handle_event(event, now)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
            if self.closing {
                break;
            }
        }
        Ok(())
    }

    fn respond(
        &mut self,
        results: Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>,
        now: Now,
    ) -> Result<(), IngestError> {
        let results = results.map_err(|e| IngestError::Session(format!("{e:?}")))?;
        self.handle_results(results, now)
    }

    fn refuse(&mut self, request_id: u32, code: &str, description: &str, now: Now) -> Result<(), IngestError> {
        let results = self.session().reject_request(request_id, code, description);
        self.respond(results, now)?;
        self.closing = true;
        Ok(())
    }

    fn handle_event(&mut self, event: ServerSessionEvent, now: Now) -> Result<(), IngestError> {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                if app_name != self.ctx.app {
                    warn!(remote = %self.remote, app = %app_name, "connection refused: unknown application (expected {:?})", self.ctx.app);
                    return self.refuse(request_id, "NetConnection.Connect.Rejected", "unknown application", now);
                }
                let results = self.session().accept_request(request_id);
                self.respond(results, now)
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                self.on_publish(request_id, &app_name, &stream_key, now)
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => self.refuse(
                request_id,
                "NetStream.Play.Failed",
                "RTMP playback is not offered; watch over HLS or WebRTC",
                now,
            ),
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.media(data, timestamp, true, now);
                Ok(())
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.media(data, timestamp, false, now);
                Ok(())
            }
            ServerSessionEvent::PublishStreamFinished { stream_key, .. } => {
                if let Some(mut p) = self.publisher.take() {
                    p.set_end_reason(EndReason::Finished);
                    info!(stream = %stream_name(&stream_key), remote = %self.remote, "publish finished");
                }
                Ok(())
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                debug!(remote = %self.remote, ?metadata, "stream metadata");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_publish(&mut self, request_id: u32, app_name: &str, stream_key: &str, now: Now) -> Result<(), IngestError> {
        let name = stream_name(stream_key).to_owned();
        if !crate::is_valid_stream_name(&name) {
            warn!(stream = %name, remote = %self.remote, "publish refused: invalid stream name (use 1-64 letters, digits, '-' or '_')");
            return self.refuse(request_id, "NetStream.Publish.BadName", "invalid stream name", now);
        }
        // The URL as the client dialled it: its tcUrl plus the stream key (with its query).
        let base = match &self.tc_url {
            Some(tc) => tc.trim_end_matches('/').to_owned(),
            None => format!("{}://{}/{}", self.scheme, self.local, app_name),
        };
        let url = format!("{base}/{stream_key}");
        let policy = match onair_policy::verify(self.ctx.signing_key.as_bytes(), &url, self.remote.ip(), now.unix_ms) {
            Ok(p) => p,
            Err(e) => {
                warn!(stream = %name, remote = %self.remote, reason = %e, "publish refused");
                self.ctx.registry.emit(EngineEvent::PublishRefused { stream: name, reason: e.to_string() });
                return self.refuse(
                    request_id,
                    "NetStream.Publish.Unauthorized",
                    &format!("publish refused: {e}"),
                    now,
                );
            }
        };
        match self.ctx.registry.publish(&name, self.remote, now) {
            Ok(publisher) => {
                info!(stream = %name, remote = %self.remote, "publish accepted");
                self.publisher = Some(publisher);
                self.stream_name = Some(name);
                self.policy = Some(policy);
                let results = self.session().accept_request(request_id);
                self.respond(results, now)
            }
            Err(e) => {
                warn!(stream = %name, remote = %self.remote, reason = %e, "publish refused");
                let code = match e {
                    HubError::AlreadyLive(_) => "NetStream.Publish.BadName",
                    HubError::NotArmed(_) => "NetStream.Publish.Unauthorized",
                };
                self.ctx.registry.emit(EngineEvent::PublishRefused { stream: name, reason: e.to_string() });
                self.refuse(request_id, code, &e.to_string(), now)
            }
        }
    }

    fn media(&mut self, data: Bytes, timestamp: RtmpTimestamp, video: bool, now: Now) {
        let Some(publisher) = &mut self.publisher else { return };
        let result = if video {
            publisher.video(data, timestamp.value, now)
        } else {
            publisher.audio(data, timestamp.value, now)
        };
        let name = publisher.stream().name().to_owned();
        match result {
            Ok(pushed) => {
                if pushed.went_live {
                    info!(stream = %name, "stream is live");
                }
                if pushed.bframes_detected {
                    warn!(stream = %name, "the publisher sends B-frames: WebRTC viewers will stutter; fix: set Max B-frames to 0 in OBS (Settings → Output → Encoder, or x264 options bframes=0)");
                }
                if pushed.codec_changed {
                    info!(stream = %name, "video configuration changed: a discontinuity in the same playlist; WebRTC viewers reconnect");
                }
            }
            Err(e) => {
                if !self.bad_tag_logged {
                    warn!(stream = %name, remote = %self.remote, error = %e, "dropping media the engine cannot read (logged once per publish)");
                    self.bad_tag_logged = true;
                }
            }
        }
    }
}

/// The stream name of a stream key: the part before any `?query`.
pub fn stream_name(stream_key: &str) -> &str {
    stream_key.split_once('?').map_or(stream_key, |(n, _)| n)
}

/// Bounds on connections that have not published yet (`[limits]` `rtmp_*`): checked at accept,
/// before a task or buffer exists for the connection.
#[derive(Clone)]
pub struct RtmpLimits {
    /// Connections not yet publishing with a valid key, in total and per client network.
    pub pending: Arc<Slots>,
    /// Time from accept to an accepted publish.
    pub auth_timeout: Duration,
    pub refusals: Arc<Refusals>,
}

impl RtmpLimits {
    pub fn new(limits: &LimitsSettings, refusals: Arc<Refusals>) -> Self {
        RtmpLimits {
            pending: Slots::new(limits.rtmp_pending, limits.rtmp_pending_per_ip),
            auth_timeout: Duration::from_secs(limits.rtmp_auth_timeout_s),
            refusals,
        }
    }

    fn refuse(&self, why: Refusal, remote: SocketAddr) {
        match self.refusals.refuse(why, std::time::Instant::now()) {
            Some(n) => info!(%remote, refused = n, "RTMP connection closed: {}", why.reason()),
            None => debug!(%remote, "RTMP connection closed: {}", why.reason()),
        }
    }
}

/// Accepts RTMP connections until `shutdown` turns true. A connection over the pending caps is
/// closed at once.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<IngestContext>,
    limits: RtmpLimits,
    shutdown: watch::Receiver<bool>,
) {
    serve_on(listener, ctx, limits, None, shutdown).await
}

/// RTMPS: [`serve`] behind a TLS handshake with `acceptor`. The same pending caps apply (shared
/// with plain RTMP when `limits` is the same), and the handshake counts towards the time a
/// connection has to publish.
pub async fn serve_tls(
    listener: TcpListener,
    ctx: Arc<IngestContext>,
    limits: RtmpLimits,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) {
    serve_on(listener, ctx, limits, Some(acceptor), shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    ctx: Arc<IngestContext>,
    limits: RtmpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    let slot = match limits.pending.try_take(remote.ip()) {
                        Ok(slot) => slot,
                        Err(full) => {
                            limits.refuse(match full {
                                Full::Total => Refusal::RtmpPending,
                                Full::PerIp => Refusal::RtmpPendingPerIp,
                            }, remote);
                            drop(socket);
                            continue;
                        }
                    };
                    let ctx = ctx.clone();
                    let limits = limits.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let auth_deadline = tokio::time::Instant::now() + limits.auth_timeout;
                        socket.set_nodelay(true).ok();
                        let Ok(local) = socket.local_addr() else { return };
                        let result = match tls {
                            None => connection(socket, remote, local, "rtmp", ctx, slot, &limits, auth_deadline, shutdown).await,
                            Some(acceptor) => {
                                match tokio::time::timeout_at(auth_deadline, acceptor.accept(socket)).await {
                                    Ok(Ok(stream)) => {
                                        connection(stream, remote, local, "rtmps", ctx, slot, &limits, auth_deadline, shutdown).await
                                    }
                                    Ok(Err(e)) => {
                                        debug!(%remote, error = %e, "RTMPS TLS handshake failed");
                                        Ok(())
                                    }
                                    Err(_) => {
                                        limits.refuse(Refusal::RtmpAuthTimeout, remote);
                                        Ok(())
                                    }
                                }
                            }
                        };
                        if let Err(e) = result {
                            debug!(%remote, error = %e, "RTMP connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// How long a connection may stay silent (handshake included) before it is dropped.
const IDLE: Duration = Duration::from_secs(30);

/// One connection; `pending` is its place among the connections not yet publishing, given back
/// once a publish is accepted. Without an accepted publish by `limits.auth_timeout` it is closed.
#[allow(clippy::too_many_arguments)]
async fn connection<S>(
    mut socket: S,
    remote: SocketAddr,
    local: SocketAddr,
    scheme: &'static str,
    ctx: Arc<IngestContext>,
    pending: Slot,
    limits: &RtmpLimits,
    auth_deadline: tokio::time::Instant,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), IngestError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending = Some(pending);
    let io = |e: std::io::Error| IngestError::Session(e.to_string());
    let mut ingest = Ingest::new(ctx, remote, local).with_scheme(scheme);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let expiry = ingest.stream_expire().map(|at| {
            let wait = at.saturating_sub(Now::system().unix_ms) + 1;
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        let mut stop = ingest.stop_signal();
        let auth = pending.as_ref().map(|_| auth_deadline);
        let read = tokio::select! {
            r = tokio::time::timeout(IDLE, socket.read(&mut buf)) => r,
            _ = async { match expiry { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                ingest.enforce_expiry(Now::system().unix_ms);
                if ingest.closing() { break }
                continue;
            }
            _ = async {
                let stopped = match &mut stop {
                    Some(rx) => rx.wait_for(|stop| *stop).await.is_ok(),
                    None => false,
                };
                if !stopped {
                    std::future::pending::<()>().await;
                }
            } => {
                ingest.end_by_streamer();
                break;
            }
            _ = async { match auth { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                limits.refuse(Refusal::RtmpAuthTimeout, remote);
                break;
            }
            _ = shutdown.changed() => break,
        };
        let n = match read {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(io(e)),
            Err(_) => {
                debug!(%remote, "RTMP connection idle for {IDLE:?}: closing");
                break;
            }
        };
        let result = ingest.handle_input(&buf[..n], Now::system());
        if ingest.stream_name().is_some() {
            // Publishing with a valid key: no longer pending.
            pending = None;
        }
        let out = ingest.take_output();
        if !out.is_empty() {
            socket.write_all(&out).await.map_err(io)?;
        }
        if let Err(e) = result {
            if let Some(name) = ingest.stream_name() {
                warn!(stream = %name, %remote, error = %e, "publisher sent data the RTMP session cannot read: disconnecting it");
            }
            return Err(e);
        }
        if ingest.closing() {
            socket.flush().await.ok();
            // Give the client a moment to read the refusal before the close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The ingest state machine against rml_rtmp's client session, in memory: no sockets, and on
    //! a virtual clock (`Pair::now`, moved by the tests; the signed keys are signed against it).

    use super::*;
    use onair_hls::HlsConfig;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
    };

    const KEY: &str = "unit-secret";

    /// The virtual clock's start: 2030-03-17, whatever the machine's clock says.
    fn t0() -> Now {
        Now { instant: std::time::Instant::now(), unix_ms: 1_900_000_000_000 }
    }

    struct Pair {
        ingest: Ingest,
        client: ClientSession,
        events: Vec<ClientSessionEvent>,
        registry: Arc<Registry>,
        now: Now,
    }

    impl Pair {
        /// Handshake and `connect` to `app`.
        fn connect(app: &str) -> Pair {
            let registry = Registry::new(HlsConfig::default());
            let ctx = Arc::new(IngestContext {
                registry: registry.clone(),
                signing_key: SigningKey::new(KEY),
                app: "live".into(),
            });
            let mut ingest = Ingest::new(ctx, "127.0.0.1:50000".parse().unwrap(), "127.0.0.1:1935".parse().unwrap());
            let now = t0();
            let mut hs = Handshake::new(PeerType::Client);
            ingest.handle_input(&hs.generate_outbound_p0_and_p1().unwrap(), now).unwrap();
            let reply = ingest.take_output();
            let c2 = match hs.process_bytes(&reply).unwrap() {
                HandshakeProcessResult::Completed { response_bytes, .. } => response_bytes,
                HandshakeProcessResult::InProgress { .. } => panic!("S0+S1+S2 complete the client handshake"),
            };
            ingest.handle_input(&c2, now).unwrap();
            let mut config = ClientSessionConfig::new();
            config.tc_url = Some(format!("rtmp://127.0.0.1:1935/{app}"));
            let (client, initial) = ClientSession::new(config).unwrap();
            let mut pair = Pair { ingest, client, events: vec![], registry, now };
            pair.send(initial);
            let r = pair.client.request_connection(app.into()).unwrap();
            pair.send(vec![r]);
            pair
        }

        /// Client → ingest, then everything the ingest answers back, until both are quiet.
        fn send(&mut self, results: Vec<ClientSessionResult>) {
            for r in results {
                if let ClientSessionResult::OutboundResponse(p) = r {
                    let _ = self.ingest.handle_input(&p.bytes, self.now);
                }
            }
            loop {
                let out = self.ingest.take_output();
                if out.is_empty() {
                    return;
                }
                let results = self.client.handle_input(&out).unwrap();
                let mut replies = vec![];
                for r in results {
                    match r {
                        ClientSessionResult::RaisedEvent(e) => self.events.push(e),
                        other => replies.push(other),
                    }
                }
                for r in replies {
                    if let ClientSessionResult::OutboundResponse(p) = r {
                        let _ = self.ingest.handle_input(&p.bytes, self.now);
                    }
                }
            }
        }

        fn publish(&mut self, stream_key: &str) {
            let r = self.client.request_publishing(stream_key.into(), PublishRequestType::Live).unwrap();
            self.send(vec![r]);
        }

        fn accepted(&self) -> bool {
            self.events.iter().any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
        }
    }

    fn signed_key(stream: &str, policy: &Policy) -> String {
        let url =
            onair_policy::sign_url(KEY.as_bytes(), &format!("rtmp://127.0.0.1:1935/live/{stream}"), policy).unwrap();
        url.split_once("/live/").unwrap().1.to_owned()
    }

    /// A key valid for an hour from the virtual start.
    fn hour() -> Policy {
        Policy { url_expire: t0().unix_ms + 3_600_000, ..Default::default() }
    }

    #[test]
    fn signed_publish_is_accepted_and_media_reaches_the_hub() {
        let mut pair = Pair::connect("live");
        assert!(pair.events.iter().any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)));
        assert_eq!(pair.ingest.tc_url.as_deref(), Some("rtmp://127.0.0.1:1935/live"));
        pair.publish(&signed_key("cam", &hour()));
        assert!(pair.accepted(), "{:?}", pair.events);
        assert!(!pair.ingest.closing());
        assert_eq!(pair.ingest.stream_name(), Some("cam"));
        let stream = pair.registry.get("cam").expect("the stream is registered");

        // Feed the real OBS capture through the chunk stream: the stream becomes playable.
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"
        ))
        .unwrap();
        for tag in onair_media::flv::read_flv(&file).unwrap() {
            let ts = RtmpTimestamp::new(tag.timestamp_ms);
            let r = match tag.tag_type {
                9 => pair.client.publish_video_data(tag.body, ts, false).unwrap(),
                8 => pair.client.publish_audio_data(tag.body, ts, false).unwrap(),
                _ => continue,
            };
            pair.send(vec![r]);
        }
        assert!(stream.is_playable());
        let figures = stream.figures(pair.now.instant).unwrap();
        assert_eq!(figures.video.as_ref().unwrap().width, 640);
        assert_eq!(figures.audio.as_ref().unwrap().sample_rate, 48_000);

        // Dropping the connection takes the stream offline.
        drop(pair.ingest);
        assert!(pair.registry.get("cam").is_none());
        assert!(stream.figures(pair.now.instant).is_none());
    }

    #[test]
    fn refusals_close_the_connection_before_any_media() {
        let cases: Vec<(String, &str)> = vec![
            ("cam".into(), "unsigned"),
            (signed_key("cam", &hour()).replacen("cam?", "other?", 1), "other stream name"),
            (signed_key("cam", &Policy { url_expire: 1, ..Default::default() }), "expired"),
            (signed_key("cam", &Policy { allow_ip: Some("10.0.0.0/8".into()), ..hour() }), "wrong network"),
            (signed_key("bad.name", &hour()), "invalid name"),
        ];
        for (key, why) in cases {
            let mut pair = Pair::connect("live");
            pair.publish(&key);
            assert!(!pair.accepted(), "{why}: {:?}", pair.events);
            assert!(pair.ingest.closing(), "{why}");
            assert!(pair.registry.list().is_empty(), "{why}");
        }
    }

    #[test]
    fn unknown_application_is_refused() {
        let pair = Pair::connect("vod");
        assert!(pair.ingest.closing());
        assert!(!pair.events.iter().any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)));
    }

    #[test]
    fn stream_expire_ends_the_publish() {
        let mut pair = Pair::connect("live");
        pair.publish(&signed_key("cam", &Policy { stream_expire: Some(t0().unix_ms + 60_000), ..hour() }));
        assert!(pair.accepted());
        let at = pair.ingest.stream_expire().unwrap();
        assert!(!pair.ingest.enforce_expiry(at));
        assert!(pair.ingest.enforce_expiry(at + 1));
        assert!(pair.ingest.closing());
        assert!(pair.registry.get("cam").is_none());
    }

    #[test]
    fn commands_that_make_rml_rtmp_panic_are_errors() {
        // A command message (type 20) with no AMF values, right after the handshake: rml_rtmp's
        // `arguments.drain(..3)` panics on it (found by fuzz/fuzz_targets/rtmp_ingest.rs).
        let trigger = [0x06, 0, 0, 0, 0, 0, 0, 0x14, 0, 0, 0, 0];
        let mut pair = Pair::connect("live");
        pair.publish(&signed_key("cam", &hour()));
        assert!(pair.accepted());
        let result = pair.ingest.handle_input(&trigger, pair.now);
        assert!(result.is_err(), "{result:?}");
        assert!(pair.ingest.closing());
        for file in
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/rtmp_ingest")).unwrap()
        {
            let input = std::fs::read(file.unwrap().path()).unwrap();
            let registry = Registry::new(HlsConfig::default());
            let ctx = Arc::new(IngestContext { registry, signing_key: SigningKey::new(KEY), app: "live".into() });
            let mut ingest = Ingest::new(ctx, "127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
            for chunk in input.chunks(512) {
                if ingest.handle_input(chunk, t0()).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let registry = Registry::new(HlsConfig::default());
        let ctx = Arc::new(IngestContext { registry, signing_key: SigningKey::new(KEY), app: "live".into() });
        let mut seed = 0x1234_5678u32;
        for len in [1usize, 100, 1537, 3073, 10_000] {
            let mut ingest = Ingest::new(ctx.clone(), "127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            for chunk in junk.chunks(700) {
                if ingest.handle_input(chunk, t0()).is_err() {
                    break;
                }
            }
        }
        // After a valid handshake and connect, a garbage chunk stream does not panic either.
        let mut pair = Pair::connect("live");
        for i in 0..50 {
            if pair.ingest.handle_input(&[0xff, 0x13, i, 0x00, 0xff, 0xff, 0xff, 0x7f], pair.now).is_err() {
                break;
            }
        }
    }

    #[test]
    fn signed_keys_and_uptime_follow_the_virtual_clock() {
        // The key's validity is judged at the time the publish request arrives, not the
        // machine's: two virtual hours later the same key is refused.
        let key = signed_key("cam", &hour());
        let mut late = Pair::connect("live");
        late.now = t0().after(Duration::from_secs(2 * 3600));
        late.publish(&key);
        assert!(!late.accepted(), "{:?}", late.events);
        assert!(late.ingest.closing());

        let mut pair = Pair::connect("live");
        pair.now = t0().after(Duration::from_secs(30 * 60));
        pair.publish(&key);
        assert!(pair.accepted(), "{:?}", pair.events);
        let stream = pair.registry.get("cam").unwrap();
        // The publish started at the virtual time of its request.
        let later = pair.now.instant + Duration::from_secs(90);
        assert_eq!(stream.figures(later).unwrap().uptime, Duration::from_secs(90));
    }
}
