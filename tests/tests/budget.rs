//! The upload budget (issue 12, `[budget]`): a new direct viewer who would take OnAir past the
//! streamer's upload is not admitted, and the viewers already watching keep their quality. With
//! a budget that holds one viewer, headless Chromium plays over WebRTC (its frame rate checked
//! from `getStats()`) while further HLS players and WHEP offers from other clients get `503`
//! "the stream is full" with `Retry-After`; with `hls.public_base_url` (a cache or CDN in front)
//! a new HLS player is redirected there instead, and with `budget.edge_url` the viewer and embed
//! pages are redirected to that edge. Real engine, real ffmpeg publisher, real Chromium.

use std::time::Duration;

use onair_engine::config::Config;
use onair_tests::*;

/// An HLS playlist request from a client with its own User-Agent (a distinct viewer).
async fn playlist_as(server: &TestServer, stream: &str, agent: &str) -> HttpResponse {
    let url = server.url(&format!("/live/{stream}/llhls.m3u8"));
    request_with("GET", &url, &[("User-Agent", agent)], b"").await.unwrap()
}

/// A WHEP offer from another client (the budget refuses it before reading the SDP).
async fn whep_as(server: &TestServer, stream: &str, agent: &str) -> HttpResponse {
    let url = server.url(&format!("/live/{stream}/whep"));
    let headers = [("User-Agent", agent), ("Content-Type", "application/sdp")];
    request_with("POST", &url, &headers, b"v=0\r\n").await.unwrap()
}

fn assert_full(res: &HttpResponse, what: &str) {
    assert_eq!(res.status, 503, "{what}: {}", res.text());
    assert!(res.text().starts_with("the stream is full"), "{what}: {}", res.text());
    assert_eq!(res.header("Retry-After"), Some("30"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_over_the_budget_are_refused_while_the_admitted_one_keeps_its_frame_rate() {
    let server = TestServer::start().await;
    let stream = "budget";
    let publisher = Publisher::start(&server.signed_url(stream), &Source::small());
    wait_live(&server, stream, Duration::from_secs(15)).await;
    let api = server.url(&format!("/api/streams/{stream}"));
    let kbps = wait_for("the stream's bit rate", Duration::from_secs(15), || async {
        let st = get(&api).await.ok()?.json();
        st["bitrate_kbps"].as_u64().filter(|k| *k > 0)
    })
    .await;
    // Room for one viewer (its bit rate + 5 %) and half of another.
    let mbps = kbps as f64 * 1.05 * 1.5 / 1000.0;
    server.control().set_upload_budget(mbps).unwrap();

    let page = server.url(&format!("/{stream}?transport=webrtc"));
    let viewer = tokio::spawn(async move {
        browser_play(&page, &["--expect-transport", "webrtc", "--min-advance", "6", "--timeout", "40000"]).await
    });
    // Once the WebRTC session is there, other clients are refused — again and again.
    wait_for("the WebRTC viewer", Duration::from_secs(30), || async {
        let st = get(&api).await.ok()?.json();
        (st["viewers"]["webrtc"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    for i in 0..10 {
        assert_full(&playlist_as(&server, stream, &format!("another player {i}")).await, "an HLS player");
        assert_full(&whep_as(&server, stream, &format!("another browser {i}")).await, "a WHEP offer");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let played = viewer.await.unwrap().unwrap();
    assert_eq!(played["ok"], true, "{played}");
    assert_eq!(played["transport"], "webrtc", "{played}");
    // The admitted viewer kept its frame rate (the source is 30 fps): frames decoded over the
    // last second of getStats().
    let frames = played["webrtc"]["framesDecodedDelta"].as_f64().unwrap_or(0.0);
    let secs = played["webrtc"]["sampleIntervalMs"].as_f64().unwrap_or(1000.0) / 1000.0;
    assert!(frames / secs >= 20.0, "{frames} frames in {secs} s: {played}");

    let status = server.control().control_status();
    assert!(status.budget.refused >= 20, "{:?}", status.budget);
    assert!((status.budget.upload_mbps - mbps).abs() < 1e-6, "{:?}", status.budget);
    assert!(status.budget.used_mbps > 0.0, "{:?}", status.budget);
    let logs = logs();
    assert!(
        logs.contains("viewer not admitted: a new viewer would exceed the upload budget (budget.upload_mbps)"),
        "{logs}"
    );

    // No budget: everyone is admitted again.
    server.control().set_upload_budget(0.0).unwrap();
    assert_eq!(playlist_as(&server, stream, "a latecomer").await.status, 200);
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_budget_hls_players_go_to_the_cache_and_pages_to_the_edge() {
    let mut config = Config::default();
    // Neither is contacted: the answers only name them.
    config.hls.public_base_url = "http://127.0.0.1:9/cdn".into();
    config.budget.edge_url = "https://edge.example/watch/{stream}".into();
    // Less than any viewer: every new one is over it.
    config.budget.upload_mbps = 0.01;
    let server = TestServer::start_with(config).await;
    let stream = "edge";
    let publisher = Publisher::start(&server.signed_url(stream), &Source::small());
    // (Not wait_live: its playlist requests are over the budget too.)
    let api = server.url(&format!("/api/streams/{stream}"));
    wait_for("the stream to go live", Duration::from_secs(15), || async {
        (get(&api).await.ok()?.json()["live"] == true).then_some(())
    })
    .await;

    let url = server.url(&format!("/live/{stream}/llhls.m3u8?_HLS_msn=1&_HLS_part=0"));
    let res = request_with("GET", &url, &[("User-Agent", "a new player")], b"").await.unwrap();
    assert_eq!(res.status, 307, "{}", res.text());
    assert_eq!(res.header("Location"), Some("http://127.0.0.1:9/cdn/live/edge/llhls.m3u8?_HLS_msn=1&_HLS_part=0"));
    for page in [format!("/{stream}"), format!("/embed/{stream}")] {
        let res = get(&server.url(&page)).await.unwrap();
        assert_eq!(res.status, 307, "{page}");
        assert_eq!(res.header("Location"), Some("https://edge.example/watch/edge"), "{page}");
    }
    assert_full(&whep_as(&server, stream, "a new browser").await, "a WHEP offer");

    // With room again, the pages and playlists are OnAir's own.
    server.control().set_upload_budget(0.0).unwrap();
    assert_eq!(get(&server.url(&format!("/{stream}"))).await.unwrap().status, 200);
    assert_eq!(playlist_as(&server, stream, "a new player").await.status, 200);
    publisher.stop().await;
    server.shutdown().await;
}
