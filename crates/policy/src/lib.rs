//! Signed publish URLs, compatible with OvenMediaEngine's *SignedPolicy*.
//!
//! A signed URL carries two query parameters:
//! * `policy`: base64url (no padding) of a JSON object with `url_expire` (Unix epoch milliseconds,
//!   required) and optionally `url_activate`, `stream_expire` (both epoch ms) and `allow_ip` (CIDR);
//! * `signature`: base64url (no padding) of HMAC-SHA1(secret, URL), where URL is the address the
//!   client dialled, `scheme://host:PORT/app/stream?policy=…` with the port always written out and
//!   every query parameter except `signature` kept in its original order.
//!
//! Everything here is pure: the current time and the client address are arguments.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

type HmacSha1 = Hmac<sha1::Sha1>;

/// The JSON policy object of a signed URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The URL may not be used to start a session after this time (epoch ms).
    pub url_expire: u64,
    /// The URL may not be used before this time (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_activate: Option<u64>,
    /// A running session is ended at this time (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_expire: Option<u64>,
    /// Only clients from this network may use the URL (`a.b.c.d/n`, an IPv6 CIDR, or one address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ip: Option<String>,
}

/// Why a signed URL was refused. The messages name the reason, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the URL has no policy parameter (unsigned stream key)")]
    MissingPolicy,
    #[error("the URL has no signature parameter (unsigned stream key)")]
    MissingSignature,
    #[error("the URL is malformed: {0}")]
    MalformedUrl(&'static str),
    #[error("the policy is not valid base64url JSON: {0}")]
    MalformedPolicy(String),
    #[error("the signature does not match (tampered URL or another secret)")]
    BadSignature,
    #[error("the URL expired at {url_expire} (now {now}, epoch ms)")]
    Expired { url_expire: u64, now: u64 },
    #[error("the URL is not active before {url_activate} (now {now}, epoch ms)")]
    NotYetActive { url_activate: u64, now: u64 },
    #[error("the stream expired at {stream_expire} (now {now}, epoch ms)")]
    StreamExpired { stream_expire: u64, now: u64 },
    #[error("client address {ip} is not in allow_ip {allow}")]
    IpNotAllowed { ip: IpAddr, allow: String },
    #[error("allow_ip {0:?} is not a valid address or CIDR")]
    BadCidr(String),
}

/// base64url without padding of HMAC-SHA1(secret, url).
pub fn signature(secret: &[u8], url: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The `policy` parameter for a policy: base64url (no padding) of its JSON.
pub fn encode_policy(policy: &Policy) -> String {
    let json = serde_json::to_vec(policy).expect("a policy always serializes");
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a `policy` parameter (padding tolerated, as OME's decoder does).
pub fn decode_policy(param: &str) -> Result<Policy, PolicyError> {
    let trimmed = param.trim_end_matches('=');
    let json = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE.decode(param))
        .map_err(|e| PolicyError::MalformedPolicy(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| PolicyError::MalformedPolicy(e.to_string()))
}

/// Signs `url` (which must not carry `policy`/`signature` yet): appends `policy=…&signature=…`.
///
/// The port is written out when missing, so the result verifies whichever way the client writes it.
pub fn sign_url(secret: &[u8], url: &str, policy: &Policy) -> Result<String, PolicyError> {
    let base = with_port(url)?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let unsigned = format!("{base}{sep}policy={}", encode_policy(policy));
    let sig = signature(secret, &unsigned);
    Ok(format!("{unsigned}&signature={sig}"))
}

/// Checks a signed URL as the client dialled it, for a session starting `now_ms` from `client`.
///
/// Returns the policy so the caller can enforce `stream_expire` during the session.
pub fn verify(secret: &[u8], url: &str, client: IpAddr, now_ms: u64) -> Result<Policy, PolicyError> {
    let url = with_port(url)?;
    let (base, query) = url.split_once('?').ok_or(PolicyError::MissingPolicy)?;
    let mut kept = Vec::new();
    let mut policy_param = None;
    let mut signature_param = None;
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        match key {
            "signature" => signature_param = Some(pair.split_once('=').map_or("", |(_, v)| v)),
            "policy" => {
                policy_param = Some(pair.split_once('=').map_or("", |(_, v)| v));
                kept.push(pair);
            }
            _ => kept.push(pair),
        }
    }
    let policy_param = policy_param.ok_or(PolicyError::MissingPolicy)?;
    let signature_param = signature_param.ok_or(PolicyError::MissingSignature)?;
    let policy = decode_policy(policy_param)?;

    let unsigned = format!("{base}?{}", kept.join("&"));
    if !constant_time_eq(signature(secret, &unsigned).as_bytes(), signature_param.trim_end_matches('=').as_bytes()) {
        return Err(PolicyError::BadSignature);
    }
    if let Some(url_activate) = policy.url_activate
        && now_ms < url_activate
    {
        return Err(PolicyError::NotYetActive { url_activate, now: now_ms });
    }
    if now_ms > policy.url_expire {
        return Err(PolicyError::Expired { url_expire: policy.url_expire, now: now_ms });
    }
    check_stream_expire(&policy, now_ms)?;
    if let Some(allow) = &policy.allow_ip
        && !cidr_contains(allow, client)?
    {
        return Err(PolicyError::IpNotAllowed { ip: client, allow: allow.clone() });
    }
    Ok(policy)
}

/// Whether a running session under `policy` must end at `now_ms`.
pub fn check_stream_expire(policy: &Policy, now_ms: u64) -> Result<(), PolicyError> {
    match policy.stream_expire {
        Some(stream_expire) if now_ms > stream_expire => Err(PolicyError::StreamExpired { stream_expire, now: now_ms }),
        _ => Ok(()),
    }
}

/// Whether `ip` lies in `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
pub fn cidr_contains(cidr: &str, ip: IpAddr) -> Result<bool, PolicyError> {
    let bad = || PolicyError::BadCidr(cidr.to_owned());
    let (addr, len) = match cidr.trim().split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
        None => (cidr.trim(), None),
    };
    // IPv4 may arrive as an IPv4-mapped IPv6 address (a dual-stack socket, or written so in the
    // policy): compare such addresses as IPv4.
    let unmap = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    let parsed: IpAddr = addr.parse().map_err(|_| bad())?;
    let net = unmap(parsed);
    let len = match (parsed, len) {
        // ::ffff:a.b.c.d/n counts its prefix over 128 bits: n - 96 of them cover the IPv4 part.
        (IpAddr::V6(_), Some(n)) if net.is_ipv4() => Some(n.checked_sub(96).ok_or_else(bad)?),
        _ => len,
    };
    let ip = unmap(ip);
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return Err(bad());
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Ok(u32::from(n) & mask == u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return Err(bad());
            }
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            Ok(u128::from(n) & mask == u128::from(i) & mask)
        }
        _ => Ok(false),
    }
}

