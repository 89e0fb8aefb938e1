//! OnAir's Windows build, proven under a real Wine started by each test (issue 13): the cross-built
//! `onair.exe serve` keeps its signing key in Wine's Credential Manager across starts, takes a
//! signed publish from Linux `ffmpeg` and serves LL-HLS that `ffprobe` decodes and Chromium plays
//! over WHEP and LL-HLS; `onair.exe obs --write-profile` writes the same profile as Linux; the
//! NSIS installer installs and uninstalls silently; the desktop app's `.exe` carries its icon and
//! version. (Running the desktop app needs WebView2, which Wine cannot provide.)

use std::path::Path;
use std::time::Duration;

use onair_tests::wine::{Wine, win_path, windows_build};
use onair_tests::{Publisher, SECRET, Source, browser_play, fresh_dir, get, probe_stream, require_tool, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `onair.exe serve` under Wine on loopback ports, talking to nothing else (no port mapping, no
/// STUN), with the signing key from the Credential Manager.
struct WineServer {
    child: tokio::process::Child,
    log: std::path::PathBuf,
    http: u16,
}

impl WineServer {
    async fn start(wine: &Wine, exe: &Path, http: u16, rtmp: u16, udp: u16, log: &Path) -> WineServer {
        let (h, r, u) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{rtmp}"), format!("127.0.0.1:{udp}"));
        let envs = [
            ("ONAIR_HTTP", h.as_str()),
            ("ONAIR_RTMP", r.as_str()),
            ("ONAIR_WEBRTC_UDP", u.as_str()),
            ("ONAIR_WEBRTC_TCP", u.as_str()),
            ("ONAIR_REACH_PORT_MAPPING", "false"),
            ("ONAIR_REACH_STUN_SERVERS", ""),
            ("ONAIR_LOG", "info"),
        ];
        // The key must come from the Credential Manager, never from the environment.
        let out = std::fs::File::create(log).expect("create the log");
        let child = wine
            .command(exe)
            .arg("serve")
            .envs(envs)
            .env_remove("ONAIR_SIGNING_KEY")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("wine64 starts");
        let mut server = WineServer { child, log: log.to_path_buf(), http };
        let url = server.url("/healthz");
        let started = std::time::Instant::now();
        loop {
            if let Ok(r) = get(&url).await
                && r.status == 200
            {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("onair.exe serve exited ({status}): {}", server.log());
            }
            assert!(started.elapsed() < Duration::from_secs(90), "no /healthz within 90 s: {}", server.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The signed publish URL `onair.exe obs <stream> --json` prints (its key from the Credential
/// Manager).
async fn publish_url(wine: &Wine, exe: &Path, stream: &str, rtmp: u16) -> String {
    let out = wine
        .command(exe)
        .args(["obs", stream, "--host", "127.0.0.1", "--json"])
        .env("ONAIR_RTMP", format!("127.0.0.1:{rtmp}"))
        .env_remove("ONAIR_SIGNING_KEY")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "onair.exe obs failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["url"].as_str().unwrap().to_owned()
}

async fn wait_playlist(server: &WineServer, stream: &str) {
    let url = server.url(&format!("/live/{stream}/llhls.m3u8"));
    wait_for("the LL-HLS playlist of the Wine engine", Duration::from_secs(40), || {
        let url = url.clone();
        // Parts and two whole segments (ffprobe reads whole segments only).
        let ready = |t: String| t.contains("#EXT-X-PART:") && t.matches("#EXTINF:").count() >= 2;
        async move { get(&url).await.ok().filter(|r| r.status == 200 && ready(r.text())).map(|_| ()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_under_wine_keeps_its_key_and_streams_to_ffprobe_and_chromium() {
    let build = windows_build();
    let wine = Wine::new("serve");
    let exe = wine.stage(&build.dir.join("onair.exe"));
    let (http, rtmp, udp) = (free_tcp_port(), free_tcp_port(), free_udp_port());
    let logs = fresh_dir("wine-serve-logs");
    let stream = "wine";

    // First start: a key is generated into the Credential Manager; data in %APPDATA%\onair\data.
    let server = WineServer::start(&wine, &exe, http, rtmp, udp, &logs.join("first.log")).await;
    assert!(
        server.log().contains("stream signing key from the Windows Credential Manager (generated now)"),
        "{}",
        server.log()
    );
    assert!(server.log().contains("Windows Firewall asks once"), "the firewall note is printed: {}", server.log());
    let data = wine.appdata().join("onair/data");
    assert!(data.join("control.json").is_file(), "the data dir is %APPDATA%\\onair\\data: {}", server.log());
    let url = publish_url(&wine, &exe, stream, rtmp).await;
    assert!(url.starts_with(&format!("rtmp://127.0.0.1:{rtmp}/live/{stream}?policy=")), "{url} (RTMP port {rtmp})");

    // A signed publish from Linux ffmpeg, played back by ffprobe and by Chromium both ways.
    let publisher = Publisher::start(&url, &Source::small());
    wait_playlist(&server, stream).await;
    let video = probe_stream(&server.url(&format!("/live/{stream}/llhls.m3u8")), "video").await;
    assert_eq!(video["codec_name"], "h264", "{video}");
    assert_eq!(video["width"], 320, "{video}");
    let audio = probe_stream(&server.url(&format!("/live/{stream}/llhls.m3u8")), "audio").await;
    assert_eq!(audio["codec_name"], "aac", "{audio}");

    let played = browser_play(
        &server.url(&format!("/{stream}?transport=webrtc")),
        &["--expect-transport", "webrtc", "--expect-width", "320", "--timeout", "60000"],
    )
    .await
    .unwrap();
    assert_eq!(played["ok"], true, "WHEP from the Wine engine: {played}\n{}", server.log());
    assert_eq!(played["webrtc"]["connectionState"], "connected", "{played}");
    assert!(played["webrtc"]["framesDecodedDelta"].as_u64().unwrap_or(0) > 0, "{played}");
    assert!(played["webrtc"]["audioPacketsDelta"].as_u64().unwrap_or(0) > 0, "{played}");
    assert_eq!(played["webrtc"]["audioCodec"], "audio/opus", "{played}");

    let played = browser_play(
        &server.url(&format!("/{stream}?transport=hls")),
        &["--expect-transport", "llhls", "--expect-width", "320", "--timeout", "60000"],
    )
    .await
    .unwrap();
    assert_eq!(played["ok"], true, "LL-HLS from the Wine engine: {played}\n{}", server.log());
    publisher.stop().await;
    server.stop().await;

    // Second start: the same key, found again — the first start's publish URL still works.
    let server = WineServer::start(&wine, &exe, http, rtmp, udp, &logs.join("second.log")).await;
    let log = server.log();
    assert!(log.contains("stream signing key from the Windows Credential Manager"), "{log}");
    assert!(!log.contains("generated now"), "the second start generated another key: {log}");
    let publisher = Publisher::start(&url, &Source::small());
    wait_playlist(&server, stream).await;
    publisher.stop().await;
    server.stop().await;
    std::fs::remove_dir_all(&logs).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_write_profile_under_wine_reads_back_as_on_linux() {
    let build = windows_build();
    let wine = Wine::new("obs");
    let exe = wine.stage(&build.dir.join("onair.exe"));
    let dir = fresh_dir("wine-obs-profile");
    let args = ["obs", "show", "--host", "192.168.1.20", "--keyint", "2", "--write-profile"];
    let out =
        wine.command(&exe).args(args).arg(win_path(&dir)).env("ONAIR_SIGNING_KEY", SECRET).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let back = onair_obs::profile::read_profile(&dir).unwrap();
    let (server, key) = (back.server.clone().unwrap(), back.key.clone().unwrap());
    assert_eq!(server, "rtmp://192.168.1.20:1935/live");
    let now = onair_tests::now_ms();
    onair_policy::verify(SECRET.as_bytes(), &format!("{server}/{key}"), "127.0.0.1".parse().unwrap(), now)
        .expect("the Windows profile's key is signed with the secret");

    // The Linux writer, given the same server and key, writes the same bytes (line endings too)
    // and they read back equal.
    let linux = fresh_dir("linux-obs-profile");
    let mut target = onair_obs::ObsTarget::new(&server, &key);
    target.keyint_s = 2;
    let files = onair_obs::profile::profile_files(&target, &onair_obs::ProfileSpec::default());
    onair_obs::profile::write_profile(&linux, &files).unwrap();
    for f in ["basic.ini", "service.json", "streamEncoder.json"] {
        assert_eq!(
            std::fs::read_to_string(dir.join(f)).unwrap(),
            std::fs::read_to_string(linux.join(f)).unwrap(),
            "{f} differs between Windows and Linux"
        );
    }
    assert_eq!(back, onair_obs::profile::read_profile(&linux).unwrap());

    // Without a folder: OBS' own profile folder, %APPDATA%\obs-studio\basic\profiles\OnAir.
    let out = wine
        .command(&exe)
        .args(&args[..args.len() - 1])
        .arg("--write-profile")
        .env("ONAIR_SIGNING_KEY", SECRET)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let profile = wine.appdata().join("obs-studio/basic/profiles/OnAir");
    assert!(profile.join("basic.ini").is_file(), "{stdout}");
    assert!(stdout.contains("Profile → OnAir"), "{stdout}");
    let mut default = onair_obs::profile::read_profile(&profile).unwrap();
    default.key = back.key.clone();
    assert_eq!(default, back);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&linux).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installer_installs_silently_and_its_uninstaller_removes_everything() {
    let build = windows_build();
    let wine = Wine::new("installer");
    let out = wine.run(&build.installer, &["/S"], Duration::from_secs(120)).await;
    assert!(out.status.success(), "the installer failed: {}", String::from_utf8_lossy(&out.stderr));

    let dir = wine.local_appdata().join("Programs/OnAir");
    let files = [
        ("onair-desktop.exe", true),
        ("WebView2Loader.dll", true),
        ("onair.exe", true),
        ("onair.ico", false),
        ("uninstall.exe", false),
    ];
    for (f, built) in files {
        let installed = dir.join(f);
        assert!(installed.is_file(), "{} is not installed", installed.display());
        if built {
            let same = std::fs::read(&installed).unwrap() == std::fs::read(build.dir.join(f)).unwrap();
            assert!(same, "the installed {f} differs from the build");
        }
    }
    let shortcut = wine.appdata().join("Microsoft/Windows/Start Menu/Programs/OnAir/OnAir.lnk");
    assert!(shortcut.is_file(), "no Start-menu entry at {}", shortcut.display());
    let key = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\OnAir";
    assert_eq!(wine.reg_query(key, "DisplayName").as_deref(), Some("OnAir"));
    assert_eq!(wine.reg_query(key, "DisplayVersion").as_deref(), Some(VERSION));
    let uninstall = wine.reg_query(key, "UninstallString").expect("an uninstall entry");
    assert!(uninstall.contains(r"\Programs\OnAir\uninstall.exe"), "{uninstall}");
    assert_eq!(
        wine.reg_query(r"HKCU\Software\Classes\AppUserModelId\org.onair.desktop", "DisplayName").as_deref(),
        Some("OnAir")
    );

    // The installed headless binary runs (with the test-only Wine shim beside it for the moment).
    let shim = dir.join("bcryptprimitives.dll");
    std::fs::copy(&build.shim, &shim).unwrap();
    let out = wine.run(&dir.join("onair.exe"), &["--version"], Duration::from_secs(60)).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(VERSION), "{out:?}");
    std::fs::remove_file(&shim).unwrap();

    // The uninstaller (it copies itself to %TEMP% and runs from there): everything goes.
    let out = wine.run(&dir.join("uninstall.exe"), &["/S"], Duration::from_secs(120)).await;
    assert!(out.status.success(), "the uninstaller failed: {}", String::from_utf8_lossy(&out.stderr));
    wait_for("the uninstaller to finish", Duration::from_secs(60), || {
        let (dir, shortcut) = (dir.clone(), shortcut.clone());
        async move { (!dir.exists() && !shortcut.exists()).then_some(()) }
    })
    .await;
    assert!(!shortcut.parent().unwrap().exists(), "the Start-menu folder is left behind");
    assert_eq!(wine.reg_query(key, "DisplayName"), None, "the uninstall entry is left behind");
}

/// The resources of a Windows `.exe`, read with icoutils' `wrestool`.
fn resources(exe: &Path, kind: u16) -> Vec<u8> {
    let out = std::process::Command::new(require_tool("wrestool"))
        .args(["-x", "--raw", &format!("--type={kind}")])
        .arg(exe)
        .output()
        .unwrap();
    assert!(out.status.success(), "wrestool on {}: {}", exe.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The UTF-16 text of a version resource.
fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

#[test]
fn the_windows_exes_carry_their_icon_and_version() {
    let build = windows_build();
    // RT_GROUP_ICON (14) and RT_VERSION (16).
    for exe in [build.dir.join("onair-desktop.exe"), build.installer.clone()] {
        let icons = resources(&exe, 14);
        assert!(icons.len() >= 6 + 14, "{} has no icon", exe.display());
        let count = u16::from_le_bytes([icons[4], icons[5]]);
        assert!(count >= 1, "{} has an empty icon group", exe.display());
        let version = utf16(&resources(&exe, 16));
        assert!(version.contains("VS_VERSION_INFO"), "{}: {version}", exe.display());
        assert!(version.contains("ProductName") && version.contains("OnAir"), "{}: {version}", exe.display());
        assert!(version.contains(VERSION), "{} does not say version {VERSION}: {version}", exe.display());
    }
    // The desktop app's icon is the product icon: the same sizes as icons/icon.ico.
    let ico = std::fs::read(onair_tests::repo_root().join("icons/icon.ico")).unwrap();
    let group = resources(&build.dir.join("onair-desktop.exe"), 14);
    assert_eq!(group[4..6], ico[4..6], "the icon group has another number of images than icons/icon.ico");
}
