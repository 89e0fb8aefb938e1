//! Admission: how many WebRTC sessions may exist — in total, per stream, per client IP, and still
//! connecting — and how many ICE-TCP connections may be open ([`WebrtcLimits`]).
//!
//! An offer reserves its place **first**, before anything is built for it (no certificate, task,
//! broadcast receiver or buffer): [`Admission::reserve`] checks every limit and counts the new
//! session under one short lock, so concurrent offers cannot overshoot, and returns a
//! [`Reservation`] that the session carries for its whole life. Dropping it (the answer failed,
//! the session ended) gives the place back; [`Reservation::connected`] moves it out of the
//! "connecting" count once ICE and DTLS are up. Refusals are counted by limit
//! ([`Limit::label`]) and warned about at most every 10 s (the caller logs each one). The counting itself ([`Counts`]) is plain bookkeeping, tested without
//! tasks or sockets.
//!
//! Client IPs are counted per address for IPv4 and per /64 for IPv6 (one host or subscriber
//! usually holds a whole /64); an IPv4-mapped IPv6 address counts as its IPv4 address. Loopback
//! clients have no per-IP limit: they are this machine — its own tools, or a reverse proxy in
//! front of OnAir through which every viewer arrives from loopback; the other limits apply to
//! them as to anyone.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::WhepError;

/// Bounds on what untrusted players can make the WebRTC server hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcLimits {
    /// Sessions in all (connecting or connected). Default 200.
    pub sessions: usize,
    /// Sessions of one stream. Default 200.
    pub sessions_per_stream: usize,
    /// Sessions of one client IP (IPv6: one /64; loopback is not limited per IP). Default 8.
    pub sessions_per_ip: usize,
    /// Sessions not yet connected (offer being answered, ICE/DTLS not up yet). Default 32.
    pub connecting: usize,
    /// ICE-TCP connections open at once; more are closed as they are accepted. Default 128.
    pub ice_tcp_connections: usize,
    /// A session that is not connected this long after its offer is removed. Default 10 s:
    /// players connect in 0.2 s (Chromium on a LAN) to 3.5 s (GStreamer over ICE-TCP), so
    /// this leaves a slow path three times that, while a place held by a player that never
    /// connects is free again soon.
    pub connect_timeout: Duration,
    /// What a refused player is asked to wait before trying again (`Retry-After`). Default 10 s.
    pub retry_after: Duration,
}

impl Default for WebrtcLimits {
    fn default() -> Self {
        WebrtcLimits {
            sessions: 200,
            sessions_per_stream: 200,
            sessions_per_ip: 8,
            connecting: 32,
            ice_tcp_connections: 128,
            connect_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(10),
        }
    }
}

/// A limit that refused a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Limit {
    Sessions,
    SessionsPerStream,
    SessionsPerIp,
    Connecting,
    IceTcpConnections,
}

impl Limit {
    pub const ALL: [Limit; 5] =
        [Limit::Sessions, Limit::SessionsPerStream, Limit::SessionsPerIp, Limit::Connecting, Limit::IceTcpConnections];

    /// The name refusals are counted under (the engine's `[limits]` key).
    pub fn label(self) -> &'static str {
        match self {
            Limit::Sessions => "webrtc_sessions",
            Limit::SessionsPerStream => "webrtc_sessions_per_stream",
            Limit::SessionsPerIp => "webrtc_sessions_per_ip",
            Limit::Connecting => "webrtc_connecting",
            Limit::IceTcpConnections => "ice_tcp_connections",
        }
    }

    /// Its value in `limits`.
    pub fn max(self, limits: &WebrtcLimits) -> usize {
        match self {
            Limit::Sessions => limits.sessions,
            Limit::SessionsPerStream => limits.sessions_per_stream,
            Limit::SessionsPerIp => limits.sessions_per_ip,
            Limit::Connecting => limits.connecting,
            Limit::IceTcpConnections => limits.ice_tcp_connections,
        }
    }
}

