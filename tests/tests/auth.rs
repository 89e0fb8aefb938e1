//! Signed-URL enforcement with a real ffmpeg publisher.

use std::time::Duration;

use onair_policy::Policy;
use onair_tests::*;

/// Publishes to `url`, expects ffmpeg to be refused and the log to name `reason` for `stream`
/// without the secret; an offline stream must stay offline.
async fn expect_refused(server: &TestServer, stream: &str, url: &str, reason: &str) {
    let was_live = status_of(&server.url(&format!("/live/{stream}/playlist.m3u8"))).await == 200;
    let mut publisher = Publisher::start(url, &Source::small());
    let exited = publisher.wait(Duration::from_secs(20)).await;
    assert_eq!(exited, Some(false), "ffmpeg should fail to publish to {url}: {}", publisher.stderr());
    if !was_live {
        assert_eq!(status_of(&server.url(&format!("/live/{stream}/playlist.m3u8"))).await, 404);
    }
    let logs = logs();
    let line = logs
        .lines()
        .find(|l| l.contains("publish refused") && l.contains(&format!("stream={stream}")) && l.contains(reason))
        .unwrap_or_else(|| panic!("no 'publish refused' log line for {stream} naming {reason:?}:\n{logs}"));
    assert!(!logs.contains(SECRET), "the secret leaked into the logs: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_before_any_media() {
    let server = TestServer::start().await;
    let hour = now_ms() + 3_600_000;

    expect_refused(&server, "unsigned", &server.rtmp_base("unsigned"), "no policy parameter").await;

    let signed = server.signed_url("tampered");
    let tampered = signed.replace("/live/tampered?", "/live/tampered2?");
    expect_refused(&server, "tampered2", &tampered, "signature does not match").await;

    let other_secret = onair_policy::sign_url(
        b"not-the-secret",
        &server.rtmp_base("forged"),
        &Policy { url_expire: hour, ..Default::default() },
    )
    .unwrap();
    expect_refused(&server, "forged", &other_secret, "signature does not match").await;

    let expired = server.signed_url_with("expired", &Policy { url_expire: now_ms() - 1_000, ..Default::default() });
    expect_refused(&server, "expired", &expired, "expired").await;

    let early = server.signed_url_with(
        "early",
        &Policy { url_expire: hour, url_activate: Some(now_ms() + 600_000), ..Default::default() },
    );
    expect_refused(&server, "early", &early, "not active").await;

    let wrong_ip = server.signed_url_with(
        "wrongip",
        &Policy { url_expire: hour, allow_ip: Some("10.0.0.0/8".into()), ..Default::default() },
    );
    expect_refused(&server, "wrongip", &wrong_ip, "not in allow_ip").await;

    // The right network is let in.
    let right_ip = server.signed_url_with(
        "rightip",
        &Policy { url_expire: hour, allow_ip: Some("127.0.0.0/8".into()), ..Default::default() },
    );
    let publisher = Publisher::start(&right_ip, &Source::small());
    wait_live(&server, "rightip", Duration::from_secs(15)).await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_publisher_on_a_live_name_is_refused() {
    let server = TestServer::start().await;
    let first = Publisher::start(&server.signed_url("taken"), &Source::small());
    wait_live(&server, "taken", Duration::from_secs(15)).await;
    expect_refused(&server, "taken", &server.signed_url("taken"), "already live").await;
    // The first publisher is unaffected.
    assert_eq!(status_of(&server.url("/live/taken/playlist.m3u8")).await, 200);
    first.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_expire_ends_a_running_publish() {
    let server = TestServer::start().await;
    let url = server.signed_url_with(
        "short",
        &Policy { url_expire: now_ms() + 60_000, stream_expire: Some(now_ms() + 6_000), ..Default::default() },
    );
    let mut publisher = Publisher::start(&url, &Source::small());
    wait_live(&server, "short", Duration::from_secs(15)).await;
    let ended = publisher.wait(Duration::from_secs(20)).await;
    assert!(ended.is_some(), "ffmpeg should be disconnected at stream_expire");
    assert_eq!(status_of(&server.url("/live/short/playlist.m3u8")).await, 404);
    assert!(logs().contains("stream expired"), "{}", logs());
    server.shutdown().await;
}
