//! The server: sockets, the one task that owns every sans-IO peer connection, and the
//! per-session feeder tasks that turn broadcast samples into RTP packets.
//!
//! ```text
//!  UDP reader task(s) ─┐                         ┌─ feeder task (session 1) ◀─ broadcast rx
//!  TCP conn tasks ─────┼─ net ─▶  engine task ◀─ media ─ feeder task (session 2) ◀─ broadcast rx
//!  WebrtcServer API ───┴─ ctrl ─▶ (all RTCPeerConnections, demux maps, timers) ─▶ send_to / TCP writers
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
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
use crate::{Answer, Sample, StreamTracks, WebrtcError, WhepError};

/// A session that has not connected by then is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No ICE traffic for this long: disconnected.
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(5);
/// …and this much longer: failed, and the session is removed.
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(15);
const ICE_KEEPALIVE: Duration = Duration::from_secs(2);
/// A TCP connection that has not sent a valid ICE check for one of our sessions by then is closed.
const TCP_IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket buffers: a keyframe for many viewers leaves in one burst.
const SOCKET_BUFFER: usize = 4 << 20;
/// Frames queued from all feeders to the engine; when full, feeders wait, their broadcast
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
    ctrl: mpsc::Sender<Control>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    ice_servers: Vec<IceServer>,
    /// Host candidates every answer carries: (`udp` | `tcp`, address).
    candidates: Vec<(TransportProtocol, SocketAddr)>,
    counts: Arc<Counts>,
    task: Mutex<Option<JoinHandle<()>>>,
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
    /// Binds the sockets and starts the engine task.
    pub async fn start(config: WebrtcConfig) -> Result<WebrtcServer, WebrtcError> {
        let (net_tx, net_rx) = mpsc::channel(NET_QUEUE);
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
            io_tasks.push(tokio::spawn(tcp_accept(listener, net_tx.clone())));
        }

        for (index, binding) in udp.iter().enumerate() {
            io_tasks.push(tokio::spawn(udp_read(index, binding.socket.clone(), net_tx.clone())));
        }
        drop(net_tx);

        let mut candidates: Vec<(TransportProtocol, SocketAddr)> =
            udp.iter().flat_map(|b| b.advertised.iter().map(|a| (TransportProtocol::UDP, *a))).collect();
        candidates.extend(tcp_advertised.iter().map(|a| (TransportProtocol::TCP, *a)));
        candidates.dedup();
        info!(
            "WebRTC: UDP {udp_addr}{}; candidates {}",
            tcp_addr.map(|a| format!(", ICE-TCP {a}")).unwrap_or_default(),
            candidates.iter().map(|(p, a)| format!("{} {a}", proto_name(*p))).collect::<Vec<_>>().join(", ")
        );

        let counts = Arc::new(Counts::default());
        let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let engine = Engine {
            udp,
            tcp_advertised,
            counts: counts.clone(),
            ctrl_rx,
            net_rx,
            media_rx,
            media_tx,
            io_tasks,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_udp: HashMap::new(),
            tcp_conns: HashMap::new(),
            tcp_by_peer: HashMap::new(),
            timers: BinaryHeap::new(),
            outbox: Vec::new(),
            scratch: Vec::new(),
            next_key: 0,
            dropped_unknown: 0,
        };
        let task = tokio::spawn(engine.run());
        Ok(WebrtcServer {
            inner: Arc::new(Inner {
                ctrl: ctrl_tx,
                udp_addr,
                tcp_addr,
                ice_servers: config.ice_servers,
                candidates,
                counts,
                task: Mutex::new(Some(task)),
            }),
        })
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
        let (reply, replied) = oneshot::channel();
        let new = NewSession {
            id: session_id.clone(),
            stream: stream.to_owned(),
            ufrag: credentials.ufrag,
            pc: built.pc,
            video: built.video,
            audio: built.audio,
            avc: tracks.video.clone(),
            media,
        };
        self.inner
            .ctrl
            .send(Control::Add { session: Box::new(new), reply })
            .await
            .map_err(|_| WhepError::Unavailable)?;
        replied.await.map_err(|_| WhepError::Unavailable)??;
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
        let (reply, replied) = oneshot::channel();
        if self.inner.ctrl.send(Control::Close { id: session_id.to_owned(), reply }).await.is_err() {
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
        let (reply, replied) = oneshot::channel();
        if self.inner.ctrl.send(Control::Shutdown { reply }).await.is_ok() {
            let _ = replied.await;
        }
        let task = self.inner.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn proto_name(p: TransportProtocol) -> &'static str {
    if p == TransportProtocol::TCP { "tcp" } else { "udp" }
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

struct Engine {
    udp: Vec<UdpBinding>,
    tcp_advertised: Vec<SocketAddr>,
    counts: Arc<Counts>,
    ctrl_rx: mpsc::Receiver<Control>,
    net_rx: mpsc::Receiver<NetIn>,
    media_rx: mpsc::Receiver<FromFeeder>,
    media_tx: mpsc::Sender<FromFeeder>,
    io_tasks: Vec<JoinHandle<()>>,
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
    next_key: u64,
    dropped_unknown: u64,
}

impl Engine {
    async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.fire_timers(Instant::now());
            self.flush().await;
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
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        for task in &self.io_tasks {
            task.abort();
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
        if self.by_ufrag.contains_key(&new.ufrag) || self.by_id.contains_key(&new.id) {
            return Err(WhepError::Internal("ICE ufrag or session id collision".into()));
        }
        let key = self.next_key;
        self.next_key += 1;
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
        let feeder = tokio::spawn(feed(key, new.media, connected_rx, video, audio, self.media_tx.clone()));
        self.by_id.insert(new.id.clone(), key);
        self.by_ufrag.insert(new.ufrag.clone(), key);
        self.counts.add(&new.stream, 1);
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
        session.feeder.abort();
        self.counts.add(&session.stream, -1);
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
                    }
                    socket
                }
            };
            self.outbox.push((socket, to, out.message));
        } else {
            match self.tcp_by_peer.get(&to).and_then(|c| self.tcp_conns.get(c)) {
                Some(c) => {
                    if c.writer.try_send(out.message.freeze()).is_err() {
                        trace!("WebRTC: ICE-TCP queue to {to} full, packet dropped");
                    }
                }
                None => trace!("WebRTC: no ICE-TCP connection to {to}"),
            }
        }
    }

    async fn flush(&mut self) {
        for (socket, to, data) in self.outbox.drain(..) {
            if let Some(binding) = self.udp.get(socket)
                && let Err(e) = binding.socket.send_to(&data, to).await
            {
                debug!("WebRTC: send to {to}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// I/O tasks

async fn udp_read(index: usize, socket: Arc<UdpSocket>, net: mpsc::Sender<NetIn>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
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

async fn tcp_accept(listener: TcpListener, net: mpsc::Sender<NetIn>) {
    let next = AtomicU64::new(0);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let conn = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(tcp_conn(conn, stream, net.clone()));
            }
            Err(e) => {
                debug!("WebRTC: ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if net.is_closed() {
            return;
        }
    }
}

async fn tcp_conn(conn: u64, stream: TcpStream, net: mpsc::Sender<NetIn>) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return };
    let _ = stream.set_nodelay(true);
    let (writer, mut queue) = mpsc::channel::<Bytes>(TCP_WRITE_QUEUE);
    if net.send(NetIn::TcpOpened { conn, local: unmap(local), peer, writer }).await.is_err() {
        return;
    }
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
                        if net.send(NetIn::TcpData { conn, data }).await.is_err() {
                            return;
                        }
                    }
                }
            },
            out = queue.recv() => match out {
                Some(packet) => {
                    if wr.write_all(&frame_packet(&packet)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = wr.shutdown().await;
    let _ = net.send(NetIn::TcpClosed { conn }).await;
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
        let feeder = tokio::spawn(feed(7, rx, connected_rx, Some((RTCRtpSenderId::default(), video)), None, engine_tx));
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
