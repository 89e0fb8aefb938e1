//! The shard loop, sans-IO: one shard owns the peer connections of a subset of the sessions.
//! Inputs come with the time they happen at — datagrams and ICE-TCP packets (already routed to
//! a session by the one routing table, [`crate::routes`]), media units from the stream feeders,
//! timers, once-a-second housekeeping (with the wall clock for sender reports) — and the
//! outputs are datagrams to send ([`Shard::outbox`]), packets queued on ICE-TCP connections
//! and events ([`Shard::poll_event`]). No sockets, no clock, no tasks: `crate::shard_task`
//! drives it, the tests drive it by hand.
//!
//! After any input to a peer it drains that peer: `poll_read` (player RTCP is consumed by the
//! interceptors), `poll_event` (state changes), `poll_write` (to the outbox), `poll_timeout`
//! (into the shard's timer heap). A session ends — and leaves the routing table — on
//! [`Shard::close`], when ICE or DTLS fails or closes, when it does not connect in time (the
//! connect deadline, checked once a second), and when its stream ends. A session carries its
//! [`Reservation`] under the server's limits: it stops counting as connecting when it connects,
//! and gives its place back when it ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCDtlsTransportState;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;
use tracing::{debug, info, trace};

use crate::ShardStats;
use crate::admission::Reservation;
use crate::config::advertised_for;
use crate::demux::is_stun;
use crate::feed::{FeedMsg, Subscribers};
use crate::net::{Datagram, NetIn};
use crate::packetize::{Kind, MediaUnit, TrackOut};
use crate::peer::Sender;
use crate::report::{MediaAnchor, SrTrack};
use crate::routes::{MAX_ADDRS, SharedRoutes};

/// Cumulative counters of one shard, updated with relaxed atomics (read by the server's
/// `stats()` and the shard's once-a-second stats log).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sessions: AtomicU64,
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub send_blocked: AtomicU64,
    pub send_calls: AtomicU64,
    pub tcp_dropped: AtomicU64,
    pub rtp_in: AtomicU64,
    /// Media units the feeders could not hand over (the shard's queue was full).
    pub media_dropped: AtomicU64,
    /// Datagrams the UDP readers dropped (the shard's queue was full).
    pub net_dropped: AtomicU64,
    pub busy_ns: AtomicU64,
    /// Video frames its sessions did not send because they had missed units and were skipped to
    /// the next keyframe (one per frame per session).
    pub frames_skipped: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> ShardStats {
        ShardStats {
            sessions: self.sessions.load(Relaxed) as usize,
            packets_sent: self.packets_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            send_blocked: self.send_blocked.load(Relaxed),
            send_calls: self.send_calls.load(Relaxed),
            tcp_dropped: self.tcp_dropped.load(Relaxed),
            rtp_in: self.rtp_in.load(Relaxed),
            media_dropped: self.media_dropped.load(Relaxed),
            net_dropped: self.net_dropped.load(Relaxed),
            busy: Duration::from_nanos(self.busy_ns.load(Relaxed)),
        }
    }
}

/// A built peer on its way to a shard.
pub(crate) struct NewSession {
    /// The routing table's key for it.
    pub key: u64,
    pub id: String,
    /// Its place under the limits (and its stream's name).
    pub reservation: Reservation,
    pub pc: RTCPeerConnection,
    pub video: Option<Sender>,
    pub audio: Option<Sender>,
    pub feed: u64,
    pub subscribers: Arc<Subscribers>,
}

/// What a shard reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShardEvent {
    Connected { key: u64 },
    Ended { key: u64, reason: &'static str },
}

/// One outgoing track of a session.
struct Track {
    sender: RTCRtpSenderId,
    out: TrackOut,
    report: SrTrack,
}

