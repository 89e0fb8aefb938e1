//! The API handle, [`WebrtcServer`]: starts the sockets, the socket tasks and the shards, and
//! answers WHEP offers (a place under the limits first, then peer set-up on a blocking thread, a
//! place in the routing table and in the stream's feeder, then the peer goes to the least loaded
//! shard), closes sessions and reads the counters.
//!
//! ```text
//!  UDP reader task(s) ─┐  routing table: ufrag/address  ┌▶ shard 0 ◀─ media units ─┐
//!  TCP conn tasks ─────┼────────── → session, shard ────┤                          ├─ feeder of each
//!  WebrtcServer API ───┘  (least loaded on add)         └▶ shard 1 ◀─ …  ──────────┘  stream (payloads
//!                                                            └─▶ sendmsg (GSO) / TCP   made once)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::shared::TransportProtocol;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admission::{Admission, Reservation};
use crate::config::{IceServer, WebrtcConfig, advertised_ips, machine_ips};
use crate::feed::{FeedMsg, Feeds};
use crate::negotiate::ProfileLevelId;
use crate::net::{NetIn, UdpBinding, UdpSender, bind_tcp, bind_udp, proto_name, tcp_accept, udp_read};
use crate::peer::{IceCredentials, Plan, build_peer, plan, random_string};
use crate::routes::{SharedRoutes, shard_count};
use crate::shard::{Counters, NewSession, Shard};
use crate::shard_task::{IoTasks, ShardCommand, ShardTask};
use crate::{Answer, Sample, StreamTracks, WebrtcError, WebrtcStats, WhepError};

/// Media units queued from the feeders to one shard (one unit = one frame or audio packet of a
/// stream, for all the shard's sessions of it); when full, the feeder skips that shard and its
/// sessions' video waits for the next keyframe.
const MEDIA_QUEUE: usize = 256;
/// Datagrams and ICE-TCP packets queued from the socket tasks to one shard; when full, the UDP
/// reader drops that shard's datagram (counted) and goes on.
const NET_QUEUE: usize = 4096;

/// Handle to the WebRTC server (cheap to clone).
#[derive(Clone)]
pub struct WebrtcServer {
    inner: Arc<Inner>,
}

