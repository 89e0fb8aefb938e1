//! Builds the window's pages (`ui/`, npm + Vite) into `ui-dist/` (the `frontendDist` Tauri embeds),
//! then runs tauri-build (config, capabilities, icons).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    build_ui();
    tauri_build::build()
}

fn build_ui() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../ui").canonicalize().expect("the ui/ folder is beside src-tauri/");
    let dist = manifest.join("ui-dist");
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
    if !ui.join("node_modules/.package-lock.json").exists() {
        npm(&ui, &["ci", "--no-audit", "--no-fund"], None);
    }
    npm(&ui, &["run", "build"], Some(&dist));
    assert!(dist.join("app.html").is_file(), "the UI build in {} lacks app.html", dist.display());
}

fn npm(dir: &Path, args: &[&str], out_dir: Option<&Path>) {
    let mut cmd = Command::new("npm");
    cmd.args(args).current_dir(dir);
    if let Some(out) = out_dir {
        cmd.env("ONAIR_UI_OUT", out);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run npm ({e}): the window's UI is built with Node.js 20+ and npm; run scripts/setup.sh")
    });
    assert!(status.success(), "`npm {}` in {} failed ({status})", args.join(" "), dir.display());
}
