//! The viewer and embed pages play LL-HLS in the browser engines besides Chromium: WebKitGTK
//! (Debian's MiniBrowser driven by WebKitWebDriver, hls.js over GStreamer MSE: the engine
//! closest to Safari) and Firefox ESR (puppeteer-core over WebDriver BiDi). Neither has WebRTC
//! H.264 here, so both play LL-HLS. Every page load must play: `tests/browser/engines.mjs`
//! fails a load that never starts or whose picture stands still for more than 3 s.
//!
//! The source is x264 High with 2 B-frames (OBS's default), and without. WebKitGTK used to stall
//! (issue 9), for two reasons, both in its GStreamer pipeline and both met by the player:
//! - every change of `playbackRate` is a flushing seek there, and hls.js's live catch-up changed
//!   it: the video stayed paused after a `ratechange`, or the web process deadlocked in the flush.
//!   The player no longer changes the rate there (`ui/src/catchup.ts`).
//! - hls.js's seek to the live position at `loadedmetadata` can flush while GStreamer 1.22's
//!   `streamsynchronizer` is between the audio's and the video's STREAM_START; one stream then
//!   waits for the other for good and the seek never completes (about one load in four here).
//!   The player seeks again when a seek to buffered data lasts 750 ms (`ui/src/seek-watch.ts`).
//!
//! Left in WebKitGTK itself: now and then (about one test run in ten here) the web process
//! deadlocks inside GStreamer on that same first seek, while the pipeline is still being built —
//! its main thread in the FLUSH_STOP's `gst_pad_push_event`, the source's streaming thread waiting
//! for the main thread — and the page never answers WebDriver again. `engines.mjs` then starts a new browser and makes
//! that load again (once per run; the load made again must play, a second hang fails the test) and
//! lists it under `browserHangs`.
//!
//! `engines.mjs` reports the media element's events of a failed load;
//! `ONAIR_ENGINES_BACKTRACE=FILE` adds gdb backtraces of the hung web process.

use std::time::Duration;

use onair_tests::*;

/// The tests here take turns: each runs a browser, an encoder and the engine on what may be a
/// two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Publishes a 320x180 x264 High source with `bframes` and opens the viewer and embed pages
/// alternately, 4 loads in all, in `engine`; every load must play.
async fn plays_on_every_load(engine: &str, bframes: u32) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = TestServer::start().await;
    let stream = "engines";
    let source = Source { bframes, profile: Some("high"), ..Source::small() };
    let publisher = Publisher::start(&server.signed_url(stream), &source);
    wait_live(&server, stream, Duration::from_secs(15)).await;
    let st = get(&server.url(&format!("/api/streams/{stream}"))).await.unwrap().json();
    assert_eq!(st["bframes"], bframes > 0, "{st}");

    let viewer = server.url(&format!("/{stream}?transport=hls"));
    let embed = server.url(&format!("/embed/{stream}?transport=hls"));
    let args = ["--loads", "4", "--alternate", &embed, "--min-advance", "5", "--max-stall", "3000"];
    let played = engine_play(engine, &viewer, &args).await.unwrap();
    if let Some(hangs) = played["browserHangs"].as_array().filter(|h| !h.is_empty()) {
        tracing::warn!(?hangs, "{engine}'s web process hung in a load, which a new browser made again");
    }
    assert_eq!(played["ok"], true, "{played}");
    assert_eq!(played["played"], 4, "{played}");
    for load in played["loads"].as_array().unwrap() {
        assert_eq!(load["last"]["transport"], "llhls", "{load}");
        assert_eq!(load["last"]["videoWidth"], 320, "{load}");
    }
    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_plays_bframe_llhls_on_every_load() {
    plays_on_every_load("firefox", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webkit_plays_llhls_on_every_load() {
    plays_on_every_load("webkit", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webkit_plays_bframe_llhls_on_every_load() {
    plays_on_every_load("webkit", 2).await;
}