struct Session {
    id: String,
    /// Its place under the limits, given back when the session is dropped.
    reservation: Reservation,
    pc: RTCPeerConnection,
    connected: bool,
    created: Instant,
    /// ICE-TCP connections it is reached over.
    tcp: Vec<u64>,
    /// A sender, to look at the DTLS transport's state through.
    probe: Option<RTCRtpSenderId>,
    /// The earliest timer entry in the heap for this session.
    scheduled: Option<Instant>,
    packets_sent: u64,
    video: Option<Track>,
    audio: Option<Track>,
    /// The publish timeline at one wall-clock instant, shared by both tracks' sender reports.
    anchor: Option<MediaAnchor>,
    feed: u64,
    subscribers: Arc<Subscribers>,
}

struct TcpConn {
    /// The advertised candidate this connection reached.
    local: SocketAddr,
    peer: SocketAddr,
    writer: mpsc::Sender<Bytes>,
    key: u64,
}

/// One shard: its sessions, their timers, and what they want sent.
pub(crate) struct Shard {
    index: usize,
    /// Per UDP socket (by index), the candidate addresses it stands for.
    udp_advertised: Vec<Vec<SocketAddr>>,
    tcp_advertised: Vec<SocketAddr>,
    routes: Arc<SharedRoutes>,
    stats: Arc<Counters>,
    /// A session not connected this long after it was added is removed.
    connect_timeout: Duration,
    /// By the routing table's key.
    sessions: HashMap<u64, Session>,
    /// Feed → its sessions here.
    feeds: HashMap<u64, Vec<u64>>,
    tcp_conns: HashMap<u64, TcpConn>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    outbox: Vec<Datagram>,
    events: VecDeque<ShardEvent>,
    /// Reused buffer for a session's output.
    scratch: Vec<TaggedBytesMut>,
    /// Every sender report written, for the tests.
    #[cfg(test)]
    reports_written: Vec<rtc::rtcp::sender_report::SenderReport>,
}

