//! Configuration, ICE servers for players, TURN REST credentials, and which addresses to bind
//! and advertise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::admission::WebrtcLimits;

/// Where the WebRTC media lives and what players are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcConfig {
    /// One UDP port for all media of all viewers. Default `0.0.0.0:8189`.
    ///
    /// Bound to an unspecified address (`0.0.0.0` / `[::]`) without [`public_ips`](Self::public_ips),
    /// the server binds that port on each of the machine's addresses it advertises (the LAN
    /// address of the default route and loopback), so it always knows which candidate a
    /// datagram arrived on.
    pub udp: SocketAddr,
    /// ICE-TCP passive candidates on one TCP port (RFC 6544, RFC 4571 framing), for networks
    /// that block UDP. Default `Some(0.0.0.0:8189)`; `None` disables ICE-TCP.
    pub tcp: Option<SocketAddr>,
    /// NAT 1:1: advertise these addresses (with the bound ports) as the host candidates instead
    /// of the machine's own. Empty = the bound address, or the machine's addresses when bound
    /// to an unspecified address.
    pub public_ips: Vec<IpAddr>,
    /// STUN/TURN servers handed to players (the server itself only uses host candidates).
    pub ice_servers: Vec<IceServer>,
    /// How many sessions and ICE-TCP connections players may make the server hold.
    pub limits: WebrtcLimits,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        WebrtcConfig {
            udp: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8189)),
            tcp: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8189))),
            public_ips: Vec::new(),
            ice_servers: Vec::new(),
            limits: WebrtcLimits::default(),
        }
    }
}

/// A STUN or TURN server for players (the `RTCIceServer` dictionary of the W3C API).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:…`.
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    /// The WHEP/WHIP `Link` header values for this server (one per URL), as in
    /// draft-ietf-wish-whep §4.6 / RFC 9725 §4.6:
    /// `<turn:turn.example.net?transport=udp>; rel="ice-server"; username="…"; credential="…"; credential-type="password"`.
    pub fn link_headers(&self) -> Vec<String> {
        self.urls
            .iter()
            .map(|url| {
                let mut v = format!("<{url}>; rel=\"ice-server\"");
                if let Some(u) = &self.username {
                    v.push_str(&format!("; username=\"{}\"", quote(u)));
                }
                if let Some(c) = &self.credential {
                    v.push_str(&format!("; credential=\"{}\"; credential-type=\"password\"", quote(c)));
                }
                v
            })
            .collect()
    }
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// coturn's TURN REST API (`use-auth-secret`): username = `"<unix expiry>:<user>"`,
/// credential = base64(HMAC-SHA1(secret, username)), expiry = `now + ttl`.
pub fn turn_rest_credentials(secret: &str, user: &str, ttl: Duration, now: SystemTime) -> (String, String) {
    let expiry = now.checked_add(ttl).unwrap_or(now).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let username = format!("{expiry}:{user}");
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// The machine's addresses worth advertising when bound to an unspecified address: the source
/// address of the default route (found by a UDP `connect`, which sends nothing) and loopback,
/// per family. Link-local IPv6 is left out (it needs a scope id a browser cannot use).
pub(crate) fn machine_ips(v4: bool, v6: bool) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    let route_source = |bind: SocketAddr, probe: SocketAddr| -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(probe).ok()?;
        let ip = s.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    };
    if v4 {
        // 192.0.2.1 is TEST-NET-1: never answered, only used to pick the route.
        if let Some(ip) = route_source((Ipv4Addr::UNSPECIFIED, 0).into(), (Ipv4Addr::new(192, 0, 2, 1), 9).into()) {
            ips.push(ip);
        }
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if v6 {
        let probe = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9));
        if let Some(IpAddr::V6(ip)) = route_source((Ipv6Addr::UNSPECIFIED, 0).into(), probe)
            && (ip.segments()[0] & 0xffc0) != 0xfe80
        {
            ips.push(IpAddr::V6(ip));
        }
        ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    ips.dedup();
    ips
}

/// The IPs to advertise for a socket bound at `bound` (port applied by the caller).
pub(crate) fn advertised_ips(bound: IpAddr, public_ips: &[IpAddr]) -> Vec<IpAddr> {
    if !public_ips.is_empty() {
        let mut v = public_ips.to_vec();
        v.dedup();
        return v;
    }
    if bound.is_unspecified() { machine_ips(true, bound.is_ipv6()) } else { vec![bound] }
}

/// Of `advertised`, the address a packet that reached local address `actual` is said to have
/// arrived on: `actual` itself when advertised, else the first advertised address of the same
/// family (NAT 1:1), else the first one.
pub(crate) fn advertised_for(actual: SocketAddr, advertised: &[SocketAddr]) -> SocketAddr {
    if advertised.contains(&actual) {
        return actual;
    }
    advertised
        .iter()
        .find(|a| a.is_ipv4() == actual.is_ipv4())
        .or_else(|| advertised.first())
        .copied()
        .unwrap_or(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_vector() {
        // Expected value computed independently with Python's hmac/hashlib/base64.
        let expiry = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ttl = Duration::from_secs(86_400);
        let (user, cred) = turn_rest_credentials("north", "alice", ttl, expiry - ttl);
        assert_eq!(user, "1700000000:alice");
        assert_eq!(cred, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn link_header_format() {
        let s = IceServer {
            urls: vec!["turn:t.example:3478?transport=udp".into(), "stun:s.example".into()],
            username: Some("1700000000:alice".into()),
            credential: Some("a\"b".into()),
        };
        assert_eq!(
            s.link_headers()[0],
            "<turn:t.example:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000000:alice\"; credential=\"a\\\"b\"; credential-type=\"password\""
        );
        let stun = IceServer { urls: vec!["stun:s.example".into()], ..Default::default() };
        assert_eq!(stun.link_headers(), vec!["<stun:s.example>; rel=\"ice-server\"".to_string()]);
    }

    #[test]
    fn advertised_addresses() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(advertised_ips(lo, &[]), vec![lo]);
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(advertised_ips("0.0.0.0".parse().unwrap(), &[public]), vec![public]);
        let any = advertised_ips("0.0.0.0".parse().unwrap(), &[]);
        assert!(any.contains(&lo), "{any:?}");

        let adv: Vec<SocketAddr> = vec!["203.0.113.7:8189".parse().unwrap(), "[2001:db8::7]:8189".parse().unwrap()];
        assert_eq!(advertised_for("203.0.113.7:8189".parse().unwrap(), &adv), adv[0]);
        assert_eq!(advertised_for("192.168.1.20:8189".parse().unwrap(), &adv), adv[0]);
        assert_eq!(advertised_for("[fd00::2]:8189".parse().unwrap(), &adv), adv[1]);
    }
}
