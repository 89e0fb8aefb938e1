//! Building the web UI (`ui/`, npm + Vite), for the build scripts of the engine (`build.rs` here)
//! and of the desktop app (`src-tauri/build.rs`, which includes this file).

use std::path::Path;
use std::process::Command;

/// Tells cargo to run the build script again when the UI's sources in `ui` change. `ui` is
/// relative to the package (the build script's working directory): cargo resolves relative
/// watched paths against the package of the build it checks, so a second checkout sharing the
/// target dir watches its own `ui/`, not the first checkout's.
pub fn watch(ui: &Path) {
    assert!(ui.is_relative(), "watch ui/ by a path relative to the package");
    for watched in [
        "src",
        "public",
        "index.html",
        "embed.html",
        "app.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        let p = ui.join(watched);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}

/// Builds `ui` into `dist`, after `npm ci` when its node_modules are missing. `no_npm`: what to do
/// when npm cannot run.
pub fn build(ui: &Path, dist: &Path, no_npm: &str) {
    if !ui.join("node_modules/.package-lock.json").exists() {
        npm(ui, &["ci", "--no-audit", "--no-fund"], None, no_npm);
    }
    npm(ui, &["run", "build"], Some(dist), no_npm);
}

fn npm(dir: &Path, args: &[&str], out_dir: Option<&Path>, no_npm: &str) {
    let mut cmd = Command::new("npm");
    cmd.args(args).current_dir(dir);
    if let Some(out) = out_dir {
        cmd.env("ONAIR_UI_OUT", out);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run npm ({e}): {no_npm}"));
    assert!(status.success(), "`npm {}` in {} failed ({status})", args.join(" "), dir.display());
}
