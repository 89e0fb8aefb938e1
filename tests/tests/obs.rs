//! One-click OBS setup against a real OBS Studio (headless, Xvfb, software OpenGL): OnAir's
//! settings applied over obs-websocket make OBS stream live to OnAir with no B-frames and the
//! keyframe interval asked for; a profile written by OnAir is what OBS loads and streams with.

use std::time::Duration;

use onair_obs::profile::{self, ProfileSpec};
use onair_obs::{ObsTarget, OutputMode};
use onair_tests::obs::{HEIGHT, Obs, ObsHome, SERIAL, WIDTH};
use onair_tests::*;

/// The stream's status once OnAir has measured a keyframe interval; checked over a few seconds
/// (several GOPs) so one lucky interval does not pass.
async fn expect_live_stream(server: &TestServer, stream: &str, keyint_s: f64) -> serde_json::Value {
    let api = server.url(&format!("/api/streams/{stream}"));
    wait_live(server, stream, Duration::from_secs(40)).await;
    let mut last = serde_json::Value::Null;
    for _ in 0..3 {
        last = wait_for("a keyframe interval in the status API", Duration::from_secs(30), || async {
            let v = get(&api).await.ok()?.json();
            (v["live"] == true && v["keyframe_interval_s"].is_f64()).then_some(v)
        })
        .await;
        let k = last["keyframe_interval_s"].as_f64().unwrap();
        assert!((k - keyint_s).abs() <= 0.25, "keyframe interval {k} s, asked for {keyint_s} s: {last}");
        assert_eq!(last["bframes"], false, "OBS sends B-frames: {last}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert_eq!(last["video"]["codec"].as_str().map(|c| c.starts_with("avc1")), Some(true), "{last}");
    assert_eq!(last["video"]["width"], WIDTH, "{last}");
    assert_eq!(last["video"]["height"], HEIGHT, "{last}");
    // ffprobe reads the LL-HLS playlist: H.264 without reordering, and the audio.
    wait_segments(server, stream, 2).await;
    let llhls = server.url(&format!("/live/{stream}/llhls.m3u8"));
    let video = probe_stream(&llhls, "video").await;
    assert_eq!(video["codec_name"], "h264", "{video}");
    assert_eq!(video["has_b_frames"], 0, "{video}");
    assert_eq!(video["width"], WIDTH, "{video}");
    let audio = probe_stream(&llhls, "audio").await;
    assert_eq!(audio["codec_name"], "aac", "{audio}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_setup_makes_obs_stream_live_without_bframes() {
    let _one_obs = SERIAL.lock().await;
    let server = TestServer::start().await;
    let obs = Obs::launch(ObsHome::new(), "Test").await;
    let settings = server.engine.obs_settings("obsws", "127.0.0.1", now_ms() + 3_600_000).unwrap();
    let mut target = ObsTarget::new(&settings.server, &settings.stream_key);
    // Not the default (2 s): the interval OBS streams with must be the one asked for.
    target.keyint_s = 1;

    let client = obs.client().await;
    let report = client.apply(&target).await.unwrap();
    assert!(report.complete(), "{report:#?}");
    assert_eq!(report.output_mode, Some(OutputMode::Simple));
    assert_eq!(report.profile, "Test");
    assert_eq!(report.keyint_frames, 30);
    assert!(!report.streaming);
    assert!(report.verified.iter().any(|v| v.starts_with("stream service rtmp_custom")), "{report:#?}");
    assert!(!format!("{report:?}").contains(settings.stream_key.split("signature=").nth(1).unwrap()));

    // Read back on a fresh connection: OBS kept it.
    let fresh = obs.client().await;
    let (ty, service) = fresh.stream_service().await.unwrap();
    assert_eq!(ty, "rtmp_custom");
    assert_eq!(service["server"], settings.server.as_str());
    assert_eq!(service["key"], settings.stream_key.as_str());
    assert_eq!(fresh.profile_param("SimpleOutput", "UseAdvanced").await.unwrap().as_deref(), Some("true"));
    assert_eq!(
        fresh.profile_param("SimpleOutput", "x264Settings").await.unwrap().as_deref(),
        Some("keyint=30 bframes=0 scenecut=0")
    );

    fresh.start_stream().await.unwrap();
    expect_live_stream(&server, "obsws", 1.0).await;

    // While OBS streams, the server and key cannot change: the report says to stop first.
    let again = client.apply(&target).await.unwrap();
    assert!(again.streaming);
    assert!(again.todo.iter().any(|t| t.contains("Stop Streaming")), "{again:#?}");
    assert!(again.mismatches.is_empty(), "{again:#?}");

    fresh.stop_stream().await.unwrap();
    wait_for("OBS to stop streaming", Duration::from_secs(15), || async {
        (!fresh.streaming().await.ok()?).then_some(())
    })
    .await;
    drop(obs);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_are_explained() {
    let _one_obs = SERIAL.lock().await;
    let obs = Obs::launch(ObsHome::new(), "Test").await;
    let wrong = onair_obs::ObsClient::connect(&obs.url(), Some("not-the-password")).await.unwrap_err();
    assert!(matches!(wrong, onair_obs::ApplyError::WrongPassword { .. }), "{wrong}");
    let none = onair_obs::ObsClient::connect(&obs.url(), None).await.unwrap_err();
    assert!(matches!(none, onair_obs::ApplyError::PasswordRequired { .. }), "{none}");
    assert!(none.to_string().contains("ONAIR_OBS_PASSWORD"), "{none}");
    let client = obs.client().await;
    let major: u32 = client.obs_version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 28, "{}", client.obs_version);
    assert!(client.websocket_version.starts_with("5."), "{}", client.websocket_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_profile_is_what_obs_loads_and_streams_with() {
    let _one_obs = SERIAL.lock().await;
    let server = TestServer::start().await;
    let settings = server.engine.obs_settings("obsprofile", "127.0.0.1", now_ms() + 3_600_000).unwrap();
    let target = ObsTarget::new(&settings.server, &settings.stream_key);

    // Where OnAir writes for this (throwaway) HOME: OBS' native Linux folder.
    let home = ObsHome::new();
    let dirs = profile::Dirs { home: Some(home.home.clone()), xdg_config_home: None, appdata: None };
    let config =
        profile::choose_config_dir(&profile::config_dirs(profile::Os::Linux, &dirs).unwrap(), |d| d.is_dir()).unwrap();
    assert_eq!(config, home.config_dir());
    let dir = profile::profile_dir(&config, profile::DEFAULT_PROFILE_NAME);
    let spec = ProfileSpec { resolution: Some((WIDTH, HEIGHT)), ..Default::default() };
    profile::write_profile(&dir, &profile::profile_files(&target, &spec)).unwrap();
    assert!(profile::read_profile(&dir).unwrap().problems(&target).is_empty());

    let obs = Obs::launch(home, "OnAir").await;
    let client = obs.client().await;
    assert_eq!(client.client().profiles().current().await.unwrap(), "OnAir");
    let (ty, service) = client.stream_service().await.unwrap();
    assert_eq!(ty, "rtmp_custom");
    assert_eq!(service["server"], settings.server.as_str());
    assert_eq!(service["key"], settings.stream_key.as_str());
    for (category, name, want) in [
        ("Output", "Mode", "Simple"),
        ("SimpleOutput", "StreamEncoder", "x264"),
        ("SimpleOutput", "UseAdvanced", "true"),
        ("SimpleOutput", "x264Settings", "keyint=60 bframes=0 scenecut=0"),
        ("SimpleOutput", "VBitrate", "2500"),
        ("SimpleOutput", "Preset", "veryfast"),
        ("AdvOut", "Encoder", "obs_x264"),
    ] {
        let got = client.profile_param(category, name).await.unwrap();
        assert_eq!(got.as_deref(), Some(want), "[{category}] {name}");
    }
    let video = client.client().config().video_settings().await.unwrap();
    assert_eq!((video.output_width, video.output_height), (WIDTH, HEIGHT));
    assert_eq!(video.fps_numerator / video.fps_denominator, 30);

    // The profile alone makes OBS stream as OnAir needs.
    client.start_stream().await.unwrap();
    expect_live_stream(&server, "obsprofile", 2.0).await;
    client.stop_stream().await.unwrap();
    wait_for("OBS to stop streaming", Duration::from_secs(15), || async {
        (!client.streaming().await.ok()?).then_some(())
    })
    .await;
    // And the WebSocket setup finds it complete.
    let report = client.apply(&target).await.unwrap();
    assert!(report.complete(), "{report:#?}");
    drop(client);

    // OBS rewrites the profile when it exits: it kept everything OnAir wrote.
    let home = obs.stop();
    let saved = profile::read_profile(&profile::profile_dir(&home.config_dir(), "OnAir")).unwrap();
    assert!(saved.problems(&target).is_empty(), "{:?}", saved.problems(&target));
    assert!(saved.advanced_problems(&target).is_empty(), "{:?}", saved.advanced_problems(&target));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advanced_output_mode_gets_server_and_key_and_says_what_to_click() {
    let _one_obs = SERIAL.lock().await;
    let home = ObsHome::new();
    let adv = profile::profile_dir(&home.config_dir(), "Adv");
    std::fs::create_dir_all(&adv).unwrap();
    std::fs::write(
        adv.join("basic.ini"),
        format!(
            "[General]\nName=Adv\n\n[Output]\nMode=Advanced\n\n[AdvOut]\nEncoder=obs_x264\n\n[Video]\n\
             BaseCX={WIDTH}\nBaseCY={HEIGHT}\nOutputCX={WIDTH}\nOutputCY={HEIGHT}\nFPSType=1\nFPSInt=30\n"
        ),
    )
    .unwrap();
    let obs = Obs::launch(home, "Adv").await;
    let target = ObsTarget::new("rtmp://127.0.0.1:1935/live", "adv?policy=p&signature=s");
    let report = obs.client().await.apply(&target).await.unwrap();
    assert_eq!(report.output_mode, Some(OutputMode::Advanced), "{report:#?}");
    assert!(report.mismatches.is_empty(), "{report:#?}");
    assert!(report.verified.iter().any(|v| v.starts_with("stream service rtmp_custom")), "{report:#?}");
    assert!(!report.complete());
    let todo = report.todo.join("\n");
    for want in ["Advanced output mode", "Rate Control: CBR", "Keyframe Interval: 2 s", "bframes=0 scenecut=0"] {
        assert!(todo.contains(want), "{want:?} missing from {todo}");
    }
}
