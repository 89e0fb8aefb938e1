//! Which address others reach this machine at.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};

/// The LAN address of the interface that routes to the outside, else loopback.
///
/// A UDP `connect` only selects a route; it sends no packet.
pub fn lan_ip() -> IpAddr {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// `host` for links: the configured public host, else the LAN address.
pub fn public_host(configured: &str) -> String {
    if configured.is_empty() { lan_ip().to_string() } else { configured.to_owned() }
}
