//! The window's one-click OBS commands through Tauri's mock runtime: against a real OBS Studio
//! (headless under Xvfb, the harness of onair-tests) the websocket setup makes OBS stream to the
//! app's engine live, with no B-frames and a 2 s keyframe interval; the password is kept in the
//! secret store (the OS keyring in the app); the OBS profile is written and reads back.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Window, call, mock_app, now_ms, window};
use onair_desktop::core::Core;
use onair_tests::obs::{Obs, ObsHome, SERIAL};
use onair_tests::wait_for;
use serde_json::{Value, json};

const SECRET: &str = "desktop-obs-secret";

/// An engine with its data in a fresh `onair-desktop-obs-<name>-<pid>`, its secrets in memory (the
/// OS keyring in the app), and the app's window on it.
fn start(name: &str) -> (PathBuf, Arc<Core>, tauri::App<tauri::test::MockRuntime>, Window) {
    let dir = common::temp_dir(&format!("obs-{name}"));
    let core = common::start_core(&dir, SECRET, None);
    let app = mock_app();
    let webview = window(&app, &core);
    (dir, core, app, webview)
}

/// `key` is a stream key for the app's stream, signed with the engine's secret (each call of
/// the app makes a fresh one, valid for a year).
fn assert_valid_key(server: &str, key: &str) {
    assert!(key.starts_with("stream?policy="), "{key}");
    onair_policy::verify(SECRET.as_bytes(), &format!("{server}/{key}"), "127.0.0.1".parse().unwrap(), now_ms())
        .expect("the key is signed with the engine's secret");
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

#[test]
fn obs_apply_sets_up_real_obs_which_then_streams_live_without_bframes() {
    assert!(
        std::env::var_os(onair_obs::PASSWORD_ENV).is_none(),
        "unset {} for this test: it checks the password kept in the secret store",
        onair_obs::PASSWORD_ENV
    );
    let (dir, core, _app, webview) = start("apply");
    let _one_obs = tauri::async_runtime::block_on(SERIAL.lock());
    let obs = tauri::async_runtime::block_on(Obs::launch(ObsHome::new(), "Test"));
    let url = obs.url_string();

    let info = call(&webview, "obs_setup_info", json!({})).unwrap();
    assert_eq!(info["default_url"], "ws://127.0.0.1:4455");
    assert_eq!(info["password"], "none");

    // No password stored: OBS asks for one, and the error says where it goes.
    let err = call(&webview, "obs_apply", json!({"url": url})).unwrap_err();
    assert!(err.as_str().unwrap().contains("wants a password"), "{err}");
    let err = call(&webview, "obs_apply", json!({"url": "http://example.org"})).unwrap_err();
    assert!(err.as_str().unwrap().contains("not an obs-websocket address"), "{err}");

    // The password goes to the secret store, and nowhere else.
    assert_eq!(call(&webview, "obs_save_password", json!({"password": obs.home().password})), Ok(Value::Null));
    assert_eq!(
        core.secret_store().get(onair_obs::PASSWORD_ENTRY).unwrap().as_deref(),
        Some(obs.home().password.as_str())
    );
    assert_eq!(call(&webview, "obs_setup_info", json!({})).unwrap()["password"], "keyring");

    let out = call(&webview, "obs_apply", json!({"url": url})).unwrap();
    println!("{out:#}");
    assert_eq!(out["url"], url.as_str());
    assert_eq!(out["password"], "keyring");
    assert_eq!(out["complete"], true, "{out:#}");
    let report = &out["report"];
    assert_eq!(report["profile"], "Test");
    assert_eq!(report["output_mode"], "Simple");
    assert_eq!(report["keyint_frames"], 60, "2 s at 30 fps: {report}");
    assert!(strings(&report["verified"]).iter().any(|v| v.starts_with("stream service rtmp_custom")), "{report:#}");
    assert!(!strings(&report["done"]).is_empty(), "{report:#}");
    assert_eq!(report["mismatches"], json!([]));

    // OBS kept it: Go live, Start Streaming, and the app's engine has the stream live, no B-frames,
    // a keyframe every 2 s.
    core.control().go_live(core.stream()).unwrap();
    tauri::async_runtime::block_on(async {
        let client = obs.client().await;
        let (ty, service) = client.stream_service().await.unwrap();
        assert_eq!(ty, "rtmp_custom");
        let server = core.obs_settings().unwrap().server;
        assert_eq!(service["server"], server.as_str());
        let key = service["key"].as_str().unwrap();
        assert_valid_key(&server, key);
        // The signature never shows in what the window gets.
        assert!(!out.to_string().contains(key.split("signature=").nth(1).unwrap()), "{out}");
        client.start_stream().await.unwrap();
        let status = wait_for("OBS' stream live with a keyframe interval", Duration::from_secs(60), || async {
            let st = core.control().stream_status(core.stream()).await;
            let v = serde_json::to_value(&st).unwrap();
            (v["live"] == true && v["keyframe_interval_s"].is_f64()).then_some(v)
        })
        .await;
        println!("{status:#}");
        let k = status["keyframe_interval_s"].as_f64().unwrap();
        assert!((k - 2.0).abs() <= 0.25, "keyframe interval {k} s: {status}");
        assert_eq!(status["bframes"], false, "{status}");
        client.stop_stream().await.unwrap();
    });

    // An empty password removes it.
    assert_eq!(call(&webview, "obs_save_password", json!({"password": ""})), Ok(Value::Null));
    assert_eq!(core.secret_store().get(onair_obs::PASSWORD_ENTRY).unwrap(), None);
    drop(obs);
    tauri::async_runtime::block_on(core.shutdown());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn obs_write_profile_writes_a_profile_that_reads_back() {
    let (dir, core, _app, webview) = start("profile");
    let profile_dir = dir.join("obs-profile");
    let out = call(&webview, "obs_write_profile", json!({"dir": profile_dir})).unwrap();
    assert_eq!(out["dir"], profile_dir.to_str().unwrap());
    assert_eq!(out["problems"], json!([]), "{out}");
    let files = strings(&out["files"]);
    for name in ["basic.ini", "service.json", "streamEncoder.json"] {
        assert!(files.iter().any(|f| f.ends_with(name)) && profile_dir.join(name).is_file(), "{name}: {out}");
    }
    let todo = strings(&out["todo"]);
    assert!(todo.iter().any(|t| t.contains("Profile → Import")), "{out}");
    assert_eq!(todo.last().map(String::as_str), Some("Start Streaming"));

    let obs = core.obs_settings().unwrap();
    let read = onair_obs::profile::read_profile(&profile_dir).unwrap();
    assert_eq!(read.server.as_deref(), Some(obs.server.as_str()));
    assert_valid_key(&obs.server, read.key.as_deref().unwrap());
    assert_eq!(read.output_mode, "Simple");
    assert!(read.simple_x264.contains("bframes=0"), "{}", read.simple_x264);

    // A folder that cannot be created is an error with the path in it.
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = call(&webview, "obs_write_profile", json!({"dir": blocker.join("sub")})).unwrap_err();
    assert!(err.as_str().unwrap().contains("a-file"), "{err}");
    tauri::async_runtime::block_on(core.shutdown());
    std::fs::remove_dir_all(dir).ok();
}
