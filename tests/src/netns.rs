//! A home network in Linux network namespaces, for the reach tests (run as root): a "LAN"
//! namespace (the streamer's machine, 192.168.77.10), a "router" namespace running the real
//! `miniupnpd` (UPnP-IGD + NAT-PMP/PCP) over nftables NAT, and an "internet" namespace (the
//! viewer, and coturn as the STUN server) on the router's WAN side. Nothing links to the host's
//! namespace: the made-up "public" addresses exist only on veths between these namespaces.
//! Everything (processes, namespaces, the temp dir) goes on drop. See
//! `/work/shared/design/netns-and-acme-recipes.md` for the recipe and its pitfalls: the WAN must
//! be a non-reserved /24 (`11.77.0.0/24`) for miniupnpd to map anything; a 100.64.0.0/10 WAN
//! makes it refuse, as a carrier-grade NAT router would look.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The streamer's machine in the LAN namespace.
pub const LAN_IP: &str = "192.168.77.10";
/// The router's LAN address (the default gateway).
pub const ROUTER_LAN_IP: &str = "192.168.77.1";

/// What miniupnpd allows: the LAN's ports 1024-65535, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    AllowLan,
    DenyAll,
}

/// Three namespaces, the router daemon and the STUN server; all removed on drop.
pub struct Lab {
    pub lan: String,
    pub router: String,
    pub internet: String,
    /// The WAN /24's first three octets, e.g. `11.77.0`.
    pub wan_net: String,
    lan_if: String,
    rtr_lan_if: String,
    rtr_wan_if: String,
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    /// Builds the namespaces and links; `wan_net` is the router's WAN /24 (`11.77.0` or
    /// `100.64.77`): the router is `.1` on it, the internet host `.50`.
    pub fn new(wan_net: &str) -> Lab {
        for tool in ["ip", "nft", "miniupnpd", "upnpc", "turnserver", "curl"] {
            crate::require_tool(tool);
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let dir = crate::fresh_dir(&format!("netns-{tag}"));
        let lab = Lab {
            lan: format!("oa{tag}-lan"),
            router: format!("oa{tag}-rtr"),
            internet: format!("oa{tag}-net"),
            wan_net: wan_net.into(),
            lan_if: format!("o{tag}l"),
            rtr_lan_if: format!("o{tag}rl"),
            rtr_wan_if: format!("o{tag}rw"),
            dir,
            children: Vec::new(),
        };
        let wan_if = format!("o{tag}w");
        for ns in [&lab.lan, &lab.router, &lab.internet] {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (lan, rtr, net) = (lab.lan.as_str(), lab.router.as_str(), lab.internet.as_str());
        let link = |a: &str, a_ns: &str, b: &str, b_ns: &str| {
            must(&["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns])
        };
        link(&lab.lan_if, lan, &lab.rtr_lan_if, rtr);
        link(&wan_if, net, &lab.rtr_wan_if, rtr);
        let router_wan = format!("{wan_net}.1/24");
        let internet_ip = format!("{wan_net}.50/24");
        for (ns, ifname, addr) in [
            (lan, lab.lan_if.as_str(), "192.168.77.10/24"),
            (rtr, lab.rtr_lan_if.as_str(), "192.168.77.1/24"),
            (rtr, lab.rtr_wan_if.as_str(), router_wan.as_str()),
            (net, wan_if.as_str(), internet_ip.as_str()),
        ] {
            must(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
            must(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        must(&["ip", "-n", lan, "route", "add", "default", "via", ROUTER_LAN_IP]);
        must(&["ip", "netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // The table and chains miniupnpd-nftables 2.3.1 writes its rules into by default.
        let nft = format!(
            "table inet filter {{\n\
               chain forward {{\n type filter hook forward priority 0; policy drop;\n\
                 ct state established,related accept\n\
                 iifname \"{lan_if}\" oifname \"{wan_if}\" accept\n\
                 jump miniupnpd\n }}\n\
               chain miniupnpd {{\n }}\n\
               chain prerouting {{\n type nat hook prerouting priority -100; policy accept;\n jump prerouting_miniupnpd\n }}\n\
               chain postrouting {{\n type nat hook postrouting priority 100; policy accept;\n\
                 jump postrouting_miniupnpd\n oifname \"{wan_if}\" masquerade\n }}\n\
               chain prerouting_miniupnpd {{\n }}\n\
               chain postrouting_miniupnpd {{\n }}\n\
             }}\n",
            lan_if = lab.rtr_lan_if,
            wan_if = lab.rtr_wan_if,
        );
        let rules = lab.dir.join("router.nft");
        std::fs::write(&rules, nft).unwrap();
        must(&["ip", "netns", "exec", rtr, "nft", "-f", rules.to_str().unwrap()]);
        lab
    }

    /// The router's WAN ("public") address.
    pub fn router_wan_ip(&self) -> String {
        format!("{}.1", self.wan_net)
    }

    /// The internet host's address (viewer, STUN server).
    pub fn internet_ip(&self) -> String {
        format!("{}.50", self.wan_net)
    }

    /// Starts miniupnpd in the router namespace (UPnP on port 5000 and NAT-PMP/PCP) and waits
    /// until it listens.
    pub fn start_router(&mut self, rules: Rules) {
        self.start_router_with(rules, true)
    }

    /// [`Lab::start_router`], with UPnP-IGD turned off when `upnp` is false (NAT-PMP/PCP only).
    pub fn start_router_with(&mut self, rules: Rules, upnp: bool) {
        let d = self.dir.display();
        let upnp = if upnp { "yes" } else { "no" };
        let allow = match rules {
            Rules::AllowLan => "allow 1024-65535 192.168.77.0/24 1024-65535\n",
            Rules::DenyAll => "",
        };
        let conf = format!(
            "ext_ifname={}\nlistening_ip={}\nhttp_port=5000\nenable_upnp={upnp}\nenable_natpmp=yes\nsecure_mode=yes\n\
             system_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\nlease_file={d}/upnp.leases\n\
             {allow}deny 0-65535 0.0.0.0/0 0-65535\n",
            self.rtr_wan_if, self.rtr_lan_if
        );
        let path = self.dir.join("miniupnpd.conf");
        std::fs::write(&path, conf).unwrap();
        let pid = self.dir.join("miniupnpd.pid");
        let log = self.dir.join("miniupnpd.log");
        let router = self.router.clone();
        self.spawn(
            "miniupnpd",
            &router,
            &["miniupnpd", "-d", "-f", path.to_str().unwrap(), "-P", pid.to_str().unwrap()],
            &[],
            &log,
        );
        wait_until("miniupnpd to listen", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Listening for NAT-PMP"))
        });
    }

    /// Starts coturn as a plain STUN server on the internet host, port 3478; answers its
    /// `host:port`.
    pub fn start_stun(&mut self) -> String {
        let ip = self.internet_ip();
        let log = self.dir.join("turnserver.log");
        let pid = self.dir.join("turnserver.pid");
        let db = self.dir.join("turndb");
        let internet = self.internet.clone();
        let args = [
            "turnserver",
            "-n",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip",
            &ip,
            "--listening-port",
            "3478",
            "--pidfile",
            pid.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--log-file",
            "stdout",
            "--simple-log",
        ];
        self.spawn("turnserver", &internet, &args, &[], &log);
        let addr = format!("{ip}:3478");
        wait_until("coturn to listen", Duration::from_secs(10), || {
            let out = run(&["ip", "netns", "exec", &internet, "ss", "-Hlun", "sport", "= :3478"]);
            String::from_utf8_lossy(&out.stdout).contains(&addr)
        });
        addr
    }

    /// Runs `args` in namespace `ns` (bounded by `timeout`, killed after).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        self.exec_env(ns, args, &[])
    }

    pub fn exec_env(&self, ns: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "ip", "netns", "exec", ns]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap_or_else(|e| panic!("cannot run {args:?} in {ns}: {e}"))
    }

    /// Starts `args` in namespace `ns` with `env`, its output to `log`; stopped (SIGTERM, then
    /// SIGKILL) on drop unless taken back with [`Lab::stop`].
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str], env: &[(&str, &str)], log: &Path) {
        let out = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        self.children.push((name.into(), child));
    }

    /// Stops the process started as `name` with SIGTERM and waits (up to `wait`) for it to
    /// exit; answers whether it exited by itself, successfully.
    pub fn stop(&mut self, name: &str, wait: Duration) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else { return false };
        let (_, mut child) = self.children.remove(i);
        terminate(&mut child, wait)
    }

    /// Whether the process started as `name` is still running.
    pub fn running(&mut self, name: &str) -> bool {
        self.children.iter_mut().any(|(n, c)| n == name && c.try_wait().ok().flatten().is_none())
    }

    /// `upnpc -l` from the LAN: the router's port mappings.
    pub fn upnp_list(&self) -> String {
        let url = format!("http://{ROUTER_LAN_IP}:5000/rootDesc.xml");
        let out = self.exec(&self.lan, &["upnpc", "-u", &url, "-l"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The router's nftables rules (where miniupnpd's DNAT and accept rules land).
    pub fn nft_rules(&self) -> String {
        let out = self.exec(&self.router, &["nft", "list", "table", "inet", "filter"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `curl` from the internet host: the HTTP status code, or `Err` with curl's exit code.
    pub fn curl_from_internet(&self, url: &str) -> Result<u16, i32> {
        let out = self.exec(&self.internet, &["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url]);
        if !out.status.success() {
            return Err(out.status.code().unwrap_or(-1));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
    }

    /// A log of the lab (miniupnpd, coturn, and whatever was spawned with a log here).
    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain(..).rev() {
            terminate(&mut child, Duration::from_secs(5));
        }
        for ns in [&self.lan, &self.router, &self.internet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        if std::thread::panicking() {
            eprintln!("reach lab logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGTERM, wait up to `wait`, then SIGKILL. True if it exited successfully by itself.
fn terminate(child: &mut Child, wait: Duration) -> bool {
    if let Ok(Some(s)) = child.try_wait() {
        return s.success();
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let start = Instant::now();
    while start.elapsed() < wait {
        if let Ok(Some(s)) = child.try_wait() {
            return s.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Polls `check` every 200 ms until it holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
