//! The real app under Xvfb, in a private D-Bus session with an unlocked GNOME Keyring and a
//! notification daemon (dunst): it starts, generates its signing key in the keyring, its engine
//! answers `/healthz`, the window is drawn (screenshot saved as an artifact), a second launch only
//! brings the first forward, and SIGTERM stops the engine and exits 0.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_onair-desktop");

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_and_tcp() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_owned()
}

/// Where screenshots go: `<target>/desktop-artifacts/` (kept after the test).
fn artifacts_dir() -> PathBuf {
    let exe = PathBuf::from(BIN);
    let target = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let d = target.join("desktop-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn app_starts_under_xvfb_serves_and_exits_cleanly_on_sigterm() {
    for tool in ["xvfb-run", "Xvfb", "xauth", "dbus-run-session", "gnome-keyring-daemon", "dunst", "import", "kill"] {
        onair_tests::require_tool(tool);
    }
    let home = std::env::temp_dir().join(format!("onair-desktop-launch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let http = free_tcp();
    let rtmp = free_tcp();
    let media = free_udp_and_tcp();

    // Inside Xvfb and a fresh session bus: unlock (creating) a login keyring with a throwaway
    // password, start the Secret Service and a notification daemon, then become the app.
    let script = format!(
        r#"
        set -e
        echo "$DISPLAY" > "$HOME/display"
        echo "$XAUTHORITY" > "$HOME/xauthority"
        echo "$DBUS_SESSION_BUS_ADDRESS" > "$HOME/bus"
        {}
        dunst > "$HOME/dunst.log" 2>&1 &
        echo $$ > "$HOME/app.pid"
        exec "$BIN" > "$HOME/app.log" 2>&1
    "#,
        onair_tests::keyring::START_SECRET_SERVICE
    );
    let mut session = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1280x900x24", "dbus-run-session", "--", "sh", "-c", &script])
        .env("BIN", BIN)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_RUNTIME_DIR", &home)
        .env("ONAIR_HTTP", format!("127.0.0.1:{http}"))
        .env("ONAIR_RTMP", format!("127.0.0.1:{rtmp}"))
        .env("ONAIR_WEBRTC_UDP", format!("127.0.0.1:{media}"))
        .env("ONAIR_WEBRTC_TCP", format!("127.0.0.1:{media}"))
        // WebKitGTK draws nothing on Xvfb's framebuffer with GPU compositing.
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("NO_AT_BRIDGE", "1")
        .env_remove("ONAIR_SIGNING_KEY")
        .env_remove("ONAIR_DATA_DIR")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .spawn()
        .expect("xvfb-run starts");
    let app_log = home.join("app.log");
    let started = Instant::now();

    let health = wait_for("the engine's /healthz", Duration::from_secs(60), || {
        if let Ok(Some(status)) = session.try_wait() {
            panic!("the app exited early ({status}):\n{}", read(&app_log));
        }
        http_get(http, "/healthz").filter(|r| r.starts_with("HTTP/1.1 200"))
    });
    assert!(health.ends_with("ok"), "{health}");
    println!("engine answered /healthz {:?} after launch", started.elapsed());
    let log = read(&app_log);
    assert!(log.contains("stream signing key from the OS keyring (generated now)"), "{log}");

    // The window is drawn: the screenshot has the UI's colours, not a blank framebuffer.
    let display = read(&home.join("display"));
    let xauthority = read(&home.join("xauthority"));
    let shot = artifacts_dir().join("desktop-window.png");
    let colours = wait_for("the window to be drawn", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_secs(1));
        let ok = Command::new("import")
            .args(["-window", "root"])
            .arg(&shot)
            .env("DISPLAY", &display)
            .env("XAUTHORITY", &xauthority)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let out = Command::new("identify").args(["-format", "%k"]).arg(&shot).output().ok()?;
        let colours: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (colours > 50).then_some(colours)
    });
    println!("screenshot of the window ({colours} colours): {}", shot.display());

    // A second launch hands over to the first (single instance) and exits.
    let mut second = Command::new(BIN)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_RUNTIME_DIR", &home)
        .env("DISPLAY", &display)
        .env("XAUTHORITY", &xauthority)
        .env("DBUS_SESSION_BUS_ADDRESS", read(&home.join("bus")))
        .env("ONAIR_SIGNING_KEY", "unused-the-first-instance-runs")
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let second_status = wait_for("the second instance to exit", Duration::from_secs(30), || second.try_wait().unwrap());
    assert!(second_status.success(), "second instance: {second_status}");
    assert!(http_get(http, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")), "the first instance still runs");

    // SIGTERM: the engine stops cleanly and the app exits 0.
    let pid = read(&home.join("app.pid"));
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_for("the app to exit after SIGTERM", Duration::from_secs(20), || session.try_wait().unwrap());
    let log = read(&app_log);
    assert!(status.success(), "exit status {status} after SIGTERM:\n{log}");
    assert!(log.contains("SIGTERM") && log.contains("engine stopped"), "{log}");
    assert!(http_get(http, "/healthz").is_none(), "the engine still answers after exit");
    std::fs::remove_dir_all(&home).ok();
}
