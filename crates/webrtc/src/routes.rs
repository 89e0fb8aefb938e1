//! The one routing table of the server: which shard and session every packet belongs to.
//!
//! The server runs several shards (by default one per core), each owning a subset of the peer
//! connections; all of them share the one UDP port. The socket readers look every datagram up
//! here (under one short mutex: players send few packets — checks, DTLS, RTCP — so it is not on
//! the media path) and hand it to its shard together with the session's key, so shards keep no
//! routing table of their own: a STUN message carrying a USERNAME goes to the session of its
//! ufrag (see [`crate::demux`]) and teaches the table its source address; anything else goes by
//! source address. A shard adds the addresses its own connectivity checks go to, and removes a
//! session (with every address still pointing at it) when the session ends. Pure bookkeeping,
//! no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use crate::demux::stun_local_ufrag;

/// Remote addresses one session may be reached from: STUN with a known ufrag but a forged
/// MESSAGE-INTEGRITY (rtc rejects it later) must not grow the table without end.
pub(crate) const MAX_ADDRS: usize = 32;

/// Where a session lives.
#[derive(Debug)]
struct Entry {
    shard: usize,
    ufrag: String,
    id: String,
    addrs: Vec<SocketAddr>,
}

/// A session as the table knows it: its shard and its key (the shard's name for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub shard: usize,
    pub key: u64,
}

/// Session → shard, and ufrag / session id / remote address → session, plus the session count
/// of each shard. Sessions are known by a key the table hands out.
#[derive(Debug)]
pub(crate) struct Routes {
    sessions: HashMap<u64, Entry>,
    by_ufrag: HashMap<String, u64>,
    by_id: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    load: Vec<usize>,
    next_key: u64,
}

impl Routes {
    /// A table for `shards` shards (at least one).
    pub(crate) fn new(shards: usize) -> Routes {
        Routes {
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            load: vec![0; shards.max(1)],
            next_key: 0,
        }
    }

    /// The shard a new session should go to: the one with the fewest sessions (the lowest
    /// index among equals).
    pub(crate) fn pick(&self) -> usize {
        self.load.iter().enumerate().min_by_key(|(i, n)| (**n, *i)).map_or(0, |(i, _)| i)
    }

