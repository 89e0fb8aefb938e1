//! The signing secret in a real Secret Service: GNOME Keyring in a private D-Bus session.

use std::path::PathBuf;

const BIN: &str = env!("CARGO_BIN_EXE_onair");

#[test]
fn signing_key_is_generated_once_and_kept_in_the_keyring() {
    let home = std::env::temp_dir().join(format!("onair-keyring-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let out = |name: &str| -> PathBuf { home.join(name) };
    // Run `onair obs` twice: the first run generates and stores the secret, the second reuses it.
    let script = r#"
        "$BIN" obs show --host h --json > "$HOME/first.json" 2> "$HOME/first.err"
        "$BIN" obs show --host h --json > "$HOME/second.json" 2> "$HOME/second.err"
        secret-tool lookup service onair username signing-key > "$HOME/secret.txt"
    "#;
    let status = onair_tests::keyring::session(&home, script).env("BIN", BIN).status().unwrap();
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
