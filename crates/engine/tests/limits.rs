//! The HTTP and RTMP limits of `[limits]` against real sockets on loopback: an engine per test
//! (WebRTC off), raw TCP clients that misbehave, a real ffmpeg publisher, and the refusal counts
//! the engine keeps by reason. Every wait is bounded; the extra client addresses are loopback
//! ones (127.0.0.2, ...), so "another client" is another IP.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use onair_engine::config::LimitsSettings;
use onair_engine::hub::{Now, Publisher};
use onair_engine::limits::Refusal;
use onair_engine::{Config, EndReason, Engine, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &str = "limits-test-secret";

async fn start(limits: LimitsSettings) -> Engine {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data_dir = std::env::temp_dir().join(format!("onair-limits-test-{}-{n}", std::process::id()));
    let mut config = Config {
        http: "127.0.0.1:0".parse().unwrap(),
        rtmp: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        limits,
        ..Config::default()
    };
    config.webrtc.enabled = false;
    config.validate().expect("a valid test config");
    Engine::start(config, SigningKey::new(SECRET).into()).await.expect("engine starts")
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits (polling, up to `limit`) until `cond` holds; says whether it did.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// Reads (and discards) until the peer closes; answers how long after `since` that was, or
/// None if it stayed open for `limit`.
async fn closed_after(mut s: TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()
}

/// An HTTP/1.1 response read off a connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One response (headers and a `Content-Length` body) within `limit`; None if the connection
/// closed or nothing complete came in time.
async fn read_answer(s: &mut TcpStream, limit: Duration) -> Option<Answer> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let status = head.split(' ').nth(1)?.parse().ok()?;
                let mut answer = Answer { status, head, body: Vec::new() };
                let len: usize = answer.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = buf[end + 4..].to_vec();
                while body.len() < len {
                    let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                    body.extend_from_slice(&chunk[..n]);
                }
                answer.body = body;
                return Some(answer);
            }
            let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(limit, read).await.ok().flatten()
}

async fn get_on(s: &mut TcpStream, path: &str) -> Option<Answer> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: onair\r\n\r\n").as_bytes()).await.ok()?;
    read_answer(s, Duration::from_secs(5)).await
}

/// A GET on a new connection from 127.0.0.1.
async fn get(engine: &Engine, path: &str) -> Option<Answer> {
    let mut s = connect_from("127.0.0.1", engine.http_addr()).await;
    get_on(&mut s, path).await
}

/// Publishes the first seconds of the real OBS capture into `name`, in process; the stream then
/// waits for frames that never come, so a blocking reload for the next part is held.
fn publish_capture(engine: &Engine, name: &str) -> Publisher {
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"
    ))
    .unwrap();
    let now = Now::system();
    let mut p = engine.registry().publish(name, "127.0.0.1:9".parse().unwrap(), now).unwrap();
    for tag in onair_media::flv::read_flv(&file).unwrap().into_iter().filter(|t| t.timestamp_ms < 3000) {
        match tag.tag_type {
            9 => drop(p.video(tag.body, tag.timestamp_ms, now)),
            8 => drop(p.audio(tag.body, tag.timestamp_ms, now)),
            _ => {}
        }
    }
    p
}

/// The blocking reload for the part after the last one of `name`.
fn next_part_url(engine: &Engine, name: &str) -> String {
    let stream = engine.registry().get(name).expect("published");
    let pos = stream.figures(std::time::Instant::now()).unwrap().position.unwrap();
    format!("/live/{name}/llhls.m3u8?_HLS_msn={}&_HLS_part={}", pos.msn, pos.part + 1)
}

/// Starts a held request on a new connection from `from`.
async fn held(engine: &Engine, from: &str, path: &str) -> TcpStream {
    let mut s = connect_from(from, engine.http_addr()).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: onair\r\n\r\n").as_bytes()).await.unwrap();
    s
}

/// `ffmpeg` publishing a small generated stream; killed on drop. A missing ffmpeg fails the test.
struct Ffmpeg(Child);

