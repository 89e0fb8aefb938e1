//! The window's Tauri commands: thin wrappers over [`Core`] and the engine's control. Their names
//! and arguments follow the engine's loopback control API (`/api/control/…`), so the browser
//! test's shim can map `invoke(cmd, args)` onto HTTP.

use std::sync::Arc;

use onair_engine::control::ControlStatus;
use onair_engine::restream::{DestinationBody, RestreamStatus};
use onair_engine::status::StreamStatus;
use serde::Serialize;
use tauri::State;

use crate::core::{AppInfo, Core, CoreError};
use crate::obs::{ApplyOutcome, ObsSetupInfo, ProfileOutcome};
use crate::settings::Settings;

type Result<T> = std::result::Result<T, String>;

fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The handler with every command, for `Builder::invoke_handler`.
pub fn handler<R: tauri::Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        app_info,
        status,
        stream_status,
        go_live,
        end_stream,
        set_title,
        send_chat,
        matrix_login,
        matrix_logout,
        settings_get,
        settings_set,
        obs_setup_info,
        obs_apply,
        obs_write_profile,
        obs_save_password,
        restream_list,
        restream_put,
        restream_remove,
        restream_enable,
        restream_disable,
    ]
}

/// What the window needs at start: engine URL, stream, viewer link + QR, OBS settings.
#[tauri::command]
pub fn app_info(core: State<'_, Arc<Core>>) -> Result<AppInfo> {
    core.app_info().map_err(msg)
}

/// `GET /api/control/status`.
#[tauri::command]
pub fn status(core: State<'_, Arc<Core>>) -> ControlStatus {
    core.control().control_status()
}

/// `GET /api/streams/{stream}`.
#[tauri::command]
pub async fn stream_status(core: State<'_, Arc<Core>>, stream: String) -> Result<StreamStatus> {
    Ok(core.control().stream_status(&stream).await)
}

/// `POST /api/control/streams/{stream}/go-live`.
#[tauri::command]
pub fn go_live(core: State<'_, Arc<Core>>, stream: String) -> Result<()> {
    core.control().go_live(&stream).map_err(msg)
}

/// `POST /api/control/streams/{stream}/end`.
#[tauri::command]
pub fn end_stream(core: State<'_, Arc<Core>>, stream: String) -> Result<()> {
    core.control().end_stream(&stream).map_err(msg)
}

/// `PUT /api/control/streams/{stream}/title`.
#[tauri::command]
pub async fn set_title(core: State<'_, Arc<Core>>, stream: String, title: String) -> Result<()> {
    core.control().set_title(&stream, &title).await.map_err(msg)
}

/// `POST /api/control/streams/{stream}/chat`.
#[tauri::command]
pub async fn send_chat(core: State<'_, Arc<Core>>, stream: String, text: String) -> Result<()> {
    core.control().send_chat(&stream, &text).await.map_err(msg)
}

/// `POST /api/control/matrix/login`.
#[tauri::command]
pub async fn matrix_login(
    core: State<'_, Arc<Core>>,
    homeserver: String,
    user: String,
    password: String,
) -> Result<()> {
    core.control().matrix_login(&homeserver, &user, &password).await.map_err(msg)
}

/// `POST /api/control/matrix/logout`.
#[tauri::command]
pub async fn matrix_logout(core: State<'_, Arc<Core>>) -> Result<()> {
    core.control().matrix_logout().await.map_err(msg)
}

/// The settings panel's values.
#[tauri::command]
pub fn settings_get(core: State<'_, Arc<Core>>) -> Result<Settings> {
    let paths = core.settings().ok_or_else(|| msg(CoreError::Settings(crate::settings::SettingsError::NoConfigDir)))?;
    let mut s = paths.current(core.config());
    s.notifications = core.notify_toggles();
    Ok(s)
}

#[derive(Debug, Serialize)]
pub struct Saved {
    /// The engine restarts with the new ports/stream/host at the next start of the app.
    pub restart_needed: bool,
}

