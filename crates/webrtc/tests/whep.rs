//! End-to-end WHEP tests: a real `WebrtcServer` on loopback, media from a real OBS capture sent in
//! real time through a broadcast channel, a tiny axum WHEP endpoint, and headless Chromium
//! (playwright-core, `tests/whep_client.mjs`) as the player.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules` (scripts/test.sh installs
//! them) and `ffmpeg` for the Main-profile clip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use onair_media::{AvcConfig, Frame, Track, VideoTag, parse_video_tag, read_flv};
use onair_webrtc::{Sample, StreamTracks, WebrtcConfig, WebrtcServer, WhepError};
use tokio::sync::broadcast;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn require_tool(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(tool)).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("`{tool}` is not installed: run scripts/test.sh, which installs every tool the tests need")
        })
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ONAIR_LOG").unwrap_or_else(|_| "onair_webrtc=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The AVC configuration and video frames of an FLV file.
fn load_flv(path: &Path) -> (AvcConfig, Vec<Frame>) {
    let file = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut config = None;
    let mut frames = Vec::new();
    for tag in read_flv(&file).unwrap().into_iter().filter(|t| t.tag_type == 9) {
        match parse_video_tag(tag.body).unwrap() {
            VideoTag::Config(c) => config = Some(c),
            VideoTag::Frame { keyframe, composition_time_ms, data } if !data.is_empty() => frames.push(Frame {
                track: Track::Video,
                dts: u64::from(tag.timestamp_ms),
                cts: composition_time_ms,
                keyframe,
                data,
            }),
            _ => {}
        }
    }
    (config.expect("no AVC sequence header"), frames)
}

fn obs_capture() -> (AvcConfig, Vec<Frame>) {
    load_flv(&manifest_dir().join("../media/tests/data/obs29-x264-high-640x360p30-aac48k.flv"))
}

/// A 20 ms Opus packet of silence (TOC: CELT fullband 20 ms, stereo, one frame).
const OPUS_SILENCE: &[u8] = &[0xfc, 0xff, 0xfe];

/// A stream being "published": the file's video frames looped in real time, and 20 ms Opus
/// silence packets on the same ms timeline, into a broadcast channel.
struct Publisher {
    /// Taken (dropped) by `stop`, so the channel closes.
    tx: Arc<std::sync::Mutex<Option<broadcast::Sender<Arc<Sample>>>>>,
    tracks: StreamTracks,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publisher {
    /// `audio`: None = no audio track; Some(delay) = Opus packets handed out `delay` after their
    /// pts (as an AAC → Opus transcoder would).
    fn start_with(avc: AvcConfig, frames: Vec<Frame>, audio: Option<Duration>) -> Publisher {
        let with_audio = audio.is_some();
        let audio_delay = audio.unwrap_or_default();
        let (tx, _) = broadcast::channel(512);
        let start = tokio::time::Instant::now();
        let span = frames.last().map_or(0, |f| f.dts) + 33;
        let video_tx = tx.clone();
        let video = tokio::spawn(async move {
            for lap in 0u64.. {
                for f in &frames {
                    let dts = lap * span + f.dts;
                    tokio::time::sleep_until(start + Duration::from_millis(dts)).await;
                    let _ = video_tx.send(Arc::new(Sample::Video(Frame { dts, ..f.clone() })));
                }
            }
        });
        let audio_tx = tx.clone();
        let audio = tokio::spawn(async move {
            if !with_audio {
                return;
            }
            for n in 0u64.. {
                let pts_ms = n * 20;
                tokio::time::sleep_until(start + Duration::from_millis(pts_ms) + audio_delay).await;
                let _ = audio_tx.send(Arc::new(Sample::Opus {
                    data: Bytes::from_static(OPUS_SILENCE),
                    pts_ms,
                    samples: 960,
                }));
            }
        });
        Publisher {
            tx: Arc::new(std::sync::Mutex::new(Some(tx))),
            tracks: StreamTracks { video: Some(avc), audio: with_audio },
            tasks: vec![video, audio],
        }
    }

    /// Ends the stream: the broadcast channel closes once every sender is gone.
    fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.tx.lock().unwrap().take();
    }

    fn app(&self, server: &WebrtcServer) -> AppState {
        AppState { server: server.clone(), stream: "live".into(), tx: self.tx.clone(), tracks: self.tracks.clone() }
    }
}

