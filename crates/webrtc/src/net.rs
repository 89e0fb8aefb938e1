//! Socket I/O: binding the UDP and ICE-TCP sockets, the reader tasks that look every packet up
//! in the routing table and hand it to its shard (never waiting on a full shard: that shard's
//! packet is dropped and counted), the ICE-TCP accept loop (at most
//! [`crate::WebrtcLimits::ice_tcp_connections`] open: one more is closed as it is accepted,
//! before any task or buffer) and connection tasks, and the send path (batches of datagrams,
//! runs to one player in one `sendmsg` with UDP GSO on Linux).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::shared::TransportProtocol;
use rtc::shared::tcp_framing::{TcpFrameDecoder, frame_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{debug, trace, warn};

use crate::admission::{Admission, Limit};
use crate::demux::is_stun;
use crate::routes::SharedRoutes;
use crate::shard::Counters;

/// Socket buffers: a keyframe for many viewers leaves in one burst. Linux caps the request at
/// `net.core.wmem_max`/`rmem_max` (the sizes obtained are logged and in the stats).
const SOCKET_BUFFER: usize = 4 << 20;
/// A TCP connection that has not sent a valid ICE check for one of our sessions by then is closed.
const TCP_IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets queued for one ICE-TCP connection before we drop (like UDP would).
pub(crate) const TCP_WRITE_QUEUE: usize = 1024;
/// Bytes of one GSO send (an IP datagram's payload is at most 65507 bytes).
const GSO_MAX_BYTES: usize = 65_000;
/// Segments of one GSO send (the kernel's UDP_MAX_SEGMENTS was 64 before Linux 6.9).
const GSO_MAX_SEGMENTS: usize = 64;

/// What the socket tasks hand to a shard; `key` is the session the routing table found.
pub(crate) enum NetIn {
    Udp { key: u64, socket: usize, from: SocketAddr, data: BytesMut },
    TcpOpened { conn: u64, key: u64, local: SocketAddr, peer: SocketAddr, writer: mpsc::Sender<Bytes> },
    TcpData { conn: u64, data: Vec<u8> },
    TcpClosed { conn: u64 },
}

/// A datagram a shard wants sent: on UDP socket number `socket`, to `to`.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub socket: usize,
    pub to: SocketAddr,
    pub data: BytesMut,
}

/// One bound UDP socket and the candidate addresses it stands for.
#[derive(Clone)]
pub(crate) struct UdpBinding {
    pub socket: Arc<UdpSocket>,
    /// What a datagram arriving here is said to have reached (our advertised candidates).
    pub advertised: Vec<SocketAddr>,
}

pub(crate) fn proto_name(p: TransportProtocol) -> &'static str {
    if p == TransportProtocol::TCP { "tcp" } else { "udp" }
}

pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel may cap these (net.core.rmem_max / wmem_max).
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(crate) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // Rebinding right after a restart (TIME_WAIT). Not on Windows, where SO_REUSEADDR would let
    // a second process bind the same port.
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Reads one UDP socket: each datagram goes to the shard of its session, or is dropped and
/// counted (`unrouted` when it belongs to no session, the shard's `net_dropped` when that
/// shard's queue is full: one busy shard never holds up the others).
pub(crate) async fn udp_read(
    index: usize,
    socket: Arc<UdpSocket>,
    shards: Arc<[mpsc::Sender<NetIn>]>,
    counters: Arc<[Arc<Counters>]>,
    routes: Arc<SharedRoutes>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let target = routes.lock().route(&buf[..n], from);
                let Some((target, shard)) = target.and_then(|t| Some((t, shards.get(t.shard)?))) else {
                    routes.unrouted.fetch_add(1, Relaxed);
                    trace!("WebRTC: dropped {n} bytes from unknown {from} (stun: {})", is_stun(&buf[..n]));
                    continue;
                };
                let data = BytesMut::from(&buf[..n]);
                match shard.try_send(NetIn::Udp { key: target.key, socket: index, from, data }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters[target.shard].net_dropped.fetch_add(1, Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
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

/// Accepts ICE-TCP connections while `slots` has a permit for each (one per open connection);
/// one beyond that is closed at once and counted as refused by `ice_tcp_connections`, with a
/// warning at most every 10 s.
pub(crate) async fn tcp_accept(
    listener: TcpListener,
    shards: Arc<[mpsc::Sender<NetIn>]>,
    routes: Arc<SharedRoutes>,
    slots: Arc<Semaphore>,
    admission: Arc<Admission>,
) {
    let next = AtomicU64::new(0);
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let conn = next.fetch_add(1, Relaxed);
                    tokio::spawn(tcp_conn(conn, stream, shards.clone(), routes.clone(), permit));
                }
                Err(_) => {
                    drop(stream);
                    admission.refuse(Limit::IceTcpConnections);
                    let max = admission.limits.ice_tcp_connections;
                    debug!(
                        "WebRTC: ICE-TCP connection from {peer} refused: the ice_tcp_connections limit ({max}) is reached"
                    );
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                        last_warning = Some(Instant::now());
                        warn!(
                            "WebRTC: refusing ICE-TCP connections (e.g. from {peer}): the ice_tcp_connections limit ({max}) is reached"
                        );
                    }
                }
            },
            Err(e) => {
                debug!("WebRTC: ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if shards.iter().all(|n| n.is_closed()) {
            return;
        }
    }
}

