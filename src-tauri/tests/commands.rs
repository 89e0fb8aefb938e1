//! The app's commands through Tauri's mock runtime, and the tray menu's actions against a real
//! engine with a real RTMP publisher: Go live arms the stream (a publish with a valid signed key
//! is accepted only after it), End stream disconnects the publisher and refuses new publishes.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{call, mock_app, now_ms, window};
use onair_desktop::app;
use onair_desktop::core::{Core, Effect};
use onair_desktop::settings::SettingsPaths;
use onair_desktop::state::{MenuAction, TrayState};
use onair_tests::rtmp_client::RawPublisher;
use serde_json::{Value, json};
use tauri::Listener;

const SECRET: &str = "desktop-test-secret";

/// An engine with its data and the app's settings in a fresh `onair-desktop-<name>-<pid>`.
fn start_core(name: &str) -> (Arc<Core>, PathBuf) {
    let dir = common::temp_dir(name);
    let core = common::start_core(&dir, SECRET, Some(SettingsPaths::in_dir(&dir.join("config"))));
    (core, dir)
}

/// The stream key ("stream?policy=…&signature=…") out of the "Copy OBS settings" text.
fn key_from_clipboard(text: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix("Stream Key: ")).expect("a Stream Key line").to_owned()
}

async fn publish(core: &Core, key: &str) -> anyhow::Result<RawPublisher> {
    tokio::time::timeout(Duration::from_secs(15), RawPublisher::connect(core.rtmp_addr(), key)).await?
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tray_menu_go_live_arms_the_stream_and_end_stream_disconnects() {
    let (core, dir) = start_core("tray");
    let mut events = core.control().subscribe();
    assert_eq!(core.tray_state(), TrayState::Offline);
    assert_eq!(core.toggle_label(), "Go live");

    // Copy OBS settings: a Custom server and a signed key for this engine's RTMP port.
    let Effect::Clipboard(obs) = core.menu_action(MenuAction::CopyObsSettings).unwrap() else { panic!("clipboard") };
    assert!(obs.contains(&format!("Server: rtmp://127.0.0.1:{}/live", core.rtmp_addr().port())), "{obs}");
    let key = key_from_clipboard(&obs);
    assert!(key.starts_with("stream?policy=") && key.contains("&signature="), "{key}");
    let url = format!("rtmp://127.0.0.1:{}/live/{key}", core.rtmp_addr().port());
    onair_policy::verify(SECRET.as_bytes(), &url, "127.0.0.1".parse().unwrap(), now_ms())
        .expect("the copied key is signed with the engine's secret");

    tauri::async_runtime::block_on(async {
        // Before Go live a valid key is refused.
        assert!(publish(&core, &key).await.is_err(), "publish accepted before Go live");
        let (refused, json) = next_event(&mut events, |e| e["type"] == "publish_refused").await;
        assert_eq!(json["stream"], "stream");
        assert!(core.on_event(&refused), "the tray follows");
        assert_eq!(core.tray_state(), TrayState::Ready, "OBS knocking shows as ready");

        // Go live: accepted.
        assert_eq!(core.menu_action(MenuAction::ToggleLive).unwrap(), Effect::None);
        assert!(core.control().is_armed("stream"));
        assert_eq!(core.toggle_label(), "End stream");
        let mut publisher = publish(&core, &key).await.expect("publish accepted after Go live");
        let (started, _) = next_event(&mut events, |e| e["type"] == "publish_started").await;
        core.on_event(&started);
        assert_eq!(core.tray_state(), TrayState::Ready, "OBS connected, not live yet");

        // End stream: the publisher is disconnected, and refused from now on.
        core.menu_action(MenuAction::ToggleLive).unwrap();
        assert!(!core.control().is_armed("stream"));
        assert_eq!(core.toggle_label(), "Go live");
        let (ended, json) = next_event(&mut events, |e| e["type"] == "publish_ended").await;
        assert_eq!(json["reason"], "ended_by_streamer");
        core.on_event(&ended);
        assert_eq!(core.tray_state(), TrayState::Offline);
        // The server closed the connection: writing soon fails.
        let mut closed = false;
        for i in 0..200 {
            if publisher.raw(&[0u8; 4096]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10 + i)).await;
        }
        assert!(closed, "the publisher's connection stays open after End stream");
        assert!(publish(&core, &key).await.is_err(), "publish accepted after End stream");
    });

    assert_eq!(
        core.menu_action(MenuAction::CopyViewerLink).unwrap(),
        Effect::Clipboard(format!("http://127.0.0.1:{}/stream", core.http_addr().port()))
    );
    assert_eq!(core.menu_action(MenuAction::Open).unwrap(), Effect::ShowWindow);
    assert_eq!(core.menu_action(MenuAction::Quit).unwrap(), Effect::Quit);
    tauri::async_runtime::block_on(core.shutdown());
    assert!(!core.is_running());
    std::fs::remove_dir_all(dir).ok();
}