#[derive(Clone)]
struct AppState {
    server: WebrtcServer,
    stream: String,
    tx: Arc<std::sync::Mutex<Option<broadcast::Sender<Arc<Sample>>>>>,
    tracks: StreamTracks,
}

async fn whep_post(State(s): State<AppState>, UrlPath(stream): UrlPath<String>, body: Body) -> Response {
    if stream != s.stream {
        return (StatusCode::NOT_FOUND, "no such stream").into_response();
    }
    let offer = String::from_utf8_lossy(&body);
    let Some(media) = s.tx.lock().unwrap().as_ref().map(|tx| tx.subscribe()) else {
        return (StatusCode::NOT_FOUND, "stream ended").into_response();
    };
    match answer(&s.server, &stream, &offer, &s.tracks, media).await {
        Ok(answer) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, "application/sdp".parse().unwrap());
            headers.insert(header::LOCATION, format!("/whep/{stream}/{}", answer.session_id).parse().unwrap());
            (StatusCode::CREATED, headers, answer.sdp).into_response()
        }
        Err(e) => (whep_status(&e), e.to_string()).into_response(),
    }
}

/// The engine's mapping of WHEP errors to HTTP (crates/engine/src/http.rs).
fn whep_status(e: &WhepError) -> StatusCode {
    match e {
        WhepError::BadOffer(_) | WhepError::Incompatible(_) => StatusCode::BAD_REQUEST,
        WhepError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WhepError::Offline => StatusCode::NOT_FOUND,
        WhepError::Unavailable | WhepError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        WhepError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// WHEP for a player on this machine: a place under the limits, then the answer.
async fn answer(
    server: &WebrtcServer,
    stream: &str,
    offer: &str,
    tracks: &StreamTracks,
    media: broadcast::Receiver<Arc<Sample>>,
) -> Result<onair_webrtc::Answer, WhepError> {
    let reservation = server.reserve(stream, std::net::Ipv4Addr::LOCALHOST.into())?;
    server.answer(reservation, offer, tracks, media).await
}

async fn whep_delete(State(s): State<AppState>, UrlPath((_stream, id)): UrlPath<(String, String)>) -> StatusCode {
    if s.server.close(&id).await { StatusCode::OK } else { StatusCode::NOT_FOUND }
}

/// Serves `/` (a blank page the player script runs in) and the WHEP endpoint; returns its address.
async fn http(state: AppState) -> SocketAddr {
    let app = Router::new()
        .route("/", get(|| async { Html("<!doctype html><title>onair-webrtc test</title>") }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/whep/{stream}", post(whep_post))
        .route("/whep/{stream}/{id}", delete(whep_delete))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn loopback_config() -> WebrtcConfig {
    WebrtcConfig {
        udp: "127.0.0.1:0".parse().unwrap(),
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..WebrtcConfig::default()
    }
}

/// The default shape on any free port: bound to 0.0.0.0.
fn wildcard_config() -> WebrtcConfig {
    WebrtcConfig {
        udp: "0.0.0.0:0".parse().unwrap(),
        tcp: Some("0.0.0.0:0".parse().unwrap()),
        ..WebrtcConfig::default()
    }
}

/// A server started with `config`, a stream published as "live" and a WHEP endpoint serving it.
struct Live {
    server: WebrtcServer,
    publisher: Publisher,
    http: SocketAddr,
}

impl Live {
    /// `audio` as in [`Publisher::start_with`].
    async fn start(config: WebrtcConfig, (avc, frames): (AvcConfig, Vec<Frame>), audio: Option<Duration>) -> Live {
        let server = WebrtcServer::start(config).await.unwrap();
        let publisher = Publisher::start_with(avc, frames, audio);
        let http = http(publisher.app(&server)).await;
        Live { server, publisher, http }
    }

    /// The OBS capture with on-time audio, on loopback.
    async fn obs() -> Live {
        Live::start(loopback_config(), obs_capture(), Some(Duration::ZERO)).await
    }

    /// Plays the stream with [`chromium`].
    async fn chromium(&self, args: &[&str]) -> serde_json::Value {
        chromium(self.http, "live", args).await
    }

    /// Ends the stream and shuts the server down.
    async fn stop(self) {
        self.publisher.stop();
        self.server.shutdown().await;
    }
}

/// Starts a browser test: logs, then its turn. Browser tests take turns: two Chromiums decoding
/// at once on a 2-core machine make the timing measurements (first frame, A/V sync) meaningless.
async fn browser_test() -> tokio::sync::MutexGuard<'static, ()> {
    init_logs();
    static TURN: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    TURN.get_or_init(|| tokio::sync::Mutex::new(())).lock().await
}

/// Chromium lip-syncs the two tracks on our RTCP sender reports: it has a playout estimate for
/// both (`avSyncDeltaMs`, printed). Whether the reports map audio and video of one instant to
/// one NTP time is checked deterministically, on a virtual clock, by the shard's unit test
/// `sender_reports_put_audio_and_video_of_one_instant_at_one_ntp_time`; the value Chromium
/// measures depends on how loaded the machine is, so it is reported here, not judged.
fn assert_sync_estimated(v: &serde_json::Value) {
    let delta = v["avSyncDeltaMs"].as_i64();
    assert!(delta.is_some(), "no A/V sync estimate from the sender reports: {v}");
    println!(
        "Chromium's A/V playout difference: {} ms (jitter buffer {} ms)",
        delta.unwrap_or_default(),
        v["jitterBufferDelayMs"]
    );
}

/// Runs the Chromium WHEP client; returns its JSON.
async fn chromium(http: SocketAddr, stream: &str, args: &[&str]) -> serde_json::Value {
    require_tool("chromium");
    let node = require_tool("node");
    assert!(
        manifest_dir().join("../../tests/browser/node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run scripts/test.sh (it runs npm ci there)"
    );
    let out = tokio::process::Command::new(node)
        .arg(manifest_dir().join("tests/whep_client.mjs"))
        .arg(format!("http://{http}/"))
        .arg(format!("http://{http}/whep/{stream}"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("whep_client.mjs printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

async fn wait_for_sessions(server: &WebrtcServer, n: usize, within: Duration) -> Duration {
    let t0 = Instant::now();
    while server.total_sessions() != n {
        assert!(t0.elapsed() < within, "{} sessions after {within:?}, expected {n}", server.total_sessions());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_whep_session() {
    let _turn = browser_test().await;
    let live = Live::obs().await;
    let server = &live.server;

    let json = live.chromium(&["--expect-width", "640", "--min-frames", "120", "--want-sync", "--end", "close"]).await;
    println!("chromium: {json}");
    assert_eq!(json["ok"], true, "{json}");
    let v = &json["viewers"][0];
    assert!(v["framesDecoded"].as_u64().unwrap() > 30, "{v}");
    assert_eq!(v["frameWidth"], 640);
    assert_eq!(v["frameHeight"], 360);
    assert!(v["audioPackets"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["candidatePair"]["protocol"], "udp", "{v}");
    assert_eq!(v["candidatePair"]["remote"], format!("{}", server.udp_addr()), "{v}");
    assert_sync_estimated(v);
    // The stream is High (64..); Chromium 156 offers no 64.. so the answer uses the decoder that
    // contains High, High 4:4:4 Predictive (f4..).
    assert!(v["answerProfile"].as_str().unwrap().starts_with("f4"), "{v}");

    // pc.close() sends DTLS close_notify: the session goes at once, not after the ICE timeout.
    let gone = wait_for_sessions(server, 0, Duration::from_secs(25)).await;
    println!("session removed {} ms after the page closed it", gone.as_millis());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_main_profile_stream_without_audio() {
    let _turn = browser_test().await;
    let flv = main_profile_flv();
    let (avc, frames) = load_flv(&flv);
    let _ = std::fs::remove_file(&flv);
    assert_eq!((avc.profile_idc, avc.width), (77, 320));
    let live = Live::start(loopback_config(), (avc, frames), None).await;
    let json = live.chromium(&["--expect-width", "320", "--no-audio", "--end", "delete"]).await;
    println!("chromium, Main profile, no audio: {json}");
    assert_eq!(json["ok"], true, "{json}");
    let v = &json["viewers"][0];
    assert!(v["answerProfile"].as_str().unwrap().starts_with("4d"), "{v}");
    assert_eq!(v["frameHeight"], 180, "{v}");
    assert_eq!(v["audioPackets"], 0, "{v}");
    wait_for_sessions(&live.server, 0, Duration::from_secs(5)).await;
    live.stop().await;
}

/// Starts a server with `config`, plays once with Chromium, checks it played; returns the JSON.
async fn play_with(config: WebrtcConfig) -> (WebrtcServer, serde_json::Value) {
    let live = Live::start(config, obs_capture(), Some(Duration::ZERO)).await;
    let json = live.chromium(&["--expect-width", "640", "--end", "delete"]).await;
    assert_eq!(json["ok"], true, "{json}");
    wait_for_sessions(&live.server, 0, Duration::from_secs(5)).await;
    live.publisher.stop();
    (live.server, json)
}

/// Audio leaves 150 ms after video of the same instant (transcoding latency): it still plays,
/// and the sender reports map both tracks to the publish timeline (checked exactly by the
/// shard's `sender_reports_put_audio_and_video_of_one_instant_at_one_ntp_time`), so Chromium
/// delays video to match (its synchronizer moves at most ~80 ms a second and filters: it takes
/// ~10–20 s; 150 ms → 18 ms measured after 20 s on a quiet machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_audio_still_plays() {
    let _turn = browser_test().await;
    let live = Live::start(loopback_config(), obs_capture(), Some(Duration::from_millis(150))).await;
    let json = live.chromium(&["--min-frames", "600", "--timeout", "60000", "--want-sync", "--end", "delete"]).await;
    println!("chromium, audio 150 ms late: {json}");
    assert_eq!(json["ok"], true, "{json}");
    assert_sync_estimated(&json["viewers"][0]);
    live.stop().await;
}

/// The default shape: bound to 0.0.0.0, one socket per machine address on one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_a_wildcard_bind() {
    let _turn = browser_test().await;
    let (server, json) = play_with(wildcard_config()).await;
    let candidates = server.candidates();
    println!("candidates {candidates:?}\nchromium: {json}");
    let port = server.udp_addr().port();
    assert!(candidates.contains(&("udp".into(), SocketAddr::from(([127, 0, 0, 1], port)))), "{candidates:?}");
    assert!(candidates.iter().filter(|(p, _)| p == "udp").all(|(_, a)| a.port() == port), "{candidates:?}");
    assert_eq!(json["viewers"][0]["candidatePair"]["protocol"], "udp");
    server.shutdown().await;
}

/// NAT 1:1: one socket on 0.0.0.0, the candidates carry the configured public address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_a_public_ip() {
    let _turn = browser_test().await;
    let config = WebrtcConfig { tcp: None, public_ips: vec!["127.0.0.1".parse().unwrap()], ..wildcard_config() };
    let (server, json) = play_with(config).await;
    let port = server.udp_addr().port();
    assert_eq!(server.candidates(), vec![("udp".to_string(), SocketAddr::from(([127, 0, 0, 1], port)))]);
    assert_eq!(json["viewers"][0]["candidatePair"]["remote"], format!("127.0.0.1:{port}"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_sessions_then_delete_and_close() {
    let _turn = browser_test().await;
    let live = Live::obs().await;

    // Five players end with DELETE, five just close their peer connection.
    let (a, b) = tokio::join!(
        live.chromium(&["--viewers", "5", "--expect-width", "640", "--end", "delete", "--timeout", "45000"]),
        live.chromium(&["--viewers", "5", "--expect-width", "640", "--end", "close", "--timeout", "45000"]),
    );
    println!("delete: {a}\nclose: {b}");
    for json in [&a, &b] {
        assert_eq!(json["ok"], true, "{json}");
        for v in json["viewers"].as_array().unwrap() {
            assert!(v["framesDecoded"].as_u64().unwrap() > 30, "{v}");
            assert_eq!(v["frameWidth"], 640, "{v}");
        }
    }
    for v in a["viewers"].as_array().unwrap() {
        assert_eq!(v["deleteStatus"], 200, "{v}");
    }
    wait_for_sessions(&live.server, 0, Duration::from_secs(25)).await;
    assert_eq!(live.server.sessions("live"), 0);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_over_ice_tcp() {
    let _turn = browser_test().await;
    let live = Live::obs().await;

    let json = live.chromium(&["--tcp-only", "--expect-width", "640", "--end", "delete"]).await;
    println!("chromium over ICE-TCP: {json}");
    assert_eq!(json["ok"], true, "{json}");
    let v = &json["viewers"][0];
    assert_eq!(v["candidatePair"]["protocol"], "tcp", "{v}");
    assert_eq!(v["candidatePair"]["remote"], format!("{}", live.server.tcp_addr().unwrap()), "{v}");
    wait_for_sessions(&live.server, 0, Duration::from_secs(5)).await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_player_times_out() {
    let turn = browser_test().await;
    let live = Live::obs().await;
    // The browser is SIGKILLed while playing: no close_notify, no DELETE, no more ICE checks.
    let json = live.chromium(&["--end", "kill"]).await;
    drop(turn); // the browser is gone: the next browser test may start
    assert_eq!(json["ok"], true, "{json}");
    let killed = Instant::now();
    assert_eq!(live.server.total_sessions(), 1);
    // ICE: disconnected after 5 s without traffic, failed 15 s later.
    let gone = wait_for_sessions(&live.server, 0, Duration::from_secs(40)).await;
    println!("session removed {} ms after the browser was killed", gone.as_millis());
    assert!(killed.elapsed() >= Duration::from_secs(10), "removed too early: {:?}", killed.elapsed());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_its_stream() {
    let _turn = browser_test().await;
    let Live { server, publisher, http } = Live::obs().await;
    // The player keeps its peer connection open (--end none, and the page stays 20 s)...
    let player = tokio::spawn(async move { chromium(http, "live", &["--end", "none", "--hold", "20000"]).await });
    let t0 = Instant::now();
    while server.sessions("live") == 0 || t0.elapsed() < Duration::from_secs(6) {
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.sessions("live"), 1);
    // ...until the stream ends: every broadcast sender is dropped and the session goes.
    publisher.stop();
    let gone = wait_for_sessions(&server, 0, Duration::from_secs(5)).await;
    println!("session removed {} ms after the stream ended", gone.as_millis());
    server.shutdown().await;
    player.abort();
}

/// A Safari-style offer: Constrained High 640c1f first, then Constrained Baseline.
const SAFARI_VIDEO_CODECS: &str = "a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\na=rtpmap:98 H264/90000\r\na=fmtp:98 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

fn chromium_offer() -> String {
    std::fs::read_to_string(manifest_dir().join("tests/data/chromium156-recvonly-offer.sdp")).unwrap()
}

/// The Chromium offer with its video codecs replaced by `codecs` (payload types `pts`).
fn offer_with_video(codecs: &str, pts: &str) -> String {
    let offer = chromium_offer();
    let mut out = String::new();
    let mut in_video = false;
    for line in offer.split("\r\n") {
        if line.starts_with("m=") {
            in_video = line.starts_with("m=video");
            if in_video {
                out.push_str(&format!("m=video 9 UDP/TLS/RTP/SAVPF {pts}\r\n"));
                out.push_str(codecs);
                continue;
            }
        }
        if in_video && (line.starts_with("a=rtpmap") || line.starts_with("a=fmtp") || line.starts_with("a=rtcp-fb")) {
            continue;
        }
        if !line.is_empty() {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

fn answer_profile(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.split("profile-level-id=").nth(1).filter(|_| l.starts_with("a=fmtp:")))
        .map(|p| p.trim()[..6].to_string())
        .unwrap_or_else(|| panic!("no profile-level-id in the answer:\n{sdp}"))
}

/// A Main-profile FLV made by ffmpeg/x264 (3 s, 320x180).
fn main_profile_flv() -> PathBuf {
    let path = std::env::temp_dir().join(format!("onair-webrtc-main-{}.flv", std::process::id()));
    let status = std::process::Command::new(require_tool("ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-t", "3", "-c:v", "libx264", "-profile:v", "main", "-bf", "0", "-g", "30", "-f", "flv"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// For tests of `answer` alone: a server on loopback, a media channel, and the tracks of the OBS
/// capture (High profile, with audio).
async fn answer_test() -> (WebrtcServer, broadcast::Sender<Arc<Sample>>, StreamTracks) {
    init_logs();
    let server = WebrtcServer::start(loopback_config()).await.unwrap();
    let (tx, _) = broadcast::channel::<Arc<Sample>>(16);
    let (high, _) = obs_capture();
    assert_eq!(high.profile_idc, 100);
    (server, tx, StreamTracks { video: Some(high), audio: true })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_stream_profile() {
    let (server, tx, high_tracks) = answer_test().await;

    // High stream, Safari-style offer: 64xxxx.
    let safari = offer_with_video(SAFARI_VIDEO_CODECS, "96 98");
    let a = answer(&server, "s", &safari, &high_tracks, tx.subscribe()).await.unwrap();
    println!("answer to a Safari-style offer:\n{}", a.sdp);
    assert!(answer_profile(&a.sdp).starts_with("64"), "{}", a.sdp);
    assert!(a.sdp.contains("a=sendonly"), "{}", a.sdp);
    assert!(a.sdp.contains("opus/48000/2"), "{}", a.sdp);
    assert!(a.sdp.contains(&format!("{} typ host", server.udp_addr().port())), "{}", a.sdp);
    assert!(a.sdp.contains("tcptype passive"), "{}", a.sdp);

    // Main stream (x264 writes 4d40..), Chromium's offer: 4dxxxx.
    let flv = main_profile_flv();
    let (main, _) = load_flv(&flv);
    let _ = std::fs::remove_file(&flv);
    assert_eq!(main.profile_idc, 77);
    let main_tracks = StreamTracks { video: Some(main), audio: false };
    let b = answer(&server, "m", &chromium_offer(), &main_tracks, tx.subscribe()).await.unwrap();
    assert!(answer_profile(&b.sdp).starts_with("4d"), "{}", b.sdp);
    // No audio in the stream: nothing is sent in the audio section.
    let audio_section = &b.sdp[b.sdp.find("m=audio").unwrap()..];
    println!("audio section of the Main-profile answer:\n{audio_section}");
    assert_eq!(b.sdp.matches("a=sendonly").count(), 1, "{}", b.sdp);

    // High stream, an offer with Constrained Baseline only (Firefox/OpenH264): Incompatible.
    let firefox = offer_with_video(
        "a=rtpmap:126 H264/90000\r\na=fmtp:126 profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1\r\n",
        "126",
    );
    let err = answer(&server, "s", &firefox, &high_tracks, tx.subscribe()).await.unwrap_err();
    assert!(matches!(err, WhepError::Incompatible(_)), "{err}");
    assert_eq!(whep_status(&err), StatusCode::BAD_REQUEST);
    println!("{err}");

    assert_eq!(server.sessions("s"), 1);
    assert_eq!(server.sessions("m"), 1);
    assert_eq!(server.total_sessions(), 2);
    assert!(server.close(&a.session_id).await);
    assert!(!server.close(&a.session_id).await);
    assert_eq!(server.total_sessions(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_offers_are_bad_offers() {
    let (server, tx, tracks) = answer_test().await;
    let good = chromium_offer();
    let no_fingerprint: String =
        good.split("\r\n").filter(|l| !l.starts_with("a=fingerprint")).map(|l| format!("{l}\r\n")).collect();
    let no_ice: String =
        good.split("\r\n").filter(|l| !l.starts_with("a=ice-ufrag")).map(|l| format!("{l}\r\n")).collect();
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("text", "this is not SDP".into()),
        ("binary", "\u{0}\u{1}\u{ff}v=0".into()),
        ("session only", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".into()),
        ("truncated before any m=", good[..good.find("m=video").unwrap()].to_string()),
        ("m= line cut short", good[..good.find("m=video").unwrap() + 9].to_string()),
        ("no fingerprint", no_fingerprint),
        ("no ice-ufrag", no_ice),
        ("data channel only", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n".into()),
    ];
    for (what, sdp) in cases {
        match answer(&server, "s", &sdp, &tracks, tx.subscribe()).await {
            Err(WhepError::BadOffer(reason)) => println!("{what}: BadOffer({reason})"),
            other => panic!("{what}: expected BadOffer, got {other:?}"),
        }
    }
    assert_eq!(server.total_sessions(), 0);
    server.shutdown().await;
}

/// CPU time (user + system) this process has used, from /proc/self/stat (Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Measurement, not a check: `cargo test -p onair-webrtc --release --test whep -- --ignored soak --nocapture`.
/// N Chromium players (ONAIR_SOAK_VIEWERS, default 10) for ~20 s; prints the server process's CPU use
/// (the publisher task included, Chromium excluded) and what every player received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak() {
    let _turn = browser_test().await;
    let viewers: usize = std::env::var("ONAIR_SOAK_VIEWERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let live = Live::obs().await;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let n = viewers.to_string();
    let args = ["--viewers", &n, "--min-frames", "600", "--expect-width", "640", "--timeout", "60000", "--want-sync"];
    let json = live.chromium(&args).await;
    let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed());
    for v in json["viewers"].as_array().unwrap() {
        println!(
            "viewer {}: frames {} lost {} dropped {} audio {} avSync {} ms jitterBuffer {} ms firstFrame {} ms",
            v["viewer"],
            v["framesDecoded"],
            v["videoPacketsLost"],
            v["framesDropped"],
            v["audioPackets"],
            v["avSyncDeltaMs"],
            v["jitterBufferDelayMs"],
            v["firstFrameMs"]
        );
    }
    println!(
        "{viewers} viewers, {:.1} s: server process CPU {:.2} s = {:.1} % of one core",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    assert_eq!(json["ok"], true, "{json}");
    live.stop().await;
}