/// Saves the settings; notification toggles apply at once.
#[tauri::command]
pub fn settings_set(core: State<'_, Arc<Core>>, settings: Settings) -> Result<Saved> {
    let paths = core.settings().ok_or_else(|| msg(CoreError::Settings(crate::settings::SettingsError::NoConfigDir)))?;
    let restart_needed = paths.save(core.config(), &settings).map_err(msg)?;
    core.set_notify_toggles(settings.notifications);
    Ok(Saved { restart_needed })
}

// ---------- restream destinations (keys go to the OS keyring: blocking calls, off the workers) ----------

/// `GET /api/control/streams/{stream}/restream`.
#[tauri::command]
pub fn restream_list(core: State<'_, Arc<Core>>, stream: String) -> Vec<RestreamStatus> {
    core.control().restream().status(&stream)
}

/// `PUT /api/control/streams/{stream}/restream/{name}`.
#[tauri::command]
pub async fn restream_put(
    core: State<'_, Arc<Core>>,
    stream: String,
    name: String,
    body: DestinationBody,
) -> Result<()> {
    let control = core.control().clone();
    tauri::async_runtime::spawn_blocking(move || control.restream().put(&stream, &name, body))
        .await
        .map_err(msg)?
        .map_err(msg)
}

/// `DELETE /api/control/streams/{stream}/restream/{name}`.
#[tauri::command]
pub async fn restream_remove(core: State<'_, Arc<Core>>, stream: String, name: String) -> Result<()> {
    let control = core.control().clone();
    tauri::async_runtime::spawn_blocking(move || control.restream().remove(&stream, &name))
        .await
        .map_err(msg)?
        .map_err(msg)
}

/// `POST /api/control/streams/{stream}/restream/{name}/enable`.
#[tauri::command]
pub fn restream_enable(core: State<'_, Arc<Core>>, stream: String, name: String) -> Result<()> {
    core.control().restream().set_enabled(&stream, &name, true).map_err(msg)
}

/// `POST /api/control/streams/{stream}/restream/{name}/disable`.
#[tauri::command]
pub fn restream_disable(core: State<'_, Arc<Core>>, stream: String, name: String) -> Result<()> {
    core.control().restream().set_enabled(&stream, &name, false).map_err(msg)
}

// ---------- one-click OBS (no control-API counterpart: the app's own) ----------

/// What the OBS panel shows first: the default obs-websocket address, whether a password is
/// stored, where a profile would be written.
#[tauri::command]
pub async fn obs_setup_info(core: State<'_, Arc<Core>>) -> Result<ObsSetupInfo> {
    let core = core.inner().clone();
    tauri::async_runtime::spawn_blocking(move || core.obs_setup_info()).await.map_err(msg)
}

/// Way 1: set OBS up over obs-websocket v5 (`url`: `ws://HOST:PORT`, default
/// `ws://127.0.0.1:4455`) and read the settings back.
#[tauri::command]
pub async fn obs_apply(core: State<'_, Arc<Core>>, url: Option<String>) -> Result<ApplyOutcome> {
    core.obs_apply(url.as_deref()).await.map_err(msg)
}

/// Way 2: write the OBS profile "OnAir" (`dir`: a folder; default OBS' profile folder).
#[tauri::command]
pub async fn obs_write_profile(core: State<'_, Arc<Core>>, dir: Option<String>) -> Result<ProfileOutcome> {
    let core = core.inner().clone();
    let dir = dir.filter(|d| !d.trim().is_empty()).map(std::path::PathBuf::from);
    tauri::async_runtime::spawn_blocking(move || core.obs_write_profile(dir)).await.map_err(msg)?.map_err(msg)
}

/// Stores the obs-websocket password in the OS keyring (entry `obs-websocket-password`); an empty
/// one removes it.
#[tauri::command]
pub async fn obs_save_password(core: State<'_, Arc<Core>>, password: String) -> Result<()> {
    let core = core.inner().clone();
    tauri::async_runtime::spawn_blocking(move || core.obs_save_password(&password)).await.map_err(msg)?.map_err(msg)
}
