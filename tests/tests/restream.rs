//! Restream against real RTMP servers: nginx with libnginx-mod-rtmp as the destination (its
//! `on_publish` asks an HTTP location of the same nginx, which accepts keys starting with
//! `good`), and nginx's `stream` module terminating TLS in front of it for `rtmps://`.
//! ffmpeg publishes to OnAir; ffprobe reads the relayed streams back from nginx. A destination
//! with a wrong key is refused while the others and the LL-HLS viewers go on; killing nginx and
//! starting it again brings the destinations from retrying back to live; a destination that
//! reads very slowly (a tiny RTMP server here, with a 4 KB receive buffer) costs a bounded queue
//! and dropped frames, never the ingest, the viewers or the other destinations. The keys appear
//! in no log, config file or API answer.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use onair_engine::Config;
use onair_engine::events::EngineEvent;
use onair_engine::restream::{Endpoint, RestreamState};
use onair_tests::pebble::{free_port, make_ca_and_leaf, sh};
use onair_tests::*;

const GOOD_KEY: &str = "good-Key-7f3a9c";
const TLS_KEY: &str = "good-Tls-91bc2e";
const BAD_KEY: &str = "Wrong-Key-55d1f0";

/// An nginx started by the test, killed when dropped.
struct Nginx {
    child: std::process::Child,
    dir: PathBuf,
}

impl Nginx {
    /// nginx-rtmp on `rtmp` (application `app`, live, `on_publish` → `http`), and TLS on `tls`
    /// (certificate `cert`/`key`) passed on to the RTMP port.
    async fn start(dir: &Path, rtmp: u16, http: u16, tls: u16, cert: &Path, key: &Path) -> Nginx {
        let nginx = require_tool("nginx");
        let d = dir.display();
        let conf = format!(
            r#"load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
master_process off;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp};
        notify_method get;
        application app {{
            live on;
            on_publish http://127.0.0.1:{http}/auth;
        }}
    }}
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{http};
        location /auth {{
            if ($arg_name ~ "^good") {{ return 200; }}
            return 403;
        }}
    }}
}}
stream {{
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        proxy_pass 127.0.0.1:{rtmp};
    }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .expect("nginx starts");
        let nginx = Nginx { child, dir: dir.to_path_buf() };
        wait_for("nginx to listen", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", rtmp)).await.ok().map(drop)
        })
        .await;
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The destinations of `stream` as `/api/streams/<stream>` shows them, by name.
async fn destinations(server: &TestServer, stream: &str) -> serde_json::Value {
    let body = get(&server.url(&format!("/api/streams/{stream}"))).await.unwrap();
    let v = body.json();
    let mut by_name = serde_json::Map::new();
    for d in v["restream"].as_array().cloned().unwrap_or_default() {
        by_name.insert(d["name"].as_str().unwrap().to_owned(), d);
    }
    serde_json::Value::Object(by_name)
}

async fn wait_state(
    server: &TestServer,
    stream: &str,
    name: &str,
    state: &str,
    timeout: Duration,
) -> serde_json::Value {
    wait_for(&format!("{stream}/{name} to be {state}"), timeout, || async {
        let d = destinations(server, stream).await;
        (d[name]["state"] == state).then(|| d[name].clone())
    })
    .await
}

