//! The Tauri glue: engine events → webview (`engine` event), tray and notifications; window
//! behaviour (closing hides it); quitting and SIGTERM shut the engine down cleanly.

use std::sync::Arc;
use std::time::Instant;

use onair_engine::EngineEvent;
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::core::{Core, Effect};
use crate::state::MenuAction;
use crate::{notify, tray};

/// The Tauri event every engine event is forwarded as (payload: the event's JSON).
pub const ENGINE_EVENT: &str = "engine";
/// The main window's label.
pub const MAIN_WINDOW: &str = "main";

/// Makes `core` the app's state and starts pushing its engine's events to the window (and, when
/// `tray` is on, to the tray and the notifications).
pub fn attach<R: Runtime>(app: &AppHandle<R>, core: Arc<Core>, desktop: bool) {
    let rx = core.control().subscribe();
    app.manage(core.clone());
    let app = app.clone();
    tauri::async_runtime::spawn(forward_events(app, core, rx, desktop));
}

async fn forward_events<R: Runtime>(
    app: AppHandle<R>,
    core: Arc<Core>,
    mut rx: broadcast::Receiver<EngineEvent>,
    desktop: bool,
) {
    loop {
        // A knock (refused publish) ageing out turns the tray back to offline with no event.
        let timer = core.next_tray_change().filter(|_| desktop);
        let received = tokio::select! {
            r = rx.recv() => r,
            _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now).into()), if timer.is_some() => {
                tray::refresh(&app, &core.tray_view());
                continue;
            }
        };
        let event = match received {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(skipped = n, "the window missed engine events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Err(e) = app.emit(ENGINE_EVENT, &event) {
            warn!(error = %e, "cannot forward an engine event to the window");
        }
        let redraw = core.on_event(&event);
        if !desktop {
            continue;
        }
        if redraw {
            tray::refresh(&app, &core.tray_view());
        }
        if let Some(note) = notify::note_for(&event, core.stream(), &core.notify_toggles()) {
            tauri::async_runtime::spawn_blocking(move || notify::show(&note));
        }
    }
}

/// Shows, unminimizes and focuses the main window.
pub fn show_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window(MAIN_WINDOW) {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

/// Runs a tray menu item by id (the tray's `on_menu` callback).
pub fn on_menu<R: Runtime>(app: &AppHandle<R>, id: &str) {
    let Some(action) = MenuAction::from_id(id) else { return };
    let Some(core) = app.try_state::<Arc<Core>>().map(|s| s.inner().clone()) else { return };
    match core.menu_action(action) {
        Ok(Effect::None) => tray::refresh(app, &core.tray_view()),
        Ok(Effect::Clipboard(text)) => {
            use tauri_plugin_clipboard_manager::ClipboardExt;
            if let Err(e) = app.clipboard().write_text(text) {
                warn!(error = %e, "cannot write the clipboard");
            }
        }
        Ok(Effect::ShowWindow) => show_main(app),
        Ok(Effect::Quit) => quit(app, 0),
        Err(e) => warn!(action = ?action, error = %e, "tray action failed"),
    }
}

/// Shuts the engine down, then exits the app with `code`.
pub fn quit<R: Runtime>(app: &AppHandle<R>, code: i32) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        if let Some(core) = app.try_state::<Arc<Core>>().map(|s| s.inner().clone()) {
            info!("shutting down");
            core.shutdown().await;
        }
        app.exit(code);
    });
}

/// SIGTERM (and Ctrl-C) quit like the tray's Quit: the engine stops cleanly, the exit code is 0.
pub fn quit_on_signals<R: Runtime>(app: &AppHandle<R>) {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let signal = onair_engine::shutdown_signal().await;
        info!(%signal, "quitting");
        quit(&app, 0);
    });
}
