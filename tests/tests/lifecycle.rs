//! Live status through the playlist (404 → 200 → 404) and several independent streams.

use std::time::{Duration, Instant};

use onair_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_live_offline() {
    let server = TestServer::start().await;
    let playlist = server.url("/live/cycle/playlist.m3u8");
    let llhls = server.url("/live/cycle/llhls.m3u8");
    assert_eq!(status_of(&playlist).await, 404);
    assert_eq!(status_of(&llhls).await, 404);
    let st = get(&server.url("/api/streams/cycle")).await.unwrap().json();
    assert_eq!(st["live"], false);

    // Keyframes every second; live must be announced within ~2 s of the first keyframe (ffmpeg
    // itself needs a moment to start, hence the margin).
    let started = Instant::now();
    let mut publisher =
        Publisher::start(&server.signed_url("cycle"), &Source { seconds: Some(6.0), ..Source::small() });
    let took = wait_live(&server, "cycle", Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(4), "live after {took:?}");
    assert_eq!(status_of(&llhls).await, 200);

    assert_eq!(publisher.wait(Duration::from_secs(30)).await, Some(true), "{}", publisher.stderr());
    let ended = Instant::now();
    wait_for("playlist 404 after the publisher left", Duration::from_secs(5), || async {
        (status_of(&playlist).await == 404).then_some(())
    })
    .await;
    assert!(ended.elapsed() < Duration::from_secs(5));
    assert_eq!(status_of(&llhls).await, 404);
    assert!(started.elapsed() < Duration::from_secs(60));

    // And it can come back.
    let again = Publisher::start(&server.signed_url("cycle"), &Source::small());
    wait_live(&server, "cycle", Duration::from_secs(15)).await;
    again.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_publishers_at_once() {
    let server = TestServer::start().await;
    let names = ["one", "two", "three"];
    let publishers: Vec<_> = names
        .iter()
        .map(|n| Publisher::start(&server.signed_url(n), &Source { width: 256, height: 144, ..Source::small() }))
        .collect();
    for n in names {
        wait_live(&server, n, Duration::from_secs(20)).await;
    }
    let list = get(&server.url("/api/streams")).await.unwrap().json();
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    for n in names {
        wait_segments(&server, n, 2).await;
        let video = probe_stream(&server.url(&format!("/live/{n}/llhls.m3u8")), "video").await;
        assert_eq!(video["width"], 256, "{n}");
    }
    // Ending one leaves the others live.
    let mut publishers = publishers.into_iter();
    publishers.next().unwrap().stop().await;
    wait_for("stream one offline", Duration::from_secs(5), || async {
        (status_of(&server.url("/live/one/playlist.m3u8")).await == 404).then_some(())
    })
    .await;
    for n in ["two", "three"] {
        assert_eq!(status_of(&server.url(&format!("/live/{n}/playlist.m3u8"))).await, 200, "{n}");
    }
    for p in publishers {
        p.stop().await;
    }
    server.shutdown().await;
}
