//! Reach: how viewers on the internet get to this machine. A task started with the engine:
//!
//! 1. At start it learns the public address: the router's external address (UPnP-IGD
//!    `GetExternalIPAddress`, NAT-PMP) and what STUN servers see (`[reach] stun_servers`).
//! 2. While any stream is on air (Go live until End stream, [`Control::watch_on_air`]) it asks
//!    the router to forward the engine's ports ([`Port`]: HTTP, the WebRTC UDP and ICE-TCP
//!    ports, RTMP with `map_rtmp`) — UPnP-IGD first, PCP/NAT-PMP for what that refuses —
//!    renews each lease at half its length, and removes the mappings on End stream and at
//!    engine shutdown (bounded by [`REMOVE_WAIT`]).
//! 3. It reports a [`ReachStatus`] through [`Control::set_reach`] ([`classify`]: reachable,
//!    LAN only with the ports to forward, or carrier-grade NAT when the router's address is not
//!    public or STUN sees another), logging one line per change, and advertises the public
//!    address to WebRTC players ([`WebrtcServer::set_public_ips`]) unless `webrtc.public_ips`
//!    is set by hand.
//!
//! See docs/reach-mapping.md.

mod classify;
mod router;
pub mod stun;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use onair_webrtc::WebrtcServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::{info, warn};

pub use classify::{Learnt, Mapping, classify, is_public};

use crate::config::{Config, ReachSettings};
use crate::control::Control;
use crate::status::{PortMapping, ReachState, ReachStatus};
use router::{Active, Router};

/// Engine shutdown waits at most this long for the mappings to be removed.
pub const REMOVE_WAIT: Duration = Duration::from_secs(4);
/// While nothing is on air, the public address is looked at again this often.
const RELEARN_EVERY: Duration = Duration::from_secs(600);
/// While on air with ports not forwarded, mapping is tried again this often.
const RETRY_EVERY: Duration = Duration::from_secs(60);
/// At start, discovery is tried this many times (2 s, then 4 s apart) until something answers.
const START_TRIES: u32 = 3;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// A port the engine listens on that viewers (or publishers) outside need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `HTTP`, `HTTPS`, `RTMP`, `RTMPS`, `WebRTC`.
    pub purpose: String,
    pub protocol: Protocol,
    /// The listening address (a wildcard address stands for this machine's LAN address).
    pub internal: SocketAddr,
}

impl Port {
    pub fn new(purpose: &str, protocol: Protocol, internal: SocketAddr) -> Port {
        Port { purpose: purpose.into(), protocol, internal }
    }
}

/// What the reach task needs.
pub struct ReachSetup {
    pub settings: ReachSettings,
    /// The ports to forward (more can be pushed before [`start`], e.g. HTTPS).
    pub ports: Vec<Port>,
    /// The configured public link base (`public_host`), which wins over the learnt address.
    pub public_base: Option<String>,
    /// Told the learnt public address; `None` without WebRTC or with `webrtc.public_ips` set.
    pub webrtc: Option<WebrtcServer>,
    pub control: Arc<Control>,
}

impl ReachSetup {
    /// The engine's ports per `config`: HTTP, RTMP (with `map_rtmp`), WebRTC UDP and ICE-TCP.
    pub fn new(
        config: &Config,
        http: SocketAddr,
        rtmp: SocketAddr,
        public_base: Option<String>,
        webrtc: Option<&WebrtcServer>,
        control: Arc<Control>,
    ) -> ReachSetup {
        let mut ports = vec![Port::new("HTTP", Protocol::Tcp, http)];
        if config.reach.map_rtmp {
            ports.push(Port::new("RTMP", Protocol::Tcp, rtmp));
        }
        if let Some(w) = webrtc {
            ports.push(Port::new("WebRTC", Protocol::Udp, w.udp_addr()));
            if let Some(tcp) = w.tcp_addr() {
                ports.push(Port::new("WebRTC", Protocol::Tcp, tcp));
            }
        }
        ReachSetup {
            settings: config.reach.clone(),
            ports,
            public_base,
            webrtc: webrtc.filter(|_| config.webrtc.public_ips.is_empty()).cloned(),
            control,
        }
    }
}

/// Starts the reach task; it ends (mappings removed) when `shutdown` turns true.
pub fn start(setup: ReachSetup, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(Reach::new(setup).run(shutdown))
}

struct Held {
    port: Port,
    active: Active,
}

struct Reach {
    setup: ReachSetup,
    gateway: Option<IpAddr>,
    router: Router,
    learnt: Learnt,
    held: Vec<Held>,
    failed: Vec<(Port, String)>,
    /// Whether mapping was asked since the last Go live.
    asked: bool,
    last: Option<ReachStatus>,
    advertised: Option<Vec<IpAddr>>,
}

