//! Harness for OnAir's end-to-end tests: an in-process engine on loopback, real `ffmpeg` publishers,
//! `ffprobe`, headless Chromium (through `tests/browser/play.mjs`), a tiny HTTP client and a log
//! capture. Every external tool is required: a missing tool fails the test with the fix, never
//! skips it (`scripts/test.sh` installs them all).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use onair_engine::control_api::ControlEndpoint;
use onair_engine::{Config, Control, Engine, Secrets, SigningKey};
use onair_policy::Policy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The signing secret every test engine uses.
pub const SECRET: &str = "onair-e2e-secret-Do-Not-Log";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repo").to_path_buf()
}

/// Where tests leave screenshots and logs for humans.
pub fn artifacts_dir() -> PathBuf {
    let d = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&d).ok();
    d
}

/// Fails (never skips) when a tool the test needs is not installed.
pub fn require_tool(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(tool)).find(|p| p.is_file()));
    found.unwrap_or_else(|| {
        panic!("`{tool}` is not installed: run scripts/test.sh, which installs every tool the tests need")
    })
}

/// A new empty directory under the system temp dir, unique to this process and call.
pub fn fresh_dir(what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("onair-test-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a temp dir");
    d
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

// ---------- logs ----------

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct Tee;
impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.get_or_init(Default::default).lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a log subscriber (once per test binary) that keeps everything for [`logs`].
pub fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,onair_engine=debug"))
            .with_ansi(false)
            .with_writer(|| Tee)
            .try_init();
    });
}

/// Everything logged so far in this test binary.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.get_or_init(Default::default).lock().unwrap()).into_owned()
}

// ---------- engine ----------

/// An engine on loopback with ephemeral ports.
pub struct TestServer {
    pub engine: Engine,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        Self::start_with_secrets(config, SigningKey::new(SECRET).into()).await
    }

    /// With Matrix: `config.matrix.homeserver`/`user` set; the engine logs in with `password`
    /// (its session kept in memory).
    pub async fn start_matrix(config: Config, password: &str) -> TestServer {
        let mut secrets: Secrets = SigningKey::new(SECRET).into();
        secrets.matrix_password = Some(password.into());
        Self::start_with_secrets(config, secrets).await
    }

    /// Ephemeral loopback ports and a fresh data dir (unless the config names one).
    pub async fn start_with_secrets(mut config: Config, secrets: Secrets) -> TestServer {
        init_logs();
        config.http = "127.0.0.1:0".parse().unwrap();
        config.rtmp = "127.0.0.1:0".parse().unwrap();
        config.webrtc.udp = "127.0.0.1:0".parse().unwrap();
        config.webrtc.tcp = "127.0.0.1:0".parse().unwrap();
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = fresh_dir("data");
        }
        let engine = Engine::start(config, secrets).await.expect("engine starts");
        TestServer { engine }
    }

    /// Go live, titles, chat, events.
    pub fn control(&self) -> std::sync::Arc<Control> {
        self.engine.control()
    }

    /// The control API's endpoint (URL and token), as `onair` commands read it.
    pub fn control_endpoint(&self) -> ControlEndpoint {
        ControlEndpoint::read(&self.engine.config().data_dir()).expect("control.json")
    }

    pub fn http(&self) -> SocketAddr {
        self.engine.http_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http())
    }

    /// An unsigned publish URL.
    pub fn rtmp_base(&self, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{stream}", self.engine.rtmp_addr().port())
    }

    /// A publish URL signed with [`SECRET`] under `policy`.
    pub fn signed_url_with(&self, stream: &str, policy: &Policy) -> String {
        onair_policy::sign_url(SECRET.as_bytes(), &self.rtmp_base(stream), policy).unwrap()
    }

    /// A publish URL signed for the next hour.
    pub fn signed_url(&self, stream: &str) -> String {
        self.signed_url_with(stream, &Policy { url_expire: now_ms() + 3_600_000, ..Default::default() })
    }

    pub async fn shutdown(self) {
        self.engine.shutdown().await;
    }
}

// ---------- ffmpeg ----------

/// What a synthetic publisher sends.
#[derive(Debug, Clone)]
pub struct Source {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
    pub bframes: u32,
    /// x264 profile (`baseline`, `main`, `high`); None: what the preset gives.
    pub profile: Option<&'static str>,
    pub sample_rate: u32,
    /// Stop after this long (None: until killed).
    pub seconds: Option<f64>,
    /// Publish this file (`-re -c copy`) instead of generated media.
    pub file: Option<PathBuf>,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            width: 640,
            height: 360,
            fps: 30,
            gop: 30,
            bframes: 0,
            profile: None,
            sample_rate: 48_000,
            seconds: None,
            file: None,
        }
    }
}

impl Source {
    pub fn small() -> Self {
        Source { width: 320, height: 180, ..Default::default() }
    }
}

