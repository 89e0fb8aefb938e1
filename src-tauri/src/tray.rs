//! The tray icon and its menu. The icon follows the stream (offline / ready / live); the first
//! item toggles Go live ⇄ End stream. What the items do is in [`crate::core::Core::menu_action`].

use std::sync::Arc;

use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};
use tracing::warn;

use crate::core::{Core, MenuAction};
use crate::state::TrayState;

const ICON_OFFLINE: &[u8] = include_bytes!("../../icons/tray-offline.png");
const ICON_READY: &[u8] = include_bytes!("../../icons/tray-ready.png");
const ICON_LIVE: &[u8] = include_bytes!("../../icons/tray-live.png");

pub fn icon(state: TrayState) -> Image<'static> {
    let bytes = match state {
        TrayState::Offline => ICON_OFFLINE,
        TrayState::Ready => ICON_READY,
        TrayState::Live => ICON_LIVE,
    };
    Image::from_bytes(bytes).expect("the tray icons are valid PNGs")
}

/// The tray's handles, kept to redraw it.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    toggle: MenuItem<R>,
}

/// Creates the tray icon and its menu.
pub fn create<R: Runtime>(app: &AppHandle<R>, core: &Arc<Core>) -> tauri::Result<()> {
    let toggle = MenuItem::with_id(app, MenuAction::ToggleLive.id(), core.toggle_label(), true, None::<&str>)?;
    let item = |a: MenuAction| MenuItem::with_id(app, a.id(), a.label(), true, None::<&str>);
    let menu = Menu::with_items(
        app,
        &[
            &toggle,
            &PredefinedMenuItem::separator(app)?,
            &item(MenuAction::CopyObsSettings)?,
            &item(MenuAction::CopyViewerLink)?,
            &PredefinedMenuItem::separator(app)?,
            &item(MenuAction::Open)?,
            &item(MenuAction::Quit)?,
        ],
    )?;
    let state = core.tray_state();
    let icon = TrayIconBuilder::with_id("onair")
        .icon(icon(state))
        .tooltip(state.tooltip(core.stream()))
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| crate::app::on_menu(app, event.id().as_ref()))
        .build(app)?;
    app.manage(Tray { icon, toggle });
    Ok(())
}

/// Redraws the tray from the core's state (no-op without a tray).
pub fn refresh<R: Runtime>(app: &AppHandle<R>, core: &Core) {
    let Some(tray) = app.try_state::<Tray<R>>() else { return };
    let state = core.tray_state();
    let redraw = || -> tauri::Result<()> {
        tray.icon.set_icon(Some(icon(state)))?;
        tray.icon.set_tooltip(Some(state.tooltip(core.stream())))?;
        tray.toggle.set_text(core.toggle_label())
    };
    if let Err(e) = redraw() {
        warn!(error = %e, "cannot update the tray");
    }
}
