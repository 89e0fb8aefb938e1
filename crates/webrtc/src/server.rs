//! The server: sockets, the engine tasks (shards) that each own a subset of the sans-IO peer
//! connections, and the per-session feeder tasks that turn broadcast samples into RTP packets.
//!
//! ```text
//!  UDP reader task(s) ─┐  Router: ufrag/address  ┌▶ engine 0 ◀─ media ─ feeders of its sessions
//!  TCP conn tasks ─────┼──────── → shard ────────┤        (its RTCPeerConnections, demux maps,
//!  WebrtcServer API ───┘  (least loaded on add)  └▶ engine 1 ◀─ media ─ …   timers) ─▶ send_to
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use rand::distr::Alphanumeric;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_nack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCDtlsTransportState, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::tcp_framing::{TcpFrameDecoder, frame_packet};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use crate::config::{IceServer, WebrtcConfig, advertised_for, advertised_ips, machine_ips};
use crate::demux::{is_stun, stun_local_ufrag};
use crate::negotiate::{
    OPUS_FMTP, ProfileLevelId, choose_h264, choose_opus, h264_fmtp, offered_h264_profiles, summarize_offer,
};
use crate::packetize::{AudioPacketizer, RtpStream, VideoOutcome, VideoPacketizer};
use crate::shard::{Router, engine_count};
use crate::{Answer, EngineStats, Sample, StreamTracks, WebrtcError, WebrtcStats, WhepError};

/// A session that has not connected by then is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No ICE traffic for this long: disconnected.
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// …and this much longer: failed, and the session is removed.
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(15);
const ICE_KEEPALIVE: Duration = Duration::from_secs(2);
/// A TCP connection that has not sent a valid ICE check for one of our sessions by then is closed.
const TCP_IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket buffers: a keyframe for many viewers leaves in one burst. Linux caps the request at
/// `net.core.wmem_max`/`rmem_max` (the sizes obtained are logged and in [`WebrtcStats`]).
const SOCKET_BUFFER: usize = 4 << 20;
/// Frames queued from all feeders of one engine to it; when full, feeders wait, their broadcast
/// receivers lag and they skip to the next keyframe.
const MEDIA_QUEUE: usize = 1024;
const NET_QUEUE: usize = 4096;
/// Remote addresses (and TCP connections) one session may be reached from.
const MAX_ROUTES: usize = 32;
/// Packets queued for one ICE-TCP connection before we drop (like UDP would).
const TCP_WRITE_QUEUE: usize = 1024;

/// Handle to the WebRTC server (cheap to clone).
#[derive(Clone)]
pub struct WebrtcServer {
    inner: Arc<Inner>,
}

struct Inner {
    /// One control queue per engine.
    ctrl: Vec<mpsc::Sender<Control>>,
    shared: Arc<Shared>,
    /// Per engine.
    counters: Vec<Arc<Counters>>,
    /// SO_SNDBUF / SO_RCVBUF the kernel granted on the (first) UDP socket.
    udp_buffers: (usize, usize),
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    ice_servers: Vec<IceServer>,
    /// Host candidates every answer carries: (`udp` | `tcp`, address).
    candidates: Vec<(TransportProtocol, SocketAddr)>,
    counts: Arc<Counts>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the socket tasks and every engine share.
struct Shared {
    router: Mutex<Router>,
    /// Datagrams (and TCP packets) that belonged to no session.
    unrouted: AtomicU64,
}

impl Shared {
    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Cumulative counters of one engine, updated with relaxed atomics (read by
/// [`WebrtcServer::stats`] and the engine's once-a-second stats log).
#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    /// UDP datagrams handed to the kernel, and their bytes.
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    /// `send_to` failures other than "would block" (ENOBUFS, EPERM, unreachable…): packet lost.
    send_errors: AtomicU64,
    /// Times the socket's send buffer was full and the engine waited for room.
    send_blocked: AtomicU64,
    /// `sendto`/`sendmsg` calls that succeeded (fewer than packets with GSO).
    send_calls: AtomicU64,
    /// ICE-TCP packets dropped because the connection's queue was full.
    tcp_dropped: AtomicU64,
    /// RTP packets the feeders handed to the engine.
    rtp_in: AtomicU64,
    /// Samples the feeders' broadcast receivers skipped because the engine was behind.
    lagged_samples: AtomicU64,
    /// Time the engine task spent working (not waiting for input), ns.
    busy_ns: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EngineStats {
        EngineStats {
            sessions: self.sessions.load(Relaxed) as usize,
            packets_sent: self.packets_sent.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            send_errors: self.send_errors.load(Relaxed),
            send_blocked: self.send_blocked.load(Relaxed),
            send_calls: self.send_calls.load(Relaxed),
            tcp_dropped: self.tcp_dropped.load(Relaxed),
            rtp_in: self.rtp_in.load(Relaxed),
            lagged_samples: self.lagged_samples.load(Relaxed),
            busy: Duration::from_nanos(self.busy_ns.load(Relaxed)),
        }
    }
}

/// What one `flush` did.
#[derive(Default)]
struct SendTally {
    sent: u64,
    bytes: u64,
    calls: u64,
    blocked: u64,
    errors: u64,
    first_error: Option<(SocketAddr, std::io::Error)>,
}

impl SendTally {
    fn error(&mut self, packets: u64, to: SocketAddr, e: std::io::Error) {
        trace!("WebRTC: send to {to}: {e}");
        self.errors += packets;
        self.first_error.get_or_insert((to, e));
    }
}

/// How many datagrams at the head of `outbox` can leave in one GSO send: same socket and
/// destination, all as long as the first except possibly the last (shorter), at most
/// `max_segments` and 64 KB in all.
fn gso_run(outbox: &[(usize, SocketAddr, BytesMut)], max_segments: usize) -> usize {
    let Some((socket, to, first)) = outbox.first() else { return 0 };
    let size = first.len();
    if size == 0 {
        return 1;
    }
    let max = max_segments.min(GSO_MAX_BYTES / size).max(1);
    let mut n = 1;
    for (s, t, d) in &outbox[1..] {
        if n == max || s != socket || t != to || d.len() > size || d.is_empty() {
            break;
        }
        n += 1;
        if d.len() < size {
            break;
        }
    }
    n
}

/// Bytes of one GSO send (an IP datagram's payload is at most 65507 bytes).
const GSO_MAX_BYTES: usize = 65_000;
/// Segments of one GSO send (the kernel's UDP_MAX_SEGMENTS was 64 before Linux 6.9).
const GSO_MAX_SEGMENTS: usize = 64;

/// One `sendmsg` of `datagrams` (same size but the last) to `to` with UDP_SEGMENT.
#[cfg(target_os = "linux")]
fn send_gso(socket: &UdpSocket, datagrams: &[&[u8]], to: SocketAddr) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    use std::os::fd::AsRawFd;
    let segment = u16::try_from(datagrams.first().map_or(0, |d| d.len())).unwrap_or(u16::MAX);
    let iov: Vec<std::io::IoSlice<'_>> = datagrams.iter().map(|d| std::io::IoSlice::new(d)).collect();
    let addr = SockaddrStorage::from(to);
    sendmsg(socket.as_raw_fd(), &iov, &[ControlMessage::UdpGsoSegments(&segment)], MsgFlags::empty(), Some(&addr))
        .map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn send_gso(_: &UdpSocket, _: &[&[u8]], _: SocketAddr) -> std::io::Result<usize> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Whether a GSO send failed because segmentation is not available on this path.
fn gso_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(5 | 22 | 95)) || e.kind() == std::io::ErrorKind::Unsupported // EIO, EINVAL, EOPNOTSUPP
}

/// Socket tasks, aborted when the last engine stops.
struct IoTasks(Vec<JoinHandle<()>>);

impl Drop for IoTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[derive(Default)]
struct Counts {
    by_stream: Mutex<HashMap<String, usize>>,
}

impl Counts {
    fn add(&self, stream: &str, delta: isize) {
        let mut map = self.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(stream.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            map.remove(stream);
        }
    }
}

impl std::fmt::Debug for WebrtcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcServer")
            .field("udp", &self.inner.udp_addr)
            .field("tcp", &self.inner.tcp_addr)
            .field("sessions", &self.total_sessions())
            .finish()
    }
}

