//! A publisher whose connection drops and comes back within the grace period: real ffmpeg
//! killed with SIGKILL and restarted, headless Chromium playing over WebRTC and over LL-HLS.
//! Both pages keep playing after the return without a reload; the LL-HLS media sequence never
//! goes back and the playlist marks the break with a discontinuity.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use onair_tests::*;

/// What the playlist sampler saw.
#[derive(Debug, Default)]
struct PlaylistLog {
    /// (epoch ms, HTTP status, media sequence)
    samples: Vec<(u64, u16, Option<u64>)>,
    discontinuity_seen: bool,
    endlist_seen: bool,
}

/// Samples the LL-HLS playlist every 200 ms until `stop` (at most 2 minutes).
async fn sample_playlist(url: String, stop: Arc<AtomicBool>) -> PlaylistLog {
    let mut log = PlaylistLog::default();
    for _ in 0..600 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (status, text) = match get(&url).await {
            Ok(r) => (r.status, r.text()),
            Err(_) => (0, String::new()),
        };
        let seq = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).and_then(|v| v.parse().ok());
        log.discontinuity_seen |= text.contains("#EXT-X-DISCONTINUITY\n");
        log.endlist_seen |= text.contains("#EXT-X-ENDLIST");
        log.samples.push((now_ms(), status, seq));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    log
}

/// How far a page's `video.currentTime` advanced between `from` (epoch ms) and its last sample.
fn advanced_after(page: &serde_json::Value, from: u64) -> f64 {
    let samples: Vec<(u64, f64)> = page["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| Some((s[0].as_u64()?, s[1].as_f64()?)))
        .filter(|(t, _)| *t >= from)
        .collect();
    match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.1 - a.1,
        _ => 0.0,
    }
}

/// The width of the picture a page showed last.
fn last_width(page: &serde_json::Value) -> u64 {
    page["samples"].as_array().unwrap().last().and_then(|s| s[4].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_drops_and_returns_is_invisible_to_viewers() {
    let pages = drop_and_return(&Source::small()).await;
    for page in pages["pages"].as_array().unwrap() {
        assert_eq!(last_width(page), 320, "{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_returns_with_another_resolution_is_a_discontinuity() {
    // A new init segment after the discontinuity for LL-HLS; the WebRTC session ends (its
    // SPS/PPS were the old ones) and the page reconnects by itself.
    let pages = drop_and_return(&Source { width: 256, height: 144, ..Source::default() }).await;
    for page in pages["pages"].as_array().unwrap() {
        assert_eq!(last_width(page), 256, "{page}");
    }
}

/// Publishes a small source, opens the two pages, kills the publisher, starts `returning`
/// 2.5 s later, and checks what every return must give; answers the pages' samples.
async fn drop_and_return(returning: &Source) -> serde_json::Value {
    let server = TestServer::start().await; // the default grace period: 10 s
    let url = server.signed_url("grace");
    let first = Publisher::start(&url, &Source::small());
    wait_live(&server, "grace", Duration::from_secs(20)).await;

    let page = server.url("/grace");
    let pages = tokio::spawn(async move { browser_script("grace.mjs", &page, &["--duration", "40000"]).await });
    let webrtc = server.engine.webrtc().unwrap().clone();
    wait_for("the WebRTC page's session", Duration::from_secs(30), || {
        let webrtc = webrtc.clone();
        async move { (webrtc.sessions("grace") == 1).then_some(()) }
    })
    .await;
    let status = server.url("/api/streams/grace");
    wait_for("the LL-HLS page", Duration::from_secs(30), || async {
        let st = get(&status).await.ok()?.json();
        (st["viewers"]["hls"].as_u64()? >= 1).then_some(())
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_playlist(server.url("/live/grace/llhls.m3u8"), stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The connection drops (no unpublish): the stream waits, still one broadcast.
    let uptime_before = get(&status).await.unwrap().json()["uptime_s"].as_f64().unwrap();
    first.kill().await;
    let dropped_at = now_ms();
    let st = wait_for("the stream to say it is reconnecting", Duration::from_secs(5), || async {
        let st = get(&status).await.ok()?.json();
        (st["reconnecting"] == true).then_some(st)
    })
    .await;
    assert_eq!(st["live"], true, "{st}");
    let list = get(&server.url("/api/streams")).await.unwrap().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let second = Publisher::start(&url, returning);
    let returned_at = now_ms();
    let st = wait_for("the stream to be back", Duration::from_secs(10), || async {
        let st = get(&status).await.ok()?.json();
        (st["reconnecting"] == false && st["live"] == true).then_some(st)
    })
    .await;
    assert!(st["uptime_s"].as_f64().unwrap() > uptime_before, "uptime goes on: {st}");
    if returning.width == 320 {
        assert_eq!(webrtc.sessions("grace"), 1, "the WebRTC session was kept");
    }

    let pages = pages.await.unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    let playlist = sampler.await.unwrap();
    assert_eq!(pages["ok"], true, "{pages}");
    for page in pages["pages"].as_array().unwrap() {
        let transport = page["transport"].as_str().unwrap();
        assert_eq!(page["navigations"], 1, "{transport}: no reload: {page}");
        // Played before the drop, and again after the return (allowing the return 4 s to get a
        // keyframe through and the player to pick it up).
        assert!(advanced_after(page, dropped_at.saturating_sub(8_000)) >= 3.0, "{transport}: {page}");
        let after = advanced_after(page, returned_at + 4_000);
        eprintln!("{transport}: currentTime advanced {after:.1} s from 4 s after the return");
        assert!(after >= 5.0, "{transport}: advanced {after} s after the return: {page}");
    }
    assert!(playlist.samples.len() > 50, "{playlist:?}");
    assert!(playlist.samples.iter().all(|s| s.1 == 200), "the playlist was served throughout: {playlist:?}");
    let seqs: Vec<u64> = playlist.samples.iter().filter_map(|s| s.2).collect();
    assert!(seqs.windows(2).all(|w| w[1] >= w[0]), "the media sequence never goes back: {seqs:?}");
    assert!(playlist.discontinuity_seen, "{playlist:?}");
    assert!(!playlist.endlist_seen, "{playlist:?}");
    second.stop().await;
    server.shutdown().await;
    pages
}
