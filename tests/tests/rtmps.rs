//! RTMPS ingest: ffmpeg publishes `rtmps://` with a signed key to OnAir serving a certificate
//! from files (`[tls] mode = "file"`, a CA made here with openssl), verifying it (`-tls_verify 1
//! -ca_file`); the stream plays back over LL-HLS; a certificate for another name makes ffmpeg
//! fail with a certificate error. HTTPS is checked on the same certificate.

use std::process::Stdio;
use std::time::Duration;

use onair_engine::Config;
use onair_engine::config::TlsMode;
use onair_policy::Policy;
use onair_tests::pebble::{make_ca_and_leaf, sh};
use onair_tests::*;
use tokio::process::Command;

/// An engine with RTMPS and HTTPS on the certificate `cert`/`key`.
async fn start(cert: &std::path::Path, key: &std::path::Path) -> TestServer {
    let mut config = Config::default();
    config.tls.mode = TlsMode::File;
    config.tls.cert_file = cert.to_path_buf();
    config.tls.key_file = key.to_path_buf();
    config.tls.https = "127.0.0.1:0".parse().unwrap();
    config.tls.rtmps = "127.0.0.1:0".into();
    let server = TestServer::start_with(config).await;
    wait_for("the certificate in use", Duration::from_secs(10), || async {
        (server.control().https().state == "ok").then_some(())
    })
    .await;
    server
}

/// `rtmps://localhost:<port>/live/<stream>` signed for an hour.
fn signed_rtmps(server: &TestServer, stream: &str) -> String {
    let port = server.engine.rtmps_addr().unwrap().port();
    let base = format!("rtmps://localhost:{port}/live/{stream}");
    onair_policy::sign_url(SECRET.as_bytes(), &base, &Policy { url_expire: now_ms() + 3_600_000, ..Default::default() })
        .unwrap()
}

/// ffmpeg publishing generated media to `url`, verifying the server's certificate against `ca`.
fn publish(url: &str, ca: &std::path::Path, seconds: u32, log: &std::path::Path) -> tokio::process::Child {
    let mut cmd = Command::new(require_tool("ffmpeg"));
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-bf", "0"])
        .args(["-c:a", "aac", "-b:a", "96k", "-ar", "48000", "-t", &seconds.to_string()])
        .args(["-tls_verify", "1", "-ca_file"])
        .arg(ca)
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true);
    cmd.spawn().expect("ffmpeg starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps_and_the_stream_plays() {
    let dir = fresh_dir("rtmps");
    let (ca, cert, key) = make_ca_and_leaf(&dir, "ca", "localhost", "DNS:localhost").await.unwrap();
    let server = start(&cert, &key).await;
    let https = server.engine.https_addr().unwrap().port();
    let st = server.control().https();
    assert_eq!((st.mode.as_str(), st.state.as_str()), ("file", "ok"));
    assert_eq!(st.domain.as_deref(), Some("localhost"));
    // Plain HTTP to 127.0.0.1 (not a name of the certificate) is served, not redirected.
    assert_eq!(st.rtmps_port, server.engine.rtmps_addr().map(|a| a.port()));

    let log = dir.join("ffmpeg.log");
    let mut ffmpeg = publish(&signed_rtmps(&server, "secure"), &ca, 60, &log);
    wait_live(&server, "secure", Duration::from_secs(20)).await;
    wait_segments(&server, "secure", 2).await;
    let video = probe_stream(&server.url("/live/secure/llhls.m3u8"), "video").await;
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["width"], 320);

    // The same certificate serves HTTPS: the player pages and playlists, with no http:// URL.
    let out = sh(&format!("curl -sS -m 10 --cacert {} https://localhost:{https}/live/secure/llhls.m3u8", ca.display()))
        .await
        .unwrap();
    assert!(out.contains("#EXT-X-PART"), "{out}");
    assert!(!out.contains("http://"), "absolute plain URLs in the playlist:\n{out}");
    let page =
        sh(&format!("curl -sS -m 10 --cacert {} https://localhost:{https}/embed/secure", ca.display())).await.unwrap();
    assert!(!page.contains("http://"), "the embed page names a plain URL:\n{page}");
    let _ = ffmpeg.kill().await;

    // A signed key for another stream name is still refused over RTMPS (the same rules).
    let port = server.engine.rtmps_addr().unwrap().port();
    let unsigned = format!("rtmps://localhost:{port}/live/other?policy=e30&signature=bad");
    let mut bad = publish(&unsigned, &ca, 5, &dir.join("unsigned.log"));
    let status = tokio::time::timeout(Duration::from_secs(30), bad.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "an unsigned RTMPS publish must fail");
    assert!(logs().contains("publish refused"));
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_fails_in_ffmpeg() {
    let dir = fresh_dir("rtmps-wrong");
    let (ca, cert, key) = make_ca_and_leaf(&dir, "ca", "other", "DNS:other.onair.test").await.unwrap();
    let server = start(&cert, &key).await;
    let log = dir.join("ffmpeg.log");
    let mut ffmpeg = publish(&signed_rtmps(&server, "wrong"), &ca, 5, &log);
    let status = tokio::time::timeout(Duration::from_secs(30), ffmpeg.wait()).await.unwrap().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "ffmpeg must refuse the certificate:\n{stderr}");
    assert!(stderr.to_ascii_lowercase().contains("certificate"), "ffmpeg's error names the certificate:\n{stderr}");
    assert_ne!(status_of(&server.url("/live/wrong/playlist.m3u8")).await, 200, "nothing was published");
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_held_to_the_same_limits() {
    use onair_engine::limits::Refusal;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = fresh_dir("tls-limits");
    let (_, cert, key) = make_ca_and_leaf(&dir, "ca", "localhost", "DNS:localhost").await.unwrap();
    let mut config = Config::default();
    config.tls.mode = TlsMode::File;
    config.tls.cert_file = cert;
    config.tls.key_file = key;
    config.tls.https = "127.0.0.1:0".parse().unwrap();
    config.tls.rtmps = "127.0.0.1:0".into();
    config.limits.http_header_timeout_s = 2;
    config.limits.rtmp_pending_per_ip = 2;
    let server = TestServer::start_with(config).await;

    // HTTPS: a handshake that stalls after its first bytes is cut off at the header timeout.
    let https = server.engine.https_addr().unwrap();
    let mut s = tokio::net::TcpStream::connect(https).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80]).await.unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "closed, not answered: {n:?}");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(6), "closed after {took:?}");
    assert!(server.engine.refusals().get(Refusal::HttpTimeout) >= 1);

    // RTMPS: connections that have not published count against the per-IP cap at accept.
    let rtmps = server.engine.rtmps_addr().unwrap();
    let _a = tokio::net::TcpStream::connect(rtmps).await.unwrap();
    let _b = tokio::net::TcpStream::connect(rtmps).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = tokio::net::TcpStream::connect(rtmps).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(server.engine.refusals().get(Refusal::RtmpPendingPerIp) >= 1);
    server.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}
