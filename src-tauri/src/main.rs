//! `onair-desktop`: the OnAir tray app. `--hidden` starts it in the tray without the window.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> anyhow::Result<()> {
    onair_engine::startup::init_logging();
    let hidden = std::env::args().skip(1).any(|a| a == "--hidden" || a == "--minimized");
    if let Some(a) = std::env::args().skip(1).find(|a| a == "--help" || a == "-h") {
        let _ = a;
        println!("onair-desktop [--hidden]: the OnAir tray app (config and ONAIR_* variables as `onair serve`)");
        return Ok(());
    }
    onair_desktop::run(hidden)
}
