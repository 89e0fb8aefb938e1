//! The desktop window's UI (issue 5): `ui/app.html` built as src-tauri embeds it, in headless
//! Chromium (tests/browser/app.mjs) against a real engine with Matrix chat on a real Synapse and a
//! real ffmpeg publisher. Tauri's `invoke` and events come from the script's shim over the
//! engine's loopback control API (the commands of src-tauri/src/commands.rs mirror it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use onair_engine::Config;
use onair_synapse::{PASSWORD, Raw, synapse};
use onair_tests::*;
use serde_json::{Value, json};

/// `ui/` built into a fresh folder (`npm run build` with `ONAIR_UI_OUT`, as src-tauri/build.rs).
fn build_ui() -> PathBuf {
    let node = require_tool("npm");
    let ui = repo_root().join("ui");
    if !ui.join("node_modules/.package-lock.json").exists() {
        let st = std::process::Command::new(&node).args(["ci", "--no-audit", "--no-fund"]).current_dir(&ui).status();
        assert!(st.is_ok_and(|s| s.success()), "npm ci in ui/ failed");
    }
    let out = fresh_dir("desktop-ui-dist");
    let res = std::process::Command::new(node)
        .args(["run", "build"])
        .current_dir(&ui)
        .env("ONAIR_UI_OUT", &out)
        .output()
        .expect("npm runs");
    assert!(
        res.status.success(),
        "the UI build failed:\n{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(out.join("app.html").is_file(), "the UI build has no app.html");
    out
}

/// `tests/browser/app.mjs`, driven one JSON command at a time.
struct Window(BrowserSession);

impl std::ops::Deref for Window {
    type Target = BrowserSession;
    fn deref(&self) -> &BrowserSession {
        &self.0
    }
}

impl std::ops::DerefMut for Window {
    fn deref_mut(&mut self) -> &mut BrowserSession {
        &mut self.0
    }
}

impl Window {
    async fn launch(dist: &Path, server: &TestServer, obs_server: &str, obs_key: &str) -> Window {
        let ep = server.control_endpoint();
        let dist = dist.to_str().expect("a UTF-8 path");
        let args = [
            "--dist",
            dist,
            "--control",
            &ep.url,
            "--token",
            &ep.token,
            "--obs-server",
            obs_server,
            "--obs-key",
            obs_key,
        ];
        Window(BrowserSession::launch("app.mjs", &args).await)
    }

    async fn click(&mut self, selector: &str) {
        self.ok(json!({"op": "click", "selector": selector})).await;
    }

    async fn close(self) {
        self.0.close().await;
    }
}

/// The room's newest `m.room.message` bodies, oldest first.
async fn room_texts(reader: &Raw, room_id: &str) -> Vec<String> {
    let (status, events) = reader.messages(room_id).await;
    assert_eq!(status, 200);
    let mut out: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect();
    out.reverse();
    out
}

/// The walkthrough's step states, in order.
async fn steps(w: &mut Window) -> Vec<String> {
    let v = w.until("[...document.querySelectorAll('#steps-list li')].map((li) => li.dataset.state)", 10_000).await;
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

async fn wait_armed(server: &TestServer, stream: &str, armed: bool) {
    let start = Instant::now();
    while server.control().is_armed(stream) != armed {
        assert!(start.elapsed() < Duration::from_secs(10), "the engine's Go live state never became {armed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_previews_chats_edits_the_title_shows_health_and_goes_live() {
    init_logs();
    let hs = synapse();
    let user = hs.new_user("deskstreamer");
    let stream = "deskshow";
    let mut config = Config { default_stream: stream.into(), require_go_live: true, ..Default::default() };
    config.matrix.homeserver = hs.base_url.clone();
    config.matrix.user = hs.user_id(&user);
    let server = TestServer::start_matrix(config, PASSWORD).await;
    let room = wait_for("the stream's Matrix room", Duration::from_secs(30), || async {
        let st = get(&server.url(&format!("/api/streams/{stream}"))).await.unwrap().json();
        st["chat"]["room_id"].as_str().map(str::to_owned)
    })
    .await;
    let dist = tokio::task::spawn_blocking(build_ui).await.unwrap();

    let signed = server.signed_url(stream);
    let (obs_server, obs_key) = signed.split_once("/live/").map(|(s, k)| (format!("{s}/live"), k.to_owned())).unwrap();
    let mut w = Window::launch(&dist, &server, &obs_server, &obs_key).await;
    let st = w.ok(json!({"op": "open", "timeout": 30_000})).await["state"].clone();
    assert_eq!(st["badge"], "OFFLINE", "{st}");
    assert_eq!(st["liveButton"], "Go live", "{st}");
    // The viewer link names the LAN address (no public host configured).
    assert!(st["viewerUrl"].as_str().unwrap().ends_with(&format!(":{}/{stream}", server.http().port())), "{st}");
    assert_eq!(st["obs"]["server"], obs_server, "{st}");
    // First start: the walkthrough shows its four steps, setting up OBS first.
    assert_eq!(steps(&mut w).await, ["current", "todo", "todo", "todo"]);
    // The reach panel says who can watch (the test engine opens no router ports).
    let reach = w.until("document.getElementById('reach-headline').textContent", 10_000).await;
    assert!(!reach.as_str().unwrap().is_empty(), "{reach}");
    // The preview's first probe answers "offline" (it says "loading" until then).
    w.until("document.getElementById('player').dataset.state === 'offline'", 15_000).await;
    // Matrix is connected: the chat is open for writing.
    w.until("document.getElementById('matrix-state').textContent === 'connected'", 20_000).await;
    w.until("document.querySelector('.chat-input') && !document.querySelector('.chat-input').disabled", 10_000).await;

    // OBS knocking before Go live is refused, and the window says what to do.
    let mut early = Publisher::start(&signed, &Source::small());
    assert_eq!(early.wait(Duration::from_secs(20)).await, Some(false), "refused before Go live");
    let knock = w
        .until("!document.getElementById('knock').hidden && document.getElementById('knock').textContent", 10_000)
        .await;
    assert!(knock.as_str().unwrap().contains("press Go live"), "{knock}");
    assert_eq!(w.state().await["badge"], "OBS CONNECTED");
    // OBS streams (knocks): OBS is set up and streaming, Go live is next.
    assert_eq!(steps(&mut w).await, ["done", "done", "current", "todo"]);
    early.stop().await;

    // Go live from the window: the engine accepts publishes for the stream.
    w.click("#live-toggle").await;
    wait_armed(&server, stream, true).await;
    w.until("document.getElementById('live-toggle').textContent === 'End stream'", 10_000).await;
    let st = w.state().await;
    assert_eq!(st["badge"], "WAITING FOR OBS", "{st}");

    // A real publisher: the preview plays, the health panel fills in.
    let mut publisher = Publisher::start(&signed, &Source::small());
    wait_live(&server, stream, Duration::from_secs(20)).await;
    let played = w.ok(json!({"op": "waitPlaying", "minAdvance": 2, "timeout": 45_000})).await;
    println!("preview: {played}");
    let transport = played["transport"].as_str().unwrap_or_default().to_owned();
    assert!(["webrtc", "llhls"].contains(&transport.as_str()), "{played}");
    assert_eq!(played["video"]["w"], 320, "{played}");
    w.until("document.body.dataset.tray === 'live'", 15_000).await;
    // Live: only sharing the link is left; copying it finishes the walkthrough.
    w.until("document.querySelector('#steps-list li[data-step=\"live\"]').dataset.state === 'done'", 10_000).await;
    assert_eq!(steps(&mut w).await, ["done", "done", "done", "current"]);
    w.click("button[data-copy=\"viewer-url\"]").await;
    w.until("document.querySelector('#steps-list li[data-step=\"share\"]').dataset.state === 'done'", 10_000).await;
    assert_eq!(
        w.until("JSON.parse(localStorage.getItem('onair.steps')).finished", 5_000).await,
        true,
        "a later start shows no walkthrough"
    );
    // The preview is a viewer: the count includes it.
    let health = w
        .until(
            "(() => { const t = (id) => document.getElementById(id).textContent; \
             return t('h-bitrate') !== '–' && t('h-fps') !== '–' && /^[1-9]/.test(t('h-viewers')) \
             && { bitrate: t('h-bitrate'), fps: t('h-fps'), viewers: t('h-viewers'), res: t('h-res'), keyint: t('h-keyint') }; })()",
            30_000,
        )
        .await;
    println!("health: {health}");
    let fps: f64 = health["fps"].as_str().unwrap().trim_end_matches(" fps").parse().unwrap();
    assert!((fps - 30.0).abs() < 2.0, "{health}");
    assert_eq!(health["res"], "320×180", "{health}");
    assert!(health["bitrate"].as_str().unwrap().ends_with("b/s"), "{health}");
    // "N (WebRTC W · HLS H)": the preview counts as a viewer of its transport.
    let viewers = health["viewers"].as_str().unwrap();
    let count = |label: &str| -> u64 {
        let after = viewers.split(label).nth(1).unwrap_or_else(|| panic!("no {label} count: {health}"));
        after.trim().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let mine = if transport == "webrtc" { count("WebRTC ") } else { count("HLS ") };
    assert!(mine >= 1, "the preview counts as a {transport} viewer: {health}");
    let st = w.state().await;
    assert_eq!(st["badge"], "LIVE", "{st}");
    assert_eq!(
        w.until("document.getElementById('knock').hidden", 5_000).await,
        true,
        "the knock notice is gone once live"
    );
    assert_eq!(st["health"]["bframesWarning"], false, "{st}");

    // Chat: a message from another Matrix user shows; one sent from the window reaches the room.
    let bob = Raw::login(&hs.base_url, &hs.new_user("deskbob"), PASSWORD).await;
    bob.join(&room).await;
    bob.send_text(&room, "hello from Matrix").await;
    w.until(
        "[...document.querySelectorAll('.chat-msg .chat-text')].some((e) => e.textContent === 'hello from Matrix')",
        15_000,
    )
    .await;
    w.ok(json!({"op": "submit", "selector": ".chat-input", "text": "hello from the window"})).await;
    wait_for("the window's message in the room", Duration::from_secs(15), || async {
        room_texts(&bob, &room).await.iter().any(|t| t == "hello from the window").then_some(())
    })
    .await;
    // It shows in the window too (the engine's sync reports the streamer's own messages).
    w.until(
        "[...document.querySelectorAll('.chat-msg .chat-text')].some((e) => e.textContent === 'hello from the window')",
        15_000,
    )
    .await;

    // The title editor sets the room's name.
    w.ok(json!({"op": "fill", "selector": "#title-input", "text": "Desk show: the pilot"})).await;
    w.click("#title-save").await;
    wait_for("the room name", Duration::from_secs(15), || async {
        let (status, name) = bob.state(&room, "m.room.name").await;
        (status == 200 && name["name"] == "Desk show: the pilot").then_some(())
    })
    .await;
    w.until("document.title === 'OnAir — Desk show: the pilot'", 10_000).await;

    // OBS: the one-click setup is refused by the shim (no OBS here): the window says so and offers
    // the fallbacks; "Copy server and key" puts both on the clipboard.
    w.click("#obs-apply").await;
    let head = w
        .until(
            "document.getElementById('obs-result').dataset.outcome === 'error' && document.getElementById('obs-result').textContent",
            10_000,
        )
        .await;
    assert!(head.as_str().unwrap().contains("Copy server and key"), "{head}");
    w.click("#obs-copy-all").await;
    let st = w.state().await;
    let clip = st["clipboard"].as_array().and_then(|c| c.last()).and_then(Value::as_str).unwrap_or_default();
    assert!(clip.contains(&format!("Server: {obs_server}")) && clip.contains(&obs_key), "{st}");
    assert!(st["obs"]["result"]["items"].to_string().contains("Start Streaming"), "{st}");

    w.ok(json!({"op": "screenshot", "path": artifacts_dir().join("app.png"), "fullPage": true})).await;

    // End stream from the window: the engine disarms and disconnects the publisher.
    w.click("#live-toggle").await;
    wait_armed(&server, stream, false).await;
    let exited = publisher.wait(Duration::from_secs(15)).await;
    assert!(exited.is_some(), "the publisher is still connected after End stream");
    w.until("document.getElementById('state-badge').textContent === 'OFFLINE'", 15_000).await;
    let st = w.state().await;
    assert_eq!(st["liveButton"], "Go live", "{st}");
    assert_eq!(st["pageErrors"], json!([]), "{st}");
    assert_eq!(st["cspViolations"], json!([]), "the app's Content-Security-Policy blocked something: {st}");
    for cmd in ["app_info", "status", "go_live", "end_stream", "set_title", "send_chat", "settings_get"] {
        assert!(st["invoked"].as_array().unwrap().iter().any(|c| c == cmd), "{cmd} was not invoked: {st}");
    }
    w.close().await;
    publisher.stop().await;
    server.shutdown().await;
    std::fs::remove_dir_all(dist).ok();
}

/// The window's Restream panel against a real engine (no Matrix needed): a destination added in
/// the form is listed with its state, its key goes to the engine's secret store and never back
/// to the page, Disable and Remove act on the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_adds_disables_and_removes_a_restream_destination() {
    let dist = build_ui();
    let server = TestServer::start().await;
    let mut w = Window::launch(&dist, &server, "rtmp://127.0.0.1:1935/live", "stream?policy=x").await;
    w.ok(json!({"op": "open", "timeout": 30_000})).await;
    w.ok(json!({"op": "fill", "selector": "#restream-form [name=name]", "text": "twitch"})).await;
    w.ok(json!({"op": "fill", "selector": "#restream-form [name=url]", "text": "rtmp://127.0.0.1:9/app"})).await;
    w.ok(json!({"op": "fill", "selector": "#restream-form [name=key]", "text": "ui-Key-42f1"})).await;
    w.click("#restream-form button[type=submit]").await;
    let line = w
        .until(
            "[...document.querySelectorAll('#restream-list li')].map((li) => li.textContent).join('|').includes('twitch') && document.querySelector('#restream-list li').textContent",
            10_000,
        )
        .await;
    assert!(line.as_str().unwrap().contains("twitch → rtmp://127.0.0.1:9/app: starts with the broadcast"), "{line}");
    let list = server.control().restream().status("stream");
    assert_eq!((list.len(), list[0].name.as_str(), list[0].enabled), (1, "twitch", true));
    w.click("#restream-list li button:has-text('Disable')").await;
    w.until("document.querySelector('#restream-list li')?.dataset.state === 'disabled'", 10_000).await;
    assert!(!server.control().restream().status("stream")[0].enabled);
    w.click("#restream-list li button:has-text('Remove')").await;
    w.until("document.querySelectorAll('#restream-list li').length === 0", 10_000).await;
    assert!(server.control().restream().status("stream").is_empty());
    let st = w.state().await;
    assert!(!st.to_string().contains("ui-Key-42f1"), "the key came back to the page: {st}");
    assert_eq!(st["pageErrors"], json!([]), "{st}");
    w.close().await;
    server.shutdown().await;
}
