//! Reach against a real router: `onair serve` in a "LAN" network namespace behind Debian's
//! `miniupnpd` (UPnP-IGD + NAT-PMP/PCP over nftables) in a "router" namespace, with a viewer and
//! coturn (as the STUN server) in an "internet" namespace (`onair_tests::netns`). Run as root.
//!
//! - Go live maps HTTP and the WebRTC UDP/ICE-TCP ports (seen by `upnpc -l` and in the router's
//!   nftables rules), the status says `reachable` with the router's WAN address, and a viewer on
//!   the internet side loads the viewer page, probes LL-HLS and plays WebRTC (headless Chromium,
//!   the router's address advertised as a candidate) through the mapped ports; End stream
//!   removes the mappings (the viewer is refused again), and so does stopping OnAir.
//! - A mapping is renewed at half its lease.
//! - With UPnP off in the router, PCP/NAT-PMP maps the same ports.
//! - A router that refuses gives `lan_only` with the exact ports to forward.
//! - A router whose WAN is in 100.64.0.0/10 (miniupnpd refuses to map then) and a STUN server
//!   that sees that address give `cgnat`.
//!
//! The tests live here (not in tests/tests) because they run the real `onair` binary, which
//! Cargo builds for this package's tests only (`CARGO_BIN_EXE_onair`).

use std::time::Duration;

use onair_tests::netns::{LAN_IP, Lab, Rules, wait_until};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_onair");
const KEY: &str = "reach-test-signing-key";
const STREAM: &str = "show";

/// `onair serve` in the lab's LAN namespace, listening on the default ports (0.0.0.0:8080,
/// 1935, 8189): the namespace is its own machine.
struct Onair {
    data: std::path::PathBuf,
}

impl Onair {
    fn start(lab: &mut Lab, stun: &str) -> Onair {
        Onair::start_with_lease(lab, stun, 600)
    }

    fn start_with_lease(lab: &mut Lab, stun: &str, lease_s: u64) -> Onair {
        let lease = lease_s.to_string();
        let data = lab.dir.join("data");
        let log = lab.dir.join("onair.log");
        let lan = lab.lan.clone();
        let data_s = data.to_str().unwrap().to_owned();
        let home = lab.dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        lab.spawn(
            "onair",
            &lan,
            &[BIN, "serve"],
            &[
                ("ONAIR_SIGNING_KEY", KEY),
                ("ONAIR_DATA_DIR", &data_s),
                ("ONAIR_DEFAULT_STREAM", STREAM),
                ("ONAIR_REQUIRE_GO_LIVE", "true"),
                ("ONAIR_REACH_STUN_SERVERS", stun),
                ("ONAIR_REACH_LEASE_S", &lease),
                ("HOME", home.to_str().unwrap()),
                ("RUST_LOG", "info,onair_engine=debug"),
            ],
            &log,
        );
        let onair = Onair { data };
        wait_until("onair's control API", Duration::from_secs(20), || onair.data.join("control.json").exists());
        onair
    }

    /// `onair <args> --data-dir <its data dir>` in the LAN namespace, talking to the running one.
    fn cli(&self, lab: &Lab, args: &[&str]) -> String {
        let data = self.data.to_str().unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--data-dir", data]);
        run(lab, &all)
    }

    fn reach(&self, lab: &Lab) -> Value {
        let status: Value = serde_json::from_str(&self.cli(lab, &["status", "--json"])).expect("status JSON");
        status["reach"].clone()
    }

