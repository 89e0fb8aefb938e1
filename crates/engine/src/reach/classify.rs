//! What the streamer is told: the [`ReachStatus`] from what was learnt about the network and
//! what the router did with the mapping requests. Pure.

use std::net::IpAddr;

use crate::status::{PortMapping, ReachState, ReachStatus};

/// What was learnt about the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learnt {
    /// The protocol the router answered (`UPnP-IGD`, `NAT-PMP`); `None`: no router answered.
    pub router: Option<String>,
    /// The external address the router reported.
    pub router_ip: Option<IpAddr>,
    /// The address a STUN server saw us from.
    pub stun_ip: Option<IpAddr>,
}

/// Where the port mapping stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// `[reach] port_mapping = false`.
    Off,
    /// No stream is live: the ports are forwarded on Go live.
    NotLive,
    /// Asked (on Go live): what the router forwards now (`method`: `UPnP-IGD`, `NAT-PMP`), and
    /// what it refused, with why.
    Done { method: String, mapped: Vec<PortMapping>, failed: Vec<(PortMapping, String)> },
}

/// Purposes whose port viewers open first: the link works when these are forwarded.
const VIEWER_PURPOSES: [&str; 2] = ["HTTP", "HTTPS"];

/// The status for `learnt` and `mapping`; `wanted` are the ports to forward (external port =
/// internal port, no lease), `public_base` the configured public link base (`public_host`),
/// if any.
pub fn classify(learnt: &Learnt, mapping: &Mapping, wanted: &[PortMapping], public_base: Option<&str>) -> ReachStatus {
    let public_ip = learnt.stun_ip.or(learnt.router_ip);
    let mut s = ReachStatus {
        state: ReachState::LanOnly,
        public_base: None,
        public_ip: public_ip.map(|ip| ip.to_string()),
        router_external_ip: learnt.router_ip.map(|ip| ip.to_string()),
        mapping: String::new(),
        mappings: Vec::new(),
        ports_to_forward: Vec::new(),
        advice: String::new(),
    };
    s.mapping = match mapping {
        Mapping::Off => "off".into(),
        _ if learnt.router.is_none() => "no router answered".into(),
        Mapping::NotLive => format!("{}: the ports are forwarded on Go live", learnt.router.as_deref().unwrap_or("")),
        Mapping::Done { method, mapped, failed } => match failed.first() {
            None => method.clone(),
            Some((_, why)) if mapped.is_empty() => format!("refused: {why}"),
            Some((_, why)) => format!("{method}; refused: {why}"),
        },
    };
    if let Mapping::Done { mapped, .. } = mapping {
        s.mappings = mapped.clone();
    }

    // A second NAT: the router's own address is not public, or the internet sees another one.
    let second_nat = learnt.router_ip.is_some_and(|ip| !is_public(ip))
        || learnt.stun_ip.is_some_and(|ip| !is_public(ip))
        || matches!((learnt.router_ip, learnt.stun_ip), (Some(r), Some(p)) if r != p);
    if second_nat {
        s.state = ReachState::Cgnat;
        let seen = match (learnt.router_ip, learnt.stun_ip) {
            (Some(r), Some(p)) if r != p => format!("your router's internet address is {r} but the internet sees {p}"),
            (Some(r), _) if !is_public(r) => format!("your router's internet address {r} is not a public one"),
            (_, Some(p)) => format!("the internet sees this network as {p}, not a public address"),
            _ => "your router is behind another NAT".into(),
        };
        s.advice = format!(
            "Behind carrier-grade (or double) NAT: {seen}, so forwarding ports on your router cannot let viewers \
             on the internet in. The link works on this network. For viewers outside: configure a TURN server \
             (webrtc.turn_urls) so WebRTC can relay, and relay the stream through an external server (restream \
             to a server with a public address). If you own the outer router too, forward the ports there, or \
             ask your provider for a public IPv4 address."
        );
        return s;
    }

    let by_hand = |ports: &[PortMapping]| -> String {
        ports
            .iter()
            .map(|p| format!("{} {} → {} ({})", p.protocol, p.external_port, p.internal, p.purpose))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let link = |mapped: Option<&[PortMapping]>| -> Option<String> {
        if let Some(base) = public_base {
            return Some(base.to_owned());
        }
        let ip = public_ip?;
        let http = wanted.iter().find(|p| p.purpose == "HTTP")?;
        let port = mapped
            .and_then(|m| m.iter().find(|p| p.purpose == "HTTP" && p.protocol == http.protocol))
            .map_or(http.external_port, |p| p.external_port);
        Some(match ip {
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
            IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        })
    };
    let http_port = wanted.iter().find(|p| p.purpose == "HTTP").map(|p| p.external_port);
    let where_seen = match (public_ip, http_port) {
        (Some(IpAddr::V4(ip)), Some(port)) => format!(" Then viewers on the internet open http://{ip}:{port}."),
        (Some(IpAddr::V6(ip)), Some(port)) => format!(" Then viewers on the internet open http://[{ip}]:{port}."),
        _ => String::new(),
    };
    match mapping {
        Mapping::Off => {
            s.ports_to_forward = wanted.to_vec();
            s.advice = format!(
                "Port mapping is off ([reach] port_mapping). Forward these ports on your router to this machine: {}.{where_seen}",
                by_hand(wanted)
            );
        }
        Mapping::NotLive | Mapping::Done { .. } if learnt.router.is_none() => {
            s.ports_to_forward = wanted.to_vec();
            s.advice = format!(
                "No router answered (UPnP-IGD or NAT-PMP/PCP off, or not supported). Turn UPnP on in your \
                 router, or forward these ports to this machine by hand: {}.{where_seen}",
                by_hand(wanted)
            );
        }
        Mapping::NotLive => match link(None) {
            Some(base) => {
                s.state = ReachState::Reachable;
                s.advice = format!(
                    "On Go live OnAir asks your router to forward {}; viewers on the internet then open {base}.",
                    by_hand(wanted)
                );
                s.public_base = Some(base);
            }
            None => {
                s.ports_to_forward = wanted.to_vec();
                s.advice = format!(
                    "Your router answers but did not tell its internet address, and no STUN server answered: \
                     set public_host to your public name or address. Ports forwarded on Go live: {}.",
                    by_hand(wanted)
                );
            }
        },
        Mapping::Done { mapped, failed, .. } => {
            let viewer_ports_ok = wanted
                .iter()
                .filter(|w| VIEWER_PURPOSES.contains(&w.purpose.as_str()))
                .all(|w| mapped.iter().any(|m| m.internal == w.internal && m.protocol == w.protocol))
                && !mapped.is_empty();
            s.ports_to_forward = failed.iter().map(|(p, _)| p.clone()).collect();
            match link(Some(mapped.as_slice())) {
                Some(base) if viewer_ports_ok => {
                    s.state = ReachState::Reachable;
                    s.advice = if failed.is_empty() {
                        format!("Viewers on the internet can open {base}.")
                    } else {
                        format!(
                            "Viewers on the internet can open {base}, but the router refused {}: forward those by \
                             hand (without them WebRTC falls back to LL-HLS, a few seconds behind).",
                            by_hand(&s.ports_to_forward)
                        )
                    };
                    s.public_base = Some(base);
                }
                _ => {
                    if s.ports_to_forward.is_empty() {
                        s.ports_to_forward = wanted.to_vec();
                    }
                    let why = failed.first().map_or("no public address known".to_string(), |(_, w)| w.clone());
                    s.advice = format!(
                        "Your router did not forward the ports ({why}). Allow UPnP/NAT-PMP for this machine in the \
                         router, or forward these ports to it by hand: {}.{where_seen}",
                        by_hand(&s.ports_to_forward)
                    );
                }
            }
        }
    }
    s
}

/// Whether `ip` is a public (globally routed) address: not private, shared (100.64.0.0/10,
/// carrier-grade NAT), loopback, link-local, documentation, benchmarking or otherwise reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 0 && c == 2)
                || (a == 198 && (18..20).contains(&b))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(purpose: &str, protocol: &str, port: u16) -> PortMapping {
        PortMapping {
            purpose: purpose.into(),
            protocol: protocol.into(),
            external_port: port,
            internal: format!("192.168.77.10:{port}"),
            lease_s: None,
        }
    }

    fn wanted() -> Vec<PortMapping> {
        vec![port("HTTP", "TCP", 8080), port("WebRTC", "UDP", 8189), port("WebRTC", "TCP", 8189)]
    }

    fn leased(p: &PortMapping) -> PortMapping {
        PortMapping { lease_s: Some(3600), ..p.clone() }
    }

    fn learnt(router: Option<&str>, stun: Option<&str>) -> Learnt {
        Learnt {
            router: Some("UPnP-IGD".into()),
            router_ip: router.map(|ip| ip.parse().unwrap()),
            stun_ip: stun.map(|ip| ip.parse().unwrap()),
        }
    }

    #[test]
    fn mapped_and_public_is_reachable() {
        let mapped: Vec<PortMapping> = wanted().iter().map(leased).collect();
        let done = Mapping::Done { method: "UPnP-IGD".into(), mapped: mapped.clone(), failed: vec![] };
        let s = classify(&learnt(Some("11.77.0.1"), Some("11.77.0.1")), &done, &wanted(), None);
        assert_eq!(s.state, ReachState::Reachable);
        assert_eq!(s.public_base.as_deref(), Some("http://11.77.0.1:8080"));
        assert_eq!(s.public_ip.as_deref(), Some("11.77.0.1"));
        assert_eq!(s.router_external_ip.as_deref(), Some("11.77.0.1"));
        assert_eq!(s.mapping, "UPnP-IGD");
        assert_eq!(s.mappings, mapped);
        assert!(s.ports_to_forward.is_empty());
        assert!(s.advice.contains("http://11.77.0.1:8080"), "{}", s.advice);

        // Without STUN, the router's word; a configured host name makes the link.
        let s = classify(&learnt(Some("11.77.0.1"), None), &done, &wanted(), Some("http://tv.example.org:8080"));
        assert_eq!(s.state, ReachState::Reachable);
        assert_eq!(s.public_base.as_deref(), Some("http://tv.example.org:8080"));

        // The WebRTC UDP port refused: still reachable (LL-HLS), and that port is to forward.
        let (ok, refused) = (vec![leased(&wanted()[0]), leased(&wanted()[2])], wanted()[1].clone());
        let partial =
            Mapping::Done { method: "UPnP-IGD".into(), mapped: ok, failed: vec![(refused.clone(), "606".into())] };
        let s = classify(&learnt(Some("11.77.0.1"), Some("11.77.0.1")), &partial, &wanted(), None);
        assert_eq!(s.state, ReachState::Reachable);
        assert_eq!(s.ports_to_forward, vec![refused]);
        assert_eq!(s.mapping, "UPnP-IGD; refused: 606");
    }

    #[test]
    fn refused_off_or_no_router_is_lan_only_with_the_ports() {
        let failed = wanted().into_iter().map(|p| (p, "not authorized".to_string())).collect();
        let refused = Mapping::Done { method: "UPnP-IGD".into(), mapped: vec![], failed };
        let s = classify(&learnt(Some("11.77.0.1"), Some("11.77.0.1")), &refused, &wanted(), None);
        assert_eq!(s.state, ReachState::LanOnly);
        assert_eq!(s.mapping, "refused: not authorized");
        assert_eq!(s.ports_to_forward, wanted());
        assert_eq!(s.public_base, None);
        for needle in ["TCP 8080 → 192.168.77.10:8080 (HTTP)", "UDP 8189", "TCP 8189", "http://11.77.0.1:"] {
            assert!(s.advice.contains(needle), "{needle}: {}", s.advice);
        }

        let s = classify(&learnt(None, Some("11.77.0.1")), &Mapping::Off, &wanted(), None);
        assert_eq!((s.state, s.mapping.as_str()), (ReachState::LanOnly, "off"));
        assert_eq!(s.ports_to_forward, wanted());

        let nobody = Learnt { stun_ip: Some("11.77.0.1".parse().unwrap()), ..Learnt::default() };
        for m in [Mapping::NotLive, Mapping::Done { method: String::new(), mapped: vec![], failed: vec![] }] {
            let s = classify(&nobody, &m, &wanted(), None);
            assert_eq!((s.state, s.mapping.as_str()), (ReachState::LanOnly, "no router answered"), "{m:?}");
            assert_eq!(s.ports_to_forward, wanted());
        }
    }

    #[test]
    fn before_go_live_a_router_that_answers_promises_the_link() {
        let s = classify(&learnt(Some("11.77.0.1"), Some("11.77.0.1")), &Mapping::NotLive, &wanted(), None);
        assert_eq!(s.state, ReachState::Reachable);
        assert_eq!(s.public_base.as_deref(), Some("http://11.77.0.1:8080"));
        assert!(s.mapping.contains("on Go live"), "{}", s.mapping);
        assert!(s.mappings.is_empty());
        // Nobody said the public address.
        let s = classify(&learnt(None, None), &Mapping::NotLive, &wanted(), None);
        assert_eq!(s.state, ReachState::LanOnly);
    }

    #[test]
    fn second_nat_is_cgnat() {
        let done =
            Mapping::Done { method: "UPnP-IGD".into(), mapped: wanted().iter().map(leased).collect(), failed: vec![] };
        // Router external address in the shared space, or private (double NAT at home).
        for router in ["100.64.0.7", "100.127.255.1", "192.168.0.2", "10.1.2.3", "172.20.0.1"] {
            let s = classify(&learnt(Some(router), Some("11.77.0.1")), &done, &wanted(), None);
            assert_eq!(s.state, ReachState::Cgnat, "{router}");
            assert_eq!(s.public_base, None);
        }
        // The router says one public address, STUN sees another.
        let s = classify(&learnt(Some("11.77.0.1"), Some("12.0.0.9")), &done, &wanted(), None);
        assert_eq!(s.state, ReachState::Cgnat);
        assert!(s.advice.contains("11.77.0.1") && s.advice.contains("12.0.0.9"), "{}", s.advice);
        assert!(s.advice.contains("TURN"), "{}", s.advice);
        // The router refuses and says nothing, STUN sees a shared address.
        let refused = Mapping::Done {
            method: "UPnP-IGD".into(),
            mapped: vec![],
            failed: vec![(wanted()[0].clone(), "no external address".into())],
        };
        let s = classify(&learnt(None, Some("100.64.77.1")), &refused, &wanted(), None);
        assert_eq!(s.state, ReachState::Cgnat);
        assert_eq!(s.public_ip.as_deref(), Some("100.64.77.1"));
        // 100.128.0.1 is outside 100.64.0.0/10: public.
        let s = classify(&learnt(Some("100.128.0.1"), None), &done, &wanted(), None);
        assert_eq!(s.state, ReachState::Reachable);
    }

    #[test]
    fn public_addresses() {
        for ip in ["11.77.0.1", "8.8.8.8", "100.128.0.1", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "0.0.0.0",
            "240.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