impl Shard {
    pub fn new(
        index: usize,
        udp_advertised: Vec<Vec<SocketAddr>>,
        tcp_advertised: Vec<SocketAddr>,
        routes: Arc<SharedRoutes>,
        stats: Arc<Counters>,
        connect_timeout: Duration,
    ) -> Shard {
        Shard {
            index,
            udp_advertised,
            tcp_advertised,
            routes,
            stats,
            connect_timeout,
            sessions: HashMap::new(),
            feeds: HashMap::new(),
            tcp_conns: HashMap::new(),
            timers: BinaryHeap::new(),
            outbox: Vec::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            #[cfg(test)]
            reports_written: Vec::new(),
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Datagrams to send (the driver empties it).
    pub fn outbox(&mut self) -> &mut Vec<Datagram> {
        &mut self.outbox
    }

    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    /// When [`Shard::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    #[cfg(test)]
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Takes over a built peer (already in the routing table under `new.key`).
    pub fn add(&mut self, now: Instant, new: NewSession) {
        let key = new.key;
        let track = |s: Sender, out: fn(crate::packetize::RtpStream) -> TrackOut, clock_rate: u32| Track {
            sender: s.id,
            report: SrTrack::new(s.rtp.ssrc, s.rtp.ts_offset(), clock_rate),
            out: out(s.rtp),
        };
        let probe = new.video.as_ref().or(new.audio.as_ref()).map(|s| s.id);
        self.stats.sessions.fetch_add(1, Relaxed);
        self.feeds.entry(new.feed).or_default().push(key);
        self.sessions.insert(
            key,
            Session {
                id: new.id,
                reservation: new.reservation,
                pc: new.pc,
                connected: false,
                created: now,
                tcp: Vec::new(),
                probe,
                scheduled: None,
                packets_sent: 0,
                video: new.video.map(|s| track(s, TrackOut::video, 90_000)),
                audio: new.audio.map(|s| track(s, TrackOut::audio, 48_000)),
                anchor: None,
                feed: new.feed,
                subscribers: new.subscribers,
            },
        );
        self.service(now, key);
    }

    /// WHEP `DELETE`: false if there is no such session here.
    pub fn close(&mut self, now: Instant, key: u64) -> bool {
        let found = self.sessions.contains_key(&key);
        self.remove(now, key, "closed by the player (DELETE)");
        found
    }

    /// Ends every session (DTLS close_notify goes out to each).
    pub fn close_all(&mut self, now: Instant, reason: &'static str) {
        let keys: Vec<u64> = self.sessions.keys().copied().collect();
        for key in keys {
            self.remove(now, key, reason);
        }
        self.tcp_conns.clear();
    }

    pub fn handle_net(&mut self, now: Instant, net: NetIn) {
        match net {
            NetIn::Udp { key, socket, from, data } => {
                let Some(session) = self.sessions.get_mut(&key) else { return };
                let advertised = self.udp_advertised.get(socket).map_or(&[][..], |a| &a[..]);
                let local = advertised
                    .iter()
                    .find(|a| a.is_ipv4() == from.is_ipv4())
                    .or_else(|| advertised.first())
                    .copied()
                    .unwrap_or(from);
                let msg = TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: local,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: data,
                };
                if let Err(e) = session.pc.handle_read(msg) {
                    debug!("WebRTC: session {}: {e}", session.id);
                }
                self.service(now, key);
            }
            NetIn::TcpOpened { conn, key, local, peer, writer } => {
                let Some(session) = self.sessions.get_mut(&key) else { return };
                if session.tcp.len() >= MAX_ADDRS {
                    return;
                }
                let local = advertised_for(local, &self.tcp_advertised);
                debug!("WebRTC: session {} reached over ICE-TCP from {peer} to {local}", session.id);
                session.tcp.push(conn);
                self.tcp_conns.insert(conn, TcpConn { local, peer, writer, key });
            }
            NetIn::TcpData { conn, data } => {
                let Some(c) = self.tcp_conns.get(&conn) else { return };
                let key = c.key;
                let Some(session) = self.sessions.get_mut(&key) else { return };
                let msg = TaggedBytesMut {
                    now,
                    transport: TransportContext {
                        local_addr: c.local,
                        peer_addr: c.peer,
                        ecn: None,
                        transport_protocol: TransportProtocol::TCP,
                    },
                    message: BytesMut::from(&data[..]),
                };
                if let Err(e) = session.pc.handle_read(msg) {
                    debug!("WebRTC: session {}: {e}", session.id);
                }
                self.service(now, key);
            }
            NetIn::TcpClosed { conn } => {
                if let Some(c) = self.tcp_conns.remove(&conn) {
                    debug!("WebRTC: ICE-TCP connection {conn} from {} closed", c.peer);
                    if let Some(session) = self.sessions.get_mut(&c.key) {
                        session.tcp.retain(|t| *t != conn);
                    }
                }
            }
        }
    }

    /// A unit of a stream for this shard's sessions of it: each connected one stamps its own
    /// headers on the shared payloads and hands the packets to its peer connection (SRTP).
    pub fn handle_feed(&mut self, now: Instant, msg: FeedMsg) {
        match msg {
            FeedMsg::Media { feed, gap, unit } => {
                let Some(keys) = self.feeds.get(&feed).cloned() else { return };
                for key in keys {
                    if self.send_unit(now, key, gap, &unit) {
                        self.service(now, key);
                    }
                }
            }
            FeedMsg::Ended { feed } => {
                let keys = self.feeds.get(&feed).cloned().unwrap_or_default();
                for key in keys {
                    self.remove(now, key, "the stream ended");
                }
            }
        }
    }

    /// Whether session `key` sent packets of `unit`.
    fn send_unit(&mut self, now: Instant, key: u64, gap: bool, unit: &MediaUnit) -> bool {
        let Some(session) = self.sessions.get_mut(&key) else { return false };
        // Until ICE and DTLS are up nothing is sent (video then starts at a keyframe).
        if !session.connected {
            return false;
        }
        let Session { pc, video, audio, anchor, packets_sent, .. } = session;
        if gap && let Some(v) = video {
            v.out.resync();
        }
        let track = match unit.kind {
            Kind::Video { .. } => video.as_mut(),
            Kind::Audio => audio.as_mut(),
        };
        let Some(track) = track else { return false };
        if track.out.skips(unit) {
            self.stats.frames_skipped.fetch_add(1, Relaxed);
            return false;
        }
        let n = track.out.packets(unit, |packet| {
            // The track id is not looked at on the way out; the packet is already this
            // sender's (SSRC, payload type).
            let message = RTCMessage::RtpPacket(String::new(), packet);
            if let Err(e) = pc.handle_write(TaggedRTCMessage { now, message }) {
                trace!("WebRTC: write_rtp: {e}");
            }
        });
        if n == 0 {
            return false;
        }
        track.report.count(n, unit.octets());
        *anchor = Some(MediaAnchor::follow(*anchor, now, unit.media_ms));
        *packets_sent += n as u64;
        self.stats.rtp_in.fetch_add(n as u64, Relaxed);
        true
    }

    /// Fires the peers' timers that are due (each peer once: one that asks for a time that has
    /// passed already is served on the next call).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(session) = self.sessions.get_mut(&key) else { continue };
            if session.scheduled != Some(t) {
                continue; // superseded by an earlier entry that already fired
            }
            session.scheduled = None;
            due.push(key);
        }
        for key in due {
            let Some(session) = self.sessions.get_mut(&key) else { continue };
            if let Err(e) = session.pc.handle_timeout(now) {
                debug!("WebRTC: session {}: timeout: {e}", session.id);
            }
            self.service(now, key);
        }
    }

    /// Once a second: sender reports (`wall` = the wall clock at `now`, since the Unix epoch)
    /// and the connect deadline.
    pub fn housekeeping(&mut self, now: Instant, wall: Duration) {
        self.sender_reports(now, wall);
        let stale: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.connected && now.saturating_duration_since(s.created) > self.connect_timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.remove(now, key, "did not connect before the connect deadline");
        }
    }

    /// One RTCP sender report per track that has sent something, both read off the session's
    /// anchor (see [`crate::report`]).
    fn sender_reports(&mut self, now: Instant, wall: Duration) {
        let keys: Vec<u64> = self.sessions.keys().copied().collect();
        for key in keys {
            let Some(session) = self.sessions.get_mut(&key) else { continue };
            let Some(anchor) = session.anchor else { continue };
            if !session.connected {
                continue;
            }
            for track in session.video.iter().chain(session.audio.iter()) {
                let Some(report) = track.report.report(&anchor, now, wall) else { continue };
                #[cfg(test)]
                self.reports_written.push(report.clone());
                if let Some(mut sender) = session.pc.rtp_sender(track.sender)
                    && let Err(e) = sender.write_rtcp(now, vec![Box::new(report)])
                {
                    trace!("WebRTC: session {}: sender report: {e}", session.id);
                }
            }
            self.service(now, key);
        }
    }

    /// Drains a session's outputs (packets, events, timers) after any input.
    fn service(&mut self, now: Instant, key: u64) {
        let Some(session) = self.sessions.get_mut(&key) else { return };
        // Player RTCP (receiver reports, NACK, PLI) was consumed by the interceptors.
        while session.pc.poll_read().is_some() {}
        let mut end: Option<&'static str> = None;
        while let Some(event) = session.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    debug!("WebRTC: session {} is {state}", session.id);
                    match state {
                        RTCPeerConnectionState::Connected if !session.connected => {
                            info!(
                                "WebRTC: session {} of {:?} connected in {} ms",
                                session.id,
                                session.reservation.stream(),
                                now.saturating_duration_since(session.created).as_millis()
                            );
                            session.connected = true;
                            session.reservation.connected();
                            self.events.push_back(ShardEvent::Connected { key });
                        }
                        RTCPeerConnectionState::Failed => end = Some("the connection failed"),
                        RTCPeerConnectionState::Closed => end = Some("the connection closed"),
                        _ => {}
                    }
                }
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                    debug!("WebRTC: session {} ICE is {state}", session.id);
                    match state {
                        RTCIceConnectionState::Failed => end = Some("ICE failed (no consent)"),
                        RTCIceConnectionState::Closed => end = Some("ICE closed"),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // A player that closes sends DTLS close_notify; rtc answers it and closes the DTLS
        // transport but keeps the peer connection "connected" (ICE still is), so look.
        if end.is_none()
            && session.connected
            && let Some(id) = session.probe
            && let Some(sender) = session.pc.rtp_sender(id)
            && let Some(transport) = sender.transport()
            && matches!(transport.state(), RTCDtlsTransportState::Closed | RTCDtlsTransportState::Failed)
        {
            end = Some("closed by the player (DTLS close_notify)");
        }
        let mut outs = std::mem::take(&mut self.scratch);
        outs.extend(std::iter::from_fn(|| session.pc.poll_write()));
        let tcp = std::mem::take(&mut session.tcp);
        if let Some(t) = session.pc.poll_timeout()
            && session.scheduled.is_none_or(|s| t < s)
        {
            session.scheduled = Some(t);
            self.timers.push(Reverse((t, key)));
        }
        for out in outs.drain(..) {
            self.transmit(key, &tcp, out);
        }
        self.scratch = outs;
        if let Some(session) = self.sessions.get_mut(&key) {
            session.tcp = tcp;
        }
        if let Some(reason) = end {
            self.remove(now, key, reason);
        }
    }

    fn remove(&mut self, now: Instant, key: u64, reason: &'static str) {
        let Some(mut session) = self.sessions.remove(&key) else { return };
        // close() queues DTLS close_notify so the player knows at once.
        let _ = session.pc.close();
        while let Some(out) = session.pc.poll_write() {
            self.transmit(key, &session.tcp, out);
        }
        // Dropping a connection's writer ends its task once it has sent what is queued.
        for conn in &session.tcp {
            self.tcp_conns.remove(conn);
        }
        self.routes.lock().remove_session(key);
        if let Some(keys) = self.feeds.get_mut(&session.feed) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.feeds.remove(&session.feed);
            }
        }
        session.subscribers.remove(self.index);
        self.stats.sessions.fetch_sub(1, Relaxed);
        self.events.push_back(ShardEvent::Ended { key, reason });
        info!(
            "WebRTC: session {} of {:?} ended after {} s, {} RTP packets: {reason}",
            session.id,
            session.reservation.stream(),
            now.saturating_duration_since(session.created).as_secs(),
            session.packets_sent
        );
    }

    /// Sends one packet a peer connection wrote. UDP goes to the outbox, on the socket of the local candidate rtc chose; our own
    /// connectivity checks teach the routing table their destination (the answers, STUN
    /// responses without USERNAME, must find the session). TCP goes to the connection's queue
    /// (dropped when full, as UDP would drop it).
    fn transmit(&mut self, key: u64, tcp: &[u64], out: TaggedBytesMut) {
        let to = out.transport.peer_addr;
        if out.transport.transport_protocol == TransportProtocol::UDP {
            let local = out.transport.local_addr;
            let socket = self
                .udp_advertised
                .iter()
                .position(|a| a.contains(&local))
                .or_else(|| self.udp_advertised.iter().position(|a| a.iter().any(|a| a.is_ipv4() == to.is_ipv4())))
                .unwrap_or(0);
            if is_stun(&out.message) {
                self.routes.lock().learn(key, to);
            }
            self.outbox.push(Datagram { socket, to, data: out.message });
        } else {
            let conn = tcp.iter().filter_map(|c| self.tcp_conns.get(c)).find(|c| c.peer == to);
            match conn {
                Some(c) => {
                    if c.writer.try_send(out.message.freeze()).is_err() {
                        self.stats.tcp_dropped.fetch_add(1, Relaxed);
                        trace!("WebRTC: ICE-TCP queue to {to} full, packet dropped");
                    }
                }
                None => trace!("WebRTC: no ICE-TCP connection to {to}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
