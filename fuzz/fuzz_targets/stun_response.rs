//! `onair_engine::reach::stun`: the answer of a STUN server (untrusted bytes from the network).
//!
//! Properties:
//! * `mapped_address` never panics on arbitrary bytes and transaction ids;
//! * a Binding success response made from an arbitrary address (XOR-MAPPED-ADDRESS, with
//!   arbitrary attributes before it, or only the older MAPPED-ADDRESS) gives that address back,
//!   and the same bytes answer `OtherTransaction` to another transaction id;
//! * a Binding request is 20 bytes, with the magic cookie and the transaction id.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use onair_engine::reach::stun::{StunError, binding_request, mapped_address};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    txid: [u8; 12],
    v6: bool,
    ip: [u8; 16],
    port: u16,
    /// Attributes (type, value) before the address.
    before: Vec<(u16, Vec<u8>)>,
    /// Only MAPPED-ADDRESS (plain), as old servers answer.
    plain: bool,
}

fn attribute(out: &mut Vec<u8>, typ: u16, value: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - value.len() % 4) % 4, 0);
}

fuzz_target!(|input: Input| {
    let _ = mapped_address(&input.raw, &input.txid);

    let request = binding_request(input.txid);
    assert_eq!(&request[4..8], &COOKIE);
    assert_eq!(&request[8..20], &input.txid);

    let addr = if input.v6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(input.ip)), input.port)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(input.ip[0], input.ip[1], input.ip[2], input.ip[3])), input.port)
    };
    let mut body = Vec::new();
    for (typ, value) in input.before.iter().take(4) {
        // Not an address attribute, and short enough for the 16-bit message length.
        if matches!(typ, 0x0001 | 0x0020) || value.len() > 256 {
            continue;
        }
        attribute(&mut body, *typ, value);
    }
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&COOKIE);
    key[4..].copy_from_slice(&input.txid);
    let (family, ip_bytes): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let mut value = vec![0, family];
    if input.plain {
        value.extend_from_slice(&addr.port().to_be_bytes());
        value.extend_from_slice(&ip_bytes);
        attribute(&mut body, 0x0001, &value);
    } else {
        value.extend_from_slice(&(addr.port() ^ 0x2112).to_be_bytes());
        value.extend(ip_bytes.iter().zip(key.iter()).map(|(b, k)| b ^ k));
        attribute(&mut body, 0x0020, &value);
    }
    let mut msg = vec![0x01, 0x01];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend_from_slice(&COOKIE);
    msg.extend_from_slice(&input.txid);
    msg.extend_from_slice(&body);
    assert_eq!(mapped_address(&msg, &input.txid), Ok(addr), "{msg:02x?}");
    let mut other = input.txid;
    other[0] ^= 1;
    assert_eq!(mapped_address(&msg, &other), Err(StunError::OtherTransaction));
});
