//! HTTPS with automatic certificates against a real ACME CA: Debian's pebble (Let's Encrypt's
//! test CA) with pebble-challtestsrv as its DNS (every name → 127.0.0.1), validating HTTP-01
//! against OnAir's own plain HTTP port. Checked with curl trusting pebble's issuing root and
//! openssl s_client (which serial is served).

use std::sync::Arc;
use std::time::Duration;

use onair_engine::config::TlsMode;
use onair_engine::secrets::{MemoryStore, SecretStore};
use onair_engine::{Config, Engine, Secrets, SigningKey};
use onair_tests::pebble::{Pebble, curl_https, free_port, served_certificate};
use onair_tests::*;

/// An engine on loopback whose plain HTTP port is `http_port` (the one pebble validates on),
/// with ACME for `domain` from `pebble`.
async fn start_engine(
    http_port: u16,
    domain: &str,
    pebble: &Pebble,
    data_dir: &std::path::Path,
    store: Arc<MemoryStore>,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    init_logs();
    let mut config = Config {
        http: format!("127.0.0.1:{http_port}").parse().unwrap(),
        rtmp: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    config.webrtc.udp = "127.0.0.1:0".parse().unwrap();
    config.webrtc.tcp = "127.0.0.1:0".parse().unwrap();
    config.data_dir = data_dir.to_path_buf();
    config.tls.mode = TlsMode::Acme;
    config.tls.https = "127.0.0.1:0".parse().unwrap();
    config.tls.rtmps = "127.0.0.1:0".into();
    config.tls.domain = domain.into();
    config.tls.acme_directory = pebble.directory();
    config.tls.acme_ca_file = pebble.tls_ca.clone();
    tweak(&mut config);
    config.validate().unwrap();
    let mut secrets: Secrets = SigningKey::new(SECRET).into();
    secrets.store = store;
    let engine = Engine::start(config, secrets).await.expect("engine starts");
    TestServer { engine }
}

/// The `https` part of `GET /api/control/status` over plain HTTP.
async fn https_status(server: &TestServer) -> serde_json::Value {
    let ep = server.control_endpoint();
    let auth = format!("Bearer {}", ep.token);
    let r =
        request_with("GET", &format!("{}/api/control/status", ep.url), &[("Authorization", &auth)], b"").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["https"].clone()
}

async fn wait_state(server: &TestServer, state: &str, timeout: Duration) -> serde_json::Value {
    wait_for(&format!("https state {state}"), timeout, || async {
        let s = https_status(server).await;
        (s["state"] == state).then_some(s)
    })
    .await
}

fn unique_domain(what: &str) -> String {
    format!("{what}-{}-{}.onair.test", std::process::id(), rand::random::<u16>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obtains_serves_reuses_and_renews_a_certificate() {
    let http_port = free_port();
    let mut pebble = Pebble::prepare(http_port).await;
    pebble.start().await;
    let root = pebble.issuing_root().await;
    let domain = unique_domain("stream");
    let data = fresh_dir("acme-data");
    let store = Arc::new(MemoryStore::default());

    // 1. A first start obtains a certificate and serves HTTPS with it (full chain: curl trusts
    //    only pebble's root).
    let server = start_engine(http_port, &domain, &pebble, &data, store.clone(), |_| {}).await;
    let https_port = server.engine.https_addr().unwrap().port();
    let st = wait_state(&server, "ok", Duration::from_secs(60)).await;
    assert_eq!(st["mode"], "acme");
    assert_eq!(st["domain"], domain.as_str());
    assert_eq!(st["https_port"], https_port);
    assert_eq!(st["rtmps_port"], server.engine.rtmps_addr().unwrap().port());
    assert!(st["expires_unix_s"].as_u64().unwrap() > now_ms() / 1000 + 86_400);
    assert!(st["error"].is_null());
    let ep = server.control_endpoint();
    let auth = format!("Authorization: Bearer {}", ep.token);
    let (code, body) = curl_https(&root, &domain, https_port, "/api/control/status", &[&auth]).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let over_https: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_https["https"]["state"], "ok");
    let (first, text) = served_certificate(https_port, &domain).await.unwrap();
    assert!(text.contains("Pebble Intermediate CA"), "{text}");
    assert!(text.contains(&domain), "{text}");
    assert!(store.get(onair_engine::acme::ACCOUNT_ENTRY).unwrap().is_some(), "the ACME account is kept as a secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tls/key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No HSTS unless asked for.
    let r = sh_headers(&root, &domain, https_port).await;
    assert!(!r.to_ascii_lowercase().contains("strict-transport-security"), "{r}");

    // Plain HTTP: the certificate's name is redirected to HTTPS; the LAN/loopback address and
    // the ACME challenge path are not; the viewer links are https.
    let plain = format!("http://127.0.0.1:{http_port}");
    let (code, location) = plain_with_host(http_port, &format!("{domain}:{http_port}"), "/stream?x=1").await;
    assert_eq!(code, 308);
    assert_eq!(location, format!("https://{domain}:{https_port}/stream?x=1"));
    assert_eq!(status_of(&format!("{plain}/healthz")).await, 200, "loopback keeps plain HTTP");
    let (code, _) = plain_with_host(http_port, &domain, "/.well-known/acme-challenge/unknown").await;
    assert_eq!(code, 404, "challenges are answered, not redirected");
    assert_eq!(server.engine.urls().viewer("s"), format!("https://{domain}:{https_port}/s"));
    assert!(server.engine.urls().rtmp_server().starts_with(&format!("rtmps://{domain}:")));
    assert!(server.engine.urls().plain_rtmp_server().starts_with("rtmp://127.0.0.1:"));
    server.shutdown().await;

    // 2. A restart reuses the stored certificate (no new order: the same serial).
    let server = start_engine(http_port, &domain, &pebble, &data, store.clone(), |_| {}).await;
    let https_port = server.engine.https_addr().unwrap().port();
    wait_state(&server, "ok", Duration::from_secs(20)).await;
    let (again, _) = served_certificate(https_port, &domain).await.unwrap();
    assert_eq!(again, first, "the stored certificate is reused across restarts");
    server.shutdown().await;

    // 3. Near expiry (a renewal window longer than pebble's five-year certificates, checked every
    //    2 s): new certificates replace the served one while the server runs.
    let server = start_engine(http_port, &domain, &pebble, &data, store.clone(), |c| {
        c.tls.renew_before_days = 3650;
        c.tls.renew_check_s = 2;
        c.tls.hsts = true;
    })
    .await;
    let https_port = server.engine.https_addr().unwrap().port();
    let seen = wait_for("a renewed certificate", Duration::from_secs(60), || async {
        let (serial, _) = served_certificate(https_port, &domain).await.ok()?;
        (serial != first).then_some(serial)
    })
    .await;
    let renewed = wait_for("a second renewal, without a restart", Duration::from_secs(60), || async {
        let (serial, _) = served_certificate(https_port, &domain).await.ok()?;
        (serial != seen && serial != first).then_some(serial)
    })
    .await;
    assert_ne!(renewed, seen);
    let (code, _) = curl_https(&root, &domain, https_port, "/healthz", &[]).await.unwrap();
    assert_eq!(code, 200);
    let r = sh_headers(&root, &domain, https_port).await;
    assert!(r.to_ascii_lowercase().contains("strict-transport-security: max-age="), "{r}");
    let st = https_status(&server).await;
    assert!(st["state"] == "ok" || st["state"] == "renewing", "{st}");
    assert!(logs().contains("HTTPS certificate obtained"));
    server.shutdown().await;
    pebble.stop().await;
    std::fs::remove_dir_all(&data).ok();
}

/// A plain-HTTP GET to 127.0.0.1:`port` with `Host: host`: (status, Location).
async fn plain_with_host(port: u16, host: &str, path: &str) -> (u16, String) {
    let out = onair_tests::pebble::sh(&format!(
        "curl -sS -m 10 -o /dev/null -H 'Host: {host}' -w '%{{http_code}} %{{redirect_url}}' 'http://127.0.0.1:{port}{path}'"
    ))
    .await
    .unwrap();
    let (code, location) = out.trim().split_once(' ').unwrap_or((out.trim(), ""));
    (code.parse().unwrap(), location.to_owned())
}

/// The response headers of `GET /healthz` over HTTPS.
async fn sh_headers(root: &std::path::Path, domain: &str, port: u16) -> String {
    onair_tests::pebble::sh(&format!(
        "curl -sS -m 10 -o /dev/null -D - --cacert {} --resolve {domain}:{port}:127.0.0.1 https://{domain}:{port}/healthz",
        root.display()
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_ca_being_down_at_start() {
    let http_port = free_port();
    let mut pebble = Pebble::prepare(http_port).await;
    let domain = unique_domain("down");
    let data = fresh_dir("acme-down");
    let server = start_engine(http_port, &domain, &pebble, &data, Arc::new(MemoryStore::default()), |_| {}).await;

    // The CA is not running: the engine serves plain HTTP (also for the domain: no redirect
    // without a certificate) and says why HTTPS is not there.
    let st = wait_state(&server, "error", Duration::from_secs(30)).await;
    let error = st["error"].as_str().unwrap();
    assert!(error.contains("cannot reach the ACME CA") && error.contains(&pebble.directory()), "{error}");
    let plain = format!("http://127.0.0.1:{http_port}");
    assert_eq!(status_of(&format!("{plain}/healthz")).await, 200);
    let (code, _) = plain_with_host(http_port, &domain, "/healthz").await;
    assert_eq!(code, 200, "no redirect while no certificate is in use");
    assert!(logs().contains("HTTPS certificate problem"));

    // Once the CA is up, the next attempt (30 s after the first failure) obtains the certificate.
    pebble.start().await;
    let root = pebble.issuing_root().await;
    let st = wait_state(&server, "ok", Duration::from_secs(90)).await;
    assert!(st["error"].is_null(), "{st}");
    let https_port = server.engine.https_addr().unwrap().port();
    let (code, _) = curl_https(&root, &domain, https_port, "/healthz", &[]).await.unwrap();
    assert_eq!(code, 200);
    let (code, _) = plain_with_host(http_port, &domain, "/healthz").await;
    assert_eq!(code, 308, "redirected once the certificate is in use");
    server.shutdown().await;
    pebble.stop().await;
    std::fs::remove_dir_all(&data).ok();
}
