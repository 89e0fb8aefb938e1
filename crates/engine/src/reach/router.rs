//! The network side: finding the router (UPnP-IGD discovery, NAT-PMP), asking it for its
//! external address and for port mappings, and STUN. Every request is bounded in time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMappingOptions, TimeoutConfig};
use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use tokio::time::timeout;
use tracing::debug;

use super::{Port, Protocol, stun};

/// UPnP discovery (SSDP) waits this long for the router.
const SSDP_WAIT: Duration = Duration::from_secs(3);
/// Each UPnP control request (SOAP over HTTP).
const UPNP_REQUEST: Duration = Duration::from_secs(5);
/// NAT-PMP/PCP: first wait, retries (doubling), longest wait: ≈ 1.75 s for a silent router.
const PMP_TIMEOUTS: TimeoutConfig = TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};
/// A STUN server: each try waits this long, this many tries.
const STUN_WAIT: Duration = Duration::from_millis(1500);
const STUN_TRIES: usize = 2;

/// The router as found: how to talk to it, and what it says.
#[derive(Clone, Default)]
pub struct Router {
    pub upnp: Option<Gateway<Tokio>>,
    /// The NAT-PMP/PCP server (answered the external-address request, even with an error).
    pub pmp: Option<IpAddr>,
    /// The external address the router reported.
    pub external_ip: Option<IpAddr>,
    /// This machine's address towards the router (internal address of the mappings).
    pub local_ip: Option<IpAddr>,
    /// Why nothing was found or said, for the log.
    pub problems: Vec<String>,
}

impl Router {
    /// The protocol that answers (`UPnP-IGD` first).
    pub fn protocol(&self) -> Option<&'static str> {
        if self.upnp.is_some() {
            Some("UPnP-IGD")
        } else if self.pmp.is_some() {
            Some("NAT-PMP")
        } else {
            None
        }
    }
}

/// Looks for the router: UPnP-IGD by discovery, NAT-PMP/PCP at `gateway` (else the default
/// gateway), and asks each for the external address.
pub async fn discover(gateway: Option<IpAddr>) -> Router {
    let mut r = Router::default();
    let mut options = igd_next::SearchOptions::default();
    options.timeout = Some(SSDP_WAIT);
    match igd_next::aio::tokio::search_gateway(options).await {
        Ok(gw) => {
            match timeout(UPNP_REQUEST, gw.get_external_ip()).await {
                Ok(Ok(ip)) if !ip.is_unspecified() => r.external_ip = Some(ip),
                Ok(Ok(_)) => r.problems.push("UPnP: the router has no external address".into()),
                Ok(Err(e)) => r.problems.push(format!("UPnP GetExternalIPAddress: {e}")),
                Err(_) => r.problems.push("UPnP GetExternalIPAddress: no answer".into()),
            }
            r.local_ip = local_ip_towards(gw.addr.ip());
            r.upnp = Some(gw);
        }
        Err(e) => r.problems.push(format!("UPnP: {e}")),
    }
    let gateway = gateway.or_else(|| r.upnp.as_ref().map(|g| g.addr.ip())).or_else(default_gateway);
    match gateway {
        Some(IpAddr::V4(gw)) => match crab_nat::natpmp::external_address(gw.into(), Some(PMP_TIMEOUTS)).await {
            Ok(ip) => {
                r.pmp = Some(gw.into());
                if !ip.is_unspecified() {
                    r.external_ip = r.external_ip.or(Some(ip.into()));
                }
            }
            Err(e @ (crab_nat::natpmp::Failure::Socket(_) | crab_nat::natpmp::Failure::Timeout)) => {
                r.problems.push(format!("NAT-PMP at {gw}: {e}"))
            }
            // It answers, without an address (e.g. its own is not a public one): it may still map.
            Err(e) => {
                r.problems.push(format!("NAT-PMP at {gw}: {e}"));
                r.pmp = Some(gw.into());
            }
        },
        Some(IpAddr::V6(_)) => r.problems.push("NAT-PMP: an IPv6 gateway is not supported".into()),
        None => r.problems.push("NAT-PMP: no default gateway".into()),
    }
    if r.local_ip.is_none() {
        r.local_ip = r.pmp.or(gateway).and_then(local_ip_towards);
    }
    r
}