struct Inner {
    /// One command queue per shard.
    commands: Vec<mpsc::Sender<ShardCommand>>,
    routes: Arc<SharedRoutes>,
    feeds: Feeds,
    /// Per shard.
    counters: Arc<[Arc<Counters>]>,
    /// SO_SNDBUF / SO_RCVBUF the kernel granted on the (first) UDP socket.
    udp_buffers: (usize, usize),
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    ice_servers: Vec<IceServer>,
    /// Host candidates every answer carries: (`udp` | `tcp`, address).
    candidates: Vec<(TransportProtocol, SocketAddr)>,
    /// Public addresses learnt at run time ([`WebrtcServer::set_public_ips`]), advertised with
    /// the bound ports after `candidates`.
    public: Mutex<Vec<(TransportProtocol, SocketAddr)>>,
    /// The limits and the sessions counted under them.
    admission: Arc<Admission>,
    /// Places for ICE-TCP connections (one permit per open connection); `None` without ICE-TCP.
    tcp_slots: Option<Arc<Semaphore>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
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
    /// Binds the sockets and starts the shards: `ONAIR_WEBRTC_SHARDS` of them if set, else one
    /// per core (see [`WebrtcServer::start_with_shards`]).
    pub async fn start(config: WebrtcConfig) -> Result<WebrtcServer, WebrtcError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shards = shard_count(std::env::var("ONAIR_WEBRTC_SHARDS").ok().as_deref(), cores);
        WebrtcServer::start_with_shards(config, shards).await
    }

    /// Binds the sockets and starts `shards` shard tasks (at least one), each owning a share
    /// of the sessions (new sessions go to the shard with the fewest). All share the one UDP
    /// port; the socket readers route each packet to the shard owning its session.
    pub async fn start_with_shards(config: WebrtcConfig, shards: usize) -> Result<WebrtcServer, WebrtcError> {
        let shards = shards.max(1);
        let (mut net_txs, mut net_rxs, mut media_txs, mut media_rxs) = (vec![], vec![], vec![], vec![]);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel::<NetIn>(NET_QUEUE);
            net_txs.push(tx);
            net_rxs.push(rx);
            let (tx, rx) = mpsc::channel::<FeedMsg>(MEDIA_QUEUE);
            media_txs.push(tx);
            media_rxs.push(rx);
        }
        let nets: Arc<[mpsc::Sender<NetIn>]> = net_txs.into();
        let counters: Arc<[Arc<Counters>]> = (0..shards).map(|_| Arc::new(Counters::default())).collect();
        let routes = Arc::new(SharedRoutes::new(shards));
        let admission = Arc::new(Admission::new(config.limits.clone()));
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
        let mut tcp_slots = None;
        if let Some(addr) = config.tcp {
            let listener = bind_tcp(addr).map_err(|source| WebrtcError::BindTcp { addr, source })?;
            let local = listener.local_addr().unwrap_or(addr);
            tcp_addr = Some(local);
            tcp_advertised = advertised_ips(local.ip(), &config.public_ips)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, local.port()))
                .collect();
            let slots = Arc::new(Semaphore::new(config.limits.ice_tcp_connections.min(Semaphore::MAX_PERMITS)));
            tcp_slots = Some(slots.clone());
            io_tasks.push(tokio::spawn(tcp_accept(listener, nets.clone(), routes.clone(), slots, admission.clone())));
        }

        for (index, binding) in udp.iter().enumerate() {
            let reader = udp_read(index, binding.socket.clone(), nets.clone(), counters.clone(), routes.clone());
            io_tasks.push(tokio::spawn(reader));
        }
        drop(nets);

        let mut candidates: Vec<(TransportProtocol, SocketAddr)> =
            udp.iter().flat_map(|b| b.advertised.iter().map(|a| (TransportProtocol::UDP, *a))).collect();
        candidates.extend(tcp_advertised.iter().map(|a| (TransportProtocol::TCP, *a)));
        candidates.dedup();
        info!(
            "WebRTC: UDP {udp_addr}{}; candidates {}; {shards} shard(s); UDP send/receive buffers {} / {} KiB",
            tcp_addr.map(|a| format!(", ICE-TCP {a}")).unwrap_or_default(),
            candidates.iter().map(|(p, a)| format!("{} {a}", proto_name(*p))).collect::<Vec<_>>().join(", "),
            udp_buffers.0 / 1024,
            udp_buffers.1 / 1024,
        );

        let io = Arc::new(IoTasks(io_tasks));
        let mut commands = Vec::with_capacity(shards);
        let mut tasks = Vec::with_capacity(shards);
        for (index, (net, media)) in net_rxs.into_iter().zip(media_rxs).enumerate() {
            let (command_tx, command_rx) = mpsc::channel(64);
            let shard = Shard::new(
                index,
                udp.iter().map(|b| b.advertised.clone()).collect(),
                tcp_advertised.clone(),
                routes.clone(),
                counters[index].clone(),
                config.limits.connect_timeout,
            );
            let task = ShardTask {
                shard,
                sender: UdpSender::new(index, udp.clone()),
                stats: counters[index].clone(),
                routes: routes.clone(),
                commands: command_rx,
                net,
                media,
                _io: io.clone(),
            };
            commands.push(command_tx);
            tasks.push(tokio::spawn(task.run()));
        }
        Ok(WebrtcServer {
            inner: Arc::new(Inner {
                commands,
                routes,
                feeds: Feeds::new(media_txs.into(), counters.clone()),
                counters,
                udp_buffers,
                udp_addr,
                tcp_addr,
                ice_servers: config.ice_servers,
                candidates,
                public: Mutex::new(Vec::new()),
                admission,
                tcp_slots,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Counters of every shard (cumulative since start), the socket buffer sizes, refusals by
    /// limit and what is connecting now. Cheap: a few relaxed atomic loads per shard and one
    /// short lock.
    pub fn stats(&self) -> WebrtcStats {
        let max_tcp = self.inner.admission.limits.ice_tcp_connections.min(Semaphore::MAX_PERMITS);
        WebrtcStats {
            shards: self.inner.counters.iter().map(|c| c.snapshot()).collect(),
            unrouted: self.inner.routes.unrouted.load(Relaxed),
            lagged_samples: self.inner.feeds.lagged_samples.load(Relaxed),
            udp_send_buffer: self.inner.udp_buffers.0,
            udp_recv_buffer: self.inner.udp_buffers.1,
            refused: self.inner.admission.refusals(),
            connecting: self.inner.admission.connecting(),
            ice_tcp_connections: self.inner.tcp_slots.as_ref().map_or(0, |s| max_tcp - s.available_permits()),
            frames_skipped: self.inner.counters.iter().map(|c| c.frames_skipped.load(Relaxed)).sum(),
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
        self.all_candidates().iter().map(|(p, a)| (proto_name(*p).to_owned(), *a)).collect()
    }

    /// Advertises `ips` (with the bound UDP and ICE-TCP ports) as host candidates too, from the
    /// next answer on, replacing the ones set before; empty: none. For a public address learnt
    /// at run time (a router forwarding the same port numbers to this machine): unlike
    /// [`WebrtcConfig::public_ips`] the machine's own addresses stay advertised, so players on
    /// the LAN still connect directly. Datagrams through the router arrive on the machine's
    /// address and are answered from it (the router's NAT rewrites them back).
    pub fn set_public_ips(&self, ips: Vec<IpAddr>) {
        let own: Vec<(TransportProtocol, u16)> = self.inner.candidates.iter().map(|(p, a)| (*p, a.port())).collect();
        let mut extra = Vec::new();
        for ip in ips {
            for (proto, port) in &own {
                let c = (*proto, SocketAddr::new(ip, *port));
                if !self.inner.candidates.contains(&c) && !extra.contains(&c) {
                    extra.push(c);
                }
            }
        }
        let mut public = self.inner.public.lock().unwrap_or_else(|e| e.into_inner());
        if *public != extra {
            info!(
                "WebRTC: public candidates {}",
                if extra.is_empty() {
                    "none".to_string()
                } else {
                    extra.iter().map(|(p, a)| format!("{} {a}", proto_name(*p))).collect::<Vec<_>>().join(", ")
                }
            );
            *public = extra;
        }
    }

    fn all_candidates(&self) -> Vec<(TransportProtocol, SocketAddr)> {
        let mut all = self.inner.candidates.clone();
        all.extend(self.inner.public.lock().unwrap_or_else(|e| e.into_inner()).iter().copied());
        all
    }

    /// The STUN/TURN servers to hand to players (e.g. as WHEP `Link` headers, see
    /// [`IceServer::link_headers`]).
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.inner.ice_servers
    }

    /// The first step of a WHEP offer for `stream` from a player at `client`: a place under
    /// [`WebrtcLimits`](crate::WebrtcLimits), or [`WhepError::Busy`] naming the limit that is
    /// full (counted in [`WebrtcStats::refused`]). Cheap — one short lock, nothing built — so
    /// call it before anything else is made for the offer (such as the stream's broadcast
    /// receiver). Dropping the reservation gives the place back.
    pub fn reserve(&self, stream: &str, client: IpAddr) -> Result<Reservation, WhepError> {
        self.inner.admission.reserve(stream, client)
    }

    /// WHEP: answers a recvonly offer for the reservation's stream, whose media arrives on
    /// `media`. The session keeps the reservation until it ends.
    ///
    /// The offer is read here; building the peer and handing it to a shard runs in a task of its
    /// own, so a caller that gives up midway (its future dropped) leaves a complete session
    /// (which ends at the connect deadline), never routes or feed subscriptions without one.
    pub async fn answer(
        &self,
        reservation: Reservation,
        offer_sdp: &str,
        tracks: &StreamTracks,
        media: broadcast::Receiver<Arc<Sample>>,
    ) -> Result<Answer, WhepError> {
        if !reservation.of(&self.inner.admission) {
            return Err(WhepError::Internal("the reservation is another server's".into()));
        }
        let started = Instant::now();
        let plan = plan(offer_sdp, tracks)?;
        let offer =
            RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let server = self.clone();
        let tracks = tracks.clone();
        tokio::spawn(async move { server.set_up(reservation, plan, offer, tracks, media, started).await })
            .await
            .map_err(|e| WhepError::Internal(format!("answer task: {e}")))?
    }

    /// Builds the peer for a planned offer and hands it to the least-loaded shard.
    async fn set_up(
        self,
        reservation: Reservation,
        plan: Plan,
        offer: RTCSessionDescription,
        tracks: StreamTracks,
        media: broadcast::Receiver<Arc<Sample>>,
        started: Instant,
    ) -> Result<Answer, WhepError> {
        let stream = reservation.stream().to_owned();
        let credentials = IceCredentials::random();
        // Certificate, SDP parsing and writing: CPU work, kept off the async worker threads.
        let (plan, credentials, built) = {
            let candidates = self.all_candidates();
            let stream = stream.clone();
            tokio::task::spawn_blocking(move || {
                let built = build_peer(offer, &plan, &credentials, &candidates, &stream, Instant::now());
                (plan, credentials, built)
            })
            .await
            .map_err(|e| WhepError::Internal(format!("answer task: {e}")))?
        };
        let built = built?;
        let session_id = random_string(32);
        let (shard, key) = {
            let mut routes = self.inner.routes.lock();
            let shard = routes.pick();
            let key = routes
                .add_session(shard, &session_id, &credentials.ufrag)
                .ok_or_else(|| WhepError::Internal("ICE ufrag or session id collision".into()))?;
            (shard, key)
        };
        let attached = match self.inner.feeds.attach(&stream, shard, &tracks, media).await {
            Ok(attached) => attached,
            Err(e) => {
                self.inner.routes.lock().remove_session(key);
                return Err(e);
            }
        };
        let new = NewSession {
            key,
            id: session_id.clone(),
            reservation,
            pc: built.pc,
            video: built.video,
            audio: built.audio,
            feed: attached.feed,
            subscribers: attached.subscribers.clone(),
        };
        let (reply, replied) = oneshot::channel();
        let added = self.inner.commands[shard].send(ShardCommand::Add { session: Box::new(new), reply }).await.is_ok()
            && replied.await.is_ok();
        if !added {
            attached.subscribers.remove(shard);
            self.inner.routes.lock().remove_session(key);
            return Err(WhepError::Unavailable);
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
        let Some(target) = self.inner.routes.lock().session_of_id(session_id) else { return false };
        let (reply, replied) = oneshot::channel();
        let close = ShardCommand::Close { key: target.key, reply };
        if self.inner.commands[target.shard].send(close).await.is_err() {
            return false;
        }
        replied.await.unwrap_or(false)
    }

    /// Live sessions of a stream (connected or connecting, from their reservation on).
    pub fn sessions(&self, stream: &str) -> usize {
        self.inner.admission.of_stream(stream)
    }

    /// Live sessions of all streams (connected or connecting, from their reservation on).
    pub fn total_sessions(&self) -> usize {
        self.inner.admission.total()
    }

    /// Closes every session and frees the ports. Other clones of this handle stop working.
    pub async fn shutdown(self) {
        for commands in &self.inner.commands {
            let (reply, replied) = oneshot::channel();
            if commands.send(ShardCommand::Shutdown { reply }).await.is_ok() {
                let _ = replied.await;
            }
        }
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}
