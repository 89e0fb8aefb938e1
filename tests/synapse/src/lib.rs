//! Test support shared by OnAir's Matrix tests: one real Synapse per test binary
//! (tests/matrix/synapse.sh, installed into a venv when missing), plus a bare client-server API
//! client standing in for other Matrix apps, guests and the viewer page.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Synapse {
    pub base_url: String,
    pub server_name: String,
    pub dir: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../matrix/synapse.sh")
}

fn run_script(args: &[&str]) -> String {
    run(Command::new("bash").arg(script()).args(args), args)
}

fn run(cmd: &mut Command, args: &[&str]) -> String {
    let out = cmd.output().expect("run tests/matrix/synapse.sh");
    assert!(
        out.status.success(),
        "synapse.sh {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in synapse.sh output:\n{out}"))
        .to_owned()
}

/// The Synapse of this test binary, started on first use. It stops when the binary exits (the
/// script's watchdog follows our pid: test binaries have no teardown hook).
pub fn synapse() -> &'static Synapse {
    static SYNAPSE: OnceLock<Synapse> = OnceLock::new();
    SYNAPSE.get_or_init(|| Synapse::start("", false))
}

/// A Synapse of one test alone, to stop and resume (or configured differently: `no_guests`
/// refuses guest accounts). Like [`synapse`], it stops when the test binary exits.
pub fn own_synapse(tag: &str, no_guests: bool) -> Synapse {
    Synapse::start(tag, no_guests)
}

impl Synapse {
    fn start(tag: &str, no_guests: bool) -> Synapse {
        let pid = std::process::id().to_string();
        let dir =
            std::env::temp_dir().join(format!("onair-synapse-{pid}{}{tag}", if tag.is_empty() { "" } else { "-" }));
        let args = ["start", dir.to_str().expect("utf-8 path"), &pid];
        let mut cmd = Command::new("bash");
        cmd.arg(script()).args(args);
        if no_guests {
            cmd.env("ONAIR_SYNAPSE_NO_GUESTS", "1");
        }
        let started = Instant::now();
        let out = run(&mut cmd, &args);
        eprintln!("Synapse ready in {:.1} s at {}", started.elapsed().as_secs_f64(), field(&out, "BASE_URL"));
        Synapse {
            base_url: field(&out, "BASE_URL"),
            server_name: field(&out, "SERVER_NAME"),
            dir: PathBuf::from(field(&out, "DIR")),
        }
    }
}

impl Synapse {
    /// Registers a fresh user (through the shared-secret admin API) with [`PASSWORD`]; returns
    /// its localpart.
    pub fn new_user(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed));
        let out = run_script(&["register", self.dir.to_str().expect("utf-8"), &name, PASSWORD]);
        assert_eq!(field(&out, "USER_ID"), format!("@{name}:{}", self.server_name));
        name
    }

    pub fn user_id(&self, name: &str) -> String {
        format!("@{name}:{}", self.server_name)
    }

    pub fn stop(&self) {
        run_script(&["stop", self.dir.to_str().expect("utf-8")]);
    }

    pub fn resume(&self) {
        run_script(&["resume", self.dir.to_str().expect("utf-8")]);
    }
}

/// Percent-encodes a path segment (room ids and aliases carry `!`, `#` and `:`).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A bare client-server API client: another Matrix app, a guest, the viewer page.
pub struct Raw {
    http: reqwest::Client,
    base: String,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
}

