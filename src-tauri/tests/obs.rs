//! The window's one-click OBS commands through Tauri's mock runtime: against a real OBS Studio
//! (headless under Xvfb, the harness of onair-tests) the websocket setup makes OBS stream to the
//! app's engine live, with no B-frames and a 2 s keyframe interval; the password is kept in the
//! secret store (the OS keyring in the app); the OBS profile is written and reads back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onair_desktop::app;
use onair_desktop::core::Core;
use onair_engine::{Config, SigningKey};
use onair_tests::obs::{Obs, ObsHome, SERIAL};
use onair_tests::wait_for;
use serde_json::{Value, json};
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets};
use tauri::webview::InvokeRequest;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onair-desktop-obs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_core(dir: &std::path::Path) -> Arc<Core> {
    let mut c = Config {
        http: "127.0.0.1:0".parse().unwrap(),
        rtmp: "127.0.0.1:0".parse().unwrap(),
        // OBS dials the server the app hands out.
        public_host: "127.0.0.1".into(),
        data_dir: dir.join("data"),
        require_go_live: true,
        ..Default::default()
    };
    c.webrtc.udp = "127.0.0.1:0".parse().unwrap();
    c.webrtc.tcp = "127.0.0.1:0".parse().unwrap();
    // In memory here; the OS keyring in the app.
    tauri::async_runtime::block_on(Core::start(c, SigningKey::new(SECRET).into(), None)).expect("engine starts")
}

const SECRET: &str = "desktop-obs-secret";

type Window = tauri::WebviewWindow<MockRuntime>;

fn window(core: &Arc<Core>) -> (tauri::App<MockRuntime>, Window) {
    let app = mock_builder()
        .invoke_handler(onair_desktop::commands::handler())
        .build(mock_context(noop_assets()))
        .expect("mock app");
    app::attach(app.handle(), core.clone(), false);
    let webview = tauri::WebviewWindowBuilder::new(&app, app::MAIN_WINDOW, Default::default()).build().unwrap();
    (app, webview)
}

fn call(webview: &Window, cmd: &str, body: Value) -> Result<Value, Value> {
    let req = InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        url: "tauri://localhost".parse().unwrap(),
        body: InvokeBody::Json(body),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(webview, req).map(|b| b.deserialize::<Value>().unwrap())
}

/// `key` is a stream key for the app's stream, signed with the engine's secret (each call of
/// the app makes a fresh one, valid for a year).
fn assert_valid_key(server: &str, key: &str) {
    assert!(key.starts_with("stream?policy="), "{key}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    onair_policy::verify(SECRET.as_bytes(), &format!("{server}/{key}"), "127.0.0.1".parse().unwrap(), now)
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
    let dir = temp_dir("apply");
    let core = start_core(&dir);
    let (_app, webview) = window(&core);
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
    let dir = temp_dir("profile");
    let core = start_core(&dir);
    let (_app, webview) = window(&core);
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
