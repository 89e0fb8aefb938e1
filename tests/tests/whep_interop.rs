//! WHEP interop with WebRTC stacks that share no code with OnAir or Chromium: real ffmpeg publishes
//! over RTMP, and an independent player plays `POST /live/<stream>/whep` on loopback:
//!
//! * **aiortc** (Python; aioice, pylibsrtp, H.264 decoded by ffmpeg through PyAV), from PyPI in a
//!   venv (`tests/whep/whep.sh install`, `tests/whep/aiortc_play.py`);
//! * **GStreamer webrtcbin** (libnice, libsrtp2, avdec_h264), Debian's packages
//!   (`tests/whep/whep.sh gst-install`, `tests/whep/gst_play.py`).
//!
//! `whep.sh` installs what is missing; a missing tool fails the test, never skips it. The tests
//! take turns: each decodes 640x360 in a scripting language on a small machine.
//!
//! What these players do differently from Chromium: aiortc offers only Baseline H.264; webrtcbin
//! (bundle-policy max-bundle) offers its audio section `bundle-only` on port 0 with an upper-case
//! `OPUS`, and libnice gathers no loopback candidate, so against this loopback-only server it
//! connects over our ICE-TCP candidate (its UDP pair from the machine's LAN address to 127.0.0.1
//! never succeeds; aiortc's does).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use onair_tests::*;
use tokio::process::Command;
use tokio::sync::{Mutex, MutexGuard};

/// One test at a time (publisher + player + server on 2 cores).
static TURN: Mutex<()> = Mutex::const_new(());

fn whep_sh() -> PathBuf {
    repo_root().join("tests/whep/whep.sh")
}

/// Runs `whep.sh <setup>` once per test binary (the venv or the apt packages); fails the test
/// with what it printed when it cannot.
async fn setup(what: &str) {
    static DONE: Mutex<Vec<String>> = Mutex::const_new(Vec::new());
    let mut done = DONE.lock().await;
    if done.iter().any(|d| d == what) {
        return;
    }
    let out =
        tokio::time::timeout(Duration::from_secs(900), Command::new(whep_sh()).arg(what).kill_on_drop(true).output())
            .await
            .unwrap_or_else(|_| panic!("whep.sh {what} took more than 15 minutes"))
            .expect("run tests/whep/whep.sh");
    assert!(
        out.status.success(),
        "tests/whep/whep.sh {what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    done.push(what.to_string());
}

/// Plays `whep` with `whep.sh <player> <whep> <seconds> <extra…>`; returns its JSON line and
/// the most WebRTC sessions the server had while it played.
async fn play(
    server: &TestServer,
    player: &str,
    whep: &str,
    seconds: f64,
    extra: &[&str],
) -> (serde_json::Value, usize) {
    let mut cmd = Command::new(whep_sh());
    cmd.arg(player).arg(whep).arg(seconds.to_string()).args(extra).kill_on_drop(true);
    let run =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs_f64(seconds + 90.0), cmd.output()).await });
    let webrtc = server.engine.webrtc().unwrap().clone();
    let mut most = 0;
    while !run.is_finished() {
        most = most.max(webrtc.total_sessions());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = run.await.unwrap().unwrap_or_else(|_| panic!("{player} did not finish")).expect("run whep.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{player} printed no JSON ({e}):\n{stdout}\n{stderr}\n--- logs ---\n{}", logs()));
    eprintln!("{player}: {v}");
    if !stderr.trim().is_empty() {
        eprintln!("{player} stderr:\n{stderr}");
    }
    (v, most)
}

/// Waits until the server has no WebRTC session left; returns how long that took.
async fn sessions_drain(server: &TestServer, timeout: Duration) -> Duration {
    let start = Instant::now();
    let webrtc = server.engine.webrtc().unwrap().clone();
    wait_for("every WebRTC session to end", timeout, || {
        let webrtc = webrtc.clone();
        async move { (webrtc.total_sessions() == 0).then_some(()) }
    })
    .await;
    start.elapsed()
}

/// What every successful playback shows: connected, 640x360 decoded at a steady rate, the 440 Hz
/// test tone heard as 440 Hz Opus, one session on the server while it played.
fn assert_played(v: &serde_json::Value, most_sessions: usize, seconds: f64) {
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["connection_state"], "connected", "{v}");
    let video = &v["video"];
    let frames = video["frames"].as_u64().unwrap_or(0);
    // 30 fps; the first picture waits for the next keyframe (1 s GOP).
    assert!(frames as f64 > 60.0 * seconds / 5.0, "frames decoded: {v}");
    assert_eq!(video["width"], 640, "{v}");
    assert_eq!(video["height"], 360, "{v}");
    assert_eq!(v["video_codec"]["rtpmap"], "H264/90000", "{v}");
    assert!(v["video_codec"]["fmtp"].as_str().unwrap_or("").contains("packetization-mode=1"), "{v}");
    let audio = &v["audio"];
    // Opus frames are 20 ms: 50 a second.
    assert!(audio["frames"].as_u64().unwrap_or(0) as f64 > 25.0 * seconds, "audio frames: {v}");
    assert_eq!(audio["sample_rate"], 48_000, "{v}");
    // The answer echoes the offer's spelling (GStreamer writes `OPUS`).
    assert!(v["audio_codec"]["rtpmap"].as_str().unwrap_or("").eq_ignore_ascii_case("opus/48000/2"), "{v}");
    assert!(audio["rms"].as_f64().unwrap_or(0.0) > 500.0, "the tone is heard, not silence: {v}");
    let tone = audio["tone_hz"].as_f64().unwrap_or(0.0);
    assert!((tone - 440.0).abs() < 25.0, "the 440 Hz tone keeps its pitch: {tone} Hz: {v}");
    assert_eq!(most_sessions, 1, "the server counted the player: {v}");
}