impl WebrtcServer {
    /// Binds the sockets and starts the engines: `ONAIR_WEBRTC_ENGINES` of them if set, else one
    /// per core (see [`WebrtcServer::start_with_engines`]).
    pub async fn start(config: WebrtcConfig) -> Result<WebrtcServer, WebrtcError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let engines = engine_count(std::env::var("ONAIR_WEBRTC_ENGINES").ok().as_deref(), cores);
        WebrtcServer::start_with_engines(config, engines).await
    }

    /// Binds the sockets and starts `engines` engine tasks (at least one), each owning a share
    /// of the sessions (new sessions go to the engine with the fewest). All share the one UDP
    /// port; the socket readers route each packet to the engine owning its session.
    pub async fn start_with_engines(config: WebrtcConfig, engines: usize) -> Result<WebrtcServer, WebrtcError> {
        let engines = engines.max(1);
        let mut net_txs = Vec::with_capacity(engines);
        let mut net_rxs = Vec::with_capacity(engines);
        for _ in 0..engines {
            let (tx, rx) = mpsc::channel(NET_QUEUE);
            net_txs.push(tx);
            net_rxs.push(rx);
        }
        let nets: Arc<[mpsc::Sender<NetIn>]> = net_txs.into();
        let shared = Arc::new(Shared { router: Mutex::new(Router::new(engines)), unrouted: AtomicU64::new(0) });
        let mut io_tasks = Vec::new();

        // UDP: one socket, or one per advertised machine address (same port) when bound to an
        // unspecified address without public IPs, so each datagram's local candidate is known.
        let mut udp = Vec::new();
        let per_ip = config.udp.ip().is_unspecified() && config.public_ips.is_empty();
        if per_ip {
            let mut port = config.udp.port();
            for ip in machine_ips(true, config.udp.is_ipv6()) {
                let addr = SocketAddr::new(ip, port);
                match bind_udp(addr) {
                    Ok(socket) => {
                        let local = socket.local_addr().unwrap_or(addr);
                        port = local.port();
                        udp.push(UdpBinding { socket: Arc::new(socket), advertised: vec![local] });
                    }
                    // The first address decides the port; later ones are best effort.
                    Err(source) if udp.is_empty() => return Err(WebrtcError::BindUdp { addr, source }),
                    Err(e) => warn!("WebRTC: not listening on {addr}: {e}"),
                }
            }
        } else {
            let socket = bind_udp(config.udp).map_err(|source| WebrtcError::BindUdp { addr: config.udp, source })?;
            let local = socket.local_addr().unwrap_or(config.udp);
            let advertised =
                advertised_ips(local.ip(), &config.public_ips).into_iter().map(|ip| SocketAddr::new(ip, local.port()));
            udp.push(UdpBinding { socket: Arc::new(socket), advertised: advertised.collect() });
        }
        let udp_port = udp.first().map(|b| b.socket.local_addr().map_or(config.udp.port(), |a| a.port()));
        let udp_addr = SocketAddr::new(config.udp.ip(), udp_port.unwrap_or(config.udp.port()));
        let udp_buffers = udp.first().map_or((0, 0), |b| {
            let s = socket2::SockRef::from(b.socket.as_ref());
            (s.send_buffer_size().unwrap_or(0), s.recv_buffer_size().unwrap_or(0))
        });

        let mut tcp_advertised = Vec::new();
        let mut tcp_addr = None;
        if let Some(addr) = config.tcp {
            let listener = bind_tcp(addr).map_err(|source| WebrtcError::BindTcp { addr, source })?;
            let local = listener.local_addr().unwrap_or(addr);
            tcp_addr = Some(local);
            tcp_advertised = advertised_ips(local.ip(), &config.public_ips)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, local.port()))
                .collect();
            io_tasks.push(tokio::spawn(tcp_accept(listener, nets.clone(), shared.clone())));
        }

        for (index, binding) in udp.iter().enumerate() {
            io_tasks.push(tokio::spawn(udp_read(index, binding.socket.clone(), nets.clone(), shared.clone())));
        }
        drop(nets);

        let mut candidates: Vec<(TransportProtocol, SocketAddr)> =
            udp.iter().flat_map(|b| b.advertised.iter().map(|a| (TransportProtocol::UDP, *a))).collect();
        candidates.extend(tcp_advertised.iter().map(|a| (TransportProtocol::TCP, *a)));
        candidates.dedup();
        info!(
            "WebRTC: UDP {udp_addr}{}; candidates {}; {engines} engine task(s); UDP send/receive buffers {} / {} KiB",
            tcp_addr.map(|a| format!(", ICE-TCP {a}")).unwrap_or_default(),
            candidates.iter().map(|(p, a)| format!("{} {a}", proto_name(*p))).collect::<Vec<_>>().join(", "),
            udp_buffers.0 / 1024,
            udp_buffers.1 / 1024,
        );

        let counts = Arc::new(Counts::default());
        let io = Arc::new(IoTasks(io_tasks));
        let mut ctrl = Vec::with_capacity(engines);
        let mut counters = Vec::with_capacity(engines);
        let mut tasks = Vec::with_capacity(engines);
        for (shard, net_rx) in net_rxs.into_iter().enumerate() {
            let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
            let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
            let stats = Arc::new(Counters::default());
            let engine = Engine {
                shard,
                udp: udp
                    .iter()
                    .map(|b| UdpBinding { socket: b.socket.clone(), advertised: b.advertised.clone() })
                    .collect(),
                tcp_advertised: tcp_advertised.clone(),
                counts: counts.clone(),
                shared: shared.clone(),
                stats: stats.clone(),
                logged: EngineStats::default(),
                logged_at: Instant::now(),
                last_send_warning: None,
                gso_segments: gso_segments(),
                ctrl_rx,
                net_rx,
                media_rx,
                media_tx,
                _io: io.clone(),
                sessions: HashMap::new(),
                by_id: HashMap::new(),
                by_ufrag: HashMap::new(),
                by_udp: HashMap::new(),
                tcp_conns: HashMap::new(),
                tcp_by_peer: HashMap::new(),
                timers: BinaryHeap::new(),
                outbox: Vec::new(),
                scratch: Vec::new(),
                dropped_unknown: 0,
            };
            ctrl.push(ctrl_tx);
            counters.push(stats);
            tasks.push(tokio::spawn(engine.run()));
        }
        Ok(WebrtcServer {
            inner: Arc::new(Inner {
                ctrl,
                shared,
                counters,
                udp_buffers,
                udp_addr,
                tcp_addr,
                ice_servers: config.ice_servers,
                candidates,
                counts,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Counters of every engine (cumulative since start) and the socket buffer sizes. Cheap:
    /// a few relaxed atomic loads per engine.
    pub fn stats(&self) -> WebrtcStats {
        WebrtcStats {
            engines: self.inner.counters.iter().map(|c| c.snapshot()).collect(),
            unrouted: self.inner.shared.unrouted.load(Relaxed),
            udp_send_buffer: self.inner.udp_buffers.0,
            udp_recv_buffer: self.inner.udp_buffers.1,
        }
    }

    /// The UDP address media is served on (the configured IP with the bound port).
    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp_addr
    }

    /// The ICE-TCP listening address, if enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.tcp_addr
    }

    /// The host candidates every answer carries (`udp`/`tcp`, address).
    pub fn candidates(&self) -> Vec<(String, SocketAddr)> {
        self.inner.candidates.iter().map(|(p, a)| (proto_name(*p).to_owned(), *a)).collect()
    }

    /// The STUN/TURN servers to hand to players (e.g. as WHEP `Link` headers, see
    /// [`IceServer::link_headers`]).
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.inner.ice_servers
    }

    /// WHEP: answers a recvonly offer for `stream`, whose media arrives on `media`.
    pub async fn answer(
        &self,
        stream: &str,
        offer_sdp: &str,
        tracks: &StreamTracks,
        media: broadcast::Receiver<Arc<Sample>>,
    ) -> Result<Answer, WhepError> {
        let started = Instant::now();
        let plan = plan(offer_sdp, tracks)?;
        let offer =
            RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let credentials = IceCredentials::random();
        // Certificate, SDP parsing and writing: CPU work, kept off the async worker threads.
        let (plan, credentials, built) = {
            let candidates = self.inner.candidates.clone();
            let stream = stream.to_owned();
            tokio::task::spawn_blocking(move || {
                let built = build_peer(offer, &plan, &credentials, &candidates, &stream);
                (plan, credentials, built)
            })
            .await
            .map_err(|e| WhepError::Internal(format!("answer task: {e}")))?
        };
        let built = built?;
        let session_id = random_string(32);
        let (shard, key) = {
            let mut router = self.inner.shared.router();
            let shard = router.pick();
            let key = router
                .add_session(shard, &session_id, &credentials.ufrag)
                .ok_or_else(|| WhepError::Internal("ICE ufrag or session id collision".into()))?;
            (shard, key)
        };
        let (reply, replied) = oneshot::channel();
        let new = NewSession {
            key,
            id: session_id.clone(),
            stream: stream.to_owned(),
            ufrag: credentials.ufrag,
            pc: built.pc,
            video: built.video,
            audio: built.audio,
            avc: tracks.video.clone(),
            media,
        };
        let added = match self.inner.ctrl[shard].send(Control::Add { session: Box::new(new), reply }).await {
            Ok(()) => replied.await.unwrap_or(Err(WhepError::Unavailable)),
            Err(_) => Err(WhepError::Unavailable),
        };
        if let Err(e) = added {
            self.inner.shared.router().remove_session(key);
            return Err(e);
        }
        info!(
            "WebRTC: session {session_id} for {stream:?}: video {}, audio {} (answered in {} ms)",
            plan.video.as_ref().map_or("none".to_string(), |v| format!(
                "H.264 pt {} as {} (stream {})",
                v.payload_type,
                v.offered.to_hex(),
                tracks.video.as_ref().map(|a| ProfileLevelId::of(a).to_hex()).unwrap_or_default()
            )),
            plan.audio.map_or("none".to_string(), |pt| format!("Opus pt {pt}")),
            started.elapsed().as_millis()
        );
        Ok(Answer { session_id, sdp: built.sdp })
    }

    /// WHEP `DELETE`: ends a session. False if there is no such session.
    pub async fn close(&self, session_id: &str) -> bool {
        let Some(shard) = self.inner.shared.router().shard_of_id(session_id) else { return false };
        let (reply, replied) = oneshot::channel();
        if self.inner.ctrl[shard].send(Control::Close { id: session_id.to_owned(), reply }).await.is_err() {
            return false;
        }
        replied.await.unwrap_or(false)
    }

    /// Live sessions of a stream.
    pub fn sessions(&self, stream: &str) -> usize {
        let map = self.inner.counts.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        map.get(stream).copied().unwrap_or(0)
    }

    /// Live sessions of all streams.
    pub fn total_sessions(&self) -> usize {
        let map = self.inner.counts.by_stream.lock().unwrap_or_else(|e| e.into_inner());
        map.values().sum()
    }

    /// Closes every session and frees the ports. Other clones of this handle stop working.
    pub async fn shutdown(self) {
        for ctrl in &self.inner.ctrl {
            let (reply, replied) = oneshot::channel();
            if ctrl.send(Control::Shutdown { reply }).await.is_ok() {
                let _ = replied.await;
            }
        }
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn proto_name(p: TransportProtocol) -> &'static str {
    if p == TransportProtocol::TCP { "tcp" } else { "udp" }
}

/// Datagrams per GSO send: [`GSO_MAX_SEGMENTS`] on Linux unless `ONAIR_WEBRTC_GSO=0`; 1 (off)
/// elsewhere. A path that cannot segment turns it off at the first failure.
fn gso_segments() -> usize {
    let off = std::env::var("ONAIR_WEBRTC_GSO").is_ok_and(|v| v.trim() == "0");
    if cfg!(target_os = "linux") && !off { GSO_MAX_SEGMENTS } else { 1 }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel may cap these (net.core.rmem_max / wmem_max).
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // Rebinding right after a restart (TIME_WAIT). Not on Windows, where SO_REUSEADDR would let
    // a second process bind the same port.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

// ---------------------------------------------------------------------------------------------
// Offer → plan → peer connection (runs in the caller's task)

/// What a session will send.
struct Plan {
    video: Option<crate::negotiate::H264Choice>,
    audio: Option<u8>,
}

fn plan(offer_sdp: &str, tracks: &StreamTracks) -> Result<Plan, WhepError> {
    let summary = summarize_offer(offer_sdp).map_err(WhepError::BadOffer)?;
    let video = match (&tracks.video, &summary.video) {
        (Some(avc), Some(offered)) => {
            let stream = ProfileLevelId::of(avc);
            Some(choose_h264(offered, stream).ok_or_else(|| {
                WhepError::Incompatible(format!(
                    "the stream is H.264 profile-level-id {} ({}); the offer's H.264 profiles ({}, packetization-mode=1 needed) cannot decode it",
                    stream.to_hex(),
                    h264_fmtp(avc),
                    offered_h264_profiles(offered)
                ))
            })?)
        }
        _ => None,
    };
    let audio = match (tracks.audio, &summary.audio) {
        (true, Some(offered)) => {
            let pt = choose_opus(offered);
            if pt.is_none() && video.is_none() {
                return Err(WhepError::Incompatible("the offer has no opus/48000/2".into()));
            }
            pt
        }
        _ => None,
    };
    if video.is_none() && audio.is_none() {
        let has = match (&tracks.video, tracks.audio) {
            (Some(_), true) => "video and audio",
            (Some(_), false) => "video only",
            (None, true) => "audio only",
            (None, false) => "no media yet",
        };
        return Err(WhepError::Incompatible(format!(
            "nothing to send: the stream has {has}, the offer asks for {}",
            match (summary.video.is_some(), summary.audio.is_some()) {
                (true, true) => "video and audio",
                (true, false) => "video only",
                _ => "audio only",
            }
        )));
    }
    Ok(Plan { video, audio })
}

struct IceCredentials {
    ufrag: String,
    pwd: String,
}

impl IceCredentials {
    fn random() -> IceCredentials {
        // ice-chars are ALPHA / DIGIT / "+" / "/"; ufrag ≥ 4, pwd ≥ 22 characters (RFC 8839).
        IceCredentials { ufrag: random_string(16), pwd: random_string(32) }
    }
}

fn random_string(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

/// A sender of a built peer: its id in the peer connection and its RTP header state.
struct Sender {
    id: RTCRtpSenderId,
    rtp: RtpStream,
}

struct BuiltPeer {
    pc: RTCPeerConnection,
    sdp: String,
    video: Option<Sender>,
    audio: Option<Sender>,
}

fn internal(context: &str) -> impl Fn(rtc::shared::error::Error) -> WhepError + '_ {
    move |e| WhepError::Internal(format!("{context}: {e}"))
}

fn build_peer(
    offer: RTCSessionDescription,
    plan: &Plan,
    credentials: &IceCredentials,
    candidates: &[(TransportProtocol, SocketAddr)],
    stream: &str,
) -> Result<BuiltPeer, WhepError> {
    let now = Instant::now();
    let video_codec = plan.video.as_ref().map(|v| RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: v.fmtp.clone(),
        rtcp_feedback: vec![],
    });
    let audio_codec = plan.audio.map(|_| RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![],
    });

    let mut media_engine = MediaEngine::default();
    if let (Some(codec), Some(v)) = (&video_codec, &plan.video) {
        media_engine
            .register_codec(
                RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: v.payload_type },
                RtpCodecKind::Video,
            )
            .map_err(internal("register H.264"))?;
    }
    if let (Some(codec), Some(pt)) = (&audio_codec, plan.audio) {
        media_engine
            .register_codec(RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: pt }, RtpCodecKind::Audio)
            .map_err(internal("register Opus"))?;
    }
    // NACK responder (retransmissions). RTCP sender reports are ours (`Engine::sender_reports`):
    // rtc's report interceptor maps RTP time to the send time of the last packet, which would
    // turn any processing delay between the tracks (audio transcoding) into an A/V offset.
    let registry = configure_nack(Registry::new(), &mut media_engine);

    let mut network_types = vec![NetworkType::Udp4, NetworkType::Udp6];
    if candidates.iter().any(|(p, _)| *p == TransportProtocol::TCP) {
        network_types.extend([NetworkType::Tcp4, NetworkType::Tcp6]);
    }
    let settings = SettingEngineBuilder::new()
        .with_ice_credentials(credentials.ufrag.clone(), credentials.pwd.clone())
        // Players' mDNS (.local) candidates are not resolved: their checks reach us first and
        // teach us their address (peer-reflexive), which is all a server with host
        // candidates needs. Queries would go out of the shared socket otherwise.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(network_types)
        .with_ice_timeouts(Some(ICE_DISCONNECTED_TIMEOUT), Some(ICE_FAILED_TIMEOUT), Some(ICE_KEEPALIVE))
        .build();

    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(internal("peer connection"))?;

    let mut add = |kind: RtpCodecKind, codec: RTCRtpCodec, name: &str| -> Result<(RTCRtpSenderId, u32), WhepError> {
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            format!("onair-{stream}"),
            format!("onair-{name}"),
            name.to_owned(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec,
                ..Default::default()
            }],
        );
        Ok((pc.add_track(track).map_err(internal("add track"))?, ssrc))
    };
    let video = video_codec.map(|c| add(RtpCodecKind::Video, c, "video")).transpose()?;
    let audio = audio_codec.map(|c| add(RtpCodecKind::Audio, c, "audio")).transpose()?;

    pc.set_remote_description(now, offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
    for (protocol, addr) in candidates {
        let tcp = *protocol == TransportProtocol::TCP;
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: if tcp { "tcp" } else { "udp" }.to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type: if tcp { TcpType::Passive } else { TcpType::Unspecified },
        }
        .new_candidate_host()
        .map_err(internal("host candidate"))?;
        let init = RTCIceCandidate::from(&candidate).to_json().map_err(internal("host candidate"))?;
        pc.add_local_candidate(init).map_err(internal("add host candidate"))?;
    }
    let answer = pc.create_answer(None).map_err(|e| WhepError::BadOffer(format!("cannot answer: {e}")))?;
    pc.set_local_description(now, answer).map_err(internal("set local description"))?;
    let sdp =
        pc.local_description().map(|d| d.sdp).ok_or_else(|| WhepError::Internal("no local description".into()))?;

    // The payload type each sender was given (the offer's), stamped on every packet.
    let mut negotiated = |sender: Option<(RTCRtpSenderId, u32)>, what: &str| -> Result<Option<Sender>, WhepError> {
        let Some((id, ssrc)) = sender else { return Ok(None) };
        let pt = pc
            .rtp_sender(id)
            .and_then(|mut s| s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type))
            .ok_or_else(|| WhepError::Incompatible(format!("{what} was not negotiated")))?;
        Ok(Some(Sender { id, rtp: RtpStream::new(pt, ssrc) }))
    };
    let video = negotiated(video, "H.264 video")?;
    let audio = negotiated(audio, "Opus audio")?;
    Ok(BuiltPeer { pc, sdp, video, audio })
}

