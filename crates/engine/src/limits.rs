//! Refusals by reason: every limit on what untrusted clients can make OnAir hold counts the
//! clients it turned away here, for `/metrics` (and tests). The limits themselves are enforced
//! where each resource is created (HTTP accept loop, RTMP accept loop, WHEP offers, ...), from the
//! values in [`crate::config::LimitsSettings`]; [`Slots`] is the per-client bookkeeping they share.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a client was refused. The label is what `/metrics` shows (`reason="..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// HTTP: too many connections open.
    HttpConnections,
    /// HTTP: too many requests being answered.
    HttpInFlight,
    /// HTTP: headers or body not sent in time (slowloris).
    HttpTimeout,
    /// Too many blocking playlist reloads held by one client IP.
    ReloadWaiters,
    /// RTMP: too many connections not yet publishing, in total.
    RtmpPending,
    /// RTMP: too many connections not yet publishing from one IP.
    RtmpPendingPerIp,
    /// RTMP: no valid publish within the deadline.
    RtmpAuthTimeout,
    /// A new direct viewer over the upload budget (sent to the edge, or told the stream is full).
    UploadBudget,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::HttpConnections,
        Refusal::HttpInFlight,
        Refusal::HttpTimeout,
        Refusal::ReloadWaiters,
        Refusal::RtmpPending,
        Refusal::RtmpPendingPerIp,
        Refusal::RtmpAuthTimeout,
        Refusal::UploadBudget,
    ];

    /// What was refused, naming the setting, for the one log line per refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::HttpConnections => "too many HTTP connections open (limits.http_connections)",
            Refusal::HttpInFlight => "too many HTTP requests in flight (limits.http_in_flight)",
            Refusal::HttpTimeout => {
                "request headers or body not received in time (limits.http_header_timeout_s/http_body_timeout_s)"
            }
            Refusal::ReloadWaiters => {
                "too many held playlist/part requests from one client (limits.reload_waiters_per_ip)"
            }
            Refusal::RtmpPending => "too many RTMP connections not yet publishing (limits.rtmp_pending)",
            Refusal::RtmpPendingPerIp => {
                "too many RTMP connections not yet publishing from one client (limits.rtmp_pending_per_ip)"
            }
            Refusal::RtmpAuthTimeout => "no valid publish in time (limits.rtmp_auth_timeout_s)",
            Refusal::UploadBudget => "a new viewer would exceed the upload budget (budget.upload_mbps)",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Refusal::HttpConnections => "http_connections",
            Refusal::HttpInFlight => "http_in_flight",
            Refusal::HttpTimeout => "http_timeout",
            Refusal::ReloadWaiters => "reload_waiters_per_ip",
            Refusal::RtmpPending => "rtmp_pending",
            Refusal::RtmpPendingPerIp => "rtmp_pending_per_ip",
            Refusal::RtmpAuthTimeout => "rtmp_auth_timeout",
            Refusal::UploadBudget => "upload_budget",
        }
    }
}

/// At most one refusal line per reason at `info` in this period; the others are logged at `debug`
/// (a flood of refused clients must not flood the log).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts of refused clients by [`Refusal`] (the WebRTC server counts its own).
#[derive(Debug)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    /// Per reason: when the last `info` line was due (ms since `base`, plus one; 0 = never) and
    /// the count then.
    logged_at_ms: [AtomicU64; Refusal::ALL.len()],
    logged_count: [AtomicU64; Refusal::ALL.len()],
    base: Instant,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            counts: Default::default(),
            logged_at_ms: Default::default(),
            logged_count: Default::default(),
            base: Instant::now(),
        }
    }
}

impl Refusals {
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal at `now` and says how to log it: `Some(n)` when this one gets an `info`
    /// line (the first of its reason, then at most one per [`LOG_EVERY`]), `n` being the clients
    /// refused for this reason since the last such line, this one included; `None`: log at `debug`.
    pub fn refuse(&self, why: Refusal, now: Instant) -> Option<u64> {
        self.count(why);
        let i = why as usize;
        let at = now.saturating_duration_since(self.base).as_millis() as u64 + 1;
        let last = self.logged_at_ms[i].load(Ordering::Relaxed);
        if last != 0 && at < last + LOG_EVERY.as_millis() as u64 {
            return None;
        }
        // One caller wins the line when several race.
        self.logged_at_ms[i].compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        let total = self.get(why);
        Some(total - self.logged_count[i].swap(total, Ordering::Relaxed).min(total))
    }

