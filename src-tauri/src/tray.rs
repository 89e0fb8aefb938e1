//! The tray icon and its menu. The icon follows the stream (offline / ready / live); the first
//! item toggles Go live ⇄ End stream. The tray only draws a [`TrayView`] and hands clicked item
//! ids to the callback it is given (`app::on_menu`, which runs `Core::menu_action`): it knows
//! neither the core nor the glue, so the dependency runs one way (app → tray).

use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};
use tracing::warn;

use crate::state::{MenuAction, TrayState, TrayView};

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

/// Creates the tray icon and its menu showing `view`; a clicked item's id goes to `on_menu`.
pub fn create<R: Runtime>(app: &AppHandle<R>, view: &TrayView, on_menu: fn(&AppHandle<R>, &str)) -> tauri::Result<()> {
    let toggle = MenuItem::with_id(app, MenuAction::ToggleLive.id(), view.toggle_label, true, None::<&str>)?;
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
    let icon = TrayIconBuilder::with_id("onair")
        .icon(icon(view.state))
        .tooltip(&view.tooltip)
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(move |app, event| on_menu(app, event.id().as_ref()))
        .build(app)?;
    app.manage(Tray { icon, toggle });
    Ok(())
}

/// Redraws the tray to show `view` (no-op without a tray).
pub fn refresh<R: Runtime>(app: &AppHandle<R>, view: &TrayView) {
    let Some(tray) = app.try_state::<Tray<R>>() else { return };
    let redraw = || -> tauri::Result<()> {
        tray.icon.set_icon(Some(icon(view.state)))?;
        tray.icon.set_tooltip(Some(&view.tooltip))?;
        tray.toggle.set_text(view.toggle_label)
    };
    if let Err(e) = redraw() {
        warn!(error = %e, "cannot update the tray");
    }
}
