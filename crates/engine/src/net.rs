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

/// `http://host:port` for viewer links: the configured public host (with its own port, if it has
/// one), else the LAN address with the HTTP port.
pub fn http_base(configured: &str, http_port: u16) -> String {
    let host = public_host(configured);
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.matches(':').count() == 1,
    };
    let host = if host.contains(':') && !host.contains('[') && !has_port { format!("[{host}]") } else { host };
    if has_port { format!("http://{host}") } else { format!("http://{host}:{http_port}") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_base() {
        assert_eq!(super::http_base("tv.example.org", 8080), "http://tv.example.org:8080");
        assert_eq!(super::http_base("tv.example.org:80", 8080), "http://tv.example.org:80");
        assert_eq!(super::http_base("2001:db8::1", 8080), "http://[2001:db8::1]:8080");
        assert_eq!(super::http_base("[2001:db8::1]:81", 8080), "http://[2001:db8::1]:81");
        assert!(super::http_base("", 8080).ends_with(":8080"));
    }
}