/// A running `ffmpeg` publisher; killed when dropped.
pub struct Publisher {
    pub child: Child,
    stderr_path: PathBuf,
}

impl Publisher {
    pub fn start(url: &str, src: &Source) -> Publisher {
        let ffmpeg = require_tool("ffmpeg");
        let mut cmd = Command::new(ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]);
        match &src.file {
            Some(file) => {
                cmd.arg("-i").arg(file).args(["-c", "copy"]);
            }
            None => {
                cmd.args(["-f", "lavfi", "-i"])
                    .arg(format!("testsrc2=size={}x{}:rate={}", src.width, src.height, src.fps))
                    .args(["-f", "lavfi", "-i"])
                    .arg(format!("sine=frequency=440:sample_rate={}", src.sample_rate))
                    // ultrafast only ever produces Constrained Baseline; a named profile needs the
                    // tools of that profile turned on.
                    .args(["-c:v", "libx264", "-preset", if src.profile.is_some() { "veryfast" } else { "ultrafast" }])
                    .args(["-pix_fmt", "yuv420p"])
                    .args(["-g", &src.gop.to_string(), "-keyint_min", &src.gop.to_string(), "-sc_threshold", "0"])
                    .args(["-bf", &src.bframes.to_string()])
                    .args(["-c:a", "aac", "-b:a", "96k", "-ar", &src.sample_rate.to_string()]);
                if src.bframes == 0 {
                    cmd.args(["-tune", "zerolatency"]);
                }
                if let Some(profile) = src.profile {
                    cmd.args(["-profile:v", profile]);
                }
            }
        }
        if let Some(s) = src.seconds {
            cmd.args(["-t", &s.to_string()]);
        }
        cmd.args(["-f", "flv", url]);
        let stderr_path =
            std::env::temp_dir().join(format!("onair-ffmpeg-{}-{}.log", std::process::id(), rand::random::<u32>()));
        let log = std::fs::File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).kill_on_drop(true);
        let child = cmd.spawn().expect("ffmpeg starts");
        Publisher { child, stderr_path }
    }

    /// What ffmpeg printed so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for ffmpeg to exit (up to `timeout`); returns whether it succeeded.
    pub async fn wait(&mut self, timeout: Duration) -> Option<bool> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => Some(status.success()),
            _ => None,
        }
    }

    /// Stops ffmpeg the way a user does (SIGINT: it unpublishes, so the stream ends at once),
    /// killing it if it has not exited within 5 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// Kills ffmpeg (SIGKILL): its connection drops without an unpublish, as when the network
    /// or the encoder's machine fails (the stream waits `publish_grace_s` for it to come back).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `ffprobe -show_streams` of a URL, as JSON.
pub async fn ffprobe(url: &str) -> Result<serde_json::Value> {
    ffprobe_with(url, &["-show_streams"]).await
}

/// The first stream of `codec_type` (`video`, `audio`) that `ffprobe` finds at `url`.
pub async fn probe_stream(url: &str, codec_type: &str) -> serde_json::Value {
    let probe = ffprobe(url).await.unwrap();
    probe["streams"]
        .as_array()
        .and_then(|streams| streams.iter().find(|s| s["codec_type"] == codec_type))
        .cloned()
        .unwrap_or_else(|| panic!("no {codec_type} stream at {url}: {probe}"))
}

/// Decodes `seconds` of a URL with ffmpeg; returns what it printed at `error` level.
pub async fn ffmpeg_decode(url: &str, seconds: f64) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs_f64(seconds * 4.0 + 30.0),
        Command::new(require_tool("ffmpeg"))
            .args(["-hide_banner", "-nostdin", "-v", "error", "-rw_timeout", "15000000", "-i", url])
            .args(["-t", &seconds.to_string(), "-f", "null", "-"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("ffmpeg decode timed out")??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("ffmpeg could not decode {url}: {stderr}");
    }
    Ok(stderr)
}

// ---------- browser ----------

/// Runs `tests/browser/play.mjs` (playwright-core + /usr/bin/chromium) on `url` with `args`.
pub async fn browser_play(url: &str, args: &[&str]) -> Result<serde_json::Value> {
    browser_script("play.mjs", url, args).await
}

/// Runs a script of `tests/browser/` on `url` with `args`; returns the JSON line it printed last.
pub async fn browser_script(script: &str, url: &str, args: &[&str]) -> Result<serde_json::Value> {
    require_tool("chromium");
    let node = require_tool("node");
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        bail!("tests/browser/node_modules is missing: run scripts/test.sh (it runs npm ci there)");
    }
    let out = Command::new(node).arg(dir.join(script)).arg(url).args(args).kill_on_drop(true).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{script} printed no JSON: {stdout} {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(v)
}