/// One mapping the router holds for us.
pub enum Active {
    Upnp { gw: Gateway<Tokio>, protocol: Protocol, external: u16, internal: SocketAddr },
    Pmp(crab_nat::PortMapping),
}

impl Active {
    pub fn external_port(&self) -> u16 {
        match self {
            Active::Upnp { external, .. } => *external,
            Active::Pmp(m) => m.external_port().get(),
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            Active::Upnp { .. } => "UPnP-IGD",
            Active::Pmp(m) if matches!(m.mapping_type(), crab_nat::PortMappingType::Pcp { .. }) => "PCP",
            Active::Pmp(_) => "NAT-PMP",
        }
    }

    /// Asks again for the lease (before it ends).
    pub async fn renew(&mut self, lease_s: u32, purpose: &str) -> Result<(), String> {
        match self {
            Active::Upnp { gw, protocol, external, internal } => {
                upnp_add(gw, *protocol, *external, *internal, lease_s, purpose).await.map_err(|e| match e {
                    UpnpFailure::Refused(e) | UpnpFailure::Other(e) => e,
                })
            }
            Active::Pmp(m) => match timeout(Duration::from_secs(5), m.renew()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("no answer".into()),
            },
        }
    }

    /// Removes the mapping from the router.
    pub async fn remove(self) -> Result<(), String> {
        match self {
            Active::Upnp { gw, protocol, external, .. } => {
                match timeout(UPNP_REQUEST, gw.remove_port(igd_protocol(protocol), external)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("no answer".into()),
                }
            }
            Active::Pmp(m) => match timeout(Duration::from_secs(5), m.try_drop()).await {
                Ok(r) => r.map_err(|(e, _)| e.to_string()),
                Err(_) => Err("no answer".into()),
            },
        }
    }
}

/// Maps `port` (to `internal`, the same external port asked for): UPnP-IGD first; PCP/NAT-PMP
/// when there is no UPnP router or it did not answer — not when it refused: the same router
/// refuses through PCP too (and miniupnpd 2.3 then tries every other port, for seconds). The
/// error says why.
pub async fn map(router: &Router, port: &Port, internal: SocketAddr, lease_s: u32) -> Result<Active, String> {
    let mut why = Vec::new();
    if let Some(gw) = &router.upnp {
        match upnp_add(gw, port.protocol, internal.port(), internal, lease_s, &port.purpose).await {
            Ok(()) => {
                return Ok(Active::Upnp {
                    gw: gw.clone(),
                    protocol: port.protocol,
                    external: internal.port(),
                    internal,
                });
            }
            Err(UpnpFailure::Refused(e)) => return Err(format!("UPnP: {e}")),
            Err(UpnpFailure::Other(e)) => why.push(format!("UPnP: {e}")),
        }
    }
    if let Some(gw) = router.pmp {
        match pmp_map(gw, internal, port.protocol, lease_s).await {
            Ok(m) => return Ok(Active::Pmp(m)),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("no router answered".into());
    }
    Err(why.join("; "))
}

/// Why UPnP did not map: the router said no, or something else went wrong.
enum UpnpFailure {
    Refused(String),
    Other(String),
}

async fn upnp_add(
    gw: &Gateway<Tokio>,
    protocol: Protocol,
    external: u16,
    internal: SocketAddr,
    lease_s: u32,
    purpose: &str,
) -> Result<(), UpnpFailure> {
    use igd_next::{AddPortError as E, RequestError as R};
    let description = format!("OnAir {purpose}");
    let add = gw.add_port(igd_protocol(protocol), external, internal, lease_s, &description);
    match timeout(UPNP_REQUEST, add).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ (E::RequestError(R::ErrorCode(..)) | E::ActionNotAuthorized | E::PortInUse))) => {
            Err(UpnpFailure::Refused(e.to_string()))
        }
        Ok(Err(e)) => Err(UpnpFailure::Other(e.to_string())),
        Err(_) => Err(UpnpFailure::Other("no answer".into())),
    }
}

