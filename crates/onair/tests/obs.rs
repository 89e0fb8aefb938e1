//! `onair obs <stream> --apply` against a real OBS (headless, see `onair_tests::obs`), and
//! `--write-profile DIR`.

use std::process::{Command, Output};
use std::time::Duration;

use onair_tests::obs::{Obs, ObsHome, SERIAL};
use onair_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_onair");

fn onair(args: &[&str], obs_password: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env("ONAIR_SIGNING_KEY", SECRET)
        .env("ONAIR_OBS_PASSWORD", obs_password)
        .env_remove("ONAIR_LOG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_applies_to_real_obs_which_then_streams_live() {
    let _one_obs = SERIAL.lock().await;
    let server = TestServer::start().await;
    let obs = Obs::launch(ObsHome::new(), "Test").await;
    let host = format!("127.0.0.1:{}", server.engine.rtmp_addr().port());
    let url = obs.url_string();
    let password = obs.home().password.clone();

    let out =
        onair(&["obs", "cli", "--host", &host, "--apply", "--obs-url", &url, "--keyint", "1", "--json"], &password);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let report = &v["apply"];
    assert_eq!(report["keyint_frames"], 30, "{report}");
    assert_eq!(report["output_mode"], "Simple", "{report}");
    assert_eq!(report["mismatches"], serde_json::json!([]), "{report}");
    assert_eq!(report["todo"], serde_json::json!([]), "{report}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password), "the OBS password was printed");

    // The text report says what was set, verified and left to click; no obws noise on stderr.
    let out = onair(&["obs", "cli", "--host", &host, "--apply", "--obs-url", &url, "--keyint", "1"], &password);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in ["Set:", "Verified (read back from OBS):", "✓ stream service rtmp_custom", "click Start Streaming"] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    assert!(!stderr.contains("dangerous"), "{stderr}");

    // OBS streams to OnAir with the key the CLI signed, without B-frames, a keyframe every second.
    let client = obs.client().await;
    client.start_stream().await.unwrap();
    wait_live(&server, "cli", Duration::from_secs(40)).await;
    let api = server.url("/api/streams/cli");
    let status = wait_for("a keyframe interval", Duration::from_secs(30), || async {
        let v = get(&api).await.ok()?.json();
        v["keyframe_interval_s"].is_f64().then_some(v)
    })
    .await;
    let k = status["keyframe_interval_s"].as_f64().unwrap();
    assert!((k - 1.0).abs() <= 0.25, "{status}");
    assert_eq!(status["bframes"], false, "{status}");

    // While streaming: the CLI says to stop first (and does not fail).
    let out = onair(&["obs", "cli", "--host", &host, "--apply", "--obs-url", &url, "--keyint", "1"], &password);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Stop Streaming, then run this again"), "{stdout}");
    client.stop_stream().await.unwrap();

    // A wrong password fails with the fix.
    let out = onair(&["obs", "cli", "--host", &host, "--apply", "--obs-url", &url], "wrong");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("refused the password") && stderr.contains("Show Connect Info"), "{stderr}");

    // Nothing listening: says how to turn the WebSocket server on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = onair(&["obs", "cli", "--apply", "--obs-url", &format!("ws://127.0.0.1:{free}")], &password);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("not reachable") && stderr.contains("Enable WebSocket server"), "{stderr}");
    drop(obs);
    server.shutdown().await;
}

#[test]
fn cli_writes_a_profile_that_reads_back() {
    let dir = std::env::temp_dir().join(format!("onair-cli-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = onair(
        &["obs", "show", "--host", "192.168.1.20", "--write-profile", dir.to_str().unwrap(), "--keyint", "2"],
        "unused",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Profile → Import"), "{stdout}");
    for f in ["basic.ini", "service.json", "streamEncoder.json"] {
        assert!(stdout.contains(f), "{stdout}");
    }
    let back = onair_obs::profile::read_profile(&dir).unwrap();
    assert_eq!(back.server.as_deref(), Some("rtmp://192.168.1.20:1935/live"));
    assert!(back.key.as_deref().unwrap().starts_with("show?policy="));
    assert_eq!(back.simple_x264, "keyint=60 bframes=0 scenecut=0");
    assert_eq!(back.stream_encoder["keyint_sec"], 2);
    let url = format!("{}/{}", back.server.unwrap(), back.key.unwrap());
    assert!(onair_policy::verify(SECRET.as_bytes(), &url, "127.0.0.1".parse().unwrap(), 1).is_ok());

    // Default folder: OBS' profile folder under this HOME.
    let home = dir.join("home");
    let out = Command::new(BIN)
        .args(["obs", "show", "--host", "h", "--write-profile"])
        .env("ONAIR_SIGNING_KEY", SECRET)
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(home.join(".config/obs-studio/basic/profiles/OnAir/basic.ini").is_file(), "{stdout}");
    assert!(stdout.contains("Profile → OnAir"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