/// Writes out the default port of the scheme when the authority has none.
fn with_port(url: &str) -> Result<String, PolicyError> {
    let (scheme, rest) = url.split_once("://").ok_or(PolicyError::MalformedUrl("no scheme"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(PolicyError::MalformedUrl("no host"));
    }
    let host_part = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = if let Some(v6_end) = host_part.rfind(']') {
        host_part[v6_end..].contains(':')
    } else {
        host_part.contains(':')
    };
    if has_port {
        return Ok(url.to_owned());
    }
    let port = match scheme.to_ascii_lowercase().as_str() {
        "rtmp" => 1935,
        "rtmps" => 443,
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        "srt" => 9999,
        "rtsp" => 554,
        _ => return Err(PolicyError::MalformedUrl("no port and unknown scheme")),
    };
    Ok(format!("{scheme}://{authority}:{port}{tail}"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn ome_documentation_vector() {
        let url = "ws://192.168.0.100:3333/app/stream?policy=eyJ1cmxfZXhwaXJlIjoxMzk5NzIxNTgxfQ";
        assert_eq!(signature(b"1kU^b6", url), "dvVdBpoxAeCPl94Kt5RoiqLI0YE");
        // The same URL without the port signs differently: the port is part of what is signed.
        let no_port = "ws://192.168.0.100/app/stream?policy=eyJ1cmxfZXhwaXJlIjoxMzk5NzIxNTgxfQ";
        assert_eq!(signature(b"1kU^b6", no_port), "HCp1yeGM4NKYP__z8DIHoehF7Zw");
        assert_eq!(decode_policy("eyJ1cmxfZXhwaXJlIjoxMzk5NzIxNTgxfQ").unwrap().url_expire, 1_399_721_581);
    }

    #[test]
    fn ome_vector_verifies_before_expiry() {
        let signed = "ws://192.168.0.100:3333/app/stream?policy=eyJ1cmxfZXhwaXJlIjoxMzk5NzIxNTgxfQ&signature=dvVdBpoxAeCPl94Kt5RoiqLI0YE";
        assert!(verify(b"1kU^b6", signed, LOCAL, 1_399_721_000).is_ok());
        assert_eq!(
            verify(b"1kU^b6", signed, LOCAL, 1_399_721_582),
            Err(PolicyError::Expired { url_expire: 1_399_721_581, now: 1_399_721_582 })
        );
    }

    #[test]
    fn sign_then_verify_round_trip_and_port_normalisation() {
        let p = Policy { url_expire: 2_000, ..Default::default() };
        let signed = sign_url(b"s3cret", "rtmp://example.com/live/demo", &p).unwrap();
        assert!(signed.starts_with("rtmp://example.com:1935/live/demo?policy="));
        assert_eq!(verify(b"s3cret", &signed, LOCAL, 1_000).unwrap(), p);
        // A client that leaves the default port out dials the same URL.
        let without_port = signed.replace(":1935", "");
        assert_eq!(verify(b"s3cret", &without_port, LOCAL, 1_000).unwrap(), p);
        assert_eq!(verify(b"other", &signed, LOCAL, 1_000), Err(PolicyError::BadSignature));
    }

    #[test]
    fn other_query_parameters_are_signed_in_order() {
        let p = Policy { url_expire: 2_000, ..Default::default() };
        let signed = sign_url(b"k", "rtmp://h:1935/live/s?a=1&b=2", &p).unwrap();
        assert!(verify(b"k", &signed, LOCAL, 0).is_ok());
        let swapped = signed.replacen("a=1&b=2", "b=2&a=1", 1);
        assert_eq!(verify(b"k", &swapped, LOCAL, 0), Err(PolicyError::BadSignature));
        let changed = signed.replacen("a=1", "a=9", 1);
        assert_eq!(verify(b"k", &changed, LOCAL, 0), Err(PolicyError::BadSignature));
    }

    #[test]
    fn tampered_policy_or_stream_is_refused() {
        let p = Policy { url_expire: 2_000, ..Default::default() };
        let signed = sign_url(b"k", "rtmp://h:1935/live/s", &p).unwrap();
        let other_stream = signed.replacen("/live/s?", "/live/t?", 1);
        assert_eq!(verify(b"k", &other_stream, LOCAL, 0), Err(PolicyError::BadSignature));
        let longer = Policy { url_expire: 9_999_999, ..Default::default() };
        let forged = signed.replacen(&encode_policy(&p), &encode_policy(&longer), 1);
        assert_eq!(verify(b"k", &forged, LOCAL, 0), Err(PolicyError::BadSignature));
    }

    #[test]
    fn missing_parts_are_named() {
        assert_eq!(verify(b"k", "rtmp://h:1935/live/s", LOCAL, 0), Err(PolicyError::MissingPolicy));
        assert_eq!(verify(b"k", "rtmp://h:1935/live/s?policy=e30", LOCAL, 0), Err(PolicyError::MissingSignature));
        assert!(matches!(
            verify(b"k", "rtmp://h:1935/live/s?policy=!!&signature=x", LOCAL, 0),
            Err(PolicyError::MalformedPolicy(_))
        ));
        // `{}` has no url_expire, which is required.
        assert!(matches!(
            verify(b"k", "rtmp://h:1935/live/s?policy=e30&signature=x", LOCAL, 0),
            Err(PolicyError::MalformedPolicy(_))
        ));
        assert!(matches!(verify(b"k", "no scheme", LOCAL, 0), Err(PolicyError::MalformedUrl(_))));
    }

    #[test]
    fn activation_and_stream_expiry() {
        let p = Policy { url_expire: 5_000, url_activate: Some(1_000), stream_expire: Some(3_000), allow_ip: None };
        let signed = sign_url(b"k", "rtmp://h:1935/live/s", &p).unwrap();
        assert_eq!(verify(b"k", &signed, LOCAL, 999), Err(PolicyError::NotYetActive { url_activate: 1_000, now: 999 }));
        assert!(verify(b"k", &signed, LOCAL, 1_000).is_ok());
        assert_eq!(
            verify(b"k", &signed, LOCAL, 3_001),
            Err(PolicyError::StreamExpired { stream_expire: 3_000, now: 3_001 })
        );
        assert!(check_stream_expire(&p, 3_000).is_ok());
        assert!(check_stream_expire(&p, 3_001).is_err());
    }

    #[test]
    fn allow_ip_cidr() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains("192.168.0.0/24", ip("192.168.0.77")).unwrap());
        assert!(!cidr_contains("192.168.0.0/24", ip("192.168.1.1")).unwrap());
        assert!(cidr_contains("0.0.0.0/0", ip("8.8.8.8")).unwrap());
        assert!(cidr_contains("10.1.2.3", ip("10.1.2.3")).unwrap());
        assert!(!cidr_contains("10.1.2.3/32", ip("10.1.2.4")).unwrap());
        assert!(cidr_contains("127.0.0.0/8", ip("::ffff:127.0.0.1")).unwrap());
        assert!(cidr_contains("::ffff:10.0.0.0/104", ip("10.1.2.3")).unwrap());
        assert!(!cidr_contains("::ffff:10.0.0.0/104", ip("11.1.2.3")).unwrap());
        assert!(cidr_contains("::ffff:10.1.2.3", ip("10.1.2.3")).unwrap());
        assert!(cidr_contains("2001:db8::/32", ip("2001:db8:1::1")).unwrap());
        assert!(!cidr_contains("2001:db8::/32", ip("10.0.0.1")).unwrap());
        assert!(cidr_contains("10.0.0.0/33", ip("10.0.0.1")).is_err());
        assert!(cidr_contains("nonsense", ip("10.0.0.1")).is_err());

        let p = Policy { url_expire: 5_000, allow_ip: Some("10.0.0.0/8".into()), ..Default::default() };
        let signed = sign_url(b"k", "rtmp://h:1935/live/s", &p).unwrap();
        assert!(verify(b"k", &signed, ip("10.9.8.7"), 0).is_ok());
        assert!(matches!(verify(b"k", &signed, LOCAL, 0), Err(PolicyError::IpNotAllowed { .. })));
    }

    #[test]
    fn ipv6_host_port_detection() {
        assert_eq!(with_port("rtmp://[::1]/live/s").unwrap(), "rtmp://[::1]:1935/live/s");
        assert_eq!(with_port("rtmp://[::1]:1936/live/s").unwrap(), "rtmp://[::1]:1936/live/s");
    }
}