async fn pmp_map(
    gw: IpAddr,
    internal: SocketAddr,
    protocol: Protocol,
    lease_s: u32,
) -> Result<crab_nat::PortMapping, String> {
    let proto = match protocol {
        Protocol::Tcp => InternetProtocol::Tcp,
        Protocol::Udp => InternetProtocol::Udp,
    };
    let port = NonZeroU16::new(internal.port()).ok_or("port 0")?;
    let options = PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(lease_s),
        timeout_config: Some(PMP_TIMEOUTS),
    };
    // PCP (which falls back to NAT-PMP when the router says so); then NAT-PMP itself.
    let pcp = crab_nat::PortMapping::new(gw.into(), internal.ip(), proto, port, options).await;
    match pcp {
        Ok(m) => Ok(m),
        Err(pcp) => {
            debug!("PCP mapping of {internal}: {pcp}");
            crab_nat::natpmp::port_mapping(gw.into(), proto, port, options).await.map_err(|e| format!("NAT-PMP: {e}"))
        }
    }
}

fn igd_protocol(p: Protocol) -> PortMappingProtocol {
    match p {
        Protocol::Tcp => PortMappingProtocol::TCP,
        Protocol::Udp => PortMappingProtocol::UDP,
    }
}

/// This machine's source address towards `to` (a UDP `connect` sends nothing).
pub fn local_ip_towards(to: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { "[::]:0".parse().ok()? };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(to, 9)).ok()?;
    Some(s.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// The IPv4 default gateway: from the routing table on Linux; elsewhere the `.1` of this
/// machine's /24 (what most home routers use; set `[reach] gateway` otherwise).
pub fn default_gateway() -> Option<IpAddr> {
    #[cfg(target_os = "linux")]
    if let Ok(table) = std::fs::read_to_string("/proc/net/route") {
        return parse_proc_route(&table).map(IpAddr::V4);
    }
    match local_ip_towards(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, 1)))
        }
        IpAddr::V6(_) => None,
    }
}

/// The gateway of the default route in `/proc/net/route` (hex, little-endian fields).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_route(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok().filter(|g| *g != 0)?;
        Some(Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// The address the first of `servers` (`host:port`) that answers sees us from.
pub async fn stun(servers: &[String]) -> Result<IpAddr, String> {
    let mut why = Vec::new();
    for server in servers {
        match stun_one(server).await {
            Ok(ip) => return Ok(ip),
            Err(e) => why.push(format!("{server}: {e}")),
        }
    }
    Err(if why.is_empty() { "no STUN server configured".into() } else { why.join("; ") })
}

async fn stun_one(server: &str) -> Result<IpAddr, String> {
    let addr = match timeout(Duration::from_secs(3), tokio::net::lookup_host(server)).await {
        Ok(Ok(mut addrs)) => addrs.find(SocketAddr::is_ipv4).ok_or("no IPv4 address")?,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("name lookup timed out".into()),
    };
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.map_err(|e| e.to_string())?;
    socket.connect(addr).await.map_err(|e| e.to_string())?;
    let txid: [u8; 12] = rand::random();
    let request = stun::binding_request(txid);
    let mut buf = [0u8; 1500];
    for _ in 0..STUN_TRIES {
        socket.send(&request).await.map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + STUN_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(n)) => match stun::mapped_address(&buf[..n], &txid) {
                    Ok(a) => return Ok(a.ip()),
                    Err(stun::StunError::Refused) => return Err("refused".into()),
                    Err(_) => continue,
                },
            }
        }
    }
    Err("no answer".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_route_gateway() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     lan0\t004DA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     lan0\t00000000\t014DA8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(super::parse_proc_route(table), Some("192.168.77.1".parse().unwrap()));
        assert_eq!(super::parse_proc_route("Iface\tDestination\n"), None);
    }
}
