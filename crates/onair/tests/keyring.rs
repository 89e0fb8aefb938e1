//! The signing secret in a real Secret Service: GNOME Keyring in a private D-Bus session.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_onair");

fn require(tool: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
    assert!(found, "`{tool}` is not installed: run scripts/test.sh, which installs every tool the tests need");
}

#[test]
fn signing_key_is_generated_once_and_kept_in_the_keyring() {
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"] {
        require(tool);
    }
    let home = std::env::temp_dir().join(format!("onair-keyring-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let out = |name: &str| -> PathBuf { home.join(name) };
    // Unlock (creating) a login keyring with a throwaway password, start the Secret Service, then
    // run `onair obs` twice: the first run generates and stores the secret, the second reuses it.
    let script = r#"
        set -e
        eval "$(printf onair-test | gnome-keyring-daemon --unlock --components=secrets)"
        eval "$(gnome-keyring-daemon --start --components=secrets)"
        "$BIN" obs show --host h --json > "$HOME/first.json" 2> "$HOME/first.err"
        "$BIN" obs show --host h --json > "$HOME/second.json" 2> "$HOME/second.err"
        secret-tool lookup service onair username signing-key > "$HOME/secret.txt"
    "#;
    let status = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", script])
        .env("BIN", BIN)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", &home)
        .env_remove("ONAIR_SIGNING_KEY")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .status()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(out(name)).unwrap_or_default();
    assert!(status.success(), "keyring session failed: {}{}", read("first.err"), read("second.err"));
    let secret = read("secret.txt");
    assert_eq!(secret.trim().len(), 32, "a generated 32-character secret is in the keyring");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for run in ["first.json", "second.json"] {
        let v: serde_json::Value = serde_json::from_str(&read(run)).unwrap();
        let url = v["url"].as_str().unwrap();
        onair_policy::verify(secret.trim().as_bytes(), url, "127.0.0.1".parse().unwrap(), now)
            .unwrap_or_else(|e| panic!("{run} was not signed with the keyring's secret: {e}"));
        assert!(!read(run).contains(secret.trim()), "the secret was printed");
    }
    std::fs::remove_dir_all(&home).ok();
}