/// The next engine event (as JSON) that matches `want`.
async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<onair_engine::EngineEvent>,
    want: impl Fn(&Value) -> bool,
) -> (onair_engine::EngineEvent, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv()).await.expect("timed out waiting for an engine event");
        let ev = ev.expect("events");
        let v = serde_json::to_value(&ev).unwrap();
        if want(&v) {
            return (ev, v);
        }
    }
}

// ---------- the commands, through the mock runtime ----------

#[test]
fn commands_through_the_mock_runtime_and_events_pushed_to_the_window() {
    let (core, dir) = start_core("commands");
    let app = mock_app();
    let (tx, rx) = mpsc::channel::<Value>();
    app.listen(app::ENGINE_EVENT, move |e| {
        let _ = tx.send(serde_json::from_str(e.payload()).unwrap());
    });
    let webview = window(&app, &core);
    let pushed = |what: &str, want: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no `engine` event for {what}"));
            if want(&v) {
                return v;
            }
        }
    };

    let info = call(&webview, "app_info", json!({})).unwrap();
    assert_eq!(info["stream"], "stream");
    assert_eq!(info["engine_url"], format!("http://127.0.0.1:{}", core.http_addr().port()));
    assert_eq!(info["viewer_url"], format!("http://127.0.0.1:{}/stream", core.http_addr().port()));
    assert!(info["viewer_qr_svg"].as_str().unwrap().contains("<svg"));
    assert_eq!(info["obs"]["server"], format!("rtmp://127.0.0.1:{}/live", core.rtmp_addr().port()));
    assert_eq!(info["armed"], false);
    assert_eq!(info["require_go_live"], true);
    assert_eq!(info["tray"], "offline");

    let status = call(&webview, "status", json!({})).unwrap();
    assert_eq!(status["require_go_live"], true);
    assert_eq!(status["matrix"]["state"], "off");
    assert!(status["firewall_note"].is_null(), "the firewall question is Windows-only");
    let me = status["streams"].as_array().unwrap().iter().find(|s| s["name"] == "stream").unwrap();
    assert_eq!(me["armed"], false);

    // Go live through the command: the engine arms the stream and the window hears about it.
    assert_eq!(call(&webview, "go_live", json!({"stream": "stream"})), Ok(Value::Null));
    assert!(core.control().is_armed("stream"));
    let armed = pushed("go live", &|v| v["type"] == "armed");
    assert_eq!(armed, json!({"type": "armed", "stream": "stream", "armed": true}));
    wait_until("the tray state to follow", || core.tray_state() == TrayState::Ready);

    assert_eq!(call(&webview, "set_title", json!({"stream": "stream", "title": "Friday night"})), Ok(Value::Null));
    assert_eq!(pushed("the title", &|v| v["type"] == "title")["title"], "Friday night");
    let st = call(&webview, "stream_status", json!({"stream": "stream"})).unwrap();
    assert_eq!(st["title"], "Friday night");
    assert_eq!(st["live"], false);

    // Errors come back as text.
    let err = call(&webview, "go_live", json!({"stream": "a/b"})).unwrap_err();
    assert!(err.as_str().unwrap().contains("invalid stream name"), "{err}");
    let err = call(&webview, "send_chat", json!({"stream": "stream", "text": "hi"})).unwrap_err();
    assert!(err.as_str().unwrap().contains("chat is not available"), "{err}");
    assert!(call(&webview, "go_live", json!({})).is_err(), "a missing argument is an error");

    assert_eq!(call(&webview, "end_stream", json!({"stream": "stream"})), Ok(Value::Null));
    assert!(!core.control().is_armed("stream"));
    assert_eq!(pushed("end stream", &|v| v["type"] == "armed")["armed"], false);

    // Settings: toggles apply at once, engine keys at the next start.
    let mut settings = call(&webview, "settings_get", json!({})).unwrap();
    assert_eq!(settings["stream"], "stream");
    assert_eq!(settings["notifications"]["went_live"], true);
    settings["notifications"]["went_live"] = json!(false);
    let saved = call(&webview, "settings_set", json!({"settings": settings.clone()})).unwrap();
    assert_eq!(saved["restart_needed"], false);
    assert!(!core.notify_toggles().went_live);
    settings["stream"] = json!("show");
    let saved = call(&webview, "settings_set", json!({"settings": settings.clone()})).unwrap();
    assert_eq!(saved["restart_needed"], true);
    let cfg = std::fs::read_to_string(dir.join("config/config.toml")).unwrap();
    assert!(cfg.contains("default_stream = \"show\""), "{cfg}");
    settings["http"] = json!("not an address");
    assert!(call(&webview, "settings_set", json!({"settings": settings})).is_err());

    // Matrix is not configured: logging out is harmless, logging in without a server is refused.
    assert_eq!(call(&webview, "matrix_logout", json!({})), Ok(Value::Null));
    let err = call(&webview, "matrix_login", json!({"homeserver": "", "user": "", "password": "x"})).unwrap_err();
    assert!(err.as_str().unwrap().contains("homeserver"), "{err}");

    tauri::async_runtime::block_on(core.shutdown());
    std::fs::remove_dir_all(dir).ok();
}
