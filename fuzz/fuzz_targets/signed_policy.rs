//! `onair_policy`: `verify` on arbitrary URLs, secrets, client addresses and times,
//! `decode_policy` and `cidr_contains` on arbitrary strings, and the sign → verify round trip.
//!
//! Properties:
//! * whatever `verify` accepts satisfies its policy (active, not expired, stream not expired,
//!   client inside `allow_ip`);
//! * a decoded policy re-encodes to one that decodes to the same policy;
//! * an address is inside its own CIDR at every prefix length;
//! * a URL with a correct signature over an arbitrary query and policy JSON (so that `verify`
//!   gets past the signature to the policy checks) is accepted exactly when its policy allows
//!   the client at that time;
//! * round trip: `sign_url` of a well-formed base URL with an arbitrary policy verifies with the
//!   same secret at any time inside the window from an allowed address (also when the client
//!   leaves the default port out), and is refused just after the window, from outside
//!   `allow_ip`, with another secret, and with the stream name changed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use onair_policy::{
    Policy, PolicyError, check_stream_expire, cidr_contains, decode_policy, encode_policy, sign_url, signature, verify,
};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
    Mapped([u8; 4]),
}

impl Ip {
    fn addr(self) -> IpAddr {
        match self {
            Ip::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
            Ip::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
            Ip::Mapped(b) => IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Scheme {
    Rtmp,
    Rtmps,
    Http,
    Https,
    Ws,
    Wss,
    Srt,
    Rtsp,
    /// Upper case (schemes are case-insensitive for the default port).
    RtmpUpper,
}

impl Scheme {
    fn name_and_port(self) -> (&'static str, u16) {
        match self {
            Scheme::Rtmp => ("rtmp", 1935),
            Scheme::Rtmps => ("rtmps", 443),
            Scheme::Http => ("http", 80),
            Scheme::Https => ("https", 443),
            Scheme::Ws => ("ws", 80),
            Scheme::Wss => ("wss", 443),
            Scheme::Srt => ("srt", 9999),
            Scheme::Rtsp => ("rtsp", 554),
            Scheme::RtmpUpper => ("RTMP", 1935),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Host {
    Name(Vec<u8>),
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Arbitrary, Debug)]
enum AllowIp {
    /// Any string.
    Raw(String),
    /// A network written from an address and a prefix length.
    Net(Ip, u8),
}

#[derive(Arbitrary, Debug)]
struct RoundTrip {
    scheme: Scheme,
    userinfo: Option<Vec<u8>>,
    host: Host,
    port: Option<u16>,
    path: Vec<Vec<u8>>,
    query: Vec<(Vec<u8>, Vec<u8>)>,
    url_expire: u64,
    url_activate: Option<u64>,
    stream_expire: Option<u64>,
    allow_ip: Option<AllowIp>,
    /// Where in the window to verify.
    at: u64,
}

#[derive(Arbitrary, Debug)]
enum JsonNum {
    Absent,
    U64(u64),
    /// Any JSON text in the value position (negative, float, huge, string, null, …).
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Json {
    Raw(String),
    Fields {
        url_expire: JsonNum,
        url_activate: JsonNum,
        stream_expire: JsonNum,
        allow_ip: Option<String>,
        extra: Option<(String, String)>,
    },
}

/// A correctly signed URL around an arbitrary query and policy.
#[derive(Arbitrary, Debug)]
struct Forged {
    pre: String,
    json: Json,
    padding: bool,
    post: String,
}

#[derive(Arbitrary, Debug)]
struct Input {
    secret: Vec<u8>,
    url: String,
    ip: Ip,
    now: u64,
    policy: String,
    cidr: String,
    prefix: u8,
    forged: Forged,
    round_trip: RoundTrip,
}

/// A URL-safe word from arbitrary bytes (letters, digits, `-`, `_`, `.`), never empty.
fn word(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
    let w: String = bytes.iter().take(24).map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect();
    if w.is_empty() { "x".into() } else { w }
}

fn json_num(out: &mut Vec<String>, key: &str, n: &JsonNum) {
    match n {
        JsonNum::Absent => {}
        JsonNum::U64(v) => out.push(format!("\"{key}\":{v}")),
        JsonNum::Raw(s) => out.push(format!("\"{key}\":{s}")),
    }
}

/// Whatever `verify` accepts satisfies its policy.
fn check_accepted(result: &Result<Policy, PolicyError>, client: IpAddr, now: u64) {
    if let Ok(p) = result {
        assert!(now <= p.url_expire);
        assert!(p.url_activate.is_none_or(|a| a <= now));
        assert!(p.stream_expire.is_none_or(|e| now <= e));
        if let Some(a) = &p.allow_ip {
            assert_eq!(cidr_contains(a, client), Ok(true));
        }
    }
}

fn forged(secret: &[u8], client: IpAddr, now: u64, f: &Forged) {
    let json = match &f.json {
        Json::Raw(s) => s.clone(),
        Json::Fields { url_expire, url_activate, stream_expire, allow_ip, extra } => {
            let mut fields = Vec::new();
            json_num(&mut fields, "url_expire", url_expire);
            json_num(&mut fields, "url_activate", url_activate);
            json_num(&mut fields, "stream_expire", stream_expire);
            if let Some(a) = allow_ip {
                fields.push(format!("\"allow_ip\":{}", json_string(a)));
            }
            if let Some((k, v)) = extra {
                fields.push(format!("{}:{v}", json_string(k)));
            }
            format!("{{{}}}", fields.join(","))
        }
    };
    let mut encoded = URL_SAFE_NO_PAD.encode(json.as_bytes());
    if f.padding {
        while encoded.len() % 4 != 0 {
            encoded.push('=');
        }
    }
    // An explicit port: `verify` signs the URL exactly as written.
    let base = "rtmp://h:1935/live/s";
    let query = format!("{}policy={encoded}{}", f.pre, f.post);
    let keys: Vec<&str> = query.split('&').map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k)).collect();
    if keys.contains(&"signature") {
        return;
    }
    let unsigned = format!("{base}?{query}");
    let url = format!("{unsigned}&signature={}", signature(secret, &unsigned));
    let result = verify(secret, &url, client, now);
    check_accepted(&result, client, now);
    // With ours the only policy parameter, the outcome is the policy's verdict.
    if keys.iter().filter(|&&k| k == "policy").count() == 1 {
        let param = query.split('&').find_map(|pair| pair.strip_prefix("policy=")).expect("the policy parameter");
        let expected = decode_policy(param).and_then(|p| {
            if p.url_activate.is_some_and(|a| now < a) {
                return Err(PolicyError::NotYetActive { url_activate: p.url_activate.unwrap(), now });
            }
            if now > p.url_expire {
                return Err(PolicyError::Expired { url_expire: p.url_expire, now });
            }
            check_stream_expire(&p, now)?;
            if let Some(a) = &p.allow_ip
                && !cidr_contains(a, client)?
            {
                return Err(PolicyError::IpNotAllowed { ip: client, allow: a.clone() });
            }
            Ok(p)
        });
        assert_eq!(result, expected, "{url}");
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn round_trip(secret: &[u8], client: IpAddr, rt: &RoundTrip) {
    let (scheme, default_port) = rt.scheme.name_and_port();
    let host = match &rt.host {
        Host::Name(b) => word(b),
        Host::V4(b) => Ipv4Addr::from(*b).to_string(),
        Host::V6(b) => format!("[{}]", Ipv6Addr::from(*b)),
    };
    let userinfo = rt.userinfo.as_deref().map(|u| format!("{}@", word(u))).unwrap_or_default();
    let authority = format!("{userinfo}{host}");
    let port = rt.port.map(|p| format!(":{p}")).unwrap_or_default();
    let mut path = String::new();
    for seg in rt.path.iter().take(4) {
        path.push('/');
        path.push_str(&word(seg));
    }
    let mut query = Vec::new();
    for (k, v) in rt.query.iter().take(4) {
        let k = word(k);
        if k == "policy" || k == "signature" {
            continue;
        }
        query.push(format!("{k}={}", word(v)));
    }
    let base = if query.is_empty() {
        format!("{scheme}://{authority}{port}{path}")
    } else {
        format!("{scheme}://{authority}{port}{path}?{}", query.join("&"))
    };

    let allow_ip = rt.allow_ip.as_ref().map(|a| match a {
        AllowIp::Raw(s) => s.clone(),
        AllowIp::Net(ip, len) => format!("{}/{len}", ip.addr()),
    });
    let policy = Policy {
        url_expire: rt.url_expire,
        url_activate: rt.url_activate,
        stream_expire: rt.stream_expire,
        allow_ip: allow_ip.clone(),
    };
    let signed = sign_url(secret, &base, &policy).unwrap_or_else(|e| panic!("cannot sign {base:?}: {e}"));

    // The window in which verification must succeed.
    let lo = rt.url_activate.unwrap_or(0);
    let hi = rt.url_expire.min(rt.stream_expire.unwrap_or(u64::MAX));
    if lo > hi {
        if let Ok(p) = verify(secret, &signed, client, rt.at) {
            panic!("verified outside any window: {p:?} at {}", rt.at);
        }
        return;
    }
    let now = lo + rt.at % (hi - lo).saturating_add(1).max(1);
    let now = now.min(hi);
    let allowed = match &allow_ip {
        None => true,
        Some(a) => match cidr_contains(a, client) {
            Ok(inside) => inside,
            Err(_) => {
                assert!(matches!(verify(secret, &signed, client, now), Err(PolicyError::BadCidr(_))));
                return;
            }
        },
    };
    let result = verify(secret, &signed, client, now);
    if !allowed {
        assert!(matches!(result, Err(PolicyError::IpNotAllowed { .. })), "{signed} from {client}: {result:?}");
        return;
    }
    assert_eq!(result.as_ref(), Ok(&policy), "{signed} from {client} at {now}");

    // A client leaving the default port out dials the same URL.
    if rt.port.is_none() {
        let with = format!("{scheme}://{authority}:{default_port}");
        let without = format!("{scheme}://{authority}");
        assert!(signed.starts_with(&with), "{signed}");
        let short = signed.replacen(&with, &without, 1);
        assert_eq!(verify(secret, &short, client, now).as_ref(), Ok(&policy), "{short}");
    }
    // Just after the window.
    if hi < u64::MAX {
        assert!(verify(secret, &signed, client, hi + 1).is_err(), "{signed} after {hi}");
    }
    // Another secret (HMAC pads short keys with zeros, so append a non-zero byte).
    let mut other = secret.to_vec();
    other.push(1);
    assert_eq!(verify(&other, &signed, client, now), Err(PolicyError::BadSignature));
    // Another stream.
    if let Some(i) = signed.find("?policy=").or_else(|| signed.find("&policy=")) {
        let (head, tail) = signed.split_at(i);
        if let Some(last) = head.rfind('/').filter(|&j| j > scheme.len() + 3) {
            let tampered = format!("{}/zz{}{}", &head[..last], &head[last + 1..], tail);
            if tampered != signed {
                assert_eq!(verify(secret, &tampered, client, now), Err(PolicyError::BadSignature), "{tampered}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let client = input.ip.addr();

    // verify on arbitrary URLs: whatever passes satisfies its policy.
    check_accepted(&verify(&input.secret, &input.url, client, input.now), client, input.now);
    forged(&input.secret, client, input.now, &input.forged);

    // decode_policy: decode(encode(p)) == p.
    if let Ok(p) = decode_policy(&input.policy) {
        assert_eq!(decode_policy(&encode_policy(&p)), Ok(p));
    }

    // cidr_contains on arbitrary strings, and an address inside its own networks.
    let _ = cidr_contains(&input.cidr, client);
    let own = match client {
        // A v4-mapped client is compared as IPv4: its own v6 spelling is another family.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => None,
        other => Some(other),
    };
    if let Some(ip) = own {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        assert_eq!(cidr_contains(&ip.to_string(), client), Ok(true));
        assert_eq!(cidr_contains(&format!("{ip}/{}", input.prefix % (max + 1)), client), Ok(true));
        assert!(cidr_contains(&format!("{ip}/{}", u16::from(max) + 1 + u16::from(input.prefix)), client).is_err());
    }

    round_trip(&input.secret, client, &input.round_trip);
});
