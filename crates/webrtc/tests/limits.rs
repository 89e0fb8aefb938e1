//! The WebRTC limits against a real `WebrtcServer` on loopback: offers beyond each limit are
//! refused with the limit's label before anything is made for them, concurrent offers never
//! overshoot, places come back when sessions end or miss the connect deadline, and ICE-TCP
//! connections beyond the cap are closed as they are accepted. Real Chromium offers (a captured
//! one), real peer set-up; no browser needed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onair_media::{AvcConfig, VideoTag, parse_video_tag, read_flv};
use onair_webrtc::{Sample, StreamTracks, WebrtcConfig, WebrtcLimits, WebrtcServer, WhepError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium_offer() -> String {
    std::fs::read_to_string(manifest_dir().join("tests/data/chromium156-recvonly-offer.sdp")).unwrap()
}

/// The decoder configuration of the real OBS capture (x264 High).
fn obs_avc() -> AvcConfig {
    let path = manifest_dir().join("../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv");
    let file = std::fs::read(&path).unwrap();
    read_flv(&file)
        .unwrap()
        .into_iter()
        .filter(|t| t.tag_type == 9)
        .find_map(|t| match parse_video_tag(t.body) {
            Ok(VideoTag::Config(c)) => Some(c),
            _ => None,
        })
        .unwrap()
}

/// A server on loopback with `limits`, and a live stream's media channel.
struct Rig {
    server: WebrtcServer,
    tracks: StreamTracks,
    media: broadcast::Sender<Arc<Sample>>,
    offer: String,
}

impl Rig {
    async fn start(limits: WebrtcLimits) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("ONAIR_LOG").unwrap_or_else(|_| "onair_webrtc=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let config = WebrtcConfig {
            udp: "127.0.0.1:0".parse().unwrap(),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            limits,
            ..WebrtcConfig::default()
        };
        let server = WebrtcServer::start_with_shards(config, 2).await.unwrap();
        let (media, _) = broadcast::channel(16);
        Rig { server, tracks: StreamTracks { video: Some(obs_avc()), audio: true }, media, offer: chromium_offer() }
    }

    /// One WHEP offer for `stream` from `client`, as the engine makes it: reserve, then answer.
    async fn offer(&self, stream: &str, client: IpAddr) -> Result<String, WhepError> {
        let reservation = self.server.reserve(stream, client)?;
        let answer = self.server.answer(reservation, &self.offer, &self.tracks, self.media.subscribe()).await?;
        Ok(answer.session_id)
    }

    fn refused(&self, label: &str) -> u64 {
        let refused = self.server.stats().refused;
        refused.iter().find(|(l, _)| *l == label).unwrap_or_else(|| panic!("no {label} in {refused:?}")).1
    }

    /// `n` more offers for `stream` from `client`, each refused by `label`; nothing is made for
    /// them (no session, no task, nothing connecting).
    async fn refused_offers(&self, n: u64, stream: &str, client: IpAddr, label: &str) {
        let before = (self.server.total_sessions(), self.server.stats().connecting, self.refused(label));
        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
        for _ in 0..n {
            match self.offer(stream, client).await {
                Err(WhepError::Busy { limit, .. }) => assert_eq!(limit, label),
                other => panic!("expected Busy({label}), got {other:?}"),
            }
        }
        assert_eq!(tokio::runtime::Handle::current().metrics().num_alive_tasks(), tasks, "refusals start no task");
        let after = (self.server.total_sessions(), self.server.stats().connecting, self.refused(label));
        assert_eq!(after, (before.0, before.1, before.2 + n));
    }
}

fn ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))
}

const MANY: WebrtcLimits = WebrtcLimits {
    sessions: 1000,
    sessions_per_stream: 1000,
    sessions_per_ip: 1000,
    connecting: 1000,
    ice_tcp_connections: 1000,
    connect_timeout: Duration::from_secs(60),
    retry_after: Duration::from_secs(7),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_each_limit_are_busy_with_its_label() {
    // Per client IP: the third from one address is refused; another address still gets in.
    let rig = Rig::start(WebrtcLimits { sessions_per_ip: 2, ..MANY }).await;
    rig.offer("s", ip(1)).await.unwrap();
    rig.offer("s", ip(1)).await.unwrap();
    rig.refused_offers(200, "s", ip(1), "webrtc_sessions_per_ip").await;
    rig.offer("s", ip(2)).await.unwrap();
    assert_eq!(rig.server.total_sessions(), 3);
    match rig.offer("s", ip(1)).await {
        Err(e @ WhepError::Busy { .. }) => {
            assert_eq!(e, WhepError::Busy { limit: "webrtc_sessions_per_ip", max: 2, retry_after_s: 7 });
            println!("{e}");
        }
        other => panic!("{other:?}"),
    }
    rig.server.shutdown().await;

    // Per stream: another stream still gets in.
    let rig = Rig::start(WebrtcLimits { sessions_per_stream: 3, ..MANY }).await;
    for i in 0..3 {
        rig.offer("a", ip(i)).await.unwrap();
    }
    rig.refused_offers(200, "a", ip(9), "webrtc_sessions_per_stream").await;
    rig.offer("b", ip(9)).await.unwrap();
    assert_eq!((rig.server.sessions("a"), rig.server.sessions("b")), (3, 1));
    rig.server.shutdown().await;

    // In total, over streams and addresses.
    let rig = Rig::start(WebrtcLimits { sessions: 4, ..MANY }).await;
    for i in 0..4 {
        rig.offer(&format!("s{i}"), ip(i)).await.unwrap();
    }
    rig.refused_offers(200, "s9", ip(9), "webrtc_sessions").await;
    rig.server.shutdown().await;

    // Still connecting (nobody here ever connects); a closed session gives its place back.
    let rig = Rig::start(WebrtcLimits { connecting: 2, ..MANY }).await;
    let first = rig.offer("s", ip(1)).await.unwrap();
    rig.offer("s", ip(2)).await.unwrap();
    assert_eq!(rig.server.stats().connecting, 2);
    rig.refused_offers(200, "s", ip(3), "webrtc_connecting").await;
    assert!(rig.server.close(&first).await);
    assert_eq!((rig.server.total_sessions(), rig.server.stats().connecting), (1, 1));
    rig.offer("s", ip(3)).await.unwrap();
    // Every limit is listed, refused or not.
    let labels: Vec<&str> = rig.server.stats().refused.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        labels,
        [
            "webrtc_sessions",
            "webrtc_sessions_per_stream",
            "webrtc_sessions_per_ip",
            "webrtc_connecting",
            "ice_tcp_connections"
        ]
    );
    rig.server.shutdown().await;
}

