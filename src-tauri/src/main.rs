//! `onair-desktop`: the OnAir tray app. `--hidden` starts it in the tray without the window.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ONAIR_LOG").unwrap_or_else(|_| EnvFilter::new(onair_desktop::DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    let hidden = std::env::args().skip(1).any(|a| a == "--hidden" || a == "--minimized");
    if let Some(a) = std::env::args().skip(1).find(|a| a == "--help" || a == "-h") {
        let _ = a;
        println!("onair-desktop [--hidden]: the OnAir tray app (config and ONAIR_* variables as `onair serve`)");
        return Ok(());
    }
    onair_desktop::run(hidden)
}
