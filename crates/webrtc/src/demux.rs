//! Finding the session a datagram belongs to when every viewer shares one port.
//!
//! A datagram from a remote address we already know goes to that address's session. Otherwise
//! it can only be a STUN Binding request (ICE connectivity check, RFC 8445 §7.2.2): its
//! USERNAME attribute is `<our ufrag>:<their ufrag>`, and every session has its own ufrag.

/// STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// STUN attribute type USERNAME.
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// Whether `packet` looks like a STUN message (RFC 7983 demultiplexing: first byte 0..=3, and
/// the magic cookie at bytes 4..8).
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER_LEN && packet[0] < 4 && packet[4..8] == MAGIC_COOKIE
}

/// The local (our) ufrag of a STUN message's USERNAME attribute: the part before `:`.
///
/// Returns `None` for anything that is not a well-formed STUN message carrying a USERNAME.
pub fn stun_local_ufrag(packet: &[u8]) -> Option<&str> {
    if !is_stun(packet) {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let end = HEADER_LEN.checked_add(declared)?;
    let attrs = packet.get(HEADER_LEN..end)?;
    let mut pos = 0usize;
    while pos + 4 <= attrs.len() {
        let typ = u16::from_be_bytes([attrs[pos], attrs[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([attrs[pos + 2], attrs[pos + 3]]));
        let value = attrs.get(pos + 4..pos + 4 + len)?;
        if typ == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let local = username.split_once(':').map_or(username, |(local, _)| local);
            return (!local.is_empty()).then_some(local);
        }
        // Attributes are padded to a multiple of 4 bytes.
        pos += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN message of `typ` with the given attributes (type, value), padded.
    fn stun(typ: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&MAGIC_COOKIE);
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn binding_request_username_gives_our_ufrag() {
        // PRIORITY first (4 bytes), then USERNAME with a length that needs padding.
        let msg = stun(0x0001, &[(0x0024, &[0, 0, 0, 1]), (ATTR_USERNAME, b"onairUfrag1:Xy9")]);
        assert!(is_stun(&msg));
        assert_eq!(stun_local_ufrag(&msg), Some("onairUfrag1"));
    }

    #[test]
    fn username_after_an_odd_length_attribute() {
        let msg = stun(0x0001, &[(0x8022, b"abcde"), (ATTR_USERNAME, b"u1:r2")]);
        assert_eq!(stun_local_ufrag(&msg), Some("u1"));
    }

    #[test]
    fn a_username_without_colon_is_all_ours() {
        let msg = stun(0x0001, &[(ATTR_USERNAME, b"solo")]);
        assert_eq!(stun_local_ufrag(&msg), Some("solo"));
    }

    #[test]
    fn responses_and_non_stun_have_no_ufrag() {
        // A Binding success response carries no USERNAME.
        assert_eq!(stun_local_ufrag(&stun(0x0101, &[(0x0020, &[0, 1, 2, 3, 4, 5, 6, 7])])), None);
        // DTLS record (first byte 20..=63) and RTP (128..=191) are not STUN.
        let mut dtls = stun(0x0001, &[(ATTR_USERNAME, b"a:b")]);
        dtls[0] = 22;
        assert!(!is_stun(&dtls));
        assert_eq!(stun_local_ufrag(&dtls), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        // Wrong cookie.
        let mut bad = stun(0x0001, &[(ATTR_USERNAME, b"a:b")]);
        bad[5] = 0;
        assert_eq!(stun_local_ufrag(&bad), None);
        // Empty local part.
        assert_eq!(stun_local_ufrag(&stun(0x0001, &[(ATTR_USERNAME, b":b")])), None);
    }

    #[test]
    fn truncated_or_lying_lengths_never_panic() {
        let msg = stun(0x0001, &[(ATTR_USERNAME, b"ufrag:remote")]);
        for cut in 0..msg.len() {
            let _ = stun_local_ufrag(&msg[..cut]);
        }
        let mut long = msg.clone();
        long[3] = 0xff; // declared length beyond the packet
        assert_eq!(stun_local_ufrag(&long), None);
        let mut attr = msg.clone();
        attr[HEADER_LEN + 3] = 0xff; // attribute length beyond the body
        assert_eq!(stun_local_ufrag(&attr), None);
        for seed in 0u8..=255 {
            let mut junk = msg.clone();
            for (i, b) in junk.iter_mut().enumerate().skip(20) {
                *b = b.wrapping_mul(seed).wrapping_add(i as u8);
            }
            let _ = stun_local_ufrag(&junk);
        }
    }
}