/// Runs `tests/browser/engines.mjs` on `url` in `engine` (`firefox`: Firefox ESR over WebDriver
/// BiDi; `webkit`: WebKitGTK's MiniBrowser through WebKitWebDriver under its own Xvfb) with
/// `args`; returns the JSON line it printed last. A missing browser fails, never skips.
pub async fn engine_play(engine: &str, url: &str, args: &[&str]) -> Result<serde_json::Value> {
    match engine {
        "firefox" => drop(require_tool("firefox-esr")),
        "webkit" => {
            require_tool("WebKitWebDriver");
            require_tool("Xvfb");
        }
        other => bail!("no browser engine {other}"),
    }
    let node = require_tool("node");
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/puppeteer-core").exists() {
        bail!("tests/browser/node_modules is missing puppeteer-core: run scripts/setup.sh --test");
    }
    let out = Command::new(node)
        .arg(dir.join("engines.mjs"))
        .arg(url)
        .args(["--engine", engine])
        .args(args)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line)
        .with_context(|| format!("engines.mjs printed no JSON: {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}

/// A `tests/browser/` script that keeps one browser open and takes JSON commands on stdin, one
/// per line, answering each with one JSON line (`{"ok": true, …}` or `{"ok": false, "reason"}`);
/// `{"op": "close"}` ends it. Used by chat.mjs and app.mjs.
pub struct BrowserSession {
    script: String,
    child: Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl BrowserSession {
    pub async fn launch<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> BrowserSession {
        require_tool("chromium");
        let node = require_tool("node");
        let dir = repo_root().join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").exists(),
            "tests/browser/node_modules is missing: run scripts/test.sh (it runs npm ci there)"
        );
        let mut child = Command::new(node)
            .arg(dir.join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let out = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().expect("piped")));
        BrowserSession { script: script.into(), child, stdin, out }
    }

    /// Sends one command; answers its JSON line (waits the command's `timeout` + 30 s at most).
    pub async fn call(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        let script = &self.script;
        let limit = Duration::from_millis(cmd["timeout"].as_u64().unwrap_or(20_000) + 30_000);
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap_or_else(|e| panic!("write to {script}: {e}"));
        let line = tokio::time::timeout(limit, self.out.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} did not answer {cmd} within {limit:?}"))
            .unwrap_or_else(|e| panic!("read {script}: {e}"))
            .unwrap_or_else(|| panic!("{script} exited before answering {cmd}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {line}"))
    }

    /// A command that must succeed.
    pub async fn ok(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        let v = self.call(cmd.clone()).await;
        assert_eq!(v["ok"], true, "{cmd}\n→ {v}");
        v
    }

    /// What the page shows (`{"op": "state"}`).
    pub async fn state(&mut self) -> serde_json::Value {
        self.ok(serde_json::json!({"op": "state"})).await["state"].clone()
    }

    /// Waits until the page expression is truthy; answers its value.
    pub async fn until(&mut self, js: &str, timeout_ms: u64) -> serde_json::Value {
        self.ok(serde_json::json!({"op": "until", "js": js, "timeout": timeout_ms})).await["value"].clone()
    }

    pub async fn close(mut self) {
        let _ = self.call(serde_json::json!({"op": "close"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

// ---------- HTTP ----------

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A minimal HTTP/1.1 GET (Connection: close) against our own server.
pub async fn get(url: &str) -> Result<HttpResponse> {
    request("GET", url).await
}

pub async fn request(method: &str, url: &str) -> Result<HttpResponse> {
    request_with(method, url, &[], b"").await
}

/// An HTTP/1.1 request with extra headers and a body.
pub async fn request_with(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<HttpResponse> {
    let rest = url.strip_prefix("http://").context("http:// URLs only")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).await?;
    // The server may answer (413) before reading a large body: a failed write is not an error.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.context("HTTP timeout")??;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).context("bad status line")?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol])?.split(';').next().unwrap().trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("short chunk")?);
        data = data.get(size + 2..).context("short chunk")?;
    }
}

/// Polls `check` every 100 ms until it returns Some, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}\n--- logs ---\n{}", logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Status of GET `url` (0 when the request itself failed).
pub async fn status_of(url: &str) -> u16 {
    get(url).await.map_or(0, |r| r.status)
}

/// Waits until the stream's plain playlist answers 200; returns how long it took.
pub async fn wait_live(server: &TestServer, stream: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    let url = server.url(&format!("/live/{stream}/playlist.m3u8"));
    wait_for(&format!("{stream} to go live"), timeout, || async { (status_of(&url).await == 200).then_some(()) }).await;
    start.elapsed()
}

pub mod keyring;
pub mod netns;
pub mod obs;
pub mod pebble;
pub mod wine;

// ---------- a scriptable RTMP publisher (for malformed media) ----------

pub mod rtmp_client {
    //! An RTMP publisher built on rml_rtmp's client session, to send exactly the tags a test wants.

    use anyhow::{Result, bail};
    use bytes::Bytes;
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
    };
    use rml_rtmp::time::RtmpTimestamp;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct RawPublisher {
        socket: TcpStream,
        session: ClientSession,
    }

    impl RawPublisher {
        /// Connects and publishes `stream_key` (with its `?policy=…&signature=…`) on app `live`.
        pub async fn connect(addr: std::net::SocketAddr, stream_key: &str) -> Result<RawPublisher> {
            let mut socket = TcpStream::connect(addr).await?;
            let mut hs = Handshake::new(PeerType::Client);
            socket.write_all(&hs.generate_outbound_p0_and_p1().map_err(|e| anyhow::anyhow!("{e:?}"))?).await?;
            let mut buf = vec![0u8; 65536];
            let leftover = loop {
                let n = socket.read(&mut buf).await?;
                if n == 0 {
                    bail!("closed during handshake");
                }
                match hs.process_bytes(&buf[..n]).map_err(|e| anyhow::anyhow!("{e:?}"))? {
                    HandshakeProcessResult::InProgress { response_bytes } => socket.write_all(&response_bytes).await?,
                    HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                        socket.write_all(&response_bytes).await?;
                        break remaining_bytes;
                    }
                }
            };
            let mut config = ClientSessionConfig::new();
            config.tc_url = Some(format!("rtmp://127.0.0.1:{}/live", addr.port()));
            let (session, initial) = ClientSession::new(config).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let mut p = RawPublisher { socket, session };
            p.send_all(initial).await?;
            let r = p.session.request_connection("live".into()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            p.send_all(vec![r]).await?;
            p.feed(&leftover).await?;
            p.until(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)).await?;
            let r = p
                .session
                .request_publishing(stream_key.into(), PublishRequestType::Live)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            p.send_all(vec![r]).await?;
            p.until(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)).await?;
            Ok(p)
        }

        async fn send_all(&mut self, results: Vec<ClientSessionResult>) -> Result<()> {
            for r in results {
                if let ClientSessionResult::OutboundResponse(packet) = r {
                    self.socket.write_all(&packet.bytes).await?;
                }
            }
            Ok(())
        }

        async fn feed(&mut self, bytes: &[u8]) -> Result<Vec<ClientSessionEvent>> {
            if bytes.is_empty() {
                return Ok(vec![]);
            }
            let results = self.session.handle_input(bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let mut events = vec![];
            let mut out = vec![];
            for r in results {
                match r {
                    ClientSessionResult::RaisedEvent(e) => events.push(e),
                    other => out.push(other),
                }
            }
            self.send_all(out).await?;
            Ok(events)
        }

        async fn until(&mut self, want: impl Fn(&ClientSessionEvent) -> bool) -> Result<()> {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = tokio::time::timeout(std::time::Duration::from_secs(10), self.socket.read(&mut buf)).await??;
                if n == 0 {
                    bail!("server closed the connection");
                }
                for e in self.feed(&buf[..n]).await? {
                    if want(&e) {
                        return Ok(());
                    }
                    if let ClientSessionEvent::ConnectionRequestRejected { description } = e {
                        bail!("rejected: {description}");
                    }
                }
            }
        }

        pub async fn video(&mut self, body: &[u8], ts: u32) -> Result<()> {
            let r = self
                .session
                .publish_video_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ts), false)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            self.send_all(vec![r]).await
        }

        pub async fn audio(&mut self, body: &[u8], ts: u32) -> Result<()> {
            let r = self
                .session
                .publish_audio_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ts), false)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            self.send_all(vec![r]).await
        }

        /// Raw bytes straight onto the chunk stream.
        pub async fn raw(&mut self, bytes: &[u8]) -> Result<()> {
            Ok(self.socket.write_all(bytes).await?)
        }
    }
}

/// Waits until the stream's plain playlist lists at least `n` complete segments (what ffmpeg's HLS
/// reader needs to find the streams; it ignores LL-HLS parts).
pub async fn wait_segments(server: &TestServer, stream: &str, n: usize) {
    let url = server.url(&format!("/live/{stream}/playlist.m3u8"));
    wait_for(&format!("{n} segments of {stream}"), Duration::from_secs(20), || async {
        let r = get(&url).await.ok()?;
        (r.status == 200 && r.text().lines().filter(|l| l.starts_with("#EXTINF")).count() >= n).then_some(())
    })
    .await;
}

/// Runs `ffprobe` with `args` on `url` and returns its JSON.
pub async fn ffprobe_with(url: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(require_tool("ffprobe"))
        .args(["-v", "error", "-rw_timeout", "15000000", "-of", "json"])
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await?;
    if !out.status.success() {
        bail!("ffprobe {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