/// Adds a destination through the control API (as `onair restream … add` does).
async fn add(server: &TestServer, stream: &str, name: &str, url: &str, key: &str) {
    let ep = server.control_endpoint();
    let body = serde_json::json!({ "url": url, "key": key }).to_string();
    let auth = format!("Bearer {}", ep.token);
    let r = request_with(
        "PUT",
        &format!("{}/api/control/streams/{stream}/restream/{name}", ep.url),
        &[("authorization", &auth), ("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
}

fn config_in(dir: &Path) -> Config {
    let mut config = Config::default();
    let file = dir.join("config.toml");
    std::fs::write(&file, "# the streamer's own file\ndefault_stream = \"show\"\n").unwrap();
    config.default_stream = "show".into();
    config.file = Some(file);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_rtmp_and_rtmps_refuses_a_bad_key_and_reconnects() {
    let dir = fresh_dir("restream");
    let (ca, cert, key) = make_ca_and_leaf(&dir, "ca", "localhost", "DNS:localhost").await.unwrap();
    let (rtmp, http, tls) = (free_port(), free_port(), free_port());
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir, rtmp, http, tls, &cert, &key).await;

    let mut config = config_in(&dir);
    config.restream.ca_file = ca.clone();
    let server = TestServer::start_with(config).await;
    let mut events = server.control().subscribe();
    add(&server, "show", "plain", &format!("rtmp://127.0.0.1:{rtmp}/app"), GOOD_KEY).await;
    add(&server, "show", "secure", &format!("rtmps://localhost:{tls}/app"), TLS_KEY).await;
    add(&server, "show", "wrongkey", &format!("rtmp://127.0.0.1:{rtmp}/app"), BAD_KEY).await;
    let d = destinations(&server, "show").await;
    assert_eq!(d["plain"]["state"], "idle", "not live yet: {d}");

    let publisher = Publisher::start(&server.signed_url("show"), &Source::small());
    wait_live(&server, "show", Duration::from_secs(20)).await;
    let plain = wait_state(&server, "show", "plain", "live", Duration::from_secs(15)).await;
    wait_state(&server, "show", "secure", "live", Duration::from_secs(15)).await;
    let refused = wait_state(&server, "show", "wrongkey", "refused", Duration::from_secs(15)).await;
    // nginx-rtmp closes the connection at the publish its on_publish refused (as Twitch does).
    assert!(
        refused["last_error"].as_str().unwrap().contains("when asked to publish"),
        "{refused} {}",
        nginx.error_log()
    );
    assert_eq!(plain["url"], format!("rtmp://127.0.0.1:{rtmp}/app"));

    // The relayed streams read back from nginx at the source's resolution and codecs.
    for name in [GOOD_KEY, TLS_KEY] {
        let url = format!("rtmp://127.0.0.1:{rtmp}/app/{name}");
        let video = probe_stream(&url, "video").await;
        assert_eq!(
            (video["codec_name"].as_str(), video["width"].as_u64(), video["height"].as_u64()),
            (Some("h264"), Some(320), Some(180)),
            "{video}"
        );
        let audio = probe_stream(&url, "audio").await;
        assert_eq!(audio["codec_name"], "aac", "{audio}");
    }
    // The refusal costs the viewers nothing.
    let video = probe_stream(&server.url("/live/show/llhls.m3u8"), "video").await;
    assert_eq!(video["width"], 320);
    let d = wait_for("a bitrate", Duration::from_secs(10), || async {
        let d = destinations(&server, "show").await;
        (d["plain"]["bitrate_kbps"].as_u64().unwrap_or(0) > 20).then_some(d)
    })
    .await;
    assert_eq!(d["wrongkey"]["state"], "refused", "not retried: {d}");

    // The destination goes away: retrying, then live again once it is back.
    drop(nginx);
    let retrying = wait_state(&server, "show", "plain", "retrying", Duration::from_secs(10)).await;
    assert!(retrying["last_error"].as_str().is_some(), "{retrying}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nginx = Nginx::start(&nginx_dir, rtmp, http, tls, &cert, &key).await;
    let back = std::time::Instant::now();
    wait_state(&server, "show", "plain", "live", Duration::from_secs(20)).await;
    wait_state(&server, "show", "secure", "live", Duration::from_secs(20)).await;
    assert!(back.elapsed() < Duration::from_secs(16), "reconnected within the backoff: {:?}", back.elapsed());
    let video = probe_stream(&format!("rtmp://127.0.0.1:{rtmp}/app/{GOOD_KEY}"), "video").await;
    assert_eq!(video["codec_name"], "h264");

    // Disabled: it stops; the others go on.
    let ep = server.control_endpoint();
    let auth = format!("Bearer {}", ep.token);
    let r = request_with(
        "POST",
        &format!("{}/api/control/streams/show/restream/secure/disable", ep.url),
        &[("authorization", &auth)],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    wait_state(&server, "show", "secure", "idle", Duration::from_secs(5)).await;
    assert_eq!(destinations(&server, "show").await["plain"]["state"], "live");

    // End of the publish: every destination stops.
    publisher.stop().await;
    wait_state(&server, "show", "plain", "idle", Duration::from_secs(10)).await;

    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let EngineEvent::Restream { name, state, .. } = ev {
            seen.push((name, state));
        }
    }
    for expected in [
        ("plain".to_owned(), RestreamState::Connecting),
        ("plain".to_owned(), RestreamState::Live),
        ("plain".to_owned(), RestreamState::Retrying),
        ("wrongkey".to_owned(), RestreamState::Refused),
    ] {
        assert!(seen.contains(&expected), "{expected:?} not in {seen:?}");
    }

    // The config file has the destinations, the keys are nowhere.
    let file = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(file.contains("[[restream.destination]]") && file.contains("name = \"secure\""), "{file}");
    assert!(file.contains("enabled = false"), "{file}");
    let status = get(&server.url("/api/streams")).await.unwrap().text();
    let control = serde_json::to_string(&server.control().control_status()).unwrap();
    for key in [GOOD_KEY, TLS_KEY, BAD_KEY] {
        assert!(!logs().contains(key), "a key in the log");
        assert!(!file.contains(key), "a key in the config file");
        assert!(!status.contains(key) && !control.contains(key), "a key in the API");
    }
    drop(nginx);
    server.shutdown().await;
}

/// With `require_go_live`, destinations wait for the broadcast (Go live, then the publish); End
/// stream stops them; the next broadcast tries a refused destination again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_follow_go_live_and_end_stream_and_a_new_broadcast_retries_a_refused_one() {
    let dir = fresh_dir("restream-golive");
    let (_ca, cert, key) = make_ca_and_leaf(&dir, "ca", "localhost", "DNS:localhost").await.unwrap();
    let (rtmp, http, tls) = (free_port(), free_port(), free_port());
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir, rtmp, http, tls, &cert, &key).await;
    let mut config = config_in(&dir);
    config.require_go_live = true;
    let server = TestServer::start_with(config).await;
    let mut events = server.control().subscribe();
    add(&server, "show", "plain", &format!("rtmp://127.0.0.1:{rtmp}/app"), GOOD_KEY).await;
    add(&server, "show", "wrongkey", &format!("rtmp://127.0.0.1:{rtmp}/app"), BAD_KEY).await;

    // Before Go live the publish is refused and nothing is relayed.
    let mut early = Publisher::start(&server.signed_url("show"), &Source::small());
    assert_eq!(early.wait(Duration::from_secs(15)).await, Some(false), "refused before Go live");
    let d = destinations(&server, "show").await;
    assert_eq!((d["plain"]["state"].as_str(), d["wrongkey"]["state"].as_str()), (Some("idle"), Some("idle")), "{d}");

    for round in 1..=2 {
        server.control().go_live("show").unwrap();
        let publisher = Publisher::start(&server.signed_url("show"), &Source::small());
        wait_live(&server, "show", Duration::from_secs(20)).await;
        wait_state(&server, "show", "plain", "live", Duration::from_secs(15)).await;
        wait_state(&server, "show", "wrongkey", "refused", Duration::from_secs(15)).await;
        server.control().end_stream("show").unwrap();
        wait_state(&server, "show", "plain", "idle", Duration::from_secs(10)).await;
        assert_eq!(destinations(&server, "show").await["wrongkey"]["state"], "refused", "round {round}");
        publisher.kill().await;
    }
    let mut refused = 0;
    let mut connecting = 0;
    while let Ok(ev) = events.try_recv() {
        match ev {
            EngineEvent::Restream { name, state: RestreamState::Refused, .. } if name == "wrongkey" => refused += 1,
            EngineEvent::Restream { name, state: RestreamState::Connecting, .. } if name == "plain" => connecting += 1,
            _ => {}
        }
    }
    assert_eq!((refused, connecting), (2, 2), "each broadcast tries again");
    drop(nginx);
    server.shutdown().await;
}

/// A destination that completes the RTMP handshake and accepts the publish, then reads a few
/// KB per second through a 4 KB receive buffer.
async fn slow_destination() -> (u16, tokio::task::JoinHandle<()>) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4).unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut hs = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 4096];
        let mut session: Option<ServerSession> = None;
        let mut publishing = false;
        while !publishing {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the client went away during set-up");
            let mut out = Vec::new();
            let mut results = std::collections::VecDeque::new();
            match &mut session {
                None => match hs.process_bytes(&buf[..n]).unwrap() {
                    HandshakeProcessResult::InProgress { response_bytes } => out.extend(response_bytes),
                    HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                        out.extend(response_bytes);
                        let (mut ss, r) = ServerSession::new(ServerSessionConfig::new()).unwrap();
                        results.extend(r);
                        if !remaining_bytes.is_empty() {
                            results.extend(ss.handle_input(&remaining_bytes).unwrap());
                        }
                        session = Some(ss);
                    }
                },
                Some(ss) => results.extend(ss.handle_input(&buf[..n]).unwrap()),
            }
            // In order: packets go out in the order the session serialized them.
            while let Some(r) = results.pop_front() {
                match r {
                    ServerSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                    ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                        request_id, ..
                    }) => {
                        results.extend(session.as_mut().unwrap().accept_request(request_id).unwrap());
                    }
                    ServerSessionResult::RaisedEvent(ServerSessionEvent::PublishStreamRequested {
                        request_id, ..
                    }) => {
                        results.extend(session.as_mut().unwrap().accept_request(request_id).unwrap());
                        publishing = true;
                    }
                    _ => {}
                }
            }
            s.write_all(&out).await.unwrap();
        }
        // Now read ~8 KB/s, whatever comes.
        let mut small = [0u8; 2048];
        loop {
            match s.read(&mut small).await {
                Ok(0) | Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_costs_a_bounded_queue_not_the_stream() {
    let dir = fresh_dir("restream-slow");
    let (_ca, cert, key) = make_ca_and_leaf(&dir, "ca", "localhost", "DNS:localhost").await.unwrap();
    let (rtmp, http, tls) = (free_port(), free_port(), free_port());
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir, rtmp, http, tls, &cert, &key).await;
    let (slow_port, slow) = slow_destination().await;

    let mut config = config_in(&dir);
    config.restream.max_queue_bytes = 262_144;
    let server = TestServer::start_with(config).await;
    add(&server, "show", "slow", &format!("rtmp://127.0.0.1:{slow_port}/app"), "slow-Key-1").await;
    add(&server, "show", "plain", &format!("rtmp://127.0.0.1:{rtmp}/app"), GOOD_KEY).await;
    // Enough bitrate to overrun a few KB/s at once.
    let src = Source { width: 640, height: 360, ..Source::default() };
    let publisher = Publisher::start(&server.signed_url("show"), &src);
    wait_live(&server, "show", Duration::from_secs(20)).await;
    wait_state(&server, "show", "slow", "live", Duration::from_secs(15)).await;
    wait_state(&server, "show", "plain", "live", Duration::from_secs(15)).await;

    let d = wait_for("the slow destination to drop frames", Duration::from_secs(40), || async {
        let d = destinations(&server, "show").await;
        (d["slow"]["dropped_frames"].as_u64().unwrap_or(0) > 60).then_some(d)
    })
    .await;
    assert!(d["slow"]["queued_bytes"].as_u64().unwrap() <= 262_144, "{d}");
    assert_eq!(d["slow"]["state"], "live", "{d}");
    assert_eq!(d["plain"]["state"], "live", "{d}");
    assert_eq!(d["plain"]["dropped_frames"], 0, "the other destination keeps up: {d}");
    assert!(d["plain"]["bitrate_kbps"].as_u64().unwrap() > 50, "the other destination keeps its rate: {d}");
    // Ingest and viewers go on: segments keep coming, the LL-HLS and the relay decode.
    let before = get(&server.url("/api/streams/show")).await.unwrap().json()["uptime_s"].as_f64().unwrap();
    ffmpeg_decode(&server.url("/live/show/llhls.m3u8"), 3.0).await.unwrap();
    ffmpeg_decode(&format!("rtmp://127.0.0.1:{rtmp}/app/{GOOD_KEY}"), 3.0).await.unwrap();
    let s = get(&server.url("/api/streams/show")).await.unwrap().json();
    assert!(s["live"].as_bool().unwrap() && s["uptime_s"].as_f64().unwrap() > before, "{s}");
    let fps = s["fps"].as_f64().unwrap_or(0.0);
    assert!(fps > 25.0, "ingest keeps its frame rate: {fps}");

    publisher.stop().await;
    slow.abort();
    drop(nginx);
    assert!(nginx_log_ok(&nginx_dir));
    server.shutdown().await;
}

fn nginx_log_ok(dir: &Path) -> bool {
    !std::fs::read_to_string(dir.join("error.log")).unwrap_or_default().contains("[emerg]")
}

/// OnAir's push URL for an OME origin, checked by a signer that shares no code with OnAir:
/// Python's hmac/base64 over the unsigned URL, as OME's SignedPolicy documentation specifies.
#[tokio::test]
async fn ome_push_url_matches_an_independent_signer() {
    let mut e = Endpoint::parse("rtmp://127.0.0.1:1935/app/stream", true).unwrap();
    e.ome.as_mut().unwrap().1 = 60;
    let secret = "1kU^b6";
    let t = e.target(secret, 1_700_000_000_000);
    let full = format!("{}/{}", t.tc_url, t.stream);
    let (unsigned, signature) = full.rsplit_once("&signature=").unwrap();
    let script = format!(
        "import base64,hmac,hashlib,sys; print(base64.urlsafe_b64encode(hmac.new(b'{secret}', b'{unsigned}', hashlib.sha1).digest()).decode().rstrip('='))"
    );
    require_tool("python3");
    let out = sh(&format!("python3 -c \"{script}\"")).await.unwrap();
    assert_eq!(out.trim(), signature, "{full}");
    // And OME's documented vector through the same independent signer.
    let vector = "ws://192.168.0.100:3333/app/stream?policy=eyJ1cmxfZXhwaXJlIjoxMzk5NzIxNTgxfQ";
    let out = sh(&format!(
        "python3 -c \"import base64,hmac,hashlib; print(base64.urlsafe_b64encode(hmac.new(b'1kU^b6', b'{vector}', hashlib.sha1).digest()).decode().rstrip('='))\""
    ))
    .await
    .unwrap();
    assert_eq!(out.trim(), "dvVdBpoxAeCPl94Kt5RoiqLI0YE");
    assert_eq!(onair_policy::signature(secret.as_bytes(), vector), out.trim());
}