/// A test's setup: its turn, `whep.sh <setup>` done, a server, and ffmpeg publishing live to it.
struct Live {
    _turn: MutexGuard<'static, ()>,
    server: TestServer,
    publisher: Publisher,
    stream: &'static str,
}

impl Live {
    async fn start(setup_what: &str, stream: &'static str, src: Source) -> Live {
        let turn = TURN.lock().await;
        setup(setup_what).await;
        let server = TestServer::start().await;
        let publisher = Publisher::start(&server.signed_url(stream), &src);
        wait_live(&server, stream, Duration::from_secs(15)).await;
        Live { _turn: turn, server, publisher, stream }
    }

    /// [`play`]s the stream's WHEP endpoint.
    async fn play(&self, player: &str, seconds: f64, extra: &[&str]) -> (serde_json::Value, usize) {
        let whep = self.server.url(&format!("/live/{}/whep", self.stream));
        play(&self.server, player, &whep, seconds, extra).await
    }

    /// `GET /api/streams/<stream>`.
    async fn status(&self) -> serde_json::Value {
        get(&self.server.url(&format!("/api/streams/{}", self.stream))).await.unwrap().json()
    }

    /// Waits until no WebRTC session is left, which the stream's viewer count then shows; returns
    /// how long that took.
    async fn drained(&self, timeout: Duration) -> Duration {
        let took = sessions_drain(&self.server, timeout).await;
        assert_eq!(self.status().await["viewers"]["webrtc"], 0);
        took
    }

    /// The player ended with a DELETE, which removed its session at once.
    async fn deleted(&self, v: &serde_json::Value, player: &str) {
        assert_eq!(v["delete_status"], 200, "{v}");
        let took = self.drained(Duration::from_secs(5)).await;
        eprintln!("{player}: session gone {took:?} after the DELETE");
    }

    async fn stop(self) {
        self.publisher.stop().await;
        self.server.shutdown().await;
    }
}

// ---------- aiortc ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_baseline_with_aac_audio() {
    let live = Live::start("install", "ai", Source { profile: Some("baseline"), ..Source::default() }).await;

    let (v, most) = live.play("play", 5.0, &[]).await;
    assert_played(&v, most, 5.0);
    // aiortc offers Baseline (42001f) and Constrained Baseline (42e01f); x264's baseline is
    // Constrained Baseline (42c0…).
    assert_eq!(v["video_codec"]["profile_level_id"], "42e01f", "{v}");
    live.deleted(&v, "aiortc").await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_44k_mono_audio_and_leaves_without_delete() {
    // lavfi's sine is mono: 44.1 kHz mono AAC, resampled to 48 kHz for Opus.
    let live = Live::start("install", "ai44", Source { sample_rate: 44_100, ..Source::default() }).await;
    let st = live.status().await;
    assert_eq!(st["audio"]["sample_rate"], 44_100, "{st}");
    assert_eq!(st["audio"]["channels"], 1, "{st}");

    let (v, most) = live.play("play", 5.0, &["--no-delete"]).await;
    assert_played(&v, most, 5.0);
    // No DELETE: aiortc's pc.close() sends a DTLS close_notify, which ends the session.
    let took = live.drained(Duration::from_secs(30)).await;
    eprintln!("aiortc: session gone {took:?} after pc.close()");
    assert!(took < Duration::from_secs(3), "close_notify ends the session at once, took {took:?}");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_is_told_why_it_cannot_play_main_profile() {
    let live = Live::start("install", "aimain", Source { profile: Some("main"), ..Source::small() }).await;
    // aiortc offers only Baseline H.264: a Main stream cannot be sent to it (RFC 6184), so the
    // offer is refused with a reason and the player can fall back to HLS.
    let (v, most) = live.play("play", 1.0, &[]).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["status"], 400, "{v}");
    assert!(!v["error"].as_str().unwrap_or("").is_empty(), "the reason is in the body: {v}");
    assert_eq!(most, 0, "{v}");
    live.stop().await;
}

// ---------- GStreamer webrtcbin ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_webrtcbin_plays_main_with_aac_audio() {
    let live = Live::start("gst-install", "gst", Source { profile: Some("main"), ..Source::default() }).await;

    let (v, most) = live.play("gst-play", 5.0, &["--sdp"]).await;
    // The audio section was offered `m=audio 0 …` + `a=bundle-only`: it is answered, not rejected
    // (a rejected one left webrtcbin without even a video connection).
    assert!(v["offer_sdp"].as_str().unwrap().contains("a=bundle-only"), "{v}");
    assert_played(&v, most, 5.0);
    // Offered 42e01f, 4d001f, 640c1f: the Main stream goes out as Main.
    assert_eq!(v["video_codec"]["profile_level_id"], "4d001f", "{v}");
    live.deleted(&v, "gstreamer").await;
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_webrtcbin_plays_high_with_44k_mono_audio() {
    let src = Source { profile: Some("high"), sample_rate: 44_100, ..Source::default() };
    let live = Live::start("gst-install", "gsthigh", src).await;
    let st = live.status().await;
    assert!(st["video"]["codec"].as_str().unwrap().starts_with("avc1.64"), "{st}");

    let (v, most) = live.play("gst-play", 5.0, &[]).await;
    assert_played(&v, most, 5.0);
    // Offered 42e01f, 4d001f, 640c1f: High goes out on Constrained High (what Safari offers too).
    assert_eq!(v["video_codec"]["profile_level_id"], "640c1f", "{v}");
    live.deleted(&v, "gstreamer").await;
    live.stop().await;
}