    pub fn get(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`Refusal::ALL`] order.
    pub fn all(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

/// The address a per-IP limit counts a client under: its IPv4 address (also when it arrives as
/// an IPv4-mapped IPv6 address), or its IPv6 /64 — one subscriber's network, in which a client can
/// pick any of 2^64 addresses.
pub fn client_net(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Which cap of [`Slots`] is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    PerIp,
}

/// Places for something untrusted clients hold (a pending RTMP connection, a held request),
/// capped in total and per client network ([`client_net`]). A [`Slot`] gives its place back when
/// dropped; a network's entry is removed when its last slot goes, so the map never holds more
/// entries than slots in use.
#[derive(Debug)]
pub struct Slots {
    total: usize,
    per_ip: usize,
    used: Mutex<Used>,
}

#[derive(Debug, Default)]
struct Used {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    pub fn new(total: usize, per_ip: usize) -> Arc<Slots> {
        Arc::new(Slots { total, per_ip, used: Mutex::default() })
    }

    /// A place for a client at `ip`, unless a cap is full.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let net = client_net(ip);
        let mut used = self.used.lock().expect("slots lock");
        if used.total >= self.total {
            return Err(Full::Total);
        }
        let n = used.by_ip.get(&net).copied().unwrap_or(0);
        if n >= self.per_ip {
            return Err(Full::PerIp);
        }
        used.by_ip.insert(net, n + 1);
        used.total += 1;
        Ok(Slot { slots: self.clone(), net })
    }

    /// Places taken now.
    pub fn in_use(&self) -> usize {
        self.used.lock().expect("slots lock").total
    }

    /// Client networks holding a place now (the size of the per-IP map).
    pub fn clients(&self) -> usize {
        self.used.lock().expect("slots lock").by_ip.len()
    }
}

/// A place taken in [`Slots`]; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    net: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = self.slots.used.lock().expect("slots lock");
        used.total -= 1;
        if let Some(n) = used.by_ip.get_mut(&self.net) {
            *n -= 1;
            if *n == 0 {
                used.by_ip.remove(&self.net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_total_and_per_network_and_forget_empty_networks() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let a1 = slots.try_take(a).unwrap();
        let a2 = slots.try_take(a).unwrap();
        assert_eq!(slots.try_take(a).unwrap_err(), Full::PerIp);
        // The same /64, another address: the same client network.
        let b1 = slots.try_take(b).unwrap();
        assert_eq!(slots.try_take("2001:db8:1:2:bbbb::9".parse().unwrap()).unwrap_err(), Full::Total);
        drop(a2);
        let b2 = slots.try_take("2001:db8:1:2:bbbb::9".parse().unwrap()).unwrap();
        assert_eq!(slots.try_take(b).unwrap_err(), Full::Total);
        assert_eq!((slots.in_use(), slots.clients()), (3, 2));
        drop((a1, b1, b2));
        assert_eq!((slots.in_use(), slots.clients()), (0, 0), "entries go at zero");
        // An IPv4-mapped address is its IPv4 address.
        let _m = slots.try_take("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        let _m2 = slots.try_take(a).unwrap();
        assert_eq!(slots.try_take(a).unwrap_err(), Full::PerIp);
        assert_eq!(slots.clients(), 1);
    }

    #[test]
    fn refusal_lines_are_rate_limited_per_reason() {
        let r = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(r.refuse(Refusal::RtmpPending, t0), Some(1), "the first one is logged");
        assert_eq!(r.refuse(Refusal::RtmpPending, t0 + Duration::from_secs(1)), None);
        assert_eq!(r.refuse(Refusal::RtmpPending, t0 + Duration::from_secs(2)), None);
        assert_eq!(r.refuse(Refusal::HttpTimeout, t0 + Duration::from_secs(2)), Some(1), "per reason");
        assert_eq!(r.refuse(Refusal::RtmpPending, t0 + LOG_EVERY + Duration::from_secs(1)), Some(3));
        assert_eq!(r.get(Refusal::RtmpPending), 4, "every refusal is counted");
    }

    #[test]
    fn counts_by_reason() {
        let r = Refusals::default();
        r.count(Refusal::RtmpPending);
        r.count(Refusal::RtmpPending);
        r.count(Refusal::HttpTimeout);
        assert_eq!(r.get(Refusal::RtmpPending), 2);
        let all: Vec<_> = r.all().collect();
        assert_eq!(all.len(), Refusal::ALL.len());
        assert!(all.iter().all(|(why, n)| *n == r.get(*why)));
        for (i, why) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*why as usize, i, "ALL is in declaration order");
        }
    }
}
