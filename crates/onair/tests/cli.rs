//! The `onair` binary itself: `obs` output, `serve` readiness and clean shutdown, and the keyring
//! message when no keyring is reachable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_onair");

fn healthz(addr: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn obs_prints_a_signed_key_that_verifies() {
    let out = Command::new(BIN)
        .args(["obs", "show", "--host", "203.0.113.7", "--expires", "2h", "--json"])
        .env("ONAIR_SIGNING_KEY", "cli-test-key")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["server"], "rtmp://203.0.113.7:1935/live");
    let key = v["stream_key"].as_str().unwrap();
    assert!(key.starts_with("show?policy=") && key.contains("&signature="), "{key}");
    let url = format!("{}/{}", v["server"].as_str().unwrap(), key);
    assert_eq!(url, v["url"].as_str().unwrap());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let policy = onair_policy::verify(b"cli-test-key", &url, "127.0.0.1".parse().unwrap(), now).unwrap();
    let left = policy.url_expire - now;
    assert!((7_000_000..=7_300_000).contains(&left), "expires in {left} ms");
    let all = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains("cli-test-key"), "the secret was printed");

    let text =
        Command::new(BIN).args(["obs", "show", "--host", "h:1940"]).env("ONAIR_SIGNING_KEY", "k").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Server:      rtmp://h:1940/live"), "{text}");
    assert!(text.contains("Stream Key:  show?policy="), "{text}");
}

#[test]
fn obs_host_takes_ipv6_and_names_a_bad_host() {
    let obs = |host: &str| {
        Command::new(BIN)
            .args(["obs", "show", "--host", host, "--json"])
            .env("ONAIR_SIGNING_KEY", "k")
            .output()
            .unwrap()
    };
    for (host, server) in [
        ("::1", "rtmp://[::1]:1935/live"),
        ("[::1]", "rtmp://[::1]:1935/live"),
        ("[2001:db8::1]:1940", "rtmp://[2001:db8::1]:1940/live"),
        ("tv.example.org", "rtmp://tv.example.org:1935/live"),
    ] {
        let out = obs(host);
        assert!(out.status.success(), "{host}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["server"], server, "{host}");
    }
    for (host, why) in [("rtmp://h", "not a URL"), ("2001:db8::1:1940x", "in brackets"), ("h:0", "port 0")] {
        let out = obs(host);
        assert!(!out.status.success(), "{host} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("{host:?} is not a host or host:port")) && stderr.contains(why), "{stderr}");
    }
}

#[test]
fn serve_answers_healthz_and_stops_cleanly_on_sigterm() {
    let http = format!("127.0.0.1:{}", free_port());
    let rtmp = format!("127.0.0.1:{}", free_port());
    let data = std::env::temp_dir().join(format!("onair-cli-{}", std::process::id()));
    let mut child = Command::new(BIN)
        .args(["serve", "--http", &http, "--data-dir", data.to_str().unwrap()])
        .env("ONAIR_RTMP", &rtmp)
        .env("ONAIR_SIGNING_KEY", "cli-serve-secret")
        .env("ONAIR_DEFAULT_STREAM", "mystream")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while healthz(&http) != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(20), "no /healthz on {http}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(data.is_dir(), "data dir created");
    // It printed where it listens and the OBS settings of the default stream.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains("Ctrl-C") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed += &line;
    }
    assert!(printed.contains(&format!("RTMP  {rtmp}")), "{printed}");
    assert!(printed.contains("/mystream"), "{printed}");
    assert!(printed.contains("Stream Key:  mystream?policy="), "{printed}");
    assert!(!printed.contains("cli-serve-secret"));

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "onair did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // Then who can watch: listening on loopback, only this machine (nothing asked of a router).
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("Reach: this network only (LAN)") && rest.contains("loopback only"), "{rest}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("engine stopped"), "{stderr}");
    assert!(!stderr.contains("cli-serve-secret"), "{stderr}");
    std::fs::remove_dir_all(&data).ok();
}

#[test]
fn serve_without_a_keyring_says_how_to_fix_it() {
    let out = Command::new(BIN)
        .args(["serve", "--http", "127.0.0.1:0", "--rtmp", "127.0.0.1:0"])
        .env_remove("ONAIR_SIGNING_KEY")
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/onair-test-bus")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no OS keyring is reachable"), "{stderr}");
    assert!(stderr.contains("ONAIR_SIGNING_KEY"), "{stderr}");
}