    /// Registers a session on `shard` and returns its key; `None` (nothing changed) when its id
    /// or ufrag is taken or there is no such shard.
    pub(crate) fn add_session(&mut self, shard: usize, id: &str, ufrag: &str) -> Option<u64> {
        if shard >= self.load.len() || self.by_id.contains_key(id) || self.by_ufrag.contains_key(ufrag) {
            return None;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.by_id.insert(id.to_owned(), key);
        self.by_ufrag.insert(ufrag.to_owned(), key);
        self.sessions.insert(key, Entry { shard, ufrag: ufrag.to_owned(), id: id.to_owned(), addrs: Vec::new() });
        self.load[shard] += 1;
        Some(key)
    }

    /// Forgets a session and the addresses it was reached from (unless another session has
    /// taken them over since).
    pub(crate) fn remove_session(&mut self, key: u64) {
        let Some(entry) = self.sessions.remove(&key) else { return };
        self.by_ufrag.remove(&entry.ufrag);
        self.by_id.remove(&entry.id);
        for addr in entry.addrs {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
        self.load[entry.shard] = self.load[entry.shard].saturating_sub(1);
    }

    /// Traffic from `addr` now belongs to session `key` (at most [`MAX_ADDRS`] addresses per
    /// session).
    pub(crate) fn learn(&mut self, key: u64, addr: SocketAddr) {
        if self.by_addr.get(&addr) == Some(&key) {
            return;
        }
        let Some(entry) = self.sessions.get_mut(&key) else { return };
        if entry.addrs.len() >= MAX_ADDRS {
            return;
        }
        if !entry.addrs.contains(&addr) {
            entry.addrs.push(addr);
        }
        self.by_addr.insert(addr, key);
    }

    /// Session `id` (WHEP `DELETE`).
    pub(crate) fn session_of_id(&self, id: &str) -> Option<Target> {
        let key = *self.by_id.get(id)?;
        self.target(key)
    }

    fn target(&self, key: u64) -> Option<Target> {
        self.sessions.get(&key).map(|e| Target { shard: e.shard, key })
    }

    /// The session a datagram from `from` belongs to: a STUN message with a USERNAME by its
    /// ufrag (and the session learns `from`, so the DTLS that follows finds it too), anything
    /// else by its source address.
    pub(crate) fn route(&mut self, packet: &[u8], from: SocketAddr) -> Option<Target> {
        let key = match stun_local_ufrag(packet) {
            Some(ufrag) => {
                let key = *self.by_ufrag.get(ufrag)?;
                self.learn(key, from);
                key
            }
            None => *self.by_addr.get(&from)?,
        };
        self.target(key)
    }

    /// The session whose ufrag a STUN message names (first packet of an ICE-TCP connection).
    pub(crate) fn route_stun(&self, packet: &[u8]) -> Option<Target> {
        let key = *stun_local_ufrag(packet).and_then(|ufrag| self.by_ufrag.get(ufrag))?;
        self.target(key)
    }

    /// Sessions per shard.
    #[cfg(test)]
    pub(crate) fn load(&self) -> &[usize] {
        &self.load
    }

    /// Whether the table holds nothing at all (no session, ufrag, id or address).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.by_addr.is_empty() && self.by_ufrag.is_empty() && self.by_id.is_empty()
    }
}

/// The table as the socket tasks, the shards and the API handle share it.
#[derive(Debug)]
pub(crate) struct SharedRoutes {
    table: Mutex<Routes>,
    /// Packets that belonged to no session (dropped).
    pub unrouted: AtomicU64,
}

impl SharedRoutes {
    pub(crate) fn new(shards: usize) -> SharedRoutes {
        SharedRoutes { table: Mutex::new(Routes::new(shards)), unrouted: AtomicU64::new(0) }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Routes> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many shards to run: `ONAIR_WEBRTC_SHARDS` if it is a number ≥ 1, else the number of
/// cores (at most 16).
pub(crate) fn shard_count(env: Option<&str>, cores: usize) -> usize {
    env.and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n >= 1).unwrap_or(cores).clamp(1, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN Binding request with USERNAME `ours:theirs`.
    fn binding(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&0x0006u16.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[9; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The shard of a routing result.
    fn s(t: Option<Target>) -> Option<usize> {
        t.map(|t| t.shard)
    }

    #[test]
    fn new_sessions_spread_over_the_least_loaded_shard() {
        let mut r = Routes::new(3);
        let mut picked = Vec::new();
        let mut keys = Vec::new();
        for i in 0..7 {
            let shard = r.pick();
            picked.push(shard);
            keys.push(r.add_session(shard, &format!("id{i}"), &format!("ufrag{i}")).unwrap());
        }
        assert_eq!(picked, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(r.load(), [3, 2, 2]);
        // Shard 2 loses two sessions: it gets the next ones.
        r.remove_session(keys[2]);
        r.remove_session(keys[5]);
        assert_eq!(r.load(), [3, 2, 0]);
        assert_eq!(r.pick(), 2);
        assert_eq!(r.session_of_id("id2"), None);
        assert_eq!(r.session_of_id("id4").map(|t| t.shard), Some(1));
        // A zero-shard router still has one.
        assert_eq!(Routes::new(0).pick(), 0);
    }

    #[test]
    fn ids_and_ufrags_are_unique() {
        let mut r = Routes::new(2);
        let a = r.add_session(0, "a", "ua").unwrap();
        assert_eq!(r.add_session(1, "a", "ub"), None);
        assert_eq!(r.add_session(1, "b", "ua"), None);
        assert_eq!(r.add_session(2, "c", "uc"), None, "no such shard");
        assert_eq!(r.load(), [1, 0]);
        assert_eq!(r.session_of_id("a"), Some(Target { shard: 0, key: a }));
        assert_eq!(r.session_of_id("b"), None);
        // Once removed, its id and ufrag can come back (new key).
        r.remove_session(a);
        assert!(r.add_session(1, "a", "ua").is_some_and(|k| k != a));
    }

    #[test]
    fn stun_goes_by_ufrag_everything_else_by_address() {
        let mut r = Routes::new(2);
        r.add_session(0, "s0", "ufragZero").unwrap();
        r.add_session(1, "s1", "ufragOne").unwrap();
        let player = addr("192.0.2.7:50000");
        let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let srtcp = [0x81u8, 201, 0, 7, 1, 2, 3, 4];
        // Unknown address: only a check naming one of our ufrags gets through…
        assert_eq!(s(r.route(&dtls, player)), None);
        assert_eq!(s(r.route(&binding("nobody:theirs"), player)), None);
        assert_eq!(s(r.route(&dtls, player)), None);
        assert_eq!(s(r.route(&binding("ufragOne:theirs"), player)), Some(1));
        // …and teaches the address: DTLS/SRTCP from it now go to that shard.
        assert_eq!(s(r.route(&dtls, player)), Some(1));
        assert_eq!(s(r.route(&srtcp, player)), Some(1));
        // A STUN check still goes by its ufrag, even from an address another session has.
        assert_eq!(s(r.route_stun(&binding("ufragZero:x"))), Some(0));
        assert_eq!(s(r.route_stun(&dtls)), None);
        assert_eq!(s(r.route(&binding("ufragZero:x"), player)), Some(0));
        assert_eq!(s(r.route(&srtcp, player)), Some(0), "the latest check wins the address");
    }

    #[test]
    fn an_address_taken_over_by_another_session_stays_with_it() {
        let mut r = Routes::new(2);
        let old = r.add_session(0, "old", "uOld").unwrap();
        let new = r.add_session(1, "new", "uNew").unwrap();
        let player = addr("[2001:db8::1]:4000");
        r.learn(old, player);
        // The same player port now talks to a session of shard 1 (e.g. a reload).
        r.learn(new, player);
        // The old session ends: its claim goes, the new one's stays.
        r.remove_session(old);
        assert_eq!(s(r.route(&[0x80, 96, 0, 1], player)), Some(1));
        assert_eq!(s(r.route(&binding("uOld:x"), player)), None);
        // Then the new one ends: nothing routes any more.
        r.remove_session(new);
        assert_eq!(s(r.route(&[0x80, 96, 0, 1], player)), None);
        assert_eq!(r.load(), [0, 0]);
        assert!(r.by_addr.is_empty() && r.by_ufrag.is_empty() && r.by_id.is_empty());
        // Removing twice, or learning for a gone session, is harmless.
        r.remove_session(new);
        r.learn(new, player);
        assert_eq!(r.load(), [0, 0]);
        assert!(r.by_addr.is_empty());
    }

    #[test]
    fn a_session_learns_at_most_32_addresses() {
        let mut r = Routes::new(1);
        let key = r.add_session(0, "id", "uf").unwrap();
        for port in 1..=100u16 {
            r.route(&binding("uf:spoofed"), SocketAddr::from(([198, 51, 100, 1], port)));
        }
        assert_eq!(r.by_addr.len(), MAX_ADDRS);
        assert_eq!(s(r.route(&[0x80, 96], SocketAddr::from(([198, 51, 100, 1], 32)))), Some(0));
        assert_eq!(s(r.route(&[0x80, 96], SocketAddr::from(([198, 51, 100, 1], 33)))), None);
        r.remove_session(key);
        assert!(r.by_addr.is_empty());
    }

    #[test]
    fn shard_count_from_env_or_cores() {
        assert_eq!(shard_count(None, 2), 2);
        assert_eq!(shard_count(Some("1"), 8), 1);
        assert_eq!(shard_count(Some(" 3 "), 2), 3);
        assert_eq!(shard_count(Some("0"), 2), 2);
        assert_eq!(shard_count(Some("many"), 4), 4);
        assert_eq!(shard_count(None, 0), 1);
        assert_eq!(shard_count(None, 64), 16);
    }
}
