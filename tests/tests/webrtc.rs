//! WebRTC playback over WHEP: real ffmpeg in, headless Chromium out, all on loopback.

use std::time::Duration;

use onair_engine::Config;
use onair_tests::*;

/// Plays `page` (a viewer or embed URL) over WebRTC and checks media really flows.
async fn plays_over_webrtc(page: &str, width: u32) -> serde_json::Value {
    let played =
        browser_play(page, &["--expect-transport", "webrtc", "--expect-width", &width.to_string()]).await.unwrap();
    assert_eq!(played["ok"], true, "{played}");
    let rtc = &played["webrtc"];
    assert_eq!(rtc["connectionState"], "connected", "{played}");
    assert_eq!(rtc["frameWidth"], width, "{played}");
    assert!(rtc["framesDecodedDelta"].as_u64().unwrap() > 0, "frames must keep decoding: {played}");
    assert!(rtc["audioPacketsDelta"].as_u64().unwrap() > 0, "audio must keep flowing: {played}");
    assert_eq!(rtc["videoCodec"], "video/H264", "{played}");
    assert_eq!(rtc["audioCodec"], "audio/opus", "{played}");
    played
}

async fn sessions_drain(server: &TestServer) {
    let webrtc = server.engine.webrtc().unwrap().clone();
    // A session that never connected ends with the server's 10 s connect deadline.
    wait_for("every WebRTC session to end", Duration::from_secs(45), || {
        let webrtc = webrtc.clone();
        async move { (webrtc.total_sessions() == 0).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_over_whep_with_opus_audio() {
    let server = TestServer::start().await;
    let publisher = Publisher::start(&server.signed_url("rtc"), &Source::default());
    wait_live(&server, "rtc", Duration::from_secs(15)).await;
    let played = plays_over_webrtc(&server.url("/rtc"), 640).await;
    assert_eq!(played["badge"], "WebRTC", "{played}");
    // The embed page too.
    plays_over_webrtc(&server.url("/embed/rtc"), 640).await;
    // Closed tabs end their sessions.
    sessions_drain(&server).await;
    let st = get(&server.url("/api/streams/rtc")).await.unwrap().json();
    assert_eq!(st["viewers"]["webrtc"], 0, "{st}");
    assert_eq!(st["urls"]["whep"], "/live/rtc/whep");
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_profile_and_44k_audio_play() {
    let server = TestServer::start().await;
    let src = Source { profile: Some("high"), sample_rate: 44_100, ..Source::small() };
    let publisher = Publisher::start(&server.signed_url("high"), &src);
    wait_live(&server, "high", Duration::from_secs(15)).await;
    let st = get(&server.url("/api/streams/high")).await.unwrap().json();
    assert!(st["video"]["codec"].as_str().unwrap().starts_with("avc1.64"), "{st}");
    assert_eq!(st["audio"]["sample_rate"], 44_100, "{st}");
    plays_over_webrtc(&server.url("/high"), 320).await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bframes_source_plays_over_webrtc_and_is_flagged() {
    let server = TestServer::start().await;
    let publisher = Publisher::start(&server.signed_url("bf"), &Source { bframes: 2, ..Source::small() });
    wait_live(&server, "bf", Duration::from_secs(15)).await;
    plays_over_webrtc(&server.url("/bf?transport=webrtc"), 320).await;
    let st = get(&server.url("/api/streams/bf")).await.unwrap().json();
    assert_eq!(st["bframes"], true, "{st}");
    assert!(logs().contains("set Max B-frames to 0 in OBS"));
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_ice_falls_back_to_llhls() {
    // The server advertises 127.0.0.2 while its socket listens on 127.0.0.1 only, and ICE-TCP is
    // off: every connectivity check is refused by the kernel, as behind a firewall that drops UDP.
    let mut config = Config::default();
    config.webrtc.public_ips = vec!["127.0.0.2".into()];
    config.webrtc.ice_tcp = false;
    let server = TestServer::start_with(config).await;
    let publisher = Publisher::start(&server.signed_url("fw"), &Source::small());
    wait_live(&server, "fw", Duration::from_secs(15)).await;
    let played =
        browser_play(&server.url("/fw?ice-timeout=3000"), &["--expect-transport", "llhls", "--expect-width", "320"])
            .await
            .unwrap();
    assert_eq!(played["ok"], true, "{played}");
    let transports: Vec<&str> = played["transports"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
    assert_eq!(transports.first(), Some(&"webrtc"), "WebRTC was tried first: {played}");
    assert_eq!(transports.last(), Some(&"llhls"), "{played}");
    sessions_drain(&server).await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_then_none() {
    let server = TestServer::start().await;
    let publisher =
        Publisher::start(&server.signed_url("many"), &Source { width: 256, height: 144, ..Source::small() });
    wait_live(&server, "many", Duration::from_secs(15)).await;
    // WebRTC is forced (no fallback): 20 pages starting at once on a small machine may need more
    // than the page's usual few seconds to connect, and this test is about the server.
    let out = browser_script("sessions.mjs", &server.url("/many?transport=webrtc"), &["20", "--timeout", "120000"])
        .await
        .unwrap();
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["playing"], 20, "{out}");
    // The status API counts every open session: at least the 20 playing ones. On a saturated
    // machine a page may give up on ICE, retry, and leave a session that ends only with its ICE
    // timeout; the drain below is the no-leak check.
    assert!(out["viewers"]["open"].as_u64().is_some_and(|n| n >= 20), "the status API counted them: {out}");
    sessions_drain(&server).await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whep_requests_get_clear_4xx() {
    let server = TestServer::start().await;
    let whep = server.url("/live/w/whep");
    let sdp = [("Content-Type", "application/sdp")];
    // Offline stream.
    let r = request_with("POST", &whep, &sdp, b"v=0\r\n").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let publisher = Publisher::start(&server.signed_url("w"), &Source::small());
    wait_live(&server, "w", Duration::from_secs(15)).await;
    for (body, why) in [
        (&b"not sdp at all"[..], "garbage"),
        (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "no media sections"),
        (b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n", "no ICE/DTLS, VP8 only"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ] {
        let r = request_with("POST", &whep, &sdp, body).await.unwrap();
        assert_eq!(r.status, 400, "{why}: {}", r.text());
        assert!(!r.text().trim().is_empty(), "{why}: the reason is in the body");
    }
    let big = vec![b'a'; 200_000];
    assert_eq!(request_with("POST", &whep, &sdp, &big).await.unwrap().status, 413);
    let r = request_with("POST", &whep, &[("Content-Type", "text/plain")], b"v=0").await.unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(request("DELETE", &server.url("/live/w/whep/nosuchsession")).await.unwrap().status, 404);
    assert_eq!(request("PATCH", &server.url("/live/w/whep/x")).await.unwrap().status, 405);
    let pre = request_with(
        "OPTIONS",
        &whep,
        &[("Origin", "http://elsewhere.example"), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await
    .unwrap();
    assert!(pre.status < 300);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre.header("access-control-allow-methods").unwrap().contains("POST"));
    // The engine is still fine, and no session leaked.
    assert_eq!(server.engine.webrtc().unwrap().total_sessions(), 0);
    plays_over_webrtc(&server.url("/w"), 320).await;
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_reconnects_over_webrtc_when_the_stream_restarts() {
    let server = TestServer::start().await;
    let url = server.signed_url("again");
    let first = Publisher::start(&url, &Source::small());
    wait_live(&server, "again", Duration::from_secs(15)).await;
    // The page must play, lose the stream, and play again over WebRTC: two playing periods,
    // one page load.
    let page = {
        let page = server.url("/again");
        tokio::spawn(async move {
            browser_play(
                &page,
                &["--expect-transport", "webrtc", "--playing-periods", "2", "--min-advance", "2", "--timeout", "60000"],
            )
            .await
        })
    };
    let webrtc = server.engine.webrtc().unwrap().clone();
    wait_for("the page's WebRTC session", Duration::from_secs(20), || {
        let webrtc = webrtc.clone();
        async move { (webrtc.sessions("again") == 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await;
    wait_for("the stream to go offline", Duration::from_secs(10), || async {
        (status_of(&server.url("/live/again/playlist.m3u8")).await == 404).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = Publisher::start(&url, &Source::small());
    let played = page.await.unwrap().unwrap();
    assert_eq!(played["ok"], true, "{played}");
    assert_eq!(played["playingPeriods"], 2, "{played}");
    assert_eq!(played["navigations"], 1, "no reload: {played}");
    assert_eq!(played["transport"], "webrtc", "{played}");
    second.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_webrtc_limit_whep_is_503_and_the_page_plays_llhls() {
    // No WebRTC session allowed at all: every offer is over the `webrtc_sessions` limit.
    let mut config = Config::default();
    config.limits.webrtc_sessions = 0;
    config.limits.retry_after_s = 7;
    let server = TestServer::start_with(config).await;
    let publisher = Publisher::start(&server.signed_url("full"), &Source::small());
    wait_live(&server, "full", Duration::from_secs(15)).await;
    let refused = || {
        let stats = server.engine.webrtc().unwrap().stats();
        stats.refused.iter().find(|(l, _)| *l == "webrtc_sessions").map(|(_, n)| *n).unwrap()
    };
    // The limit is checked before the offer is even read: any body gets the 503.
    let r = request_with("POST", &server.url("/live/full/whep"), &[("Content-Type", "application/sdp")], b"v=0\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("7"));
    assert!(r.text().contains("webrtc_sessions limit (0)"), "{}", r.text());
    assert_eq!(r.text().lines().count(), 1, "one line: {}", r.text());
    assert_eq!(refused(), 1);
    // The page tries WebRTC, is refused, and plays LL-HLS.
    let played =
        browser_play(&server.url("/full"), &["--expect-transport", "llhls", "--expect-width", "320"]).await.unwrap();
    assert_eq!(played["ok"], true, "{played}");
    // The page's WebRTC attempt is over within milliseconds (the 503 comes at once), too short
    // for the page's transport to be sampled reliably: the refusal count shows it was made.
    assert!(refused() >= 2, "the page tried WebRTC first and its offer was refused by the limit");
    assert_eq!(server.engine.webrtc().unwrap().total_sessions(), 0);
    assert_eq!(server.engine.webrtc().unwrap().stats().connecting, 0);
    publisher.stop().await;
    server.shutdown().await;
}