impl Raw {
    pub fn anonymous(base: &str) -> Raw {
        Raw {
            http: reqwest::Client::new(),
            base: base.into(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
        }
    }

    pub async fn login(base: &str, user: &str, password: &str) -> Raw {
        let mut raw = Raw::anonymous(base);
        let (status, body) = raw
            .call(
                "POST",
                "/_matrix/client/v3/login",
                Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})),
            )
            .await;
        assert_eq!(status, 200, "login {user}: {body}");
        raw.adopt(&body);
        raw
    }

    /// Uses the access token of a session [`onair_matrix::Chat`] saved in its store.
    pub fn restored(base: &str, saved_session: &str) -> Raw {
        let saved: Value = serde_json::from_str(saved_session).expect("session JSON");
        let mut raw = Raw::anonymous(base);
        raw.adopt(&saved["session"]);
        raw
    }

    /// A guest account, as the viewer page gets one.
    pub async fn guest(base: &str) -> Raw {
        let mut raw = Raw::anonymous(base);
        let (status, body) = raw.call("POST", "/_matrix/client/v3/register?kind=guest", Some(json!({}))).await;
        assert_eq!(status, 200, "guest registration: {body}");
        raw.adopt(&body);
        raw
    }

    fn adopt(&mut self, body: &Value) {
        self.token = Some(body["access_token"].as_str().expect("access_token").into());
        self.user_id = body["user_id"].as_str().expect("user_id").into();
        self.device_id = body["device_id"].as_str().unwrap_or_default().into();
    }

    /// One request; answers (status, JSON body). Waits out rate limiting.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        loop {
            let url = format!("{}{path}", self.base);
            let mut req = self.http.request(method.parse().expect("method"), &url);
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = &body {
                req = req.json(body);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = resp.status().as_u16();
            let json: Value = resp.json().await.unwrap_or(Value::Null);
            if status == 429 {
                let ms = json["retry_after_ms"].as_u64().unwrap_or(200);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                continue;
            }
            return (status, json);
        }
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, json) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path} → {status} {json}");
        json
    }

    pub async fn state(&self, room_id: &str, event_type: &str) -> (u16, Value) {
        self.call("GET", &format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(room_id)), None).await
    }

    pub async fn join(&self, room_or_alias: &str) -> String {
        let body = self.ok("POST", &format!("/_matrix/client/v3/join/{}", enc(room_or_alias)), Some(json!({}))).await;
        body["room_id"].as_str().expect("room_id").into()
    }

    pub async fn set_displayname(&self, name: &str) {
        self.ok(
            "PUT",
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&self.user_id)),
            Some(json!({"displayname": name})),
        )
        .await;
    }

    pub async fn send_text(&self, room_id: &str, body: &str) -> String {
        static TXN: AtomicU32 = AtomicU32::new(0);
        let txn = format!("t{}-{}", std::process::id(), TXN.fetch_add(1, Ordering::Relaxed));
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room_id));
        let out = self.ok("PUT", &path, Some(json!({"msgtype": "m.text", "body": body}))).await;
        out["event_id"].as_str().expect("event_id").into()
    }

    /// A room with what guests need: public, in the directory, world-readable history, guest
    /// access `can_join`; named `name`, aliased `#<alias_localpart>:<server>`. Answers its id.
    pub async fn create_room(&self, alias_localpart: &str, name: &str) -> String {
        let body = self
            .ok(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(json!({
                    "preset": "public_chat",
                    "visibility": "public",
                    "room_alias_name": alias_localpart,
                    "name": name,
                    "initial_state": [
                        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}},
                        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}},
                    ],
                })),
            )
            .await;
        body["room_id"].as_str().expect("room_id").to_owned()
    }

    /// The room's name (empty when it has none).
    pub async fn room_name(&self, room_id: &str) -> String {
        let (_, state) = self.state(room_id, "m.room.name").await;
        state["name"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn set_name(&self, room_id: &str, name: &str) {
        let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(room_id));
        self.ok("PUT", &path, Some(json!({"name": name}))).await;
    }

    /// The newest events of a room, newest first (works unjoined in a world-readable room).
    pub async fn messages(&self, room_id: &str) -> (u16, Vec<Value>) {
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room_id));
        let (status, body) = self.call("GET", &path, None).await;
        (status, body["chunk"].as_array().cloned().unwrap_or_default())
    }

    pub async fn event(&self, room_id: &str, event_id: &str) -> Value {
        self.ok("GET", &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room_id), enc(event_id)), None).await
    }
}
