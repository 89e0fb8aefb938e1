//! A STUN Binding client (RFC 8489), just enough to learn the address a STUN server sees us
//! from: the request ([`binding_request`]) and the answer's XOR-MAPPED-ADDRESS (or the older
//! MAPPED-ADDRESS) ([`mapped_address`]). Pure: the socket work is in `super::net`.
//!
//! Written here rather than taken from `rtc-stun` (in the lock through the webrtc crate): the
//! engine does not depend on it directly, and these two messages are a few dozen lines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie of every STUN message (RFC 8489 §5).
const COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Why an answer gives no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("an answer to another request")]
    OtherTransaction,
    #[error("the server refused the request")]
    Refused,
    #[error("the answer has no (XOR-)MAPPED-ADDRESS")]
    NoAddress,
}

/// A Binding request with transaction id `txid` (no attributes).
pub fn binding_request(txid: [u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Message length 0: no attributes.
    m[4..8].copy_from_slice(&COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(&txid);
    m
}

/// The address in the Binding success response `msg` to the request with `txid`.
pub fn mapped_address(msg: &[u8], txid: &[u8; 12]) -> Result<SocketAddr, StunError> {
    if msg.len() < 20 || msg[0] & 0xC0 != 0 || msg[4..8] != COOKIE.to_be_bytes() {
        return Err(StunError::NotStun);
    }
    if &msg[8..20] != txid {
        return Err(StunError::OtherTransaction);
    }
    let kind = u16::from_be_bytes([msg[0], msg[1]]);
    if kind == BINDING_ERROR {
        return Err(StunError::Refused);
    }
    if kind != BINDING_SUCCESS {
        return Err(StunError::NotStun);
    }
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    let body = msg.get(20..20 + len).ok_or(StunError::NotStun)?;
    let mut plain = None;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let vlen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let Some(value) = body.get(at + 4..at + 4 + vlen) else { break };
        match typ {
            XOR_MAPPED_ADDRESS => {
                if let Some(a) = address(value, Some(txid)) {
                    return Ok(a);
                }
            }
            MAPPED_ADDRESS => plain = plain.or_else(|| address(value, None)),
            _ => {}
        }
        // Values are padded to a multiple of 4 bytes.
        at += 4 + vlen.div_ceil(4) * 4;
    }
    plain.ok_or(StunError::NoAddress)
}

/// A (XOR-)MAPPED-ADDRESS value: reserved byte, family, port, address; XORed with the cookie
/// (and the transaction id for IPv6) when `xor` holds the transaction id.
fn address(v: &[u8], xor: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let mut key = [0u8; 16];
    key[0..4].copy_from_slice(&COOKIE.to_be_bytes());
    if let Some(txid) = xor {
        key[4..16].copy_from_slice(txid);
    }
    let mask = |bytes: &[u8]| -> Vec<u8> {
        bytes.iter().zip(key.iter()).map(|(b, k)| if xor.is_some() { b ^ k } else { *b }).collect()
    };
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ if xor.is_some() { (COOKIE >> 16) as u16 } else { 0 };
    let ip = match v.get(1)? {
        0x01 => {
            let b = mask(v.get(4..8)?);
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        0x02 => {
            let b: [u8; 16] = mask(v.get(4..20)?).try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of RFC 5769 §2.2's sample IPv4 response (software "test vector", mapped
    /// 192.0.2.1:32853); the MESSAGE-INTEGRITY and FINGERPRINT values are left as zeros, as this
    /// client does not check them.
    fn rfc5769_ipv4_response() -> (Vec<u8>, [u8; 12]) {
        let txid = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
        let mut m = vec![0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&txid);
        m.extend_from_slice(&[0x80, 0x22, 0x00, 0x0b]);
        m.extend_from_slice(b"test vector ");
        m.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
        m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        m.extend_from_slice(&[0; 20]);
        m.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0]);
        assert_eq!(m.len(), 20 + 0x3c);
        (m, txid)
    }

    #[test]
    fn reads_the_rfc5769_ipv4_sample() {
        let (m, txid) = rfc5769_ipv4_response();
        assert_eq!(mapped_address(&m, &txid), Ok("192.0.2.1:32853".parse().unwrap()));
        let mut other = txid;
        other[0] ^= 1;
        assert_eq!(mapped_address(&m, &other), Err(StunError::OtherTransaction));
        assert_eq!(mapped_address(&m[..10], &txid), Err(StunError::NotStun));
    }

    #[test]
    fn ipv6_and_plain_mapped_address() {
        let txid = [7u8; 12];
        let ip: Ipv6Addr = "2001:db8:1234:5678:11:2233:4455:6677".parse().unwrap();
        let mut value = vec![0, 0x02];
        value.extend_from_slice(&(32853u16 ^ 0x2112).to_be_bytes());
        let mut key = COOKIE.to_be_bytes().to_vec();
        key.extend_from_slice(&txid);
        value.extend(ip.octets().iter().zip(&key).map(|(a, k)| a ^ k));
        let mut m = vec![0x01, 0x01, 0x00, 24, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&txid);
        m.extend_from_slice(&[0x00, 0x20, 0x00, 20]);
        m.extend_from_slice(&value);
        assert_eq!(mapped_address(&m, &txid), Ok(SocketAddr::new(ip.into(), 32853)));

        // An old server: MAPPED-ADDRESS only, not XORed.
        let mut m = vec![0x01, 0x01, 0x00, 12, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&txid);
        m.extend_from_slice(&[0x00, 0x01, 0x00, 8, 0, 1, 0x0d, 0x96, 11, 77, 0, 1]);
        assert_eq!(mapped_address(&m, &txid), Ok("11.77.0.1:3478".parse().unwrap()));
    }

    #[test]
    fn request_and_refusal() {
        let txid = [1u8; 12];
        let r = binding_request(txid);
        assert_eq!(&r[..8], &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&r[8..], &txid);
        let mut err = r.to_vec();
        err[0..2].copy_from_slice(&BINDING_ERROR.to_be_bytes());
        assert_eq!(mapped_address(&err, &txid), Err(StunError::Refused));
        let mut ok = r.to_vec();
        ok[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
        assert_eq!(mapped_address(&ok, &txid), Err(StunError::NoAddress));
    }
}