impl Ffmpeg {
    fn publish(url: &str) -> Ffmpeg {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "30",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-t", "60", "-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg is installed (scripts/test.sh installs it)");
        Ffmpeg(child)
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` connections from `from` that send the first bytes of an RTMP handshake and stop.
async fn stalled_rtmp(engine: &Engine, from: &str, count: usize) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..count {
        let mut s = connect_from(from, engine.rtmp_addr()).await;
        // C0 and a third of C1.
        let mut c0c1 = vec![3u8];
        c0c1.extend(std::iter::repeat_n(7u8, 512));
        s.write_all(&c0c1).await.unwrap();
        conns.push(s);
    }
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_connections_not_publishing_are_capped_and_timed_out_while_a_publish_works() {
    let auth = Duration::from_secs(3);
    let engine = start(LimitsSettings {
        rtmp_pending: 6,
        rtmp_pending_per_ip: 3,
        rtmp_auth_timeout_s: auth.as_secs(),
        ..Default::default()
    })
    .await;
    let refused = |why| engine.refusals().get(why);
    let watch = |conns: Vec<TcpStream>| {
        let since = Instant::now();
        conns
            .into_iter()
            .map(move |s| tokio::spawn(closed_after(s, since, Duration::from_secs(15))))
            .collect::<Vec<_>>()
    };
    assert_eq!(engine.rtmp_pending(), 0);

    // One client opens 3 + 2: the 2 over its share are closed at once. Two more clients fill
    // the total (3 + 3 of 6); the one after is closed at once too.
    let mut stalled = watch(stalled_rtmp(&engine, "127.0.0.2", 5).await);
    stalled.extend(watch(stalled_rtmp(&engine, "127.0.0.3", 2).await));
    stalled.extend(watch(stalled_rtmp(&engine, "127.0.0.4", 2).await));
    // (A connection is accepted, and refused, a moment after its connect returns.)
    let counts = || (engine.rtmp_pending(), refused(Refusal::RtmpPendingPerIp), refused(Refusal::RtmpPending));
    eventually(Duration::from_secs(2), || counts() == (6, 2, 1)).await;
    assert_eq!(counts(), (6, 2, 1), "pending, refused per IP, refused in total");

    // The refused ones closed at once; the rest at the auth deadline; the count is back to 0.
    let mut early = 0;
    for h in stalled {
        let closed = h.await.unwrap().expect("every stalled connection is closed");
        if closed < Duration::from_secs(1) {
            early += 1;
        } else {
            assert!(
                closed >= auth - Duration::from_millis(200) && closed < auth + Duration::from_secs(3),
                "{closed:?}"
            );
        }
    }
    assert_eq!(early, 3);
    assert_eq!(refused(Refusal::RtmpAuthTimeout), 6);
    assert!(eventually(Duration::from_secs(2), || engine.rtmp_pending() == 0).await, "back to the baseline");

    // While a client holds its whole share, a real publisher from another address gets in; once
    // its publish is accepted it no longer counts as pending, and no deadline ends it.
    let held = watch(stalled_rtmp(&engine, "127.0.0.2", 3).await);
    let port = engine.rtmp_addr().port();
    let url = onair_policy::sign_url(
        SECRET.as_bytes(),
        &format!("rtmp://127.0.0.1:{port}/live/cam"),
        &onair_policy::Policy {
            url_expire: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
                + 3_600_000,
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut ffmpeg = Ffmpeg::publish(&url);
    let live = || engine.registry().get("cam").is_some_and(|s| s.is_playable());
    assert!(eventually(Duration::from_secs(20), live).await, "the ffmpeg publish went live");
    for h in held {
        assert!(h.await.unwrap().is_some(), "closed at the deadline");
    }
    assert_eq!(refused(Refusal::RtmpAuthTimeout), 9);
    assert!(eventually(Duration::from_secs(2), || engine.rtmp_pending() == 0).await, "the publisher is not pending");
    tokio::time::sleep((started + auth + Duration::from_secs(1)).saturating_duration_since(Instant::now())).await;
    assert!(ffmpeg.running(), "ffmpeg still publishing");
    assert!(live(), "the stream is still live");
    assert_eq!(refused(Refusal::RtmpAuthTimeout), 9, "the publisher was not timed out");
    drop(ffmpeg);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_bodies_are_cut_off_and_keep_alive_still_works() {
    let timeout = Duration::from_secs(2);
    let engine = start(LimitsSettings {
        http_header_timeout_s: timeout.as_secs(),
        http_body_timeout_s: timeout.as_secs(),
        ..Default::default()
    })
    .await;
    let refused = |why| engine.refusals().get(why);

    // Keep-alive: requests within the timeout share a connection; then it closes when idle,
    // which is not a refusal.
    let mut kept = connect_from("127.0.0.1", engine.http_addr()).await;
    for _ in 0..3 {
        let a = get_on(&mut kept, "/healthz").await.expect("answered on the same connection");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
        tokio::time::sleep(timeout / 2).await;
    }
    let idle = closed_after(kept, Instant::now(), timeout * 3).await.expect("an idle connection is closed");
    assert!(idle < timeout + Duration::from_secs(1), "{idle:?}");
    assert_eq!(refused(Refusal::HttpTimeout), 0, "an idle keep-alive close is no refusal");

    // Slowloris: headers one byte at a time, forever; each connection is cut at the timeout.
    let t0 = Instant::now();
    let mut lorises = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.2", engine.http_addr()).await;
        lorises.push(tokio::spawn(async move {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: onair\r\n").await.unwrap();
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut probe = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
                    Ok(Ok(0) | Err(_)) => return Some(t0.elapsed()),
                    Ok(Ok(_)) => return None, // an answer to half a request would be a bug
                    Err(_) => {}
                }
                if s.write_all(b"X").await.is_err() {
                    return Some(t0.elapsed());
                }
            }
            None
        }));
    }
    // Meanwhile a normal client is served at once.
    let start = Instant::now();
    assert_eq!(get(&engine, "/healthz").await.map(|a| a.status), Some(200));
    assert!(start.elapsed() < Duration::from_secs(1));
    for h in lorises {
        let closed = h.await.unwrap().expect("a slowloris connection is closed, never answered");
        assert!(closed < timeout + Duration::from_millis(1500), "{closed:?}");
    }
    assert_eq!(refused(Refusal::HttpTimeout), 20);

    // A body that stops halfway: 408 and the connection closed.
    let mut s = connect_from("127.0.0.3", engine.http_addr()).await;
    let sent = Instant::now();
    s.write_all(b"POST /live/cam/whep HTTP/1.1\r\nHost: onair\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s, timeout * 3).await.expect("an answer to the stalled body");
    assert_eq!(a.status, 408, "{a:?}");
    assert!(sent.elapsed() >= timeout - Duration::from_millis(200) && sent.elapsed() < timeout * 2);
    assert_eq!(a.header("connection"), Some("close"));
    assert!(closed_after(s, sent, Duration::from_secs(2)).await.is_some());
    assert_eq!(refused(Refusal::HttpTimeout), 21);

    // Headers too large to buffer: 431, not memory.
    let mut s = connect_from("127.0.0.3", engine.http_addr()).await;
    let mut huge = b"GET /healthz HTTP/1.1\r\nHost: onair\r\nX-Pad: ".to_vec();
    huge.resize(huge.len() + 200 * 1024, b'a');
    let _ = s.write_all(&huge).await;
    assert_eq!(read_answer(&mut s, Duration::from_secs(2)).await.map(|a| a.status), Some(431));
    drop(s);

    assert!(eventually(Duration::from_secs(3), || engine.http_connections() == 0).await, "back to the baseline");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_at_once_and_the_cap_frees_up() {
    let engine = start(LimitsSettings { http_connections: 8, retry_after_s: 5, ..Default::default() }).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(connect_from("127.0.0.2", engine.http_addr()).await);
    }
    assert!(eventually(Duration::from_secs(2), || engine.http_connections() == 8).await);
    // Over the cap: a 503 with Retry-After and the close, or the close alone — at once.
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.3", engine.http_addr()).await;
        let asked = Instant::now();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: onair\r\n\r\n").await;
        if let Some(a) = read_answer(&mut s, Duration::from_secs(2)).await {
            assert_eq!(a.status, 503, "{a:?}");
            assert_eq!(a.header("retry-after"), Some("5"));
        }
        assert!(closed_after(s, asked, Duration::from_secs(2)).await.is_some(), "closed at once");
    }
    assert_eq!(engine.refusals().get(Refusal::HttpConnections), 5);
    assert_eq!(engine.http_connections(), 8);
    // The idle ones leave: a normal request is served.
    drop(open);
    assert!(eventually(Duration::from_secs(3), || engine.http_connections() == 0).await);
    assert_eq!(get(&engine, "/healthz").await.map(|a| a.status), Some(200));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped_with_503_and_retry_after() {
    let engine = start(LimitsSettings { http_in_flight: 2, retry_after_s: 4, ..Default::default() }).await;
    let mut publisher = publish_capture(&engine, "cam");
    let next = next_part_url(&engine, "cam");
    let mut waiting = vec![held(&engine, "127.0.0.1", &next).await, held(&engine, "127.0.0.2", &next).await];
    assert!(eventually(Duration::from_secs(2), || engine.http_in_flight() == 2).await);
    let a = get(&engine, "/healthz").await.expect("an answer");
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.header("retry-after"), Some("4"));
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(engine.refusals().get(Refusal::HttpInFlight), 1);
    // The held requests end with the stream; the server takes requests again.
    publisher.set_end_reason(EndReason::Finished); // ends at once (a drop would get the grace period)
    drop(publisher);
    for s in &mut waiting {
        assert_eq!(read_answer(s, Duration::from_secs(3)).await.map(|a| a.status), Some(404));
    }
    assert!(eventually(Duration::from_secs(2), || engine.http_in_flight() == 0).await);
    assert_eq!(get(&engine, "/healthz").await.map(|a| a.status), Some(200));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_reloads_per_client_are_capped_with_503_and_retry_after() {
    let engine = start(LimitsSettings { reload_waiters_per_ip: 2, retry_after_s: 3, ..Default::default() }).await;
    let mut publisher = publish_capture(&engine, "cam");
    let next = next_part_url(&engine, "cam");
    let mut waiting = vec![held(&engine, "127.0.0.1", &next).await, held(&engine, "127.0.0.1", &next).await];
    assert!(eventually(Duration::from_secs(2), || engine.http_in_flight() == 2).await);
    // A third from the same client: refused, in a way players retry.
    let a = get(&engine, &next).await.expect("an answer");
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.header("retry-after"), Some("3"));
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(engine.refusals().get(Refusal::ReloadWaiters), 1);
    // Another client is held as usual.
    let mut other = held(&engine, "127.0.0.2", &next).await;
    assert!(read_answer(&mut other, Duration::from_millis(500)).await.is_none(), "held, not refused");
    waiting.push(other);
    publisher.set_end_reason(EndReason::Finished); // ends at once (a drop would get the grace period)
    drop(publisher);
    for s in &mut waiting {
        assert_eq!(read_answer(s, Duration::from_secs(3)).await.map(|a| a.status), Some(404));
    }
    assert_eq!(engine.refusals().get(Refusal::ReloadWaiters), 1);
    engine.shutdown().await;
}

/// The engine's getters are what an outside test (tests/tests/abuse.rs) needs to see the baseline.
#[tokio::test]
async fn counts_start_at_zero() {
    let engine = start(LimitsSettings::default()).await;
    assert_eq!((engine.http_connections(), engine.http_in_flight(), engine.rtmp_pending()), (0, 0, 0));
    assert!(Refusal::ALL.iter().all(|r| engine.refusals().get(*r) == 0));
    engine.shutdown().await;
}