/// Offers racing each other get exactly as many places as the limit allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_offers_never_overshoot() {
    let rig = Arc::new(Rig::start(WebrtcLimits { connecting: 5, ..MANY }).await);
    let offers: Vec<_> = (0..40u8)
        .map(|i| {
            let rig = rig.clone();
            tokio::spawn(async move { rig.offer("s", ip(i)).await })
        })
        .collect();
    let mut answered = 0;
    for offer in offers {
        match offer.await.unwrap() {
            Ok(_) => answered += 1,
            Err(WhepError::Busy { limit: "webrtc_connecting", .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(answered, 5);
    assert_eq!(rig.refused("webrtc_connecting"), 35);
    assert_eq!((rig.server.total_sessions(), rig.server.stats().connecting), (5, 5));
}

/// Waits (at most `within`) until the server holds no session and nothing is connecting.
async fn drained(server: &WebrtcServer, within: Duration) -> Duration {
    let t0 = Instant::now();
    while server.total_sessions() != 0 || server.stats().connecting != 0 {
        assert!(
            t0.elapsed() < within,
            "{} sessions, {} connecting after {within:?}",
            server.total_sessions(),
            server.stats().connecting
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// Sessions that never connect leave at the connect deadline and give their places back — also
/// one whose caller gave up while it was being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_never_connect_are_released_at_the_deadline() {
    let deadline = Duration::from_secs(2);
    let rig = Rig::start(WebrtcLimits { connecting: 3, connect_timeout: deadline, ..MANY }).await;
    let t0 = Instant::now();
    for i in 0..2 {
        rig.offer("s", ip(i)).await.unwrap();
    }
    // A caller that gives up at once (an HTTP client that went away): the session is still made
    // whole, and holds its place until the deadline like the others.
    let reservation = rig.server.reserve("s", ip(2)).unwrap();
    let answering = rig.server.answer(reservation, &rig.offer, &rig.tracks, rig.media.subscribe());
    // Polled once, then dropped.
    tokio::select! {
        biased;
        _ = answering => panic!("answered at the first poll"),
        _ = std::future::ready(()) => {}
    }
    assert_eq!((rig.server.total_sessions(), rig.server.stats().connecting), (3, 3));
    rig.refused_offers(50, "s", ip(3), "webrtc_connecting").await;
    let waited = drained(&rig.server, deadline + Duration::from_secs(5)).await;
    println!("released {:?} after the first offer", t0.elapsed());
    assert!(t0.elapsed() >= deadline, "released before the deadline: {waited:?}");
    // The places are free again.
    rig.offer("s", ip(3)).await.unwrap();
    assert_eq!(rig.server.stats().connecting, 1);
    rig.server.shutdown().await;
}

/// Whether the server closed `conn` (EOF or reset) within `within`.
async fn closed_by_server(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(within, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("the server sent {n} bytes"),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_connections_over_the_cap_are_closed() {
    let rig = Rig::start(WebrtcLimits { ice_tcp_connections: 3, ..MANY }).await;
    let addr = rig.server.tcp_addr().unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(TcpStream::connect(addr).await.unwrap());
    }
    let t0 = Instant::now();
    while rig.server.stats().ice_tcp_connections != 3 {
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", rig.server.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Beyond the cap: closed as accepted, and counted.
    for _ in 0..20 {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_by_server(&mut extra, Duration::from_secs(5)).await,
            "an ICE-TCP connection over the cap stayed open"
        );
    }
    assert_eq!(rig.refused("ice_tcp_connections"), 20);
    assert_eq!(rig.server.stats().ice_tcp_connections, 3);
    // The ones within the cap are still open (until they identify a session or time out).
    for conn in &mut kept {
        assert!(!closed_by_server(conn, Duration::from_millis(100)).await);
    }
    // Closing them frees their places.
    drop(kept);
    let t0 = Instant::now();
    while rig.server.stats().ice_tcp_connections != 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", rig.server.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = TcpStream::connect(addr).await.unwrap();
    assert!(!closed_by_server(&mut again, Duration::from_millis(300)).await, "a place was free again");
    assert_eq!(rig.refused("ice_tcp_connections"), 20);
    rig.server.shutdown().await;
}
