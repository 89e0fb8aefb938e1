//! A signed ffmpeg publish becomes LL-HLS and HLS that ffprobe/ffmpeg read and Chromium plays.

use std::time::Duration;

use onair_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_publish_plays_in_ffmpeg_and_chromium() {
    let server = TestServer::start().await;
    let stream = "demo";
    // The viewer page is opened while the stream is still offline: it must go live by itself.
    let page = {
        let url = server.url(&format!("/{stream}"));
        tokio::spawn(async move { browser_play(&url, &["--expect-width", "640", "--timeout", "60000"]).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_of(&server.url("/live/demo/playlist.m3u8")).await, 404);

    let publisher = Publisher::start(&server.signed_url(stream), &Source::default());
    wait_live(&server, stream, Duration::from_secs(15)).await;

    // Both playlists carry what a player needs.
    let ll = get(&server.url("/live/demo/llhls.m3u8")).await.unwrap();
    assert_eq!(ll.status, 200);
    assert_eq!(ll.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(ll.header("access-control-allow-origin"), Some("*"));
    // A shared cache may keep it a second (docs/edge.md); browsers revalidate it.
    assert_eq!(ll.header("cache-control"), Some("public, max-age=0, s-maxage=1"));
    assert!(ll.header("etag").is_some());
    let text = ll.text();
    for tag in [
        "#EXT-X-MAP:URI=",
        "#EXT-X-PART-INF:PART-TARGET=",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=",
        "#EXT-X-PART:DURATION=",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
        "#EXT-X-PROGRAM-DATE-TIME:",
    ] {
        assert!(text.contains(tag), "LL-HLS playlist lacks {tag}:\n{text}");
    }
    let plain = get(&server.url("/live/demo/playlist.m3u8")).await.unwrap().text();
    assert!(!plain.contains("#EXT-X-PART"), "plain HLS must not carry parts:\n{plain}");

    // Parts and init are immutable, typed and CORS-open.
    let map_uri = text.lines().find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")).unwrap().trim_end_matches('"');
    let init = get(&server.url(&format!("/live/demo/{map_uri}"))).await.unwrap();
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    assert!(init.header("cache-control").unwrap().contains("immutable"));
    assert_eq!(init.header("access-control-allow-origin"), Some("*"));

    wait_segments(&server, stream, 3).await;
    // ffprobe and ffmpeg read both playlists at the source resolution and decode ≥ 4 s cleanly.
    for playlist in ["llhls.m3u8", "playlist.m3u8"] {
        let url = server.url(&format!("/live/demo/{playlist}"));
        let video = probe_stream(&url, "video").await;
        assert_eq!(video["codec_name"], "h264");
        assert_eq!(video["width"], 640);
        assert_eq!(video["height"], 360);
        let audio = probe_stream(&url, "audio").await;
        assert_eq!(audio["codec_name"], "aac");
        let errors = ffmpeg_decode(&url, 4.5).await.unwrap();
        assert!(errors.trim().is_empty(), "decoding {playlist} printed errors:\n{errors}");
    }

    // The status API describes the stream.
    let st = get(&server.url("/api/streams/demo")).await.unwrap().json();
    assert_eq!(st["live"], true);
    assert_eq!(st["video"]["width"], 640);
    assert_eq!(st["video"]["height"], 360);
    assert!(st["video"]["codec"].as_str().unwrap().starts_with("avc1."));
    assert_eq!(st["audio"]["codec"], "mp4a.40.2");
    assert_eq!(st["audio"]["sample_rate"], 48000);
    assert_eq!(st["bframes"], false);
    assert_eq!(st["keyframe_interval_s"], 1.0);
    let fps = st["fps"].as_f64().unwrap();
    assert!((27.0..=33.0).contains(&fps), "fps {fps}");
    assert!(st["bitrate_kbps"].as_u64().unwrap() > 50);
    assert!(st["uptime_s"].as_f64().unwrap() > 0.0);
    assert_eq!(st["urls"]["llhls"], "/live/demo/llhls.m3u8");
    let list = get(&server.url("/api/streams")).await.unwrap().json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Chromium, opened before the stream existed, plays it without a reload.
    let played = page.await.unwrap().unwrap();
    assert_eq!(played["ok"], true, "{played}");
    assert_eq!(played["videoWidth"], 640, "{played}");
    assert_eq!(played["sawOffline"], true, "{played}");
    assert_eq!(played["navigations"], 1, "{played}");
    let st = get(&server.url("/api/streams/demo")).await.unwrap().json();
    assert!(st["viewers"]["hls"].as_u64().unwrap() >= 1, "the player was counted: {st}");

    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_page_plays_and_may_be_framed_anywhere() {
    let server = TestServer::start().await;
    let publisher = Publisher::start(&server.signed_url("embedded"), &Source::small());
    wait_live(&server, "embedded", Duration::from_secs(15)).await;

    let page = get(&server.url("/embed/embedded")).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.header("x-frame-options").is_none());
    assert_eq!(page.header("content-security-policy"), Some("frame-ancestors *"));
    assert!(page.header("content-type").unwrap().starts_with("text/html"));

    let screenshot = artifacts_dir().join("embed.png");
    let played = browser_play(
        &server.url("/embed/embedded?transport=hls"),
        &["--expect-width", "320", "--screenshot", screenshot.to_str().unwrap()],
    )
    .await
    .unwrap();
    assert_eq!(played["ok"], true, "{played}");
    assert_eq!(played["transport"], "llhls", "{played}");

    publisher.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_obs_capture_replays_through_the_engine() {
    // 8 s of a real OBS 29 stream (x264 High 640x360, AAC 48 kHz), published as OBS sent it.
    let server = TestServer::start().await;
    let file = repo_root().join("crates/media/tests/data/obs29-x264-high-640x360p30-aac48k.flv");
    assert!(file.exists(), "{} is missing", file.display());
    let mut publisher = Publisher::start(&server.signed_url("obs"), &Source { file: Some(file), ..Default::default() });
    wait_live(&server, "obs", Duration::from_secs(15)).await;
    let st = get(&server.url("/api/streams/obs")).await.unwrap().json();
    assert!(st["video"]["codec"].as_str().unwrap().starts_with("avc1.64"), "High profile: {st}");
    assert_eq!(st["video"]["width"], 640);
    wait_segments(&server, "obs", 2).await;
    let video = probe_stream(&server.url("/live/obs/llhls.m3u8"), "video").await;
    assert_eq!(video["profile"], "High");
    assert_eq!(video["height"], 360);
    assert_eq!(publisher.wait(Duration::from_secs(30)).await, Some(true), "{}", publisher.stderr());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bframes_are_carried_and_reported() {
    let server = TestServer::start().await;
    let publisher = Publisher::start(&server.signed_url("bframes"), &Source { bframes: 2, ..Source::small() });
    wait_segments(&server, "bframes", 3).await;
    let st = get(&server.url("/api/streams/bframes")).await.unwrap().json();
    assert_eq!(st["bframes"], true, "{st}");
    assert!(logs().contains("set Max B-frames to 0 in OBS"), "the log names the fix");

    // Composition offsets survive: packets carry pts > dts, and decoded frames come out in
    // strictly increasing presentation order.
    let url = server.url("/live/bframes/playlist.m3u8");
    let packets =
        ffprobe_with(&url, &["-select_streams", "v", "-show_entries", "packet=pts,dts", "-read_intervals", "%+2"])
            .await
            .unwrap();
    let packets = packets["packets"].as_array().unwrap();
    assert!(packets.len() > 20, "{packets:?}");
    let reordered = packets.iter().filter(|p| p["pts"].as_i64() > p["dts"].as_i64()).count();
    assert!(reordered > 0, "no packet has pts > dts: composition offsets were lost");
    assert!(packets.iter().all(|p| p["pts"].as_i64() >= p["dts"].as_i64()));
    let frames = ffprobe_with(
        &url,
        &["-select_streams", "v", "-show_entries", "frame=best_effort_timestamp", "-read_intervals", "%+2"],
    )
    .await
    .unwrap();
    let pts: Vec<i64> =
        frames["frames"].as_array().unwrap().iter().filter_map(|f| f["best_effort_timestamp"].as_i64()).collect();
    assert!(pts.len() > 20);
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "presentation order broken: {pts:?}");
    let errors = ffmpeg_decode(&server.url("/live/bframes/llhls.m3u8"), 4.0).await.unwrap();
    assert!(errors.trim().is_empty(), "{errors}");
    let played = browser_play(&server.url("/bframes"), &["--expect-width", "320"]).await.unwrap();
    assert_eq!(played["ok"], true, "{played}");
    publisher.stop().await;
    server.shutdown().await;
}
