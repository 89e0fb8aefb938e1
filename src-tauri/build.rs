//! Builds the window's pages (`ui/`, npm + Vite) into `ui-dist/` (the `frontendDist` Tauri embeds),
//! then runs tauri-build (config, capabilities, icons).

#[path = "../crates/engine/build_ui.rs"]
mod build_ui;

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../ui").canonicalize().expect("the ui/ folder is beside src-tauri/");
    let dist = manifest.join("ui-dist");
    build_ui::watch(Path::new("../ui"));
    build_ui::build(&ui, &dist, "the window's UI is built with Node.js 20+ and npm; run scripts/setup.sh");
    assert!(dist.join("app.html").is_file(), "the UI build in {} lacks app.html", dist.display());
    tauri_build::build()
}