    /// Waits (up to 30 s) for a reach status `pred` accepts; answers it.
    fn reach_until(&self, lab: &Lab, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            last = self.reach(lab);
            if pred(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no reach status with {what} in 30 s; last: {last:#}\nonair log:\n{}", lab.log("onair.log"));
    }
}

/// `onair <args>` in the LAN namespace.
fn run(lab: &Lab, args: &[&str]) -> String {
    let mut all: Vec<&str> = vec![BIN];
    all.extend_from_slice(args);
    let out = lab.exec_env(&lab.lan, &all, &[("ONAIR_SIGNING_KEY", KEY)]);
    assert!(out.status.success(), "onair {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mapped_ports(reach: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = reach["mappings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| (m["protocol"].as_str().unwrap_or("").to_owned(), m["external_port"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn expected_ports() -> Vec<(String, u64)> {
    vec![("TCP".into(), 8080), ("TCP".into(), 8189), ("UDP".into(), 8189)]
}

/// The router's UPnP list holds OnAir's three mappings to the LAN machine (or none).
fn upnp_has_mappings(lab: &Lab) -> bool {
    let list = lab.upnp_list();
    ["TCP  8080->", "UDP  8189->", "TCP  8189->"].iter().all(|m| list.contains(&format!("{m}{LAN_IP}:{}", &m[5..9])))
}

fn upnp_has_none(lab: &Lab) -> bool {
    !lab.upnp_list().contains(&format!("->{LAN_IP}"))
}

#[test]
fn go_live_maps_the_ports_and_end_stream_removes_them() {
    let mut lab = Lab::new("11.77.0");
    lab.start_router(Rules::AllowLan);
    let stun = lab.start_stun();
    let onair = Onair::start(&mut lab, &stun);
    let wan = lab.router_wan_ip();
    let page = format!("http://{wan}:8080/{STREAM}");

    // Before Go live: the router and STUN agree on a public address; nothing is mapped yet.
    let r = onair.reach_until(&lab, "state reachable before Go live", |r| r["state"] == "reachable");
    assert_eq!(r["public_ip"], wan.as_str(), "{r:#}");
    assert_eq!(r["router_external_ip"], wan.as_str(), "{r:#}");
    assert_eq!(mapped_ports(&r), vec![], "{r:#}");
    assert!(upnp_has_none(&lab), "{}", lab.upnp_list());
    assert!(lab.curl_from_internet(&page).is_err(), "reachable from the internet before Go live");

    // Go live: the ports are forwarded.
    onair.cli(&lab, &["go-live", STREAM]);
    let r = onair.reach_until(&lab, "three mappings", |r| mapped_ports(r) == expected_ports());
    assert_eq!(r["state"], "reachable", "{r:#}");
    assert_eq!(r["public_base"], format!("http://{wan}:8080").as_str(), "{r:#}");
    assert_eq!(r["public_ip"], wan.as_str(), "{r:#}");
    assert_eq!(r["mapping"], "UPnP-IGD", "{r:#}");
    assert!(r["mappings"].as_array().unwrap().iter().all(|m| m["lease_s"] == 600), "{r:#}");
    wait_until("upnpc -l to list the mappings", Duration::from_secs(10), || upnp_has_mappings(&lab));
    let rules = lab.nft_rules();
    for needle in [format!("dnat ip to {LAN_IP}:8080"), format!("dnat ip to {LAN_IP}:8189")] {
        assert!(rules.contains(&needle), "{needle} not in the router's rules:\n{rules}");
    }

    // A viewer on the internet side: the viewer page, then LL-HLS of a live publish.
    assert_eq!(lab.curl_from_internet(&page), Ok(200));
    let obs: Value = serde_json::from_str(&run(&lab, &["obs", STREAM, "--host", "127.0.0.1", "--json"])).unwrap();
    let url = obs["url"].as_str().unwrap().to_owned();
    let lan = lab.lan.clone();
    let publish_log = lab.dir.join("ffmpeg.log");
    lab.spawn(
        "ffmpeg",
        &lan,
        &[
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "60",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "flv",
            &url,
        ],
        &[],
        &publish_log,
    );
    let llhls = format!("http://{wan}:8080/live/{STREAM}/llhls.m3u8");
    wait_until("the stream to be live", Duration::from_secs(20), || {
        let status: Value = serde_json::from_str(&onair.cli(&lab, &["status", "--json"])).unwrap();
        status["streams"].as_array().is_some_and(|a| a.iter().any(|s| s["name"] == STREAM && s["live"] == true))
    });
    assert_eq!(lab.curl_from_internet(&llhls), Ok(200));
    // ffprobe on the internet side reads LL-HLS through the mapped port (a few tries: the
    // first segment may still be open).
    let internet = lab.internet.clone();
    let mut codecs = Vec::new();
    for _ in 0..5 {
        let probe = lab.exec(
            &internet,
            &["ffprobe", "-v", "error", "-rw_timeout", "10000000", "-of", "json", "-show_streams", &llhls],
        );
        let json: Value = serde_json::from_slice(&probe.stdout).unwrap_or(Value::Null);
        codecs = json["streams"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["codec_name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if codecs.len() >= 2 {
            break;
        }
        eprintln!("ffprobe from the internet: {json} {}", String::from_utf8_lossy(&probe.stderr));
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(codecs.contains(&"h264".to_string()) && codecs.contains(&"aac".to_string()), "{codecs:?}");
    // Headless Chromium on the internet side plays the viewer page over WebRTC: the answer
    // carries the router's address as a candidate (set by reach), media flows through the
    // mapped UDP port.
    let play = onair_tests::repo_root().join("tests/browser/play.mjs");
    let out = lab.exec(
        &internet,
        &[
            onair_tests::require_tool("node").to_str().unwrap(),
            play.to_str().unwrap(),
            &page,
            "--expect-transport",
            "webrtc",
            "--timeout",
            "30000",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("{}");
    let json: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    assert_eq!(json["ok"], true, "WebRTC from the internet: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    println!("WebRTC viewer on the internet side: {json}");
    assert_eq!(json["transport"], "webrtc", "{json}");
    assert_eq!(json["webrtc"]["candidateType"]["protocol"], "udp", "{json}");
    let log = lab.log("onair.log");
    assert!(log.contains(&format!("public candidates udp {wan}:8189")), "{log}");
    lab.stop("ffmpeg", Duration::from_secs(5));

    // End stream: the mappings go, the viewer is refused again.
    onair.cli(&lab, &["end", STREAM]);
    let r = onair
        .reach_until(&lab, "no mappings after End stream", |r| r["mappings"].as_array().is_some_and(|a| a.is_empty()));
    assert_eq!(r["state"], "reachable", "the link still works on the next Go live: {r:#}");
    wait_until("upnpc -l to list no mapping", Duration::from_secs(10), || upnp_has_none(&lab));
    let rules = lab.nft_rules();
    assert!(!rules.contains(&format!("{LAN_IP}:8080")), "a DNAT rule is left:\n{rules}");
    assert!(lab.curl_from_internet(&page).is_err(), "still reachable after End stream");

    // Go live again, then stop OnAir: the mappings are removed on the way out.
    onair.cli(&lab, &["go-live", STREAM]);
    onair.reach_until(&lab, "three mappings again", |r| mapped_ports(r) == expected_ports());
    assert!(lab.stop("onair", Duration::from_secs(10)), "onair did not stop cleanly:\n{}", lab.log("onair.log"));
    assert!(upnp_has_none(&lab), "mappings left after exit:\n{}", lab.upnp_list());
    assert!(!lab.nft_rules().contains(&format!("{LAN_IP}:8080")));
    let log = lab.log("onair.log");
    assert!(log.contains("mapping of HTTP TCP 8080 removed"), "{log}");
    assert!(!log.contains(KEY), "the signing key was logged");
}

#[test]
fn a_refusing_router_gives_lan_only_with_the_ports_to_forward() {
    let mut lab = Lab::new("11.77.0");
    lab.start_router(Rules::DenyAll);
    let stun = lab.start_stun();
    let onair = Onair::start(&mut lab, &stun);
    onair.cli(&lab, &["go-live", STREAM]);
    let r = onair.reach_until(&lab, "state lan_only", |r| r["state"] == "lan_only");
    assert!(r["mapping"].as_str().unwrap().starts_with("refused"), "{r:#}");
    assert_eq!(mapped_ports(&r), vec![], "{r:#}");
    let mut forward: Vec<(String, u64, String)> = r["ports_to_forward"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["protocol"].as_str().unwrap().to_owned(),
                p["external_port"].as_u64().unwrap(),
                p["internal"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    forward.sort();
    assert_eq!(
        forward,
        vec![
            ("TCP".into(), 8080, format!("{LAN_IP}:8080")),
            ("TCP".into(), 8189, format!("{LAN_IP}:8189")),
            ("UDP".into(), 8189, format!("{LAN_IP}:8189")),
        ],
        "{r:#}"
    );
    let advice = r["advice"].as_str().unwrap();
    assert!(advice.contains("TCP 8080") && advice.contains("UDP 8189"), "{advice}");
    assert_eq!(r["public_ip"], lab.router_wan_ip().as_str(), "{r:#}");
    assert!(upnp_has_none(&lab), "{}", lab.upnp_list());
    assert!(lab.curl_from_internet(&format!("http://{}:8080/{STREAM}", lab.router_wan_ip())).is_err());
}

#[test]
fn a_router_behind_carrier_grade_nat_gives_cgnat() {
    let mut lab = Lab::new("100.64.77");
    lab.start_router(Rules::AllowLan);
    let stun = lab.start_stun();
    let onair = Onair::start(&mut lab, &stun);
    let r = onair.reach_until(&lab, "state cgnat", |r| r["state"] == "cgnat");
    assert_eq!(r["public_ip"], "100.64.77.1", "the address coturn saw: {r:#}");
    assert_eq!(r["public_base"], Value::Null, "{r:#}");
    assert!(r["advice"].as_str().unwrap().contains("TURN"), "{r:#}");
    // Go live changes nothing: miniupnpd refuses to map behind a shared address.
    onair.cli(&lab, &["go-live", STREAM]);
    std::thread::sleep(Duration::from_secs(3));
    let r = onair.reach_until(&lab, "state cgnat after Go live", |r| r["state"] == "cgnat");
    assert_eq!(mapped_ports(&r), vec![], "{r:#}");
    assert!(upnp_has_none(&lab), "{}", lab.upnp_list());
}

#[test]
fn without_upnp_the_ports_are_mapped_through_pcp_or_nat_pmp() {
    let mut lab = Lab::new("11.77.0");
    lab.start_router_with(Rules::AllowLan, false);
    let stun = lab.start_stun();
    let onair = Onair::start(&mut lab, &stun);
    let wan = lab.router_wan_ip();
    onair.cli(&lab, &["go-live", STREAM]);
    let r = onair.reach_until(&lab, "three mappings", |r| mapped_ports(r) == expected_ports());
    assert_eq!(r["state"], "reachable", "{r:#}");
    println!("mapped by {}", r["mapping"]);
    assert!(["PCP", "NAT-PMP"].contains(&r["mapping"].as_str().unwrap()), "{r:#}");
    assert_eq!(r["router_external_ip"], wan.as_str(), "NAT-PMP's public address: {r:#}");
    let rules = lab.nft_rules();
    assert!(rules.contains(&format!("dnat ip to {LAN_IP}:8080")), "{rules}");
    assert_eq!(lab.curl_from_internet(&format!("http://{wan}:8080/{STREAM}")), Ok(200));
    onair.cli(&lab, &["end", STREAM]);
    onair.reach_until(&lab, "no mappings after End stream", |r| r["mappings"].as_array().is_some_and(|a| a.is_empty()));
    wait_until("the DNAT rules to go", Duration::from_secs(10), || {
        !lab.nft_rules().contains(&format!("{LAN_IP}:8080"))
    });
    assert!(lab.curl_from_internet(&format!("http://{wan}:8080/{STREAM}")).is_err());
}

/// The seconds left on the router's UPnP lease of the HTTP mapping (`upnpc -l`'s last column).
fn http_lease_left(lab: &Lab) -> Option<u64> {
    let list = lab.upnp_list();
    let line = list.lines().find(|l| l.contains(&format!("TCP  8080->{LAN_IP}:8080")))?;
    line.split_whitespace().last()?.parse().ok()
}

#[test]
fn mappings_are_renewed_at_half_their_lease() {
    let mut lab = Lab::new("11.77.0");
    lab.start_router(Rules::AllowLan);
    let stun = lab.start_stun();
    // The shortest lease OnAir asks for: renewed after 60 s.
    let onair = Onair::start_with_lease(&mut lab, &stun, 120);
    onair.cli(&lab, &["go-live", STREAM]);
    onair.reach_until(&lab, "three mappings", |r| mapped_ports(r) == expected_ports());
    let first = http_lease_left(&lab).expect("the HTTP mapping in upnpc -l");
    assert!((100..=120).contains(&first), "lease left {first}");
    // Past the renewal: the lease starts again (without renewal it would be below 60 s).
    std::thread::sleep(Duration::from_secs(66));
    let left = http_lease_left(&lab).expect("the HTTP mapping is still there");
    assert!(left > 100, "not renewed: {left} s left\n{}", lab.log("onair.log"));
    assert_eq!(lab.curl_from_internet(&format!("http://{}:8080/{STREAM}", lab.router_wan_ip())), Ok(200));
}
