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
use onair_engine::Config;
use onair_engine::secrets::KeyringStore;
use onair_engine::startup;
use tauri::{Manager, RunEvent, WindowEvent};
use tracing::{error, info};

/// The engine configuration the app runs with: `onair serve`'s (embedded defaults, the config
/// file, `ONAIR_*` overrides), with Go live required.
pub fn desktop_config() -> Result<Config> {
    let mut config = Config::load(None)?;
    config.require_go_live = true;
    Ok(config)
}

/// Runs the app until Quit (or SIGTERM). `hidden`: start in the tray without opening the window.
pub fn run(hidden: bool) -> Result<()> {
    let config = desktop_config()?;
    // The keyring blocks: resolved before the runtime starts.
    let secrets = startup::resolve_secrets(&config, Arc::new(KeyringStore))?;
    startup::create_data_dir(&config)?;
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
            tray::create(&handle, &core.tray_view(), app::on_menu)?;
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
