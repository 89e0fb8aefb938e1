//! `onair title|chat|status` against a running `onair serve` logged in to a real Synapse, with the
//! Matrix session in a real Secret Service (GNOME Keyring on a private D-Bus session bus): the
//! password logs in once, a restart restores the session without logging in again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use onair_synapse::{PASSWORD, Raw, enc, synapse};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_onair");

/// A private session bus with an unlocked GNOME Keyring on it; both stop on drop.
struct Keyring {
    home: PathBuf,
    address: String,
    bus_pid: u32,
}

impl Keyring {
    fn start(home: &Path) -> Keyring {
        for tool in ["dbus-daemon", "gnome-keyring-daemon", "secret-tool"] {
            onair_tests::require_tool(tool);
        }
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .env("HOME", home)
            .output()
            .expect("dbus-daemon runs");
        assert!(out.status.success(), "dbus-daemon: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let address = lines.next().expect("bus address").to_owned();
        let bus_pid = lines.next().and_then(|p| p.trim().parse().ok()).expect("bus pid");
        let keyring = Keyring { home: home.to_owned(), address, bus_pid };
        let script = format!("set -e\n{}", onair_tests::keyring::START_SECRET_SERVICE);
        let status = keyring.command("sh").args(["-c", &script]).status().unwrap();
        assert!(status.success(), "gnome-keyring-daemon did not start");
        keyring
    }

    /// `program` in the keyring's session (its bus, HOME and XDG dirs).
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_RUNTIME_DIR", &self.home)
            .env_remove("ONAIR_MATRIX_PASSWORD")
            .env_remove("ONAIR_SIGNING_KEY");
        c
    }

    /// The Matrix session OnAir keeps in the keyring.
    fn session(&self) -> Option<Value> {
        let out = self
            .command("secret-tool")
            .args(["lookup", "service", "onair", "username", "matrix-session"])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        // gnome-keyring-daemon leaves with its bus.
        let _ = Command::new("kill").arg(self.bus_pid.to_string()).status();
    }
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn onair(keyring: &Keyring, data: &Path, args: &[&str]) -> std::process::Output {
    keyring.command(BIN).args(args).arg("--data-dir").arg(data).output().unwrap()
}

fn status(keyring: &Keyring, data: &Path) -> Option<Value> {
    let out = onair(keyring, data, &["status", "--json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn wait_connected(keyring: &Keyring, data: &Path, serve_log: &Path) -> Value {
    let start = Instant::now();
    loop {
        if let Some(v) = status(keyring, data)
            && v["matrix"]["state"] == "connected"
        {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "onair serve did not connect to Matrix; its log:\n{}",
            std::fs::read_to_string(serve_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn serve(keyring: &Keyring, data: &Path, log: &Path, env: &[(&str, &str)]) -> Serve {
    let _ = std::fs::remove_file(data.join("control.json"));
    let mut c = keyring.command(BIN);
    c.args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("ONAIR_RTMP", "127.0.0.1:0")
        .env("ONAIR_WEBRTC_UDP", "127.0.0.1:0")
        .env("ONAIR_WEBRTC_TCP", "127.0.0.1:0")
        .env("ONAIR_SIGNING_KEY", "cli-matrix-signing")
        .env("ONAIR_DEFAULT_STREAM", "clishow")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    Serve(c.spawn().expect("onair serve starts"))
}

#[tokio::test(flavor = "multi_thread")]
async fn title_chat_and_status_from_the_cli_with_the_session_in_the_keyring() {
    let hs = synapse();
    let user = hs.new_user("cli");
    let home = std::env::temp_dir().join(format!("onair-cli-matrix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let data = home.join("onair-data");
    let log = home.join("serve.log");
    let keyring = Keyring::start(&home);
    let matrix_env = [("ONAIR_MATRIX_HOMESERVER", hs.base_url.as_str()), ("ONAIR_MATRIX_USER", user.as_str())];

    // First start: the password from the environment logs in; the session goes to the keyring.
    let mut env = matrix_env.to_vec();
    env.push(("ONAIR_MATRIX_PASSWORD", PASSWORD));
    let first = serve(&keyring, &data, &log, &env);
    let v = wait_connected(&keyring, &data, &log);
    assert_eq!(v["matrix"]["user"], hs.user_id(&user));
    let session = keyring.session().expect("the Matrix session is in the keyring");
    let device = session["session"]["meta"]["device_id"].as_str().or(session["session"]["device_id"].as_str());
    let device = device.unwrap_or_else(|| panic!("a device id in {session}")).to_owned();

    // `onair title` sets the room name.
    let out = onair(&keyring, &data, &["title", "clishow", "Live from the CLI"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guest = Raw::guest(&hs.base_url).await;
    let alias = format!("#onair_clishow:{}", hs.server_name);
    let room = guest.ok("GET", &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), None).await;
    let room_id = room["room_id"].as_str().unwrap().to_owned();
    let (_, name) = guest.state(&room_id, "m.room.name").await;
    assert_eq!(name["name"], "Live from the CLI");

    // `onair chat` prints what others write, as it arrives.
    let mut follow = keyring
        .command(BIN)
        .args(["chat", "clishow", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    guest.set_displayname("Guest Gina").await;
    guest.join(&room_id).await;
    guest.send_text(&room_id, "hello from the browser").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("`onair chat` printed no message"));
        if line.contains("hello from the browser") {
            break line;
        }
    };
    assert!(line.contains("Guest Gina: hello from the browser"), "{line}");
    let _ = follow.kill();
    let _ = follow.wait();

    // `onair chat --send` writes as the streamer.
    let out = onair(&keyring, &data, &["chat", "clishow", "--send", "welcome, Gina"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, msgs) = guest.messages(&room_id).await;
    assert!(msgs.iter().any(|m| m["content"]["body"] == "welcome, Gina" && m["sender"] == hs.user_id(&user)));

    // Go live / End stream reach the engine; bad input gets the engine's reason.
    assert!(onair(&keyring, &data, &["go-live", "clishow"]).status.success());
    assert!(onair(&keyring, &data, &["end", "clishow"]).status.success());
    let out = onair(&keyring, &data, &["end", "no.such"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("400 Bad Request: invalid stream name"), "{out:?}");

    // `onair status` in words.
    let out = onair(&keyring, &data, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Chat (Matrix): connected") && text.contains("Live from the CLI"), "{text}");
    drop(first);

    // Restart without the password: the session comes back from the keyring, no new login.
    let second = serve(&keyring, &data, &log, &matrix_env);
    wait_connected(&keyring, &data, &log);
    let again = keyring.session().expect("still in the keyring");
    let again_device = again["session"]["meta"]["device_id"].as_str().or(again["session"]["device_id"].as_str());
    assert_eq!(again_device, Some(device.as_str()), "the same device: restored, not logged in again");
    drop(second);

    // The password is nowhere on disk or in the log; the control file is private.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(PASSWORD), "the password is in {}", path.display());
    }
    assert!(!std::fs::read_to_string(&log).unwrap().contains(PASSWORD), "the password is in the log");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("control.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(keyring);
    std::fs::remove_dir_all(&home).ok();
}

#[test]
fn commands_without_a_running_onair_say_so() {
    let dir = std::env::temp_dir().join(format!("onair-cli-none-{}", std::process::id()));
    let out = Command::new(BIN).args(["status", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running OnAir found") && err.contains("control.json"), "{err}");
}
