//! The Matrix session kept in a real Secret Service (GNOME Keyring in a private D-Bus session),
//! through the `keyring` crate as OnAir's engine uses it, and restored by a second process without
//! logging in again.

mod common;

use std::process::Command;

use common::{PASSWORD, synapse};
use onair_matrix::{Chat, MatrixConfig, SESSION_ENTRY, SessionStore, StoreError};

/// What the engine's adapter does: one keyring entry per name under the service `onair`.
struct Keyring;

impl Keyring {
    fn entry(name: &str) -> Result<keyring::Entry, StoreError> {
        keyring::Entry::new("onair", name).map_err(|e| StoreError(e.to_string()))
    }
}

impl SessionStore for Keyring {
    fn get(&self, name: &str) -> Result<Option<String>, StoreError> {
        match Self::entry(name)?.get_password() {
            Ok(v) => Ok(Some(v)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }

    fn set(&self, name: &str, value: &str) -> Result<(), StoreError> {
        Self::entry(name)?.set_password(value).map_err(|e| StoreError(e.to_string()))
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        match Self::entry(name)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(StoreError(e.to_string())),
        }
    }
}

fn require(tool: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
    assert!(found, "`{tool}` is not installed: run scripts/test.sh, which installs every tool the tests need");
}

#[test]
fn the_session_is_restored_from_a_real_secret_service() {
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"] {
        require(tool);
    }
    let hs = synapse();
    let user = hs.new_user("keyring");
    let home = std::env::temp_dir().join(format!("onair-matrix-keyring-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    // One D-Bus session, one unlocked keyring; two processes of this test binary: the first logs
    // in, the second (a "restart") restores.
    let script = r#"
        set -e
        eval "$(printf onair-test | gnome-keyring-daemon --unlock --components=secrets)"
        eval "$(gnome-keyring-daemon --start --components=secrets)"
        ONAIR_KEYRING_PHASE=login "$EXE" --exact keyring_phase --ignored --nocapture > "$HOME/login.out" 2>&1
        ONAIR_KEYRING_PHASE=restore "$EXE" --exact keyring_phase --ignored --nocapture > "$HOME/restore.out" 2>&1
        secret-tool lookup service onair username matrix-session > "$HOME/secret.json"
    "#;
    let status = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", script])
        .env("EXE", std::env::current_exe().unwrap())
        .env("ONAIR_KEYRING_BASE_URL", &hs.base_url)
        .env("ONAIR_KEYRING_USER", &user)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", &home)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .status()
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "keyring session failed:\n--- login\n{}\n--- restore\n{}",
        read("login.out"),
        read("restore.out")
    );
    let device = |out: &str| -> String {
        out.lines().find_map(|l| l.strip_prefix("DEVICE=")).unwrap_or_else(|| panic!("no DEVICE in:\n{out}")).to_owned()
    };
    let (logged_in, restored) = (device(&read("login.out")), device(&read("restore.out")));
    assert_eq!(logged_in, restored, "the restart restored the session instead of logging in again");
    assert!(read("restore.out").contains("RESTORED=yes"));
    let secret = read("secret.json");
    assert!(secret.contains(&logged_in), "the session is in the keyring entry onair/matrix-session");
    assert!(!secret.contains(PASSWORD), "the password is never stored");
    std::fs::remove_dir_all(&home).ok();
}

/// One process's part of the test above (inside its D-Bus session); does nothing when run alone.
#[tokio::test]
#[ignore = "run by the_session_is_restored_from_a_real_secret_service inside its D-Bus session"]
async fn keyring_phase() {
    let Ok(phase) = std::env::var("ONAIR_KEYRING_PHASE") else { return };
    let config = MatrixConfig::new(
        std::env::var("ONAIR_KEYRING_BASE_URL").unwrap(),
        std::env::var("ONAIR_KEYRING_USER").unwrap(),
    );
    let chat = match phase.as_str() {
        "login" => {
            assert_eq!(Keyring.get(SESSION_ENTRY).unwrap(), None, "a fresh keyring");
            assert!(Chat::restore(config.clone(), &Keyring).await.unwrap().is_none());
            Chat::login(config, PASSWORD, &Keyring).await.expect("login")
        }
        "restore" => {
            let chat = Chat::restore(config, &Keyring).await.expect("restore").expect("a saved session");
            println!("RESTORED=yes");
            chat
        }
        other => panic!("unknown phase {other}"),
    };
    // The session works: an authenticated call succeeds.
    chat.ensure_room("keyring").await.expect("ensure_room with the session");
    println!("DEVICE={}", chat.device_id());
}
