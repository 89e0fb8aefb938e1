//! A real Secret Service for tests: GNOME Keyring, unlocked with a throwaway password, in a
//! private D-Bus session (how to run one headless: `../shared/design/FACTS.md`).

use std::path::Path;
use std::process::Command;

use crate::require_tool;

/// Shell lines that unlock (creating) a login keyring with a throwaway password and start its
/// Secret Service on the session bus the shell is on, exporting what the daemon prints.
pub const START_SECRET_SERVICE: &str = r#"
eval "$(printf onair-test | gnome-keyring-daemon --unlock --components=secrets)"
eval "$(gnome-keyring-daemon --start --components=secrets)"
"#;

/// `sh -c script` (with `set -e`) in a new D-Bus session (`dbus-run-session`) whose Secret
/// Service runs first. `HOME` and `XDG_RUNTIME_DIR` are `home`, the XDG data and config dirs
/// `home/xdg-data` and `home/xdg-config`; the outer session bus and `ONAIR_SIGNING_KEY` are
/// removed. Fails (never skips) when a tool is missing.
pub fn session(home: &Path, script: &str) -> Command {
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"] {
        require_tool(tool);
    }
    let mut c = Command::new("dbus-run-session");
    c.args(["--", "sh", "-c", &format!("set -e\n{START_SECRET_SERVICE}\n{script}")])
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("xdg-data"))
        .env("XDG_CONFIG_HOME", home.join("xdg-config"))
        .env("XDG_RUNTIME_DIR", home)
        .env_remove("ONAIR_SIGNING_KEY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    c
}
