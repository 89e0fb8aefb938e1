//! Addresses as people type them and as others reach this machine: [`HostPort`] is the one
//! parser of `host[:port]` (IPv4, IPv6 bare or in brackets, host names), [`lan_ip`] the address
//! of this machine on its network, [`reachable_host`] what to put in a link to a listener,
//! [`listen`] a TCP listener with a backlog deep enough for a burst of clients.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A host in a link: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name (letters, digits, `-`, `_`, dot-separated labels), as typed.
    Name(String),
}

impl Host {
    /// The host as it goes into a URL's authority: IPv6 in brackets (`[2001:db8::1]`).
    pub fn in_url(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            other => other.to_string(),
        }
    }
}

/// Plain form: IPv6 without brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        Host::Ip(ip)
    }
}

/// `host` or `host:port` as typed in a setting or a flag: `tv.example.org`, `192.168.1.20:8080`,
/// `2001:db8::1`, `[2001:db8::1]:8080`. Which port a missing one means depends on the use (the
/// HTTP port for links, the RTMP port for OBS): see [`HostPort::authority`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: Host,
    pub port: Option<u16>,
}

/// Why a `host[:port]` was refused; the message shows the input and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a host or host:port: {reason} (e.g. tv.example.org, 192.168.1.20:8080, \
     2001:db8::1, [2001:db8::1]:8080)"
)]
pub struct HostPortError {
    pub input: String,
    pub reason: &'static str,
}

impl HostPort {
    pub fn new(host: impl Into<Host>, port: Option<u16>) -> Self {
        HostPort { host: host.into(), port }
    }

    /// `host:port` for a URL, with `default_port` when none was given; IPv6 in brackets.
    pub fn authority(&self, default_port: u16) -> String {
        format!("{}:{}", self.host.in_url(), self.port.unwrap_or(default_port))
    }
}

impl From<SocketAddr> for HostPort {
    fn from(a: SocketAddr) -> Self {
        HostPort { host: Host::Ip(a.ip()), port: Some(a.port()) }
    }
}

/// The form it parses from: `host`, `host:port`, `[v6]:port`; a bare IPv6 address stays bare.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host.in_url()),
            None => self.host.fmt(f),
        }
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(input: &str) -> Result<Self, HostPortError> {
        let err = |reason| HostPortError { input: input.to_owned(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.contains("://") || s.contains('/') {
            return Err(err("give a host, not a URL or path"));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(|| err("a '[' without its ']'"))?;
            let ip: Ipv6Addr = inner.parse().map_err(|_| err("not an IPv6 address inside [ ]"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    parse_port(after.strip_prefix(':').ok_or_else(|| err("expected :port after ]"))?).map_err(err)?,
                ),
            };
            return Ok(HostPort { host: Host::Ip(IpAddr::V6(ip)), port });
        }
        // A bare address: IPv4, or IPv6 without a port (`::1`, `2001:db8::1`).
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostPort { host: Host::Ip(ip), port: None });
        }
        let (host, port) = match s.split_once(':') {
            Some((_, rest)) if rest.contains(':') => {
                return Err(err("not a valid IPv6 address; with a port, write it in brackets: [2001:db8::1]:8080"));
            }
            Some((host, port)) => (host, Some(parse_port(port).map_err(err)?)),
            None => (s, None),
        };
        let host = if let Ok(v4) = host.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(v4))
        } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(err("not a valid IPv4 address"));
        } else if is_dns_name(host) {
            Host::Name(host.to_owned())
        } else {
            return Err(err("a host name has letters, digits, '-' or '_' in dot-separated labels"));
        };
        Ok(HostPort { host, port })
    }
}

fn parse_port(s: &str) -> Result<u16, &'static str> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be reached: use 1-65535"),
        Ok(p) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err("the port must be a number 1-65535"),
    }
}

fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// As its text form (`Display`/`FromStr`), so config files and `ONAIR_*` variables hold
/// `"tv.example.org:8080"`.
impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An optional [`HostPort`] written as a string that is empty when there is none (config keys
/// such as `public_host = ""`). Use with `#[serde(with = "crate::net::optional")]`.
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<HostPort>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(hp) => s.collect_str(hp),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HostPort>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() { Ok(None) } else { s.parse().map(Some).map_err(serde::de::Error::custom) }
    }
}

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

/// The host others reach a listener bound to `bound` at: that address itself, unless it is a
/// wildcard (`0.0.0.0`, `::`), which is replaced by `lan` (see [`lan_ip`]; only asked then).
pub fn reachable_host(bound: IpAddr, lan: impl FnOnce() -> IpAddr) -> Host {
    if bound.is_unspecified() { Host::Ip(lan()) } else { Host::Ip(bound) }
}

/// Where local clients (this machine) reach a listener bound to `bound`: a wildcard address
/// means loopback of the same family.
pub fn loopback_for(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(v6) if v6.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        other => other,
    };
    SocketAddr::new(ip, bound.port())
}

