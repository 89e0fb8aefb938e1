//! Refusals by reason: every limit on what untrusted clients can make OnAir hold counts the
//! clients it turned away here, for `/metrics` (and tests). The limits themselves are enforced
//! where each resource is created (HTTP accept loop, RTMP accept loop, WHEP offers, ...), from the
//! values in [`crate::config::LimitsSettings`].

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::HttpConnections,
        Refusal::HttpInFlight,
        Refusal::HttpTimeout,
        Refusal::ReloadWaiters,
        Refusal::RtmpPending,
        Refusal::RtmpPendingPerIp,
        Refusal::RtmpAuthTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::HttpConnections => "http_connections",
            Refusal::HttpInFlight => "http_in_flight",
            Refusal::HttpTimeout => "http_timeout",
            Refusal::ReloadWaiters => "reload_waiters_per_ip",
            Refusal::RtmpPending => "rtmp_pending",
            Refusal::RtmpPendingPerIp => "rtmp_pending_per_ip",
            Refusal::RtmpAuthTimeout => "rtmp_auth_timeout",
        }
    }
}

/// Counts of refused clients by [`Refusal`] (the WebRTC server counts its own).
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`Refusal::ALL`] order.
    pub fn all(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.into_iter().map(|r| (r, self.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
