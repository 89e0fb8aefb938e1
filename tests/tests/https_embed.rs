//! The player embedded on an HTTPS site: a page on another HTTPS origin (served by the browser
//! script) shows OnAir's `https://localhost:<port>/embed/<stream>` in an iframe; headless
//! Chromium, trusting the test CA, plays it over WebRTC and over LL-HLS with no plain-http
//! request and no mixed-content warning. OnAir serves HTTPS from a certificate made here
//! (`[tls] mode = "file"`, a CA and leaves made with openssl); Chromium trusts the CA by its
//! public-key hash (`--ignore-certificate-errors-spki-list`), which matches because both servers
//! send the whole chain.

use std::time::Duration;

use onair_engine::Config;
use onair_engine::config::TlsMode;
use onair_tests::pebble::{make_ca_and_leaf, sh};
use onair_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_page_embeds_the_player_over_webrtc_and_llhls() {
    let dir = fresh_dir("https-embed");
    let (ca, cert, key) = make_ca_and_leaf(&dir, "ca", "localhost", "DNS:localhost").await.unwrap();
    // The blog's own certificate, from the same CA, for another origin (https://127.0.0.1:…).
    let (_, blog_cert, blog_key) = make_ca_and_leaf(&dir, "ca", "blog", "IP:127.0.0.1").await.unwrap();
    // Both servers send the whole chain (leaf + CA), so Chromium meets the CA it trusts.
    let chain = |leaf: &std::path::Path| {
        let path = leaf.with_extension("chain.pem");
        let pem = [std::fs::read(leaf).unwrap(), std::fs::read(&ca).unwrap()].concat();
        std::fs::write(&path, pem).unwrap();
        path
    };
    let (cert, blog_cert) = (chain(&cert), chain(&blog_cert));
    let spki = sh(&format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        ca.display()
    ))
    .await
    .unwrap();

    let mut config = Config::default();
    config.tls.mode = TlsMode::File;
    config.tls.cert_file = cert.clone();
    config.tls.key_file = key.clone();
    config.tls.domain = "localhost".into();
    config.tls.https = "127.0.0.1:0".parse().unwrap();
    config.tls.rtmps = String::new();
    let server = TestServer::start_with(config).await;
    wait_for("the certificate in use", Duration::from_secs(10), || async {
        (server.control().https().state == "ok").then_some(())
    })
    .await;
    let port = server.engine.https_addr().unwrap().port();
    assert_eq!(server.engine.urls().embed("show"), format!("https://localhost:{port}/embed/show"));

    let publisher = Publisher::start(&server.signed_url("show"), &Source::small());
    wait_live(&server, "show", Duration::from_secs(15)).await;
    for (transport, expect) in [("webrtc", "webrtc"), ("hls", "llhls")] {
        let embed = format!("https://localhost:{port}/embed/show?transport={transport}");
        let played = browser_script(
            "embed_https.mjs",
            &embed,
            &[blog_cert.to_str().unwrap(), blog_key.to_str().unwrap(), spki.trim()],
        )
        .await
        .unwrap();
        println!("{transport}: {played}");
        assert_eq!(played["ok"], true, "{played}");
        assert_eq!(played["transport"], expect, "{played}");
        assert_eq!(played["secureContext"], true, "{played}");
        assert_eq!(played["frameOrigin"], format!("https://localhost:{port}"), "{played}");
        assert_eq!(played["insecureRequests"], serde_json::json!([]), "{played}");
        assert_eq!(played["mixedContent"], serde_json::json!([]), "{played}");
    }
    publisher.stop().await;
    server.shutdown().await;
}
