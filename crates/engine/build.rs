//! Builds the web UI (`ui/`, npm + Vite) and embeds it, so `onair` is one self-contained file.
//!
//! Set `ONAIR_UI_DIST` to an already built `dist` folder to skip npm (packagers, offline builds).

mod build_ui;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../../ui").canonicalize().expect("the ui/ folder is beside crates/");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=ONAIR_UI_DIST");
    build_ui::watch(Path::new("../../ui"));

    let dist = match std::env::var_os("ONAIR_UI_DIST") {
        Some(d) => PathBuf::from(d),
        None => {
            let dist = out.join("ui-dist");
            build_ui::build(
                &ui,
                &dist,
                "the web UI is built with Node.js 20+ and npm; run scripts/setup.sh, or set ONAIR_UI_DIST to a built ui/dist",
            );
            dist
        }
    };

    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    assert!(
        files.iter().any(|(rel, _)| rel == "index.html") && files.iter().any(|(rel, _)| rel == "embed.html"),
        "the UI build in {} lacks index.html or embed.html",
        dist.display()
    );
    let mut code = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in files {
        writeln!(code, "    ({rel:?}, include_bytes!({:?})),", abs.display().to_string()).unwrap();
    }
    code.push_str("];\n");
    std::fs::write(out.join("ui_assets.rs"), code).unwrap();
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            files.push((rel, path));
        }
    }
}
