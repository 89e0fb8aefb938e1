//! The Linux `.deb` and `.rpm` build (Tauri bundler, offline) and hold the binary, the desktop
//! entry and the icons: `scripts/build-deb.sh --bundle-only` packages the debug binary this test
//! run built and checks the packages with `dpkg-deb -c` and `rpm -qlp`. The package is named `onair` (the bundler derives
//! it from `productName`, which `src-tauri/tauri.linux.conf.json` sets to `onair` on Linux; the
//! menu entry still reads "OnAir").

use std::path::Path;
use std::process::Command;

#[test]
fn deb_and_rpm_packages_have_binary_desktop_entry_and_icons() {
    for tool in ["dpkg-deb", "rpm", "npm", "node"] {
        let found =
            std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
        assert!(found, "`{tool}` is not installed: run scripts/test.sh, which installs every tool the tests need");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The binary cargo built for this test run is the one the package gets.
    let bin = Path::new(env!("CARGO_BIN_EXE_onair-desktop"));
    let target_dir = bin.parent().and_then(Path::parent).unwrap();
    let out = Command::new(root.join("scripts/build-deb.sh"))
        .arg("--bundle-only")
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(root)
        .output()
        .expect("scripts/build-deb.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build-deb.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(".rpm has the binary, the desktop entry and the icons"), "{stdout}");
    let deb = stdout.lines().last().unwrap_or_default().trim();
    assert!(deb.ends_with(".deb") && Path::new(deb).is_file(), "no .deb reported:\n{stdout}");
    println!("{}", stdout.lines().rev().nth(1).unwrap_or_default());
    println!("package: {deb}");
    let field = |name: &str| {
        let out = Command::new("dpkg-deb").args(["-f", deb, name]).output().expect("dpkg-deb runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "onair", "the package name");
    assert!(Path::new(deb).file_name().unwrap().to_string_lossy().starts_with("onair_"), "the package file: {deb}");
    let entry = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xO --wildcards '*usr/share/applications/onair.desktop'")
        .args(["sh", deb])
        .output()
        .expect("tar runs");
    let entry = String::from_utf8_lossy(&entry.stdout);
    assert!(entry.lines().any(|l| l == "Name=OnAir"), "the menu shows OnAir:\n{entry}");
    assert!(entry.lines().any(|l| l == "Exec=onair-desktop"), "{entry}");
}