// ---------------------------------------------------------------------------------------------
// Engine task

struct NewSession {
    /// The router's key for it.
    key: u64,
    id: String,
    stream: String,
    ufrag: String,
    pc: RTCPeerConnection,
    video: Option<Sender>,
    audio: Option<Sender>,
    avc: Option<onair_media::AvcConfig>,
    media: broadcast::Receiver<Arc<Sample>>,
}

enum Control {
    Add { session: Box<NewSession>, reply: oneshot::Sender<Result<(), WhepError>> },
    Close { id: String, reply: oneshot::Sender<bool> },
    Shutdown { reply: oneshot::Sender<()> },
}

enum FromFeeder {
    /// `media_ms`: where the sample sits on the publish timeline when the hub hands it out
    /// (video dts, audio pts).
    Media {
        key: u64,
        sender: RTCRtpSenderId,
        media_ms: u64,
        packets: Vec<Packet>,
    },
    StreamEnded {
        key: u64,
    },
}

enum NetIn {
    Udp { socket: usize, from: SocketAddr, data: BytesMut },
    TcpOpened { conn: u64, local: SocketAddr, peer: SocketAddr, writer: mpsc::Sender<Bytes> },
    TcpData { conn: u64, data: Vec<u8> },
    TcpClosed { conn: u64 },
}

