//! Builds the window's pages (`ui/`, npm + Vite) and keeps `ui-dist/` (the `frontendDist` Tauri
//! embeds) equal to them, then runs tauri-build (config, capabilities, icons).

#[path = "../crates/engine/build_ui.rs"]
mod build_ui;

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../ui").canonicalize().expect("the ui/ folder is beside src-tauri/");
    let dist = manifest.join("ui-dist");
    build_ui::watch(Path::new("../ui"));
    let fresh = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("ui-dist");
    build_ui::build(&ui, &fresh, "the window's UI is built with Node.js 20+ and npm; run scripts/setup.sh");
    assert!(fresh.join("app.html").is_file(), "the UI build in {} lacks app.html", fresh.display());
    // ui-dist/ is shared by every target's build (the host's and the Windows cross-build): only
    // files that differ are written, so one target's build does not make the other's stale.
    sync(&fresh, &dist);
    tauri_build::build()
}

/// Makes `dst` hold exactly the files of `src`, writing only those whose bytes differ.
fn sync(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("cannot create {}: {e}", dst.display()));
    let mut keep = std::collections::HashSet::new();
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display())) {
        let from = entry.unwrap().path();
        let name = from.file_name().unwrap().to_owned();
        let to = dst.join(&name);
        keep.insert(name);
        if from.is_dir() {
            if to.is_file() {
                std::fs::remove_file(&to).unwrap();
            }
            sync(&from, &to);
        } else {
            let bytes = std::fs::read(&from).unwrap();
            if std::fs::read(&to).ok().as_deref() != Some(&bytes[..]) {
                if to.is_dir() {
                    std::fs::remove_dir_all(&to).unwrap();
                }
                std::fs::write(&to, &bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", to.display()));
            }
        }
    }
    for entry in std::fs::read_dir(dst).unwrap() {
        let path = entry.unwrap().path();
        if !keep.contains(path.file_name().unwrap()) {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}
