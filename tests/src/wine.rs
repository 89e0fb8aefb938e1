//! The Windows build under Wine (tests/tests/windows.rs): builds it with
//! `scripts/build-windows.sh --dev` (once per test process; cargo makes it quick when nothing
//! changed), gives each test a fresh Wine prefix (its own registry, Credential Manager and
//! `%APPDATA%`) and runs the `.exe` files in it.
//!
//! Wine 8.0 (Debian 12) lacks `ProcessPrng` in `bcryptprimitives.dll`, which Rust's std takes its
//! random bytes from; a test-only shim (`tests/wine/bcryptprimitives.c`) built here with mingw is
//! put beside the `.exe` under test. Windows 10 and later have the real DLL; the shim never ships.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Command;

use crate::{fresh_dir, repo_root, require_tool};

/// Wine's 64-bit loader (Debian's `wine64`).
pub const WINE64: &str = "/usr/lib/wine/wine64";
/// Its server (one per prefix).
const WINESERVER: &str = "/usr/lib/wine/wineserver";

/// The Windows build: where its `.exe` files and the installer are.
#[derive(Debug)]
pub struct WindowsBuild {
    /// `…/x86_64-pc-windows-gnu/debug`: `onair.exe`, `onair-desktop.exe`.
    pub dir: PathBuf,
    /// `OnAir-<version>-setup.exe`.
    pub installer: PathBuf,
    /// The test-only `bcryptprimitives.dll` shim.
    pub shim: PathBuf,
}

/// Builds the Windows targets and the installer (once per test process) and the Wine shim.
pub fn windows_build() -> &'static WindowsBuild {
    static BUILD: OnceLock<WindowsBuild> = OnceLock::new();
    BUILD.get_or_init(|| {
        let root = repo_root();
        let mut build = std::process::Command::new("bash");
        build.arg(root.join("scripts/build-windows.sh")).arg("--dev");
        // Without what `cargo test` sets for this test binary: some build scripts watch such
        // variables (ring's `CARGO_MANIFEST_DIR`), and a different value rebuilds them and all
        // that depends on them, ~40 s, where scripts/test.sh's own run left everything fresh.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_", "CARGO_TARGET_TMPDIR"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                build.env_remove(&*name);
            }
        }
        let out = build.stdin(Stdio::null()).stderr(Stdio::inherit()).output().expect("scripts/build-windows.sh runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "scripts/build-windows.sh --dev failed: {stdout}");
        let installer = PathBuf::from(stdout.lines().last().expect("the script prints the installer").trim());
        assert!(installer.is_file(), "no installer at {}", installer.display());
        let dir = installer.parent().unwrap().to_path_buf();
        let shim_dir = fresh_dir("wine-shim");
        let shim = shim_dir.join("bcryptprimitives.dll");
        let src = root.join("tests/wine");
        let status = std::process::Command::new(require_tool("x86_64-w64-mingw32-gcc"))
            .args(["-O2", "-shared", "-o"])
            .arg(&shim)
            .arg(src.join("bcryptprimitives.c"))
            .arg(src.join("bcryptprimitives.def"))
            .arg("-ladvapi32")
            .status()
            .expect("mingw runs");
        assert!(status.success(), "building the Wine shim failed");
        WindowsBuild { dir, installer, shim }
    })
}

/// A Windows path for a Linux one (Wine maps `/` to drive `Z:`).
pub fn win_path(p: &Path) -> String {
    format!("Z:{}", p.display().to_string().replace('/', "\\"))
}

/// A fresh Wine prefix; its `wineserver` is stopped and the prefix removed when dropped.
pub struct Wine {
    pub prefix: PathBuf,
}

impl Wine {
    /// Creates the prefix (`wineboot`, a few seconds) without Mono and Gecko, which nothing here
    /// needs.
    pub fn new(what: &str) -> Wine {
        assert!(Path::new(WINE64).is_file(), "wine64 is not installed: run scripts/test.sh");
        let wine = Wine { prefix: fresh_dir(&format!("wine-{what}")) };
        let out = wine.std_command(WINE64).args(["wineboot", "-i"]).output().expect("wineboot runs");
        assert!(out.status.success(), "wineboot failed: {}", String::from_utf8_lossy(&out.stderr));
        // wineboot returns before the prefix is fully written: wait for its wineserver to settle.
        let _ = wine.std_command(WINESERVER).arg("-w").status();
        assert!(wine.prefix.join("system.reg").is_file(), "the Wine prefix was not created");
        wine
    }

    fn envs(&self) -> [(&'static str, &std::ffi::OsStr); 3] {
        [
            ("WINEPREFIX", self.prefix.as_os_str()),
            ("WINEDEBUG", std::ffi::OsStr::new("-all")),
            ("WINEDLLOVERRIDES", std::ffi::OsStr::new("mscoree,mshtml=")),
        ]
    }

    fn std_command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        c.envs(self.envs()).env_remove("DISPLAY").stdin(Stdio::null());
        c
    }

    /// `wine64 <exe>` in this prefix (add the arguments; the environment passes through to the
    /// Windows program, so `ONAIR_*` work as on Windows).
    pub fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(WINE64);
        c.arg(exe).envs(self.envs()).env_remove("DISPLAY").stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Copies `exe` and the shim into a fresh folder (outside the prefix); returns the copy.
    pub fn stage(&self, exe: &Path) -> PathBuf {
        let dir = fresh_dir("wine-bin");
        let copy = dir.join(exe.file_name().unwrap());
        std::fs::copy(exe, &copy).expect("copy the .exe");
        std::fs::copy(&windows_build().shim, dir.join("bcryptprimitives.dll")).expect("copy the shim");
        copy
    }

    /// `C:\users\<name>` of this prefix's (only) user.
    pub fn user_home(&self) -> PathBuf {
        let users = self.prefix.join("drive_c/users");
        std::fs::read_dir(&users)
            .expect("the prefix has users")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n != "Public") && p.is_dir())
            .expect("the prefix has a user")
    }

    /// `%APPDATA%` (roaming) of the prefix's user.
    pub fn appdata(&self) -> PathBuf {
        self.user_home().join("AppData/Roaming")
    }

    /// `%LOCALAPPDATA%` of the prefix's user.
    pub fn local_appdata(&self) -> PathBuf {
        self.user_home().join("AppData/Local")
    }

    /// `reg query <key> /v <value>` in this prefix: the value's data, if present.
    pub fn reg_query(&self, key: &str, value: &str) -> Option<String> {
        let out = self.std_command(WINE64).args(["reg", "query", key, "/v", value]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.trim_start().starts_with(value))
            .and_then(|l| l.split("REG_").nth(1))
            .and_then(|rest| rest.split_once(char::is_whitespace))
            .map(|(_, data)| data.trim().to_owned())
    }

    /// Runs `exe args` to completion (bounded by `timeout`), output captured.
    pub async fn run(&self, exe: &Path, args: &[&str], timeout: Duration) -> std::process::Output {
        tokio::time::timeout(timeout, self.command(exe).args(args).output())
            .await
            .unwrap_or_else(|_| panic!("{} {args:?} under Wine did not finish in {timeout:?}", exe.display()))
            .expect("wine64 runs")
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = self.std_command(WINESERVER).arg("-k").status();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}