struct UdpBinding {
    socket: Arc<UdpSocket>,
    /// What a datagram arriving here is said to have reached (our advertised candidates).
    advertised: Vec<SocketAddr>,
}

impl UdpBinding {
    /// The advertised address a datagram from `from` reached: the one of its family.
    fn local_for(&self, from: SocketAddr) -> SocketAddr {
        self.advertised
            .iter()
            .find(|a| a.is_ipv4() == from.is_ipv4())
            .or_else(|| self.advertised.first())
            .copied()
            .unwrap_or(from)
    }
}

struct TcpConn {
    /// The advertised candidate this connection reached.
    local: SocketAddr,
    peer: SocketAddr,
    writer: mpsc::Sender<Bytes>,
    session: Option<u64>,
    opened: Instant,
}

/// Where a remote endpoint's traffic arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Route {
    Udp(SocketAddr),
    Tcp(u64),
}

struct Session {
    id: String,
    stream: String,
    ufrag: String,
    pc: RTCPeerConnection,
    connected: watch::Sender<bool>,
    created: Instant,
    routes: Vec<Route>,
    feeder: JoinHandle<()>,
    /// A sender, to look at the DTLS transport's state through.
    probe: Option<RTCRtpSenderId>,
    /// The earliest timer entry in the heap for this session.
    scheduled: Option<Instant>,
    packets_sent: u64,
    /// Per outgoing track, what its RTCP sender reports need.
    reporting: Vec<SrTrack>,
    /// The publish timeline at one wall-clock instant, shared by both tracks' sender reports.
    anchor: Option<MediaAnchor>,
}

/// RTCP sender report state of one outgoing track.
struct SrTrack {
    sender: RTCRtpSenderId,
    ssrc: u32,
    ts_offset: u32,
    clock_rate: u32,
    packets: u32,
    octets: u32,
}

/// Wall-clock instant `wall` corresponds to `media_ms` of the publish timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MediaAnchor {
    wall: Instant,
    media_ms: u64,
}

/// Re-anchor when the publish timeline and the wall clock disagree by more than this (a stall or
/// a jump in the publish).
const REANCHOR_MS: i64 = 1000;

impl MediaAnchor {
    /// The publish timeline at `now`, in microseconds.
    fn media_us(&self, now: Instant) -> u64 {
        self.media_ms.saturating_mul(1000).saturating_add(now.saturating_duration_since(self.wall).as_micros() as u64)
    }

    /// Keeps the anchor while `media_ms` arriving at `now` agrees with it; else a new anchor.
    fn follow(anchor: Option<MediaAnchor>, now: Instant, media_ms: u64) -> MediaAnchor {
        match anchor {
            Some(a) if (media_ms as i64 - (a.media_us(now) / 1000) as i64).abs() <= REANCHOR_MS => a,
            _ => MediaAnchor { wall: now, media_ms },
        }
    }
}

/// RTP timestamp of publish time `media_us` for a track.
fn rtp_time(ts_offset: u32, clock_rate: u32, media_us: u64) -> u32 {
    // Wrapping modulo 2^32, as the packets' timestamps do.
    ts_offset.wrapping_add((u128::from(media_us) * u128::from(clock_rate) / 1_000_000) as u32)
}