impl Reach {
    fn new(setup: ReachSetup) -> Reach {
        let gateway = setup.settings.gateway.parse().ok();
        Reach {
            setup,
            gateway,
            router: Router::default(),
            learnt: Learnt::default(),
            held: Vec::new(),
            failed: Vec::new(),
            asked: false,
            last: None,
            advertised: None,
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let control = self.setup.control.clone();
        control.set_reach(ReachStatus {
            advice: "Looking for the router and the public address…".into(),
            ..Default::default()
        });
        let mut on_air = control.watch_on_air();
        let http = self.setup.ports.iter().filter(|p| p.purpose.starts_with("HTTP")).map(|p| p.internal);
        if http.clone().all(|a| a.ip().is_loopback()) {
            // Only this machine reaches the engine: nothing to forward, no one to ask.
            let addrs = http.map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            let advice = format!(
                "OnAir listens on loopback only ({addrs}): only this machine reaches it. Listen on 0.0.0.0 (http = \
                 \"0.0.0.0:8080\") for viewers elsewhere."
            );
            info!("reach: {advice}");
            control.set_reach(ReachStatus { state: ReachState::LanOnly, advice, ..Default::default() });
            let _ = shutdown.wait_for(|s| *s).await;
            return;
        }
        // Learn first (bounded tries), unless shut down meanwhile.
        let learn = async {
            for attempt in 1..=START_TRIES {
                self.learn().await;
                if self.learnt.router.is_some() || self.learnt.stun_ip.is_some() || attempt == START_TRIES {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2u64 << (attempt - 1))).await;
            }
        };
        tokio::select! {
            _ = learn => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let mut next = Instant::now() + RELEARN_EVERY;
        loop {
            let live = !on_air.borrow_and_update().is_empty();
            // A step waits for the router (bounded); shutdown cuts it short.
            tokio::select! {
                _ = self.step(live, &mut next) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            self.report();
            tokio::select! {
                changed = on_air.changed() => if changed.is_err() { break },
                _ = sleep_until(next) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        if tokio::time::timeout(REMOVE_WAIT, self.remove_all()).await.is_err() {
            warn!("reach: the router did not confirm removing every port mapping in time");
        }
    }

    /// Maps, renews, retries or removes as the on-air state and the time say; `next` is when
    /// to come back.
    async fn step(&mut self, live: bool, next: &mut Instant) {
        if live && self.setup.settings.port_mapping {
            if !self.asked {
                self.map_all().await;
                *next = self.next_renewal();
            } else if Instant::now() >= *next {
                self.renew_all().await;
                if !self.failed.is_empty() || self.held.is_empty() {
                    // Something was refused or lost: look again and ask again.
                    self.learn().await;
                    self.map_all().await;
                }
                *next = self.next_renewal();
            }
        } else {
            if self.asked {
                self.remove_all().await;
                self.asked = false;
            } else if Instant::now() >= *next {
                self.learn().await;
            }
            if Instant::now() >= *next {
                *next = Instant::now() + RELEARN_EVERY;
            }
        }
    }

    /// Asks the router and the STUN servers for the public address.
    async fn learn(&mut self) {
        let stun = router::stun(&self.setup.settings.stun_servers);
        let router =
            async { if self.setup.settings.port_mapping { Some(router::discover(self.gateway).await) } else { None } };
        let (stun, router) = tokio::join!(stun, router);
        if let Some(router) = router {
            for p in &router.problems {
                tracing::debug!("reach: {p}");
            }
            if router.protocol().is_none() && self.router.protocol().is_some() {
                warn!("reach: the router stopped answering ({})", router.problems.join("; "));
            }
            self.router = router;
        }
        let stun_ip = match stun {
            Ok(ip) => Some(ip),
            Err(e) => {
                if !self.setup.settings.stun_servers.is_empty()
                    && (self.last.is_none() || self.learnt.stun_ip.is_some())
                {
                    warn!("reach: no STUN server answered: {e}");
                }
                None
            }
        };
        self.learnt =
            Learnt { router: self.router.protocol().map(str::to_owned), router_ip: self.router.external_ip, stun_ip };
    }

    /// The internal address of `port`: a wildcard bind stands for the address towards the
    /// router; loopback cannot be forwarded.
    fn internal(&self, port: &Port) -> Option<SocketAddr> {
        let ip = port.internal.ip();
        if ip.is_loopback() {
            return None;
        }
        if ip.is_unspecified() {
            let local =
                self.router.local_ip.or_else(|| router::default_gateway().and_then(router::local_ip_towards))?;
            return Some(SocketAddr::new(local, port.internal.port()));
        }
        Some(port.internal)
    }

    async fn map_all(&mut self) {
        self.asked = true;
        self.failed.clear();
        let lease = self.setup.settings.lease_s.min(u32::MAX as u64) as u32;
        for port in self.setup.ports.clone() {
            if self.held.iter().any(|h| h.port == port) {
                continue;
            }
            let Some(internal) = self.internal(&port) else {
                warn!(purpose = %port.purpose, addr = %port.internal, "reach: a port on loopback cannot be forwarded");
                self.failed.push((port, "listens on loopback only".into()));
                continue;
            };
            match router::map(&self.router, &port, internal, lease).await {
                Ok(active) => {
                    info!(
                        "reach: {} {} {} → {internal} forwarded by {} for {lease} s",
                        port.purpose,
                        port.protocol,
                        active.external_port(),
                        active.method()
                    );
                    self.held.push(Held { port, active });
                }
                Err(why) => {
                    warn!("reach: the router did not forward {} {} {}: {why}", port.purpose, port.protocol, internal);
                    self.failed.push((port, why));
                }
            }
        }
    }

    /// Renews every held mapping; one that fails moves to `failed`. Held mappings stay in
    /// `held` until done with, so a step cut short by shutdown still removes them.
    async fn renew_all(&mut self) {
        let lease = self.setup.settings.lease_s.min(u32::MAX as u64) as u32;
        let mut i = 0;
        while i < self.held.len() {
            let purpose = self.held[i].port.purpose.clone();
            match self.held[i].active.renew(lease, &purpose).await {
                Ok(()) => i += 1,
                Err(why) => {
                    let h = self.held.remove(i);
                    warn!("reach: renewing {} {} failed: {why}", h.port.purpose, h.port.protocol);
                    self.failed.push((h.port, why));
                }
            }
        }
    }

    async fn remove_all(&mut self) {
        while let Some(h) = self.held.pop() {
            let what = format!("{} {} {}", h.port.purpose, h.port.protocol, h.active.external_port());
            match h.active.remove().await {
                Ok(()) => info!("reach: mapping of {what} removed"),
                Err(why) => warn!("reach: cannot remove the mapping of {what}: {why}"),
            }
        }
        self.failed.clear();
    }

    fn next_renewal(&self) -> Instant {
        if !self.failed.is_empty() || self.held.is_empty() {
            return Instant::now() + RETRY_EVERY;
        }
        let lease = match self.held.iter().map(|h| h.lease_s(self.setup.settings.lease_s)).min() {
            Some(l) => l,
            None => self.setup.settings.lease_s,
        };
        Instant::now() + Duration::from_secs((lease / 2).max(30))
    }

    /// Sets the status (and the WebRTC public candidates); logs a change.
    fn report(&mut self) {
        let wanted: Vec<PortMapping> = self
            .setup
            .ports
            .iter()
            .filter_map(|p| {
                let internal = self.internal(p)?;
                Some(PortMapping {
                    purpose: p.purpose.clone(),
                    protocol: p.protocol.to_string(),
                    external_port: p.internal.port(),
                    internal: internal.to_string(),
                    lease_s: None,
                })
            })
            .collect();
        let mapping = if !self.setup.settings.port_mapping {
            Mapping::Off
        } else if !self.asked {
            Mapping::NotLive
        } else {
            let method = self
                .held
                .first()
                .map_or_else(|| self.learnt.router.clone().unwrap_or_default(), |h| h.active.method().to_owned());
            Mapping::Done {
                method,
                mapped: self
                    .held
                    .iter()
                    .map(|h| PortMapping {
                        purpose: h.port.purpose.clone(),
                        protocol: h.port.protocol.to_string(),
                        external_port: h.active.external_port(),
                        internal: self.internal(&h.port).map_or_else(|| h.port.internal.to_string(), |a| a.to_string()),
                        lease_s: Some(h.lease_s(self.setup.settings.lease_s)),
                    })
                    .collect(),
                failed: self
                    .failed
                    .iter()
                    .map(|(p, why)| {
                        let internal = self.internal(p).unwrap_or(p.internal);
                        let m = PortMapping {
                            purpose: p.purpose.clone(),
                            protocol: p.protocol.to_string(),
                            external_port: p.internal.port(),
                            internal: internal.to_string(),
                            lease_s: None,
                        };
                        (m, why.clone())
                    })
                    .collect(),
            }
        };
        let status = classify(&self.learnt, &mapping, &wanted, self.setup.public_base.as_deref());

        if let Some(webrtc) = &self.setup.webrtc {
            let ips: Vec<IpAddr> = match status.state {
                ReachState::Cgnat | ReachState::Checking => Vec::new(),
                _ => status
                    .public_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                    .filter(|ip| is_public(*ip))
                    .into_iter()
                    .collect(),
            };
            if self.advertised.as_ref() != Some(&ips) {
                webrtc.set_public_ips(ips.clone());
                self.advertised = Some(ips);
            }
        }
        let changed = self
            .last
            .as_ref()
            .is_none_or(|l| l.state != status.state || l.public_ip != status.public_ip || l.mapping != status.mapping);
        if changed {
            let state =
                serde_json::to_value(status.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let public_ip = status.public_ip.as_deref().unwrap_or("unknown");
            let router_ip = status.router_external_ip.as_deref().unwrap_or("unknown");
            match status.state {
                ReachState::Reachable | ReachState::Checking => info!(
                    %state, %public_ip, %router_ip, mapping = %status.mapping, link = status.public_base.as_deref().unwrap_or(""),
                    "reach: {}", status.advice
                ),
                _ => warn!(%state, %public_ip, %router_ip, mapping = %status.mapping, "reach: {}", status.advice),
            }
        }
        self.setup.control.set_reach(status.clone());
        self.last = Some(status);
    }
}

impl Held {
    fn lease_s(&self, asked: u64) -> u64 {
        match &self.active {
            Active::Pmp(m) => u64::from(m.lifetime()),
            Active::Upnp { .. } => asked,
        }
    }
}
