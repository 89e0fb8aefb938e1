//! OnAir for the desktop: the engine runs in-process on Tauri's tokio runtime; a tray icon shows
//! whether the stream is offline, ready or live and toggles Go live ⇄ End stream; the window (UI
//! in `ui/app.html`) shows the preview beside the chat, the stream's health, the viewer link and
//! the OBS settings.
//!
//! The logic lives in plain Rust over the engine ([`core`], [`state`], [`notify`], [`settings`]);
//! [`app`], [`tray`] and [`commands`] are the thin Tauri glue.

pub mod app;
pub mod commands;
pub mod core;
pub mod notify;
pub mod obs;
pub mod settings;
pub mod state;
pub mod tray;

use std::sync::Arc;

use anyhow::{Context, Result};
use onair_engine::secrets::{self, KeyringStore, SigningKey};
use onair_engine::{Config, Secrets};
use tauri::{Manager, RunEvent, WindowEvent};
use tracing::{error, info};

/// The log filter without `ONAIR_LOG` (as `onair serve`).
/// obws warns about the version override OnAir uses for OBS 28–30.1 after checking the version
/// itself: that line is kept out of the way.
pub const DEFAULT_LOG: &str = "info,rtc_dtls::config=error,obws=error";

/// Environment variable with the Matrix password for the first login (as `onair serve`).
pub const MATRIX_PASSWORD_ENV: &str = "ONAIR_MATRIX_PASSWORD";

/// The engine configuration the app runs with: `onair serve`'s (embedded defaults, the config
/// file, `ONAIR_*` overrides), with Go live required.
pub fn desktop_config() -> Result<Config> {
    let mut config = Config::load(None)?;
    config.require_go_live = true;
    Ok(config)
}

/// The secrets from the OS keyring (or their `ONAIR_*` overrides). Blocks: call before the
/// runtime starts or in `spawn_blocking`.
pub fn resolve_secrets(config: &Config) -> Result<Secrets> {
    let (signing_key, source) = SigningKey::resolve(&KeyringStore)?;
    info!("stream signing key from {source}");
    let turn_secret = if config.webrtc.turn_urls.is_empty() { None } else { secrets::turn_secret(&KeyringStore)? };
    let matrix_password = std::env::var(MATRIX_PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    Ok(Secrets { signing_key, turn_secret, store: Arc::new(KeyringStore), matrix_password })
}

/// Runs the app until Quit (or SIGTERM). `hidden`: start in the tray without opening the window.
pub fn run(hidden: bool) -> Result<()> {
    let config = desktop_config()?;
    let secrets = resolve_secrets(&config)?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let settings = settings::SettingsPaths::platform().ok();

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| app::show_main(app)))
        .plugin(tauri_plugin_clipboard_manager::init())
        .invoke_handler(commands::handler())
        .on_window_event(|window, event| {
            // Closing the window keeps OnAir running in the tray.
            if let WindowEvent::CloseRequested { api, .. } = event
                && window.label() == app::MAIN_WINDOW
            {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .setup(move |app| {
            let handle = app.handle().clone();
            let core = tauri::async_runtime::block_on(core::Core::start(config, secrets, settings))
                .context("cannot start the OnAir engine")?;
            app::attach(&handle, core.clone(), true);
            tray::create(&handle, &core)?;
            app::quit_on_signals(&handle);
            if !hidden {
                app::show_main(&handle);
            }
            info!(url = core.engine_url(), "OnAir is running");
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("cannot start the window system")?;

    app.run(|handle, event| match event {
        // No window left open is not a reason to quit: the tray stays.
        RunEvent::ExitRequested { code: None, api, .. } => api.prevent_exit(),
        RunEvent::Exit if handle.try_state::<Arc<core::Core>>().is_some_and(|core| core.is_running()) => {
            error!("exiting with the engine still running");
        }
        _ => {}
    });
    Ok(())
}
