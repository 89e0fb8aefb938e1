//! `onair restream` against a running `onair serve`, with a real Secret Service (GNOME Keyring in
//! a private D-Bus session): the destination goes to the config file, its key to the keyring
//! (entry `restream/<stream>/<name>`) and nowhere else; `list` and `status` show it; `remove`
//! takes the key out of the keyring.

const BIN: &str = env!("CARGO_BIN_EXE_onair");
const KEY: &str = "cli-Key-8812ab";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn restream_destinations_are_saved_without_their_keys_which_go_to_the_keyring() {
    let home = std::env::temp_dir().join(format!("onair-restream-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "default_stream = \"show\"\nhttp = \"127.0.0.1:{}\"\nrtmp = \"127.0.0.1:{}\"\n\
         [webrtc]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\n[reach]\nport_mapping = false\nstun_servers = []\n",
        free_port(),
        free_port()
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let script = r#"
        "$BIN" serve --config "$HOME/config.toml" --data-dir "$HOME/data" > "$HOME/serve.out" 2> "$HOME/serve.err" &
        SERVE=$!
        trap 'kill -TERM $SERVE 2>/dev/null || true' EXIT
        for i in $(seq 200); do [ -f "$HOME/data/control.json" ] && break; sleep 0.1; done
        R="$BIN restream show --data-dir $HOME/data"
        printf '%s\n' "$KEY" | $R add dest rtmp://127.0.0.1:9/app --key-stdin > "$HOME/add.out" 2>&1
        $R list > "$HOME/list.out" 2>&1
        $R list --json > "$HOME/list.json" 2>&1
        $R disable dest > /dev/null
        "$BIN" status --data-dir "$HOME/data" > "$HOME/status.out" 2>&1
        secret-tool lookup service onair username restream/show/dest > "$HOME/secret.txt"
        cp "$HOME/config.toml" "$HOME/config.saved"
        $R add other rtmp://127.0.0.1:9/app > "$HOME/nokey.out" 2>&1 && echo "accepted" >> "$HOME/nokey.out" || true
        $R remove dest > /dev/null
        secret-tool lookup service onair username restream/show/dest > "$HOME/secret.after" 2>&1 || true
        kill -TERM $SERVE
        wait $SERVE || true
    "#;
    let status = onair_tests::keyring::session(&home, script).env("BIN", BIN).env("KEY", KEY).status().unwrap();
    let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap_or_default();
    assert!(status.success(), "{}{}{}", read("add.out"), read("serve.err"), read("list.out"));
    assert!(read("add.out").contains("restream destination dest saved"), "{}", read("add.out"));
    assert!(read("list.out").contains("dest → rtmp://127.0.0.1:9/app: idle"), "{}", read("list.out"));
    let list: serde_json::Value = serde_json::from_str(&read("list.json")).unwrap();
    assert_eq!(list[0]["name"], "dest");
    assert_eq!(list[0]["state"], "idle");
    assert!(read("status.out").contains("restream dest → rtmp://127.0.0.1:9/app: disabled"), "{}", read("status.out"));
    assert_eq!(read("secret.txt").trim(), KEY, "the key is in the keyring");
    let saved = read("config.saved");
    assert!(saved.contains("[[restream.destination]]") && saved.contains("name = \"dest\""), "{saved}");
    assert!(saved.contains("enabled = false") && saved.contains("default_stream = \"show\""), "{saved}");
    let nokey = read("nokey.out");
    assert!(nokey.contains("400") && nokey.contains("needs a stream key") && !nokey.contains("accepted"), "{nokey}");
    assert!(read("secret.after").trim().is_empty(), "remove takes the key out of the keyring");
    assert!(!read("config.toml").contains("name = \"dest\""), "removed from the config file");
    for f in ["serve.out", "serve.err", "add.out", "list.out", "list.json", "status.out", "config.saved", "config.toml"]
    {
        assert!(!read(f).contains(KEY), "the key is in {f}");
    }
    std::fs::remove_dir_all(&home).ok();
}