/// The key a client IP is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64
/// (but `::1` stays loopback).
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_loopback() => ip,
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Sessions counted by stream, client and state. Only keys with at least one session are kept,
/// so the maps hold at most [`WebrtcLimits::sessions`] entries each.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    total: usize,
    connecting: usize,
    per_stream: HashMap<String, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Counts {
    /// Counts a new (connecting) session of `stream` from `ip` (already an [`ip_key`]), or says
    /// which limit it would break (nothing changes then; nothing is allocated either).
    pub fn add(&mut self, limits: &WebrtcLimits, stream: &str, ip: IpAddr) -> Result<(), Limit> {
        let per_ip = !ip.is_loopback();
        let of_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        let of_stream = self.per_stream.get(stream).copied().unwrap_or(0);
        if per_ip && of_ip >= limits.sessions_per_ip {
            return Err(Limit::SessionsPerIp);
        }
        if of_stream >= limits.sessions_per_stream {
            return Err(Limit::SessionsPerStream);
        }
        if self.total >= limits.sessions {
            return Err(Limit::Sessions);
        }
        if self.connecting >= limits.connecting {
            return Err(Limit::Connecting);
        }
        self.total += 1;
        self.connecting += 1;
        if per_ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        match self.per_stream.get_mut(stream) {
            Some(n) => *n += 1,
            None => {
                self.per_stream.insert(stream.to_owned(), 1);
            }
        }
        Ok(())
    }

    /// A session counted by [`Counts::add`] connected.
    pub fn connected(&mut self) {
        self.connecting = self.connecting.saturating_sub(1);
    }

    /// A session counted by [`Counts::add`] is gone (`connecting`: it never connected).
    pub fn remove(&mut self, stream: &str, ip: IpAddr, connecting: bool) {
        self.total = self.total.saturating_sub(1);
        if connecting {
            self.connecting = self.connecting.saturating_sub(1);
        }
        if let Entry::Occupied(mut e) = self.per_ip.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if let Some(n) = self.per_stream.get_mut(stream) {
            *n -= 1;
            if *n == 0 {
                self.per_stream.remove(stream);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn connecting(&self) -> usize {
        self.connecting
    }

    pub fn of_stream(&self, stream: &str) -> usize {
        self.per_stream.get(stream).copied().unwrap_or(0)
    }

    /// Whether nothing is counted at all.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.total == 0 && self.connecting == 0 && self.per_stream.is_empty() && self.per_ip.is_empty()
    }
}

/// The server's admission: its limits, the counts, and the refusals by limit.
#[derive(Debug)]
pub(crate) struct Admission {
    pub limits: WebrtcLimits,
    counts: Mutex<Counts>,
    refused: [AtomicU64; Limit::ALL.len()],
    /// When a refusal was last warned about.
    last_warning: Mutex<Option<Instant>>,
}

impl Admission {
    pub fn new(limits: WebrtcLimits) -> Admission {
        Admission { limits, counts: Mutex::default(), refused: Default::default(), last_warning: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new session of `stream` from `client`, or [`WhepError::Busy`] naming the
    /// limit (counted).
    pub fn reserve(self: &Arc<Self>, stream: &str, client: IpAddr) -> Result<Reservation, WhepError> {
        let ip = ip_key(client);
        let added = self.lock().add(&self.limits, stream, ip);
        match added {
            Ok(()) => Ok(Reservation { admission: self.clone(), stream: stream.to_owned(), ip, connecting: true }),
            Err(limit) => {
                self.refuse(limit);
                self.warn(limit, client);
                Err(WhepError::Busy {
                    limit: limit.label(),
                    max: limit.max(&self.limits),
                    retry_after_s: self.limits.retry_after.as_secs(),
                })
            }
        }
    }

    /// Counts a refusal.
    pub fn refuse(&self, limit: Limit) {
        self.refused[limit as usize].fetch_add(1, Relaxed);
    }

    /// A warning that offers are being refused, at most every 10 s.
    fn warn(&self, limit: Limit, client: IpAddr) {
        let now = Instant::now();
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(10)) {
            return;
        }
        *last = Some(now);
        let refused: u64 = self.refused.iter().map(|n| n.load(Relaxed)).sum();
        warn!(
            "WebRTC: refusing offers (e.g. from {client}): the {} limit ({}) is reached; {refused} refused since start",
            limit.label(),
            limit.max(&self.limits)
        );
    }

    /// Refusals by limit label, every limit listed (in [`Limit::ALL`] order).
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Limit::ALL.iter().map(|l| (l.label(), self.refused[*l as usize].load(Relaxed))).collect()
    }

    pub fn total(&self) -> usize {
        self.lock().total()
    }

    pub fn connecting(&self) -> usize {
        self.lock().connecting()
    }

    pub fn of_stream(&self, stream: &str) -> usize {
        self.lock().of_stream(stream)
    }
}

/// A session's place under the limits, from its offer until it ends (dropping it gives the place
/// back). Made by [`crate::WebrtcServer::reserve`], consumed by [`crate::WebrtcServer::answer`].
#[derive(Debug)]
pub struct Reservation {
    admission: Arc<Admission>,
    stream: String,
    ip: IpAddr,
    connecting: bool,
}

impl Reservation {
    /// The stream it was made for.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Whether it belongs to `admission` (a reservation of another server is refused).
    pub(crate) fn of(&self, admission: &Arc<Admission>) -> bool {
        Arc::ptr_eq(&self.admission, admission)
    }

    /// ICE and DTLS are up: the session no longer counts as connecting.
    pub(crate) fn connected(&mut self) {
        if std::mem::take(&mut self.connecting) {
            self.admission.lock().connected();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.admission.lock().remove(&self.stream, self.ip, self.connecting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(sessions: usize, per_stream: usize, per_ip: usize, connecting: usize) -> WebrtcLimits {
        WebrtcLimits {
            sessions,
            sessions_per_stream: per_stream,
            sessions_per_ip: per_ip,
            connecting,
            ..WebrtcLimits::default()
        }
    }

    #[test]
    fn each_limit_refuses_the_session_beyond_it() {
        // Per IP: the fourth from one address; another address still gets in.
        let l = limits(100, 100, 3, 100);
        let mut c = Counts::default();
        for _ in 0..3 {
            c.add(&l, "s", ip("192.0.2.1")).unwrap();
        }
        assert_eq!(c.add(&l, "s", ip("192.0.2.1")), Err(Limit::SessionsPerIp));
        c.add(&l, "s", ip("192.0.2.2")).unwrap();
        assert_eq!(c.total(), 4);

        // Per stream: another stream still gets in.
        let l = limits(100, 2, 100, 100);
        let mut c = Counts::default();
        c.add(&l, "a", ip("192.0.2.1")).unwrap();
        c.add(&l, "a", ip("192.0.2.2")).unwrap();
        assert_eq!(c.add(&l, "a", ip("192.0.2.3")), Err(Limit::SessionsPerStream));
        c.add(&l, "b", ip("192.0.2.3")).unwrap();

        // In total.
        let l = limits(2, 100, 100, 100);
        let mut c = Counts::default();
        c.add(&l, "a", ip("192.0.2.1")).unwrap();
        c.add(&l, "b", ip("192.0.2.2")).unwrap();
        assert_eq!(c.add(&l, "c", ip("192.0.2.3")), Err(Limit::Sessions));

        // Connecting: a connected session frees a connecting place, not a session place.
        let l = limits(3, 100, 100, 2);
        let mut c = Counts::default();
        c.add(&l, "a", ip("192.0.2.1")).unwrap();
        c.add(&l, "a", ip("192.0.2.2")).unwrap();
        assert_eq!(c.add(&l, "a", ip("192.0.2.3")), Err(Limit::Connecting));
        c.connected();
        assert_eq!(c.connecting(), 1);
        c.add(&l, "a", ip("192.0.2.3")).unwrap();
        c.connected();
        c.connected();
        assert_eq!(c.add(&l, "a", ip("192.0.2.4")), Err(Limit::Sessions));
        assert_eq!((c.total(), c.connecting(), c.of_stream("a")), (3, 0, 3));
    }

    #[test]
    fn a_refused_session_changes_nothing_and_removals_forget_their_keys() {
        let l = limits(2, 100, 1, 100);
        let mut c = Counts::default();
        c.add(&l, "a", ip("192.0.2.1")).unwrap();
        for _ in 0..100 {
            assert_eq!(c.add(&l, "other", ip("192.0.2.1")), Err(Limit::SessionsPerIp));
        }
        assert_eq!(c.per_stream.len(), 1, "no entry for a refused stream");
        assert_eq!((c.total(), c.connecting(), c.of_stream("other")), (1, 1, 0));
        c.add(&l, "b", ip("192.0.2.2")).unwrap();
        c.connected();
        c.remove("a", ip("192.0.2.1"), false);
        c.remove("b", ip("192.0.2.2"), true);
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("2001:db8:1:2:ffff:1:2:3")), ip("2001:db8:1:2::"));
        assert_ne!(ip_key(ip("2001:db8:1:3::1")), ip_key(ip("2001:db8:1:2::1")));
        assert_eq!(ip_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
        assert_eq!(ip_key(ip("192.0.2.9")), ip("192.0.2.9"));
        assert_eq!(ip_key(ip("::1")), ip("::1"));
        let l = limits(100, 100, 2, 100);
        let mut c = Counts::default();
        c.add(&l, "s", ip_key(ip("2001:db8::1"))).unwrap();
        c.add(&l, "s", ip_key(ip("2001:db8::2"))).unwrap();
        assert_eq!(c.add(&l, "s", ip_key(ip("2001:db8::ffff"))), Err(Limit::SessionsPerIp));
    }

    #[test]
    fn loopback_has_no_per_ip_limit_but_the_others_apply() {
        let l = limits(5, 100, 1, 100);
        let mut c = Counts::default();
        for lo in ["127.0.0.1", "127.0.0.1", "::1", "127.0.0.2"] {
            c.add(&l, "s", ip_key(ip(lo))).unwrap();
        }
        assert!(c.per_ip.is_empty());
        c.add(&l, "s", ip_key(ip("::ffff:127.0.0.1"))).unwrap();
        assert_eq!(c.add(&l, "s", ip("127.0.0.1")), Err(Limit::Sessions));
        for lo in ["127.0.0.1", "127.0.0.1", "::1", "127.0.0.2", "127.0.0.1"] {
            c.remove("s", ip_key(ip(lo)), true);
        }
        assert!(c.is_empty(), "{c:?}");
    }

    /// Many threads reserving at once never get more places than the limit; dropping the
    /// reservations gives every place back.
    #[test]
    fn concurrent_reservations_never_overshoot() {
        let admission = Arc::new(Admission::new(limits(1000, 1000, 1000, 50)));
        let held: Vec<Reservation> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8u8)
                .map(|t| {
                    let admission = admission.clone();
                    s.spawn(move || {
                        (0..40u8)
                            .filter_map(|i| admission.reserve("s", IpAddr::from([10, 0, t, i])).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 50);
        assert_eq!(admission.connecting(), 50);
        let refused: u64 = admission.refusals().iter().map(|(_, n)| n).sum();
        assert_eq!(refused, 8 * 40 - 50);
        assert_eq!(admission.refusals()[3], ("webrtc_connecting", refused));
        drop(held);
        assert_eq!((admission.total(), admission.connecting()), (0, 0));
        assert!(admission.lock().is_empty());
    }

    #[test]
    fn a_reservation_connects_once_and_gives_its_place_back() {
        let admission = Arc::new(Admission::new(limits(10, 10, 10, 10)));
        let mut r = admission.reserve("s", ip("192.0.2.1")).unwrap();
        assert_eq!(r.stream(), "s");
        assert_eq!((admission.total(), admission.connecting(), admission.of_stream("s")), (1, 1, 1));
        r.connected();
        r.connected();
        assert_eq!((admission.total(), admission.connecting()), (1, 0));
        let other = admission.reserve("s", ip("192.0.2.1")).unwrap();
        assert_eq!(admission.connecting(), 1);
        drop(r);
        drop(other);
        assert!(admission.lock().is_empty());
        let labels: Vec<&str> = admission.refusals().iter().map(|(l, _)| *l).collect();
        assert_eq!(
            labels,
            [
                "webrtc_sessions",
                "webrtc_sessions_per_stream",
                "webrtc_sessions_per_ip",
                "webrtc_connecting",
                "ice_tcp_connections"
            ]
        );
    }
}
