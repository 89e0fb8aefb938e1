//! `/metrics` read by a real Prometheus parser (the official Python client's, through
//! `tests/metrics/promparse.sh`, which installs it into a venv when missing), with a real ffmpeg
//! publisher, an LL-HLS reader and a Chromium WebRTC viewer: the figures agree with
//! `/api/streams`. Turned off it is 404; kept to loopback it refuses a client on the LAN address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use onair_engine::{Config, Engine, SigningKey};
use onair_tests::*;
use serde_json::Value;

/// One sample: metric name with its labels (`name{k="v",…}`, keys sorted) → value.
type Samples = HashMap<String, f64>;

/// Parses an exposition with `prometheus_client.parser`; fails on anything it refuses.
async fn parse(text: &str) -> (Vec<Value>, Samples) {
    use tokio::io::AsyncWriteExt;
    let script = repo_root().join("tests/metrics/promparse.sh");
    let mut child = tokio::process::Command::new(script)
        .arg("parse")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("promparse.sh starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    // The first run installs the parser (a few seconds); then it takes a fraction of a second.
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("promparse.sh finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n--- /metrics ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = Samples::new();
    for s in families.iter().flat_map(|f| f["samples"].as_array().unwrap()) {
        let mut labels: Vec<String> =
            s["labels"].as_object().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s["name"].as_str().unwrap().to_owned()
        } else {
            format!("{}{{{}}}", s["name"].as_str().unwrap(), labels.join(","))
        };
        samples.insert(key, s["value"].as_f64().unwrap());
    }
    (families, samples)
}

fn value(samples: &Samples, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
}

/// `/metrics` once, parsed.
async fn scrape(server: &TestServer) -> (Vec<Value>, Samples) {
    let res = get(&server.url("/metrics")).await.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    parse(&res.text()).await
}

#[cfg(target_os = "linux")]
fn own_rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    kb * 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_status_api() {
    // One WebRTC session per stream: a second offer is refused, and counted.
    let mut config = Config::default();
    config.limits.webrtc_sessions_per_stream = 1;
    let server = TestServer::start_with(config).await;
    let stream = "m";
    // Before any stream: the families are there, every refusal reason at 0, no stream series.
    let (families, samples) = scrape(&server).await;
    let names: Vec<&str> = families.iter().map(|f| f["name"].as_str().unwrap()).collect();
    for family in [
        "onair_stream_live",
        "onair_stream_ingest_bits_per_second",
        "onair_stream_fps",
        "onair_stream_keyframe_interval_seconds",
        "onair_stream_viewers",
        "onair_stream_sent_bytes",
        "onair_sent_bytes",
        "onair_refusals",
        "onair_webrtc_sessions",
        "onair_webrtc_sessions_connecting",
        "onair_webrtc_frames_skipped",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(names.contains(&family), "no family {family} in {names:?}");
    }
    for reason in
        ["http_connections", "rtmp_pending", "webrtc_sessions", "webrtc_sessions_per_ip", "ice_tcp_connections"]
    {
        assert_eq!(value(&samples, &format!("onair_refusals_total{{reason=\"{reason}\"}}")), 0.0);
    }
    assert!(samples.iter().filter(|(k, _)| k.starts_with("onair_refusals_total{")).all(|(_, v)| *v == 0.0));
    assert!(!samples.keys().any(|k| k.contains("stream=")), "{samples:?}");

    let publisher = Publisher::start(&server.signed_url(stream), &Source::small());
    wait_live(&server, stream, Duration::from_secs(20)).await;
    wait_segments(&server, stream, 2).await;

    // One WebRTC viewer (Chromium), playing for a while.
    let viewer = {
        let url = server.url(&format!("/{stream}?transport=webrtc"));
        tokio::spawn(async move {
            browser_script("sessions.mjs", &url, &["1", "--hold-ms", "15000", "--timeout", "60000"]).await
        })
    };
    let api = server.url(&format!("/api/streams/{stream}"));
    wait_for("the WebRTC viewer in /api/streams", Duration::from_secs(60), || async {
        let st = get(&api).await.ok()?.json();
        (st["viewers"]["webrtc"] == 1).then_some(())
    })
    .await;
    // A session counts from its answer on; wait for its media (a quick look at the raw text).
    let webrtc_line = "onair_sent_bytes_total{transport=\"webrtc\"} ";
    wait_for("WebRTC media to flow", Duration::from_secs(60), || async {
        let text = get(&server.url("/metrics")).await.ok()?.text();
        let sent: f64 = text.lines().find_map(|l| l.strip_prefix(webrtc_line))?.parse().ok()?;
        (sent > 100_000.0).then_some(())
    })
    .await;

    // One LL-HLS reader (a viewer for the next 10 s): the playlist, the init segment and a
    // segment, their bytes counted here.
    let mut hls_bytes = 0;
    let playlist = get(&server.url(&format!("/live/{stream}/llhls.m3u8"))).await.unwrap();
    assert_eq!(playlist.status, 200);
    hls_bytes += playlist.body.len();
    let text = playlist.text();
    let map = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")).unwrap().trim_end_matches('"');
    let segment = text.lines().find(|l| l.ends_with(".m4s") && !l.starts_with('#')).unwrap();
    for uri in [map, segment] {
        let r = get(&server.url(&format!("/live/{stream}/{uri}"))).await.unwrap();
        assert_eq!(r.status, 200);
        hls_bytes += r.body.len();
    }
    // /api/streams, /metrics, /api/streams: the metrics lie within what the API said around them.
    let before = get(&api).await.unwrap().json();
    #[cfg(target_os = "linux")]
    let rss_before = own_rss_bytes();
    let (_, m) = scrape(&server).await;
    #[cfg(target_os = "linux")]
    let rss_after = own_rss_bytes();
    let after = get(&api).await.unwrap().json();
    let label = |name: &str| format!("{name}{{stream=\"{stream}\"}}");
    let viewers = |transport: &str| format!("onair_stream_viewers{{stream=\"{stream}\",transport=\"{transport}\"}}");
    assert_eq!(value(&m, &label("onair_stream_live")), 1.0);
    assert_eq!(before["live"], true);
    let between = |metric: f64, a: f64, b: f64, slack: f64| {
        let (lo, hi) = (a.min(b), a.max(b));
        metric >= lo - slack && metric <= hi + slack
    };
    for transport in ["hls", "webrtc"] {
        let n = value(&m, &viewers(transport));
        let (a, b) = (before["viewers"][transport].as_f64().unwrap(), after["viewers"][transport].as_f64().unwrap());
        assert!(between(n, a, b, 0.0), "{transport} viewers: {n} vs /api/streams {a} .. {b}");
    }
    assert_eq!(value(&m, &viewers("webrtc")), 1.0);
    assert!(value(&m, &viewers("hls")) >= 1.0, "this test read the LL-HLS playlist");
    assert_eq!(value(&m, "onair_webrtc_sessions"), 1.0);
    let fps = value(&m, &label("onair_stream_fps"));
    let (fps_a, fps_b) = (before["fps"].as_f64().unwrap(), after["fps"].as_f64().unwrap());
    assert!(between(fps, fps_a, fps_b, 1.0), "fps {fps} vs /api/streams {fps_a} .. {fps_b}");
    assert!((25.0..=35.0).contains(&fps), "the source is 30 fps: {fps}");
    let bps = value(&m, &label("onair_stream_ingest_bits_per_second"));
    let (kbps_a, kbps_b) = (before["bitrate_kbps"].as_f64().unwrap(), after["bitrate_kbps"].as_f64().unwrap());
    let slack = 0.25 * kbps_a.max(kbps_b) * 1000.0;
    assert!(
        between(bps, kbps_a * 1000.0, kbps_b * 1000.0, slack),
        "{bps} b/s vs /api/streams {kbps_a} .. {kbps_b} kb/s"
    );
    assert!(bps > 50_000.0, "{bps}");
    assert_eq!(
        Some(value(&m, &label("onair_stream_keyframe_interval_seconds"))),
        before["keyframe_interval_s"].as_f64()
    );
    let uptime = value(&m, &label("onair_stream_uptime_seconds"));
    assert!(between(uptime, before["uptime_s"].as_f64().unwrap(), after["uptime_s"].as_f64().unwrap(), 0.2));

    // Bytes out: at least what this test read over HLS (the Chromium page may read more), and
    // WebRTC datagrams to the viewer.
    let hls_stream = value(&m, &format!("onair_stream_sent_bytes_total{{stream=\"{stream}\",transport=\"hls\"}}"));
    let hls_total = value(&m, "onair_sent_bytes_total{transport=\"hls\"}");
    assert!(hls_stream >= hls_bytes as f64, "{hls_stream} < {hls_bytes}");
    assert!(hls_total >= hls_stream);
    let webrtc = value(&m, "onair_sent_bytes_total{transport=\"webrtc\"}");
    assert!(webrtc > 100_000.0, "WebRTC bytes {webrtc}");
    // Counters only grow.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, m2) = scrape(&server).await;
    assert!(value(&m2, "onair_sent_bytes_total{transport=\"webrtc\"}") > webrtc);
    assert!(value(&m2, "onair_sent_bytes_total{transport=\"hls\"}") >= hls_total);
    assert!(value(&m2, "onair_webrtc_frames_skipped_total") >= value(&m, "onair_webrtc_frames_skipped_total"));

    // A second WebRTC session of the stream is over the limit: 503, counted by reason.
    let offer = request_with(
        "POST",
        &server.url(&format!("/live/{stream}/whep")),
        &[("Content-Type", "application/sdp")],
        b"v=0\r\n",
    )
    .await
    .unwrap();
    assert_eq!(offer.status, 503, "{}", offer.text());
    let (_, m2) = scrape(&server).await;
    assert_eq!(value(&m2, "onair_refusals_total{reason=\"webrtc_sessions_per_stream\"}"), 1.0);
    assert_eq!(value(&m2, "onair_refusals_total{reason=\"webrtc_sessions\"}"), 0.0);
    assert_eq!(value(&m2, "onair_webrtc_sessions_connecting"), 0.0, "the viewer is connected");

    // The process figures are this test process's own (the engine runs in it).
    let cpu = value(&m, "process_cpu_seconds_total");
    assert!(cpu > 0.0 && value(&m2, "process_cpu_seconds_total") >= cpu, "CPU {cpu}");
    let rss = value(&m, "process_resident_memory_bytes");
    #[cfg(target_os = "linux")]
    assert!(
        between(rss, rss_before, rss_after, 0.2 * rss_after),
        "RSS {rss} vs /proc/self/status {rss_before} .. {rss_after}"
    );
    assert!(rss > 1e6);

    let played = viewer.await.unwrap().unwrap();
    assert_eq!(played["ok"], true, "{played}");
    publisher.stop().await;
    // The stream is gone from both.
    wait_for("the stream to end", Duration::from_secs(20), || async {
        let list = get(&server.url("/api/streams")).await.ok()?.json();
        list.as_array()?.is_empty().then_some(())
    })
    .await;
    let (_, m3) = scrape(&server).await;
    assert!(!m3.keys().any(|k| k.contains("stream=")), "{m3:?}");
    assert!(value(&m3, "onair_sent_bytes_total{transport=\"hls\"}") >= hls_total, "totals outlive the stream");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_is_404_and_loopback_only_refuses_the_lan_address() {
    let mut config = Config::default();
    config.metrics.enabled = false;
    let server = TestServer::start_with(config).await;
    let res = get(&server.url("/metrics")).await.unwrap();
    assert_eq!(res.status, 404, "{}", res.text());
    assert_eq!(status_of(&server.url("/healthz")).await, 200);
    server.shutdown().await;

    // Bound on every address, reached over loopback and over the machine's LAN address (the
    // packets stay on this machine; the server sees the LAN address as the client's).
    let lan = onair_engine::net::lan_ip();
    for loopback_only in [true, false] {
        init_logs();
        let mut config = Config {
            http: "0.0.0.0:0".parse().unwrap(),
            rtmp: "127.0.0.1:0".parse().unwrap(),
            data_dir: fresh_dir("metrics-data"),
            ..Default::default()
        };
        config.webrtc.enabled = false;
        config.metrics.loopback_only = loopback_only;
        let engine = Engine::start(config, SigningKey::new(SECRET).into()).await.expect("engine starts");
        let port = engine.http_addr().port();
        let local = get(&format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
        assert_eq!(local.status, 200, "{}", local.text());
        parse(&local.text()).await;
        assert!(!lan.is_loopback(), "this test needs a non-loopback address on this machine, found {lan}");
        let host = match lan {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let remote = get(&format!("http://{host}:{port}/metrics")).await.unwrap();
        if loopback_only {
            assert_eq!(remote.status, 403, "{}", remote.text());
            assert!(remote.text().contains("loopback_only"), "the answer names the setting: {}", remote.text());
        } else {
            assert_eq!(remote.status, 200, "{}", remote.text());
        }
        engine.shutdown().await;
    }
}