/// NTP timestamp (RFC 3550 §4: seconds since 1900 in the high 32 bits, fraction in the low).
fn ntp_time(since_unix_epoch: Duration) -> u64 {
    const UNIX_TO_NTP_SECS: u64 = 2_208_988_800;
    let secs = since_unix_epoch.as_secs().wrapping_add(UNIX_TO_NTP_SECS);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// One engine (shard): owns the peer connections of its sessions.
struct Engine {
    shard: usize,
    udp: Vec<UdpBinding>,
    tcp_advertised: Vec<SocketAddr>,
    counts: Arc<Counts>,
    shared: Arc<Shared>,
    stats: Arc<Counters>,
    /// The counters at the last stats log line.
    logged: EngineStats,
    logged_at: Instant,
    last_send_warning: Option<Instant>,
    /// Datagrams per GSO send; 1 = no GSO.
    gso_segments: usize,
    ctrl_rx: mpsc::Receiver<Control>,
    net_rx: mpsc::Receiver<NetIn>,
    media_rx: mpsc::Receiver<FromFeeder>,
    media_tx: mpsc::Sender<FromFeeder>,
    /// The socket tasks stop when the last engine does.
    _io: Arc<IoTasks>,
    /// Keyed by the router's session key.
    sessions: HashMap<u64, Session>,
    by_id: HashMap<String, u64>,
    by_ufrag: HashMap<String, u64>,
    /// Remote UDP address → (session, index of the socket it talks to).
    by_udp: HashMap<SocketAddr, (u64, usize)>,
    tcp_conns: HashMap<u64, TcpConn>,
    tcp_by_peer: HashMap<SocketAddr, u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// UDP datagrams to send: (socket index, destination, bytes).
    outbox: Vec<(usize, SocketAddr, BytesMut)>,
    /// Reused buffer for a session's output.
    scratch: Vec<TaggedBytesMut>,
    dropped_unknown: u64,
}

impl Engine {
    async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut woke = Instant::now();
        loop {
            self.fire_timers(Instant::now());
            self.flush().await;
            self.stats.busy_ns.fetch_add(woke.elapsed().as_nanos() as u64, Relaxed);
            let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let timer = async {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                ctrl = self.ctrl_rx.recv() => match ctrl {
                    Some(Control::Shutdown { reply }) => {
                        self.close_all("server shutdown").await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(ctrl) => self.control(ctrl),
                    None => {
                        self.close_all("server handle dropped").await;
                        break;
                    }
                },
                Some(net) = self.net_rx.recv() => self.net(net),
                // Before media: a saturated engine must still send its sender reports, time
                // out sessions and log its stats once a second.
                _ = housekeeping.tick() => self.housekeeping(),
                Some(media) = self.media_rx.recv() => {
                    self.media(media);
                    // Take what else is queued now, so one flush sends it all.
                    for _ in 0..64 {
                        match self.media_rx.try_recv() {
                            Ok(m) => self.media(m),
                            Err(_) => break,
                        }
                    }
                }
                _ = timer => {}
            }
            woke = Instant::now();
        }
    }

    fn control(&mut self, ctrl: Control) {
        match ctrl {
            Control::Add { session, reply } => {
                let result = self.add(*session);
                let _ = reply.send(result);
            }
            Control::Close { id, reply } => {
                let found = self.by_id.get(&id).copied();
                if let Some(key) = found {
                    self.remove(key, "closed by the player (DELETE)");
                }
                let _ = reply.send(found.is_some());
            }
            Control::Shutdown { .. } => {}
        }
    }

    fn add(&mut self, new: NewSession) -> Result<(), WhepError> {
        let key = new.key;
        if self.sessions.contains_key(&key) {
            return Err(WhepError::Internal("session key collision".into()));
        }
        let (connected, connected_rx) = watch::channel(false);
        let probe = new.video.as_ref().or(new.audio.as_ref()).map(|s| s.id);
        let sr = |s: &Sender, clock_rate: u32| SrTrack {
            sender: s.id,
            ssrc: s.rtp.ssrc,
            ts_offset: s.rtp.ts_offset(),
            clock_rate,
            packets: 0,
            octets: 0,
        };
        let reporting: Vec<SrTrack> =
            new.video.iter().map(|s| sr(s, 90_000)).chain(new.audio.iter().map(|s| sr(s, 48_000))).collect();
        let video = match (new.video, &new.avc) {
            (Some(s), Some(avc)) => Some((s.id, VideoPacketizer::new(s.rtp, avc))),
            _ => None,
        };
        let audio = new.audio.map(|s| (s.id, AudioPacketizer::new(s.rtp)));
        let feeder =
            tokio::spawn(feed(key, new.media, connected_rx, video, audio, self.media_tx.clone(), self.stats.clone()));
        self.by_id.insert(new.id.clone(), key);
        self.by_ufrag.insert(new.ufrag.clone(), key);
        self.counts.add(&new.stream, 1);
        self.stats.sessions.fetch_add(1, Relaxed);
        self.sessions.insert(
            key,
            Session {
                id: new.id,
                stream: new.stream,
                ufrag: new.ufrag,
                pc: new.pc,
                connected,
                created: Instant::now(),
                routes: Vec::new(),
                feeder,
                probe,
                scheduled: None,
                packets_sent: 0,
                reporting,
                anchor: None,
            },
        );
        self.service(key);
        Ok(())
    }

    fn net(&mut self, net: NetIn) {
        match net {
            NetIn::Udp { socket, from, data } => {
                let key = match stun_local_ufrag(&data) {
                    Some(ufrag) => self.by_ufrag.get(ufrag).copied(),
                    None => self.by_udp.get(&from).map(|(k, _)| *k),
                };
                let Some(key) = key else {
                    self.dropped_unknown += 1;
                    trace!("WebRTC: dropped {} bytes from unknown {from} (stun: {})", data.len(), is_stun(&data));
                    return;
                };
                let Some(session) = self.sessions.get_mut(&key) else { return };
                // Bounded: STUN with a known ufrag but a bad MESSAGE-INTEGRITY (rtc rejects it)
                // must not grow the table without end.
                if self.by_udp.get(&from) != Some(&(key, socket)) && session.routes.len() < MAX_ROUTES {
                    debug!("WebRTC: session {} reached from udp {from}", session.id);
                    self.by_udp.insert(from, (key, socket));
                    session.routes.push(Route::Udp(from));
                }
                let local = self.udp[socket].local_for(from);
                let msg = TaggedBytesMut {
                    now: Instant::now(),
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
                self.service(key);
            }
            NetIn::TcpOpened { conn, local, peer, writer } => {
                let local = advertised_for(local, &self.tcp_advertised);
                debug!("WebRTC: ICE-TCP connection {conn} from {peer} to {local}");
                self.tcp_by_peer.insert(peer, conn);
                self.tcp_conns.insert(conn, TcpConn { local, peer, writer, session: None, opened: Instant::now() });
            }
            NetIn::TcpData { conn, data } => {
                let Some(c) = self.tcp_conns.get_mut(&conn) else { return };
                let key = match c.session {
                    Some(key) => Some(key),
                    None => stun_local_ufrag(&data).and_then(|u| self.by_ufrag.get(u).copied()),
                };
                let Some(key) = key else {
                    self.dropped_unknown += 1;
                    return;
                };
                let Some(session) = self.sessions.get_mut(&key) else { return };
                if c.session.is_none() && session.routes.len() >= MAX_ROUTES {
                    return;
                }
                if c.session.is_none() {
                    debug!("WebRTC: session {} reached over ICE-TCP from {}", session.id, c.peer);
                    c.session = Some(key);
                    session.routes.push(Route::Tcp(conn));
                }
                let msg = TaggedBytesMut {
                    now: Instant::now(),
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
                self.service(key);
            }
            NetIn::TcpClosed { conn } => {
                if let Some(c) = self.tcp_conns.remove(&conn) {
                    debug!("WebRTC: ICE-TCP connection {conn} from {} closed", c.peer);
                    if self.tcp_by_peer.get(&c.peer) == Some(&conn) {
                        self.tcp_by_peer.remove(&c.peer);
                    }
                }
            }
        }
    }

    fn media(&mut self, media: FromFeeder) {
        match media {
            FromFeeder::Media { key, sender, media_ms, packets } => {
                let Some(session) = self.sessions.get_mut(&key) else { return };
                let now = Instant::now();
                session.anchor = Some(MediaAnchor::follow(session.anchor, now, media_ms));
                let n = packets.len();
                self.stats.rtp_in.fetch_add(n as u64, Relaxed);
                let octets: usize = packets.iter().map(|p| p.payload.len()).sum();
                if let Some(track) = session.reporting.iter_mut().find(|t| t.sender == sender) {
                    track.packets = track.packets.wrapping_add(n as u32);
                    track.octets = track.octets.wrapping_add(octets as u32);
                }
                let Some(mut rtp_sender) = session.pc.rtp_sender(sender) else { return };
                for packet in packets {
                    if let Err(e) = rtp_sender.write_rtp(now, packet) {
                        trace!("WebRTC: session {}: write_rtp: {e}", session.id);
                    }
                }
                session.packets_sent += n as u64;
                self.service(key);
            }
            FromFeeder::StreamEnded { key } => self.remove(key, "the stream ended"),
        }
    }

    fn fire_timers(&mut self, now: Instant) {
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
            if let Err(e) = session.pc.handle_timeout(now) {
                debug!("WebRTC: session {}: timeout: {e}", session.id);
            }
            self.service(key);
        }
    }

    /// One RTCP sender report per track that has sent something. RTP time and NTP time both
    /// come from the session's anchor on the publish timeline, so the two tracks' reports agree
    /// on which media instant is "now", however late each track's packets left.
    fn sender_reports(&mut self, now: Instant) {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let ntp = ntp_time(since_epoch);
        let keys: Vec<u64> = self.sessions.keys().copied().collect();
        for key in keys {
            let Some(session) = self.sessions.get_mut(&key) else { continue };
            let Some(anchor) = session.anchor else { continue };
            if !*session.connected.borrow() {
                continue;
            }
            let media_us = anchor.media_us(now);
            for track in session.reporting.iter().filter(|t| t.packets > 0) {
                let report = SenderReport {
                    ssrc: track.ssrc,
                    ntp_time: ntp,
                    rtp_time: rtp_time(track.ts_offset, track.clock_rate, media_us),
                    packet_count: track.packets,
                    octet_count: track.octets,
                    ..Default::default()
                };
                if let Some(mut sender) = session.pc.rtp_sender(track.sender)
                    && let Err(e) = sender.write_rtcp(now, vec![Box::new(report)])
                {
                    trace!("WebRTC: session {}: sender report: {e}", session.id);
                }
            }
            self.service(key);
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.log_stats(now);
        self.sender_reports(now);
        let stale: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| !*s.connected.borrow() && now.duration_since(s.created) > CONNECT_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.remove(key, "did not connect within 30 s");
        }
        let idle: Vec<u64> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| c.session.is_none() && now.duration_since(c.opened) > TCP_IDENTIFY_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for conn in idle {
            if let Some(c) = self.tcp_conns.remove(&conn) {
                debug!("WebRTC: closing ICE-TCP connection from {} (no ICE check for a session)", c.peer);
                self.tcp_by_peer.remove(&c.peer);
            }
        }
    }

    /// Drains a session's outputs (packets, events, timers) after any input.
    fn service(&mut self, key: u64) {
        let Some(session) = self.sessions.get_mut(&key) else { return };
        // Player RTCP (receiver reports, NACK, PLI) was consumed by the interceptors.
        while session.pc.poll_read().is_some() {}
        let mut end: Option<&'static str> = None;
        while let Some(event) = session.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    debug!("WebRTC: session {} is {state}", session.id);
                    match state {
                        RTCPeerConnectionState::Connected => {
                            info!(
                                "WebRTC: session {} of {:?} connected in {} ms",
                                session.id,
                                session.stream,
                                session.created.elapsed().as_millis()
                            );
                            let _ = session.connected.send(true);
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
            && *session.connected.borrow()
            && let Some(id) = session.probe
            && let Some(sender) = session.pc.rtp_sender(id)
            && let Some(transport) = sender.transport()
            && matches!(transport.state(), RTCDtlsTransportState::Closed | RTCDtlsTransportState::Failed)
        {
            end = Some("closed by the player (DTLS close_notify)");
        }
        let mut outs = std::mem::take(&mut self.scratch);
        outs.extend(std::iter::from_fn(|| session.pc.poll_write()));
        let next = session.pc.poll_timeout();
        if let Some(t) = next
            && session.scheduled.is_none_or(|s| t < s)
        {
            session.scheduled = Some(t);
            self.timers.push(Reverse((t, key)));
        }
        for out in outs.drain(..) {
            self.route(key, out);
        }
        self.scratch = outs;
        if let Some(reason) = end {
            self.remove(key, reason);
        }
    }

    fn remove(&mut self, key: u64, reason: &str) {
        let Some(mut session) = self.sessions.remove(&key) else { return };
        // close() queues DTLS close_notify so the player knows at once.
        let _ = session.pc.close();
        while let Some(out) = session.pc.poll_write() {
            self.route(key, out);
        }
        for route in &session.routes {
            match route {
                Route::Udp(addr) => {
                    if self.by_udp.get(addr).is_some_and(|(k, _)| *k == key) {
                        self.by_udp.remove(addr);
                    }
                }
                Route::Tcp(conn) => {
                    // Dropping the writer ends the connection task once it has sent what is queued.
                    if let Some(c) = self.tcp_conns.remove(conn)
                        && self.tcp_by_peer.get(&c.peer) == Some(conn)
                    {
                        self.tcp_by_peer.remove(&c.peer);
                    }
                }
            }
        }
        if self.by_ufrag.get(&session.ufrag) == Some(&key) {
            self.by_ufrag.remove(&session.ufrag);
        }
        self.by_id.remove(&session.id);
        self.shared.router().remove_session(key);
        session.feeder.abort();
        self.counts.add(&session.stream, -1);
        self.stats.sessions.fetch_sub(1, Relaxed);
        info!(
            "WebRTC: session {} of {:?} ended after {} s, {} RTP packets: {reason}",
            session.id,
            session.stream,
            session.created.elapsed().as_secs(),
            session.packets_sent
        );
    }

    async fn close_all(&mut self, reason: &str) {
        let keys: Vec<u64> = self.sessions.keys().copied().collect();
        for key in keys {
            self.remove(key, reason);
        }
        self.flush().await;
        // Let TCP connection tasks write their close_notify before the writers go.
        self.tcp_conns.clear();
        self.tcp_by_peer.clear();
    }

    /// Sends one packet a peer connection wrote: UDP goes to the outbox (sent by `flush`), TCP
    /// to the connection's writer (dropped when its queue is full, as UDP would drop it).
    fn route(&mut self, key: u64, out: TaggedBytesMut) {
        let to = out.transport.peer_addr;
        if out.transport.transport_protocol == TransportProtocol::UDP {
            let socket = match self.by_udp.get(&to) {
                Some((_, socket)) => *socket,
                None => {
                    let udp = &self.udp;
                    let socket = udp
                        .iter()
                        .position(|b| b.advertised.contains(&out.transport.local_addr))
                        .or_else(|| udp.iter().position(|b| b.advertised.iter().any(|a| a.is_ipv4() == to.is_ipv4())))
                        .unwrap_or(0);
                    // Our own connectivity checks to a candidate the player listed: its
                    // answers (STUN responses carry no USERNAME) must find this session too.
                    if let Some(session) = self.sessions.get_mut(&key)
                        && session.routes.len() < MAX_ROUTES
                    {
                        self.by_udp.insert(to, (key, socket));
                        session.routes.push(Route::Udp(to));
                        self.shared.router().learn(key, to);
                    }
                    socket
                }
            };
            self.outbox.push((socket, to, out.message));
        } else {
            match self.tcp_by_peer.get(&to).and_then(|c| self.tcp_conns.get(c)) {
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

    /// Sends the outbox. Runs of same-size datagrams to one player (the FU-A packets of a
    /// frame) leave in one `sendmsg` with UDP GSO on Linux (the last of a run may be shorter).
    /// A full socket send buffer makes the engine wait for room (counted in `send_blocked`);
    /// any other error loses the packets (counted in `send_errors`, warned about at most every
    /// 10 s).
    async fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut tally = SendTally::default();
        let mut i = 0;
        while i < outbox.len() {
            let (socket, to, _) = &outbox[i];
            let (socket, to) = (*socket, *to);
            let run = if self.gso_segments > 1 { gso_run(&outbox[i..], self.gso_segments) } else { 1 };
            let Some(binding) = self.udp.get(socket) else {
                i += run;
                continue;
            };
            let datagrams: Vec<&[u8]> = outbox[i..i + run].iter().map(|(_, _, d)| &d[..]).collect();
            loop {
                let result = if run > 1 {
                    binding.socket.try_io(tokio::io::Interest::WRITABLE, || send_gso(&binding.socket, &datagrams, to))
                } else {
                    binding.socket.try_send_to(datagrams[0], to)
                };
                match result {
                    Ok(_) => {
                        tally.calls += 1;
                        tally.sent += run as u64;
                        tally.bytes += datagrams.iter().map(|d| d.len() as u64).sum::<u64>();
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tally.blocked += 1;
                        if binding.socket.writable().await.is_err() {
                            break;
                        }
                    }
                    // EIO/EINVAL: the route's device cannot do UDP segmentation: stop using it
                    // and send this run one by one.
                    Err(e) if run > 1 && gso_unsupported(&e) => {
                        warn!("WebRTC engine {}: UDP GSO not usable ({e}); sending datagrams one by one", self.shard);
                        self.gso_segments = 1;
                        for d in &datagrams {
                            match binding.socket.send_to(d, to).await {
                                Ok(n) => {
                                    tally.calls += 1;
                                    tally.sent += 1;
                                    tally.bytes += n as u64;
                                }
                                Err(e) => tally.error(run as u64, to, e),
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        tally.error(run as u64, to, e);
                        break;
                    }
                }
            }
            i += run;
        }
        outbox.clear();
        self.outbox = outbox;
        self.stats.packets_sent.fetch_add(tally.sent, Relaxed);
        self.stats.bytes_sent.fetch_add(tally.bytes, Relaxed);
        self.stats.send_calls.fetch_add(tally.calls, Relaxed);
        self.stats.send_blocked.fetch_add(tally.blocked, Relaxed);
        if let Some((to, e)) = tally.first_error {
            self.stats.send_errors.fetch_add(tally.errors, Relaxed);
            let now = Instant::now();
            if self.last_send_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                self.last_send_warning = Some(now);
                warn!(
                    "WebRTC engine {}: {} packet(s) not sent, e.g. to {to}: {e} ({} send errors in all)",
                    self.shard,
                    tally.errors,
                    self.stats.send_errors.load(Relaxed)
                );
            }
        }
    }

    /// Once a second: a `debug` line on target `onair_webrtc::stats` with this engine's rates.
    fn log_stats(&mut self, now: Instant) {
        let cur = self.stats.snapshot();
        let was = std::mem::replace(&mut self.logged, cur);
        let secs = now.duration_since(self.logged_at).as_secs_f64().max(1e-3);
        self.logged_at = now;
        if cur.sessions == 0 && cur.packets_sent == was.packets_sent {
            return;
        }
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
        debug!(
            target: "onair_webrtc::stats",
            "engine {}: {} sessions, busy {:.0} %, sent {:.0} pkt/s {:.1} Mb/s in {:.0} calls/s, rtp in {:.0} pkt/s, send errors {}, send blocked {}, tcp dropped {}, lagged samples {}, unrouted {}",
            self.shard,
            cur.sessions,
            cur.busy.saturating_sub(was.busy).as_secs_f64() / secs * 100.0,
            rate(cur.packets_sent, was.packets_sent),
            rate(cur.bytes_sent, was.bytes_sent) * 8.0 / 1e6,
            rate(cur.send_calls, was.send_calls),
            rate(cur.rtp_in, was.rtp_in),
            cur.send_errors - was.send_errors,
            cur.send_blocked - was.send_blocked,
            cur.tcp_dropped - was.tcp_dropped,
            cur.lagged_samples - was.lagged_samples,
            self.shared.unrouted.load(Relaxed),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// I/O tasks

async fn udp_read(index: usize, socket: Arc<UdpSocket>, nets: Arc<[mpsc::Sender<NetIn>]>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let shard = shared.router().route(&buf[..n], from);
                let Some(net) = shard.and_then(|s| nets.get(s)) else {
                    shared.unrouted.fetch_add(1, Relaxed);
                    trace!("WebRTC: dropped {n} bytes from unknown {from} (stun: {})", is_stun(&buf[..n]));
                    continue;
                };
                let data = BytesMut::from(&buf[..n]);
                if net.send(NetIn::Udp { socket: index, from, data }).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from a closed player surfaces here on Windows
            // (WSAECONNRESET); it is not fatal for the socket.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => {
                debug!("WebRTC: UDP receive: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn tcp_accept(listener: TcpListener, nets: Arc<[mpsc::Sender<NetIn>]>, shared: Arc<Shared>) {
    let next = AtomicU64::new(0);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let conn = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(tcp_conn(conn, stream, nets.clone(), shared.clone()));
            }
            Err(e) => {
                debug!("WebRTC: ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if nets.iter().all(|n| n.is_closed()) {
            return;
        }
    }
}

/// One ICE-TCP connection: its first packet naming one of our ufrags (an ICE check) decides
/// the engine it belongs to; one that names none within [`TCP_IDENTIFY_TIMEOUT`] is closed.
async fn tcp_conn(conn: u64, stream: TcpStream, nets: Arc<[mpsc::Sender<NetIn>]>, shared: Arc<Shared>) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return };
    let local = unmap(local);
    let _ = stream.set_nodelay(true);
    let (writer, mut queue) = mpsc::channel::<Bytes>(TCP_WRITE_QUEUE);
    // Handed to the engine once the connection is identified.
    let mut writer = Some(writer);
    let mut engine: Option<&mpsc::Sender<NetIn>> = None;
    let identify_by = tokio::time::sleep(TCP_IDENTIFY_TIMEOUT);
    tokio::pin!(identify_by);
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = TcpFrameDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    decoder.extend_from_slice(&buf[..n]);
                    while let Some(data) = decoder.next_packet() {
                        let net = match engine {
                            Some(net) => net,
                            None => {
                                let shard = shared.router().route_stun(&data);
                                let (Some(net), Some(w)) = (shard.and_then(|s| nets.get(s)), writer.take()) else {
                                    shared.unrouted.fetch_add(1, Relaxed);
                                    continue;
                                };
                                if net.send(NetIn::TcpOpened { conn, local, peer, writer: w }).await.is_err() {
                                    return;
                                }
                                engine = Some(net);
                                net
                            }
                        };
                        if net.send(NetIn::TcpData { conn, data }).await.is_err() {
                            return;
                        }
                    }
                }
            },
            out = queue.recv(), if engine.is_some() => match out {
                Some(packet) => {
                    if wr.write_all(&frame_packet(&packet)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut identify_by, if engine.is_none() => {
                debug!("WebRTC: closing ICE-TCP connection from {peer} (no ICE check for a session)");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    if let Some(net) = engine {
        let _ = net.send(NetIn::TcpClosed { conn }).await;
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d` (a dual-stack listener reports IPv4 peers mapped).
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

// ---------------------------------------------------------------------------------------------
// Feeder: broadcast samples → RTP packets for one session

async fn feed(
    key: u64,
    mut media: broadcast::Receiver<Arc<Sample>>,
    mut connected: watch::Receiver<bool>,
    mut video: Option<(RTCRtpSenderId, VideoPacketizer)>,
    mut audio: Option<(RTCRtpSenderId, AudioPacketizer)>,
    engine: mpsc::Sender<FromFeeder>,
    stats: Arc<Counters>,
) {
    let mut lagged_total = 0u64;
    loop {
        let sample = tokio::select! {
            biased;
            changed = connected.changed() => {
                if changed.is_err() {
                    return; // the session is gone
                }
                continue;
            }
            received = media.recv() => received,
        };
        let sample = match sample {
            Ok(sample) => sample,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                lagged_total += n;
                stats.lagged_samples.fetch_add(n, Relaxed);
                debug!("WebRTC: session key {key} lagged {n} samples ({lagged_total} in all): waiting for a keyframe");
                if let Some((_, v)) = &mut video {
                    v.resync();
                }
                if let Some((_, a)) = &mut audio {
                    a.resync();
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => {
                let _ = engine.send(FromFeeder::StreamEnded { key }).await;
                return;
            }
        };
        // Until ICE and DTLS are up, samples are dropped (video then starts at a keyframe).
        if !*connected.borrow() {
            continue;
        }
        let out = match sample.as_ref() {
            Sample::Video(frame) => match &mut video {
                Some((sender, v)) => match v.push(frame) {
                    VideoOutcome::Send(packets) => Some((*sender, frame.dts, packets)),
                    VideoOutcome::WaitingForKeyframe => None,
                    VideoOutcome::Malformed => {
                        debug!("WebRTC: session key {key}: malformed access unit dropped");
                        None
                    }
                },
                None => None,
            },
            Sample::Opus { data, pts_ms, samples } => {
                audio.as_mut().map(|(sender, a)| (*sender, *pts_ms, a.push(data, *pts_ms, *samples)))
            }
        };
        if let Some((sender, media_ms, packets)) = out
            && !packets.is_empty()
            && engine.send(FromFeeder::Media { key, sender, media_ms, packets }).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packetize::tests::obs_capture;

    /// The first packet of a keyframe is the STAP-A with SPS and PPS.
    fn starts_keyframe(packets: &[Packet]) -> bool {
        packets.first().is_some_and(|p| p.payload.first().is_some_and(|b| b & 0x1f == 24))
    }

    #[tokio::test]
    async fn a_lagging_session_skips_to_the_next_keyframe() {
        let (avc, frames) = obs_capture();
        let (tx, rx) = broadcast::channel::<Arc<Sample>>(8);
        let (_connected, connected_rx) = watch::channel(true);
        // The engine side holds at most 2 frames: the feeder waits when it is full.
        let (engine_tx, mut engine_rx) = mpsc::channel(2);
        let video = VideoPacketizer::new(RtpStream::new(96, 1), &avc);
        let feeder = tokio::spawn(feed(
            7,
            rx,
            connected_rx,
            Some((RTCRtpSenderId::default(), video)),
            None,
            engine_tx,
            Arc::default(),
        ));
        let pts90 = |f: &onair_media::Frame| (f.dts.saturating_add_signed(i64::from(f.cts)) * 90) as u32;
        let next = |rx: &mut mpsc::Receiver<FromFeeder>| match rx.try_recv() {
            Ok(FromFeeder::Media { key: 7, packets, .. }) => Some(packets),
            Ok(_) => panic!("unexpected message"),
            Err(_) => None,
        };

        // Frames 0..=130 arrive at once while nobody drains the engine queue: the feeder sends
        // frame 0 (a keyframe) and 1, blocks on 2, and its receiver lags.
        for f in &frames[..=130] {
            tx.send(Arc::new(Sample::Video(f.clone()))).unwrap();
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = next(&mut engine_rx).unwrap();
        assert!(starts_keyframe(&first));
        let ts0 = first[0].header.timestamp.wrapping_sub(pts90(&frames[0]));
        let mut early = 1;
        while next(&mut engine_rx).is_some() {
            early += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(early <= 4, "{early} frames got through before the lag");

        // From here on the queue is drained: nothing until the keyframe at 180, then every frame.
        let mut got = Vec::new();
        for f in &frames[131..] {
            tx.send(Arc::new(Sample::Video(f.clone()))).unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            got.extend(std::iter::from_fn(|| next(&mut engine_rx)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        got.extend(std::iter::from_fn(|| next(&mut engine_rx)));
        assert!(starts_keyframe(&got[0]));
        assert_eq!(got[0][0].header.timestamp.wrapping_sub(ts0), pts90(&frames[180]));
        assert_eq!(got.len(), frames.len() - 180);

        // The stream ends: the feeder reports it and stops.
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(engine_rx.try_recv(), Ok(FromFeeder::StreamEnded { key: 7 })));
        feeder.await.unwrap();
    }

    #[tokio::test]
    async fn nothing_is_sent_before_the_connection_is_up() {
        let (avc, frames) = obs_capture();
        let (tx, rx) = broadcast::channel::<Arc<Sample>>(64);
        let (connected, connected_rx) = watch::channel(false);
        let (engine_tx, mut engine_rx) = mpsc::channel(64);
        let video = VideoPacketizer::new(RtpStream::new(96, 1), &avc);
        let audio = AudioPacketizer::new(RtpStream::new(111, 2));
        let feeder = tokio::spawn(feed(
            1,
            rx,
            connected_rx,
            Some((RTCRtpSenderId::default(), video)),
            Some((RTCRtpSenderId::default(), audio)),
            engine_tx,
            Arc::default(),
        ));
        for f in &frames[..10] {
            tx.send(Arc::new(Sample::Video(f.clone()))).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(engine_rx.try_recv().is_err());
        connected.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Connected mid-GOP: audio flows at once, video waits for the keyframe at 60.
        tx.send(Arc::new(Sample::Opus { data: Bytes::from_static(&[0xfc, 0xff, 0xfe]), pts_ms: 400, samples: 960 }))
            .unwrap();
        tx.send(Arc::new(Sample::Video(frames[10].clone()))).unwrap();
        tx.send(Arc::new(Sample::Video(frames[60].clone()))).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(FromFeeder::Media { packets, .. }) = engine_rx.try_recv() else { panic!("no audio") };
        assert_eq!(packets[0].header.payload_type, 111);
        let Ok(FromFeeder::Media { packets, .. }) = engine_rx.try_recv() else { panic!("no keyframe") };
        assert!(starts_keyframe(&packets));
        // The session goes away: the feeder stops.
        drop(connected);
        tokio::time::timeout(Duration::from_secs(1), feeder).await.unwrap().unwrap();
    }

    #[test]
    fn ntp_and_rtp_times() {
        assert_eq!(ntp_time(Duration::ZERO), 2_208_988_800u64 << 32);
        assert_eq!(ntp_time(Duration::from_millis(1500)), (2_208_988_801u64 << 32) | (1u64 << 31));
        assert_eq!(rtp_time(10, 90_000, 1_000_000), 90_010);
        assert_eq!(rtp_time(u32::MAX, 48_000, 20_000), 959);
        // 13.3 h at 90 kHz wraps.
        assert_eq!(rtp_time(0, 90_000, 47_721_858_845), ((47_721_858_845u128 * 9 / 100) % (1u128 << 32)) as u32);
    }

    #[test]
    fn the_anchor_follows_the_publish_timeline() {
        let t0 = Instant::now();
        let a = MediaAnchor::follow(None, t0, 5_000);
        assert_eq!(a, MediaAnchor { wall: t0, media_ms: 5_000 });
        assert_eq!(a.media_us(t0 + Duration::from_millis(250)), 5_250_000);
        // Packets a little late or early (jitter, B-frames, transcoding) keep the anchor...
        assert_eq!(MediaAnchor::follow(Some(a), t0 + Duration::from_millis(2_000), 6_600), a);
        assert_eq!(MediaAnchor::follow(Some(a), t0 + Duration::from_millis(2_000), 7_900), a);
        // ...a stall or a jump of more than a second moves it.
        let b = MediaAnchor::follow(Some(a), t0 + Duration::from_millis(5_000), 6_000);
        assert_eq!(b.media_ms, 6_000);
    }

    #[test]
    fn gso_runs_are_same_size_datagrams_to_one_player() {
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let d = |n: usize| BytesMut::from(&vec![0u8; n][..]);
        // A frame to a: four full packets and a shorter last one; then b; then a again.
        let outbox = vec![
            (0, a, d(1200)),
            (0, a, d(1200)),
            (0, a, d(1200)),
            (0, a, d(1200)),
            (0, a, d(700)),
            (0, a, d(1200)),
            (0, b, d(1200)),
            (1, b, d(1200)),
            (1, b, d(1300)),
        ];
        assert_eq!(gso_run(&outbox, 64), 5, "the shorter one ends the run");
        assert_eq!(gso_run(&outbox[5..], 64), 1, "another player");
        assert_eq!(gso_run(&outbox[6..], 64), 1, "another socket");
        assert_eq!(gso_run(&outbox[7..], 64), 1, "a longer one cannot follow");
        assert_eq!(gso_run(&outbox, 3), 3, "segment limit");
        let big: Vec<_> = (0..100).map(|_| (0, a, d(1200))).collect();
        assert_eq!(gso_run(&big, 64), 54, "64 KB limit");
        assert_eq!(gso_run(&[], 64), 0);
        assert_eq!(gso_run(&[(0, a, d(0)), (0, a, d(0))], 64), 1);
    }

    /// A real GSO send on loopback arrives as separate datagrams at an ordinary socket.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_gso_send_arrives_as_separate_datagrams() {
        let tx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let packets: Vec<Vec<u8>> = vec![vec![1; 1200], vec![2; 1200], vec![3; 1200], vec![4; 500]];
        let slices: Vec<&[u8]> = packets.iter().map(|p| &p[..]).collect();
        tx.writable().await.unwrap();
        let sent = tx.try_io(tokio::io::Interest::WRITABLE, || send_gso(&tx, &slices, to)).unwrap();
        assert_eq!(sent, 4100);
        let mut buf = [0u8; 4096];
        for p in &packets {
            let (n, from) =
                tokio::time::timeout(Duration::from_secs(2), rx.recv_from(&mut buf)).await.unwrap().unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..n], &p[..]);
        }
    }

    #[test]
    fn unmap_v4_mapped() {
        assert_eq!(unmap("[::ffff:10.0.0.1]:5".parse().unwrap()), "10.0.0.1:5".parse::<SocketAddr>().unwrap());
        assert_eq!(unmap("[::1]:5".parse().unwrap()), "[::1]:5".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn random_credentials_are_ice_chars() {
        let c = IceCredentials::random();
        assert_eq!(c.ufrag.len(), 16);
        assert_eq!(c.pwd.len(), 32);
        assert!(c.ufrag.chars().chain(c.pwd.chars()).all(|ch| ch.is_ascii_alphanumeric()));
        assert_ne!(IceCredentials::random().ufrag, c.ufrag);
    }
}