/// Connections the kernel completes and queues for a listener before it accepts them (capped by
/// the system, e.g. `net.core.somaxconn`). Rust's and tokio's default is 128: a burst of clients
/// (or an attacker's) overflows that queue, and the kernel then drops handshakes, so even
/// well-behaved clients wait for SYN retransmits (1 s, 3 s, 7 s...). Limits are enforced once a
/// connection is accepted, so accepting fast and from a deep queue is what keeps them cheap.
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with a deep accept queue ([`LISTEN_BACKLOG`]).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and tokio do on Unix: a restarted server can bind while old connections linger in
    // TIME_WAIT. (On Windows SO_REUSEADDR would let another process take the port.)
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPort {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_every_form_once() {
        let v4 = |a, b, c, d| Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
        let v6 = |s: &str| Host::Ip(IpAddr::V6(s.parse().unwrap()));
        let cases = [
            ("192.168.1.20", v4(192, 168, 1, 20), None),
            ("192.168.1.20:8080", v4(192, 168, 1, 20), Some(8080)),
            ("::1", v6("::1"), None),
            ("[::1]", v6("::1"), None),
            ("[::1]:8080", v6("::1"), Some(8080)),
            ("2001:db8::1", v6("2001:db8::1"), None),
            ("[2001:db8::1]:81", v6("2001:db8::1"), Some(81)),
            ("  tv.example.org ", Host::Name("tv.example.org".into()), None),
            ("tv.example.org:1940", Host::Name("tv.example.org".into()), Some(1940)),
            ("localhost", Host::Name("localhost".into()), None),
            ("my_box-2.lan:65535", Host::Name("my_box-2.lan".into()), Some(65535)),
        ];
        for (input, host, port) in cases {
            assert_eq!(hp(input), HostPort { host, port }, "{input}");
        }
    }

    #[test]
    fn prints_as_it_parses_and_brackets_ipv6_in_urls() {
        for s in ["192.168.1.20", "192.168.1.20:8080", "::1", "[::1]:8080", "tv.example.org:80", "h"] {
            assert_eq!(hp(s).to_string(), s);
            assert_eq!(hp(&hp(s).to_string()), hp(s));
        }
        assert_eq!(hp("[::1]").to_string(), "::1");
        assert_eq!(hp("::1").authority(8080), "[::1]:8080");
        assert_eq!(hp("[::1]:81").authority(8080), "[::1]:81");
        assert_eq!(hp("10.0.0.1").authority(1935), "10.0.0.1:1935");
        assert_eq!(hp("h:1940").authority(1935), "h:1940");
        assert_eq!(HostPort::from("[::1]:9".parse::<SocketAddr>().unwrap()).to_string(), "[::1]:9");
    }

    #[test]
    fn bad_input_says_why() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("http://tv.example.org", "not a URL"),
            ("tv.example.org/live", "not a URL"),
            ("[::1", "without its ']'"),
            ("[nope]:80", "not an IPv6 address"),
            ("[::1]x", "expected :port"),
            ("[::1]:", "1-65535"),
            ("2001:db8::1::2", "in brackets"),
            ("::1:8080:x", "in brackets"),
            ("host:", "1-65535"),
            ("host:http", "1-65535"),
            ("host:+80", "1-65535"),
            ("host:70000", "1-65535"),
            ("host:0", "port 0"),
            ("999.1.1.1", "IPv4"),
            ("1.2.3", "IPv4"),
            ("tv example.org", "host name"),
            ("-bad.example", "host name"),
            ("a..b", "host name"),
            ("ü.example", "host name"),
        ];
        for (input, why) in cases {
            let e = input.parse::<HostPort>().expect_err(input);
            let msg = e.to_string();
            assert!(msg.contains(why), "{input:?}: {msg}");
            assert!(msg.contains(&format!("{input:?}")), "the message names the input: {msg}");
        }
    }

    #[test]
    fn serde_as_text_and_empty_as_none() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct C {
            #[serde(with = "optional")]
            h: Option<HostPort>,
            p: HostPort,
        }
        let c: C = toml::from_str("h = \"\"\np = \"[::1]:8080\"").unwrap();
        assert_eq!(c, C { h: None, p: hp("[::1]:8080") });
        assert_eq!(toml::to_string(&c).unwrap(), "h = \"\"\np = \"[::1]:8080\"\n");
        let e = toml::from_str::<C>("h = \"a b\"\np = \"x\"").unwrap_err().to_string();
        assert!(e.contains("\"a b\" is not a host"), "{e}");
    }

    #[test]
    fn wildcard_binds_are_replaced_by_the_lan_address() {
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(reachable_host("0.0.0.0".parse().unwrap(), || lan), Host::Ip(lan));
        assert_eq!(reachable_host("::".parse().unwrap(), || lan), Host::Ip(lan));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(reachable_host(lo, || panic!("not asked")), Host::Ip(lo));
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(reachable_host(v6, || lan), Host::Ip(v6));
        assert!(!lan_ip().is_unspecified());
    }

    #[test]
    fn local_clients_use_loopback_for_wildcards() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(loopback_for(a("0.0.0.0:8080")), a("127.0.0.1:8080"));
        assert_eq!(loopback_for(a("[::]:8080")), a("[::1]:8080"));
        assert_eq!(loopback_for(a("192.168.1.20:8080")), a("192.168.1.20:8080"));
    }
}