/// One ICE-TCP connection: its first packet naming one of our ufrags (an ICE check) decides
/// the session (and shard) it belongs to; one that names none within [`TCP_IDENTIFY_TIMEOUT`]
/// is closed. It ends when the shard drops its writer (the session ended) or the player closes,
/// and then gives back its `_slot`.
async fn tcp_conn(
    conn: u64,
    stream: TcpStream,
    shards: Arc<[mpsc::Sender<NetIn>]>,
    routes: Arc<SharedRoutes>,
    _slot: OwnedSemaphorePermit,
) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return };
    let local = unmap(local);
    let _ = stream.set_nodelay(true);
    let (writer, mut queue) = mpsc::channel::<Bytes>(TCP_WRITE_QUEUE);
    // Handed to the shard once the connection is identified.
    let mut writer = Some(writer);
    let mut shard: Option<&mpsc::Sender<NetIn>> = None;
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
                        let to = match shard {
                            Some(to) => to,
                            None => {
                                let target = routes.lock().route_stun(&data);
                                let found = target.and_then(|t| Some((t, shards.get(t.shard)?)));
                                let Some((target, to)) = found else {
                                    routes.unrouted.fetch_add(1, Relaxed);
                                    continue;
                                };
                                let Some(w) = writer.take() else { return };
                                let opened = NetIn::TcpOpened { conn, key: target.key, local, peer, writer: w };
                                if to.send(opened).await.is_err() {
                                    return;
                                }
                                shard = Some(to);
                                to
                            }
                        };
                        if to.send(NetIn::TcpData { conn, data }).await.is_err() {
                            return;
                        }
                    }
                }
            },
            out = queue.recv(), if shard.is_some() => match out {
                Some(packet) => {
                    if wr.write_all(&frame_packet(&packet)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut identify_by, if shard.is_none() => {
                debug!("WebRTC: closing ICE-TCP connection from {peer} (no ICE check for a session)");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    if let Some(to) = shard {
        let _ = to.send(NetIn::TcpClosed { conn }).await;
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d` (a dual-stack listener reports IPv4 peers mapped).
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

/// Datagrams per GSO send: [`GSO_MAX_SEGMENTS`] on Linux unless `ONAIR_WEBRTC_GSO=0`; 1 (off)
/// elsewhere. A path that cannot segment turns it off at the first failure.
fn gso_segments() -> usize {
    let off = std::env::var("ONAIR_WEBRTC_GSO").is_ok_and(|v| v.trim() == "0");
    if cfg!(target_os = "linux") && !off { GSO_MAX_SEGMENTS } else { 1 }
}

/// How many datagrams at the head of `outbox` can leave in one GSO send: same socket and
/// destination, all as long as the first except possibly the last (shorter), at most
/// `max_segments` and 64 KB in all.
fn gso_run(outbox: &[Datagram], max_segments: usize) -> usize {
    let Some(first) = outbox.first() else { return 0 };
    let size = first.data.len();
    if size == 0 {
        return 1;
    }
    let max = max_segments.min(GSO_MAX_BYTES / size).max(1);
    let mut n = 1;
    for d in &outbox[1..] {
        if n == max || d.socket != first.socket || d.to != first.to || d.data.len() > size || d.data.is_empty() {
            break;
        }
        n += 1;
        if d.data.len() < size {
            break;
        }
    }
    n
}

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

/// What one `send` did.
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

/// A shard's send path over the shared UDP sockets.
pub(crate) struct UdpSender {
    shard: usize,
    udp: Vec<UdpBinding>,
    /// Datagrams per GSO send; 1 = no GSO.
    gso_segments: usize,
    last_send_warning: Option<Instant>,
}

impl UdpSender {
    pub fn new(shard: usize, udp: Vec<UdpBinding>) -> UdpSender {
        UdpSender { shard, udp, gso_segments: gso_segments(), last_send_warning: None }
    }

    /// Sends and empties `outbox`. Runs of same-size datagrams to one player (the FU-A packets
    /// of a frame) leave in one `sendmsg` with UDP GSO on Linux (the last of a run may be
    /// shorter). A full socket send buffer makes the shard wait for room (counted in
    /// `send_blocked`); any other error loses the packets (counted in `send_errors`, warned
    /// about at most every 10 s).
    pub async fn send(&mut self, outbox: &mut Vec<Datagram>, stats: &Counters) {
        if outbox.is_empty() {
            return;
        }
        let mut tally = SendTally::default();
        let mut i = 0;
        while i < outbox.len() {
            let (socket, to) = (outbox[i].socket, outbox[i].to);
            let run = if self.gso_segments > 1 { gso_run(&outbox[i..], self.gso_segments) } else { 1 };
            let Some(binding) = self.udp.get(socket) else {
                i += run;
                continue;
            };
            let datagrams: Vec<&[u8]> = outbox[i..i + run].iter().map(|d| &d.data[..]).collect();
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
                        warn!("WebRTC shard {}: UDP GSO not usable ({e}); sending datagrams one by one", self.shard);
                        self.gso_segments = 1;
                        for d in &datagrams {
                            match binding.socket.send_to(d, to).await {
                                Ok(n) => {
                                    tally.calls += 1;
                                    tally.sent += 1;
                                    tally.bytes += n as u64;
                                }
                                Err(e) => tally.error(1, to, e),
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
        stats.packets_sent.fetch_add(tally.sent, Relaxed);
        stats.bytes_sent.fetch_add(tally.bytes, Relaxed);
        stats.send_calls.fetch_add(tally.calls, Relaxed);
        stats.send_blocked.fetch_add(tally.blocked, Relaxed);
        if let Some((to, e)) = tally.first_error {
            stats.send_errors.fetch_add(tally.errors, Relaxed);
            let now = Instant::now();
            if self.last_send_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
                self.last_send_warning = Some(now);
                warn!(
                    "WebRTC shard {}: {} packet(s) not sent, e.g. to {to}: {e} ({} send errors in all)",
                    self.shard,
                    tally.errors,
                    stats.send_errors.load(Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_runs_are_same_size_datagrams_to_one_player() {
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let d =
            |socket: usize, to: SocketAddr, n: usize| Datagram { socket, to, data: BytesMut::from(&vec![0u8; n][..]) };
        // A frame to a: four full packets and a shorter last one; then b; then a again.
        let outbox = vec![
            d(0, a, 1200),
            d(0, a, 1200),
            d(0, a, 1200),
            d(0, a, 1200),
            d(0, a, 700),
            d(0, a, 1200),
            d(0, b, 1200),
            d(1, b, 1200),
            d(1, b, 1300),
        ];
        assert_eq!(gso_run(&outbox, 64), 5, "the shorter one ends the run");
        assert_eq!(gso_run(&outbox[5..], 64), 1, "another player");
        assert_eq!(gso_run(&outbox[6..], 64), 1, "another socket");
        assert_eq!(gso_run(&outbox[7..], 64), 1, "a longer one cannot follow");
        assert_eq!(gso_run(&outbox, 3), 3, "segment limit");
        let big: Vec<_> = (0..100).map(|_| d(0, a, 1200)).collect();
        assert_eq!(gso_run(&big, 64), 54, "64 KB limit");
        assert_eq!(gso_run(&[], 64), 0);
        assert_eq!(gso_run(&[d(0, a, 0), d(0, a, 0)], 64), 1);
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

    /// A full shard queue costs that shard a datagram (counted); the reader goes on, and the
    /// other shard still gets its traffic.
    #[tokio::test]
    async fn a_full_shard_queue_never_stalls_the_reader() {
        let server = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let routes = Arc::new(SharedRoutes::new(2));
        let (busy_player, free_player) =
            (UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap());
        {
            let mut table = routes.lock();
            let busy = table.add_session(0, "busy", "ufBusy").unwrap();
            let free = table.add_session(1, "free", "ufFree").unwrap();
            table.learn(busy, busy_player.local_addr().unwrap());
            table.learn(free, free_player.local_addr().unwrap());
        }
        // Shard 0 takes one packet and is never drained; shard 1 has room.
        let (tx0, _rx0) = mpsc::channel(1);
        let (tx1, mut rx1) = mpsc::channel(64);
        let counters: Arc<[Arc<Counters>]> = vec![Arc::default(), Arc::default()].into();
        let reader = tokio::spawn(udp_read(0, Arc::new(server), vec![tx0, tx1].into(), counters.clone(), routes));
        for i in 0..10u8 {
            busy_player.send_to(&[0x80, 96, 0, i], addr).await.unwrap();
        }
        for i in 0..10u8 {
            free_player.send_to(&[0x80, 96, 0, i], addr).await.unwrap();
        }
        for i in 0..10u8 {
            let got = tokio::time::timeout(Duration::from_secs(2), rx1.recv()).await.unwrap().unwrap();
            let NetIn::Udp { data, .. } = got else { panic!("not a datagram") };
            assert_eq!(data[3], i);
        }
        assert_eq!(counters[0].net_dropped.load(Relaxed), 9);
        assert_eq!(counters[1].net_dropped.load(Relaxed), 0);
        reader.abort();
    }

    #[test]
    fn unmap_v4_mapped() {
        assert_eq!(unmap("[::ffff:10.0.0.1]:5".parse().unwrap()), "10.0.0.1:5".parse::<SocketAddr>().unwrap());
        assert_eq!(unmap("[::1]:5".parse().unwrap()), "[::1]:5".parse::<SocketAddr>().unwrap());
    }
}
