//! TURN: a viewer whose network lets only TURN through (relay-only ICE) plays over WebRTC through
//! a real coturn (`use-auth-secret`, the REST credentials OnAir hands out in WHEP `Link` headers
//! and in the `OPTIONS` answer), started by the test on loopback.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use onair_engine::{Config, Secrets, SigningKey};
use onair_tests::*;
use tokio::process::{Child, Command};

/// The shared secret coturn and OnAir both hold (coturn `static-auth-secret`).
const TURN_SECRET: &str = "turn-test-secret";

/// A coturn on 127.0.0.1, killed on drop.
struct Coturn {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Coturn {
    async fn start() -> Coturn {
        let bin = require_tool("turnserver");
        let dir = fresh_dir("coturn");
        // A free port: bind, note, let go (coturn binds it a moment later).
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("turn.log");
        let child = Command::new(bin)
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                "--relay-ip=127.0.0.1",
                "--min-port=49200",
                "--max-port=49999",
                "--allow-loopback-peers",
                "--use-auth-secret",
                &format!("--static-auth-secret={TURN_SECRET}"),
                "--realm=onair.test",
                "--fingerprint",
                "--no-tls",
                "--no-dtls",
                "--no-tcp-relay",
                "--no-cli",
                "--no-software-attribute",
                "--verbose",
                &format!("--pidfile={}", dir.join("turn.pid").display()),
                &format!("--userdb={}", dir.join("turndb").display()),
                &format!("--log-file={}", log.display()),
                "--simple-log",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver starts");
        let coturn = Coturn { child, port, log };
        wait_for("coturn to listen", Duration::from_secs(15), || {
            let log = std::fs::read_to_string(&coturn.log).unwrap_or_default();
            async move { log.contains("listener opened on").then_some(()) }
        })
        .await;
        coturn
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_viewer_plays_through_turn() {
    let coturn = Coturn::start().await;
    let mut config = Config::default();
    config.webrtc.turn_urls = vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)];
    let mut secrets: Secrets = SigningKey::new(SECRET).into();
    secrets.turn_secret = Some(TURN_SECRET.into());
    let server = TestServer::start_with_secrets(config, secrets).await;

    // The ICE servers are handed out before the offer too (OPTIONS), with working credentials.
    let options = request("OPTIONS", &server.url("/live/relay/whep")).await.unwrap();
    assert_eq!(options.status, 204);
    let links: Vec<&str> =
        options.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("link")).map(|(_, v)| v.as_str()).collect();
    assert!(
        links.iter().any(|l| l.contains(&format!("turn:127.0.0.1:{}", coturn.port)) && l.contains("credential=")),
        "{links:?}"
    );

    let publisher = Publisher::start(&server.signed_url("relay"), &Source::default());
    wait_live(&server, "relay", Duration::from_secs(15)).await;
    // `?ice=relay`: the page's peer connection may use relayed candidates only, as on a network
    // that blocks everything but TURN; it must connect at the first try (no LL-HLS fallback).
    let played = browser_play(
        &server.url("/relay?transport=webrtc&ice=relay"),
        &["--expect-transport", "webrtc", "--expect-width", "640"],
    )
    .await
    .unwrap();
    assert_eq!(played["ok"], true, "{played}");
    let rtc = &played["webrtc"];
    assert_eq!(rtc["connectionState"], "connected", "{played}");
    assert_eq!(rtc["candidateType"]["local"], "relay", "the media went through TURN: {played}");
    assert!(rtc["framesDecodedDelta"].as_u64().unwrap() > 0, "{played}");
    assert!(rtc["audioPacketsDelta"].as_u64().unwrap() > 0, "{played}");
    // coturn saw an authenticated allocation with OnAir's REST user name (`<expiry>:onair`).
    let log = coturn.log();
    assert!(log.contains(":onair"), "coturn log shows no allocation by OnAir's user:\n{log}");

    publisher.stop().await;
    server.shutdown().await;
    coturn.stop().await;
}
