//! What the app's integration tests share: a real engine in a fresh temporary folder, the app's
//! window on Tauri's mock runtime, and its commands called through the IPC.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use onair_desktop::app;
use onair_desktop::core::Core;
use onair_desktop::settings::SettingsPaths;
use onair_engine::{Config, SigningKey};
use serde_json::Value;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets};
use tauri::webview::InvokeRequest;

pub type Window = tauri::WebviewWindow<MockRuntime>;

/// An empty `onair-desktop-<name>-<pid>` in the temporary folder.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onair-desktop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts an engine on loopback with its data in `dir`, signing with `secret`, Go live required.
/// `settings`: where the app's settings live (None: the engine keeps its secrets in memory here;
/// the OS keyring in the app).
pub fn start_core(dir: &Path, secret: &str, settings: Option<SettingsPaths>) -> Arc<Core> {
    let mut c = Config {
        http: "127.0.0.1:0".parse().unwrap(),
        rtmp: "127.0.0.1:0".parse().unwrap(),
        // OBS settings and viewer links name this host; OBS or the test's publisher dials it.
        public_host: Some("127.0.0.1".parse().unwrap()),
        data_dir: dir.join("data"),
        require_go_live: true,
        ..Default::default()
    };
    c.webrtc.udp = "127.0.0.1:0".parse().unwrap();
    c.webrtc.tcp = "127.0.0.1:0".parse().unwrap();
    tauri::async_runtime::block_on(Core::start(c, SigningKey::new(secret).into(), settings)).expect("engine starts")
}

/// The app on the mock runtime, with the app's command handler.
pub fn mock_app() -> tauri::App<MockRuntime> {
    mock_builder()
        .invoke_handler(onair_desktop::commands::handler())
        .build(mock_context(noop_assets()))
        .expect("mock app")
}

/// Attaches `core` to `app` and opens the main window.
pub fn window(app: &tauri::App<MockRuntime>, core: &Arc<Core>) -> Window {
    app::attach(app.handle(), core.clone(), false);
    tauri::WebviewWindowBuilder::new(app, app::MAIN_WINDOW, Default::default()).build().unwrap()
}

/// Invokes the command `cmd` from the window, as the page does.
pub fn call(webview: &Window, cmd: &str, body: Value) -> Result<Value, Value> {
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
