//! The upload budget: how much of the streamer's upload OnAir may use for what it sends itself —
//! direct viewers (WebRTC and HLS) and restream destinations — and whether one more direct viewer
//! still fits. Viewers already watching keep their quality: a viewer who does not fit is not
//! admitted (sent to an edge, or told the stream is full), nobody is cut off.
//!
//! Sans-IO: [`Budget`] is fed the cumulative bytes sent with the time they were read
//! ([`Budget::observe`]), and asked with the time ([`Budget::admit`]); it reads no clock and
//! owns no socket, so its tests run on a virtual clock. The send rate is smoothed over
//! [`SMOOTHING`]; a viewer just admitted is not in that rate yet, so its expected bit rate is
//! reserved for [`RAMP`] (counted on top of the measured rate until then: a burst of viewers
//! joining at once cannot overshoot the budget before the measurement catches up).

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onair_webrtc::WebrtcServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::BudgetSettings;
use crate::metrics::Metrics;
use crate::restream::Restream;

/// Time constant of the smoothed send rate.
pub const SMOOTHING: Duration = Duration::from_secs(2);
/// How long a newly admitted viewer's expected bit rate is reserved on top of the measured rate.
pub const RAMP: Duration = Duration::from_secs(6);
/// Reservations kept at most (a flood of admissions within [`RAMP`] beyond this is refused).
const MAX_PENDING: usize = 4096;

/// Whether one more direct viewer fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Over the budget: the viewer goes to the edge, or is told the stream is full.
    Full,
}

/// What the budget looks like now (for the status API and the window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// The budget in bits per second; 0: none set (everyone is admitted).
    pub capacity_bps: u64,
    /// The smoothed send rate plus the reservations of viewers just admitted.
    pub used_bps: u64,
    /// Direct viewers not admitted since the start.
    pub refused: u64,
}

/// The upload budget's state (see the module docs).
#[derive(Debug)]
pub struct Budget {
    capacity_bps: u64,
    rate_bps: f64,
    last: Option<(Instant, u64)>,
    pending: VecDeque<(Instant, u64)>,
    /// What restream destinations send now (they measure it themselves).
    other_bps: u64,
    refused: u64,
}

impl Budget {
    /// A budget of `capacity_bps` bits per second; 0: no budget.
    pub fn new(capacity_bps: u64) -> Self {
        Budget { capacity_bps, rate_bps: 0.0, last: None, pending: VecDeque::new(), other_bps: 0, refused: 0 }
    }

    /// Changes the budget (the streamer set another one); 0 turns it off.
    pub fn set_capacity(&mut self, capacity_bps: u64) {
        self.capacity_bps = capacity_bps;
    }

    /// What is sent besides the counted bytes (restream destinations, which measure their own
    /// rate), in bits per second.
    pub fn set_other_bps(&mut self, bps: u64) {
        self.other_bps = bps;
    }

    /// The bytes sent to direct viewers so far (a cumulative counter), read at `now`. A counter that went
    /// back (a restart of what counts) starts the measurement over from there.
    pub fn observe(&mut self, now: Instant, total_bytes: u64) {
        let Some((then, bytes)) = self.last else {
            self.last = Some((now, total_bytes));
            return;
        };
        let dt = now.saturating_duration_since(then);
        if total_bytes < bytes {
            self.last = Some((now, total_bytes));
            return;
        }
        if dt < Duration::from_millis(100) {
            return; // too short to measure: keep accumulating
        }
        let instant_bps = (total_bytes - bytes) as f64 * 8.0 / dt.as_secs_f64();
        let alpha = 1.0 - (-dt.as_secs_f64() / SMOOTHING.as_secs_f64()).exp();
        self.rate_bps += alpha * (instant_bps - self.rate_bps);
        self.last = Some((now, total_bytes));
    }

    /// Whether a direct viewer expected to take `viewer_bps` fits at `now`; an admitted one is
    /// reserved for [`RAMP`].
    pub fn admit(&mut self, now: Instant, viewer_bps: u64) -> Admission {
        if self.capacity_bps == 0 {
            return Admission::Admit;
        }
        self.expire(now);
        let used = self.used_bps();
        if used.saturating_add(viewer_bps) > self.capacity_bps || self.pending.len() >= MAX_PENDING {
            self.refused += 1;
            return Admission::Full;
        }
        self.pending.push_back((now + RAMP, viewer_bps));
        Admission::Admit
    }

    /// Whether a viewer taking `viewer_bps` would fit at `now`, without admitting it.
    pub fn fits(&mut self, now: Instant, viewer_bps: u64) -> bool {
        self.expire(now);
        self.capacity_bps == 0 || self.used_bps().saturating_add(viewer_bps) <= self.capacity_bps
    }

    /// The budget, its use and the refusals so far, at `now`.
    pub fn usage(&mut self, now: Instant) -> Usage {
        self.expire(now);
        Usage { capacity_bps: self.capacity_bps, used_bps: self.used_bps(), refused: self.refused }
    }

    fn expire(&mut self, now: Instant) {
        while self.pending.front().is_some_and(|&(until, _)| until <= now) {
            self.pending.pop_front();
        }
    }

    fn used_bps(&self) -> u64 {
        let reserved: u64 = self.pending.iter().map(|&(_, bps)| bps).sum();
        (self.rate_bps.max(0.0) as u64).saturating_add(reserved).saturating_add(self.other_bps)
    }
}

/// The engine's budget: [`Budget`] behind a short lock, with where viewers beyond it go. The
/// engine feeds it the bytes it has sent once a second; the HTTP routes ask it before a new
/// direct viewer gets anything.
#[derive(Debug)]
pub struct BudgetGate {
    budget: Mutex<Budget>,
    /// A budget is set (read without the lock on every playlist request).
    on: AtomicBool,
    /// `budget.edge_url` (`{stream}` not yet replaced); None: none set.
    edge_url: Option<String>,
}

/// A viewer's expected bit rate when the stream's is not known yet (a 1080p30 stream).
pub const DEFAULT_VIEWER_BPS: u64 = 6_000_000;

/// What a viewer of a stream sent at `stream_kbps` takes: its bit rate plus 5 % (RTP/HTTP
/// framing); [`DEFAULT_VIEWER_BPS`] while the stream's is not known.
fn viewer_bps(stream_kbps: u64) -> u64 {
    if stream_kbps == 0 { DEFAULT_VIEWER_BPS } else { stream_kbps.saturating_mul(1050) }
}

impl Default for BudgetGate {
    /// No budget.
    fn default() -> Self {
        BudgetGate::new(&BudgetSettings::default())
    }
}

impl BudgetGate {
    pub fn new(settings: &BudgetSettings) -> Self {
        BudgetGate {
            budget: Mutex::new(Budget::new(settings.capacity_bps())),
            on: AtomicBool::new(settings.capacity_bps() > 0),
            edge_url: Some(settings.edge_url.clone()).filter(|u| !u.is_empty()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the budget in megabits per second (0: none).
    pub fn set_upload_mbps(&self, mbps: f64) {
        let bps = (mbps.clamp(0.0, 100_000.0) * 1e6) as u64;
        self.lock().set_capacity(bps);
        self.on.store(bps > 0, Relaxed);
    }

    /// Whether a budget is set (without one every viewer is admitted).
    pub fn is_on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// See [`Budget::observe`].
    pub fn observe(&self, now: Instant, total_bytes: u64) {
        self.lock().observe(now, total_bytes);
    }

    /// Whether a new direct viewer of a stream sent at `stream_kbps` (0: not known yet) fits.
    /// The viewer takes the stream's bit rate plus 5 % (RTP/HTTP framing).
    pub fn admit(&self, now: Instant, stream_kbps: u64) -> Admission {
        self.lock().admit(now, viewer_bps(stream_kbps))
    }

    /// See [`Budget::usage`].
    pub fn usage(&self, now: Instant) -> Usage {
        self.lock().usage(now)
    }

    /// Whether a new direct viewer of a stream sent at `stream_kbps` would fit, without
    /// admitting it.
    pub fn fits(&self, now: Instant, stream_kbps: u64) -> bool {
        self.lock().fits(now, viewer_bps(stream_kbps))
    }

    /// Once a second until `shutdown`: the bytes sent to HLS and WebRTC viewers, and the
    /// restream destinations' rate.
    pub fn spawn_sampler(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        webrtc: Option<WebrtcServer>,
        restream: Arc<Restream>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let webrtc_bytes: u64 =
                    webrtc.as_ref().map_or(0, |w| w.stats().shards.iter().map(|s| s.bytes_sent).sum());
                let restream_bps: u64 = restream
                    .streams()
                    .iter()
                    .flat_map(|s| restream.status(s))
                    .map(|d| d.bitrate_kbps.saturating_mul(1000))
                    .sum();
                let mut budget = self.lock();
                budget.set_other_bps(restream_bps);
                budget.observe(Instant::now(), metrics.hls_bytes_total().saturating_add(webrtc_bytes));
            }
        })
    }

    /// The page viewers of `stream` beyond the budget are sent to, if one is set.
    pub fn edge_page(&self, stream: &str) -> Option<String> {
        self.edge_url.as_ref().map(|u| u.replace("{stream}", stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBPS: u64 = 1_000_000;

    /// Sends `bps` for `secs` seconds in steps of 250 ms from `*t`, with the counter at `*total`.
    fn send(b: &mut Budget, t: &mut Instant, total: &mut u64, bps: u64, secs: u64) {
        for _ in 0..secs * 4 {
            *t += Duration::from_millis(250);
            *total += bps / 8 / 4;
            b.observe(*t, *total);
        }
    }

    #[test]
    fn no_budget_admits_everyone() {
        let mut b = Budget::new(0);
        let t = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        }
        assert_eq!(b.usage(t).refused, 0);
    }

    #[test]
    fn a_burst_of_viewers_cannot_overshoot_before_the_rate_shows_them() {
        let mut b = Budget::new(20 * MBPS);
        let t = Instant::now();
        b.observe(t, 0);
        // Three 6 Mb/s viewers fit in 20 Mb/s, the fourth does not — all in the same instant.
        for _ in 0..3 {
            assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        }
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Full);
        let u = b.usage(t);
        assert_eq!((u.capacity_bps, u.used_bps, u.refused), (20 * MBPS, 18 * MBPS, 1));
    }

    #[test]
    fn reservations_hand_over_to_the_measured_rate() {
        let mut b = Budget::new(20 * MBPS);
        let mut t = Instant::now();
        let mut total = 0;
        b.observe(t, total);
        for _ in 0..3 {
            assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        }
        // The three viewers now take 18 Mb/s: once their reservations lapse, the measured rate
        // alone keeps the fourth out.
        send(&mut b, &mut t, &mut total, 18 * MBPS, 10);
        let used = b.usage(t).used_bps;
        assert!((17 * MBPS..=18 * MBPS).contains(&used), "{used}");
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Full);
        // Two of them leave: the rate falls and a new viewer fits again.
        send(&mut b, &mut t, &mut total, 6 * MBPS, 10);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
    }

    #[test]
    fn restream_rate_counts_on_top() {
        let mut b = Budget::new(20 * MBPS);
        let t = Instant::now();
        b.set_other_bps(12 * MBPS);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Full);
        assert_eq!(b.usage(t).used_bps, 18 * MBPS);
    }

    #[test]
    fn restream_and_hls_bytes_count_like_viewers() {
        // The counter is everything sent: a 12 Mb/s restream leaves room for one 6 Mb/s viewer
        // in 20 Mb/s, not two.
        let mut b = Budget::new(20 * MBPS);
        let mut t = Instant::now();
        let mut total = 0;
        b.observe(t, total);
        send(&mut b, &mut t, &mut total, 12 * MBPS, 12);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Full);
    }

    #[test]
    fn the_rate_is_smoothed_and_survives_odd_clocks_and_counters() {
        let mut b = Budget::new(100 * MBPS);
        let mut t = Instant::now();
        let mut total = 0;
        b.observe(t, total);
        send(&mut b, &mut t, &mut total, 10 * MBPS, 1);
        // One second into a 10 Mb/s step, a 2 s time constant shows about 1 - e^-0.5 of it.
        let used = b.usage(t).used_bps;
        assert!((3 * MBPS..=5 * MBPS).contains(&used), "{used}");
        // The same instant again, and a clock that did not move: nothing divides by zero.
        b.observe(t, total + 1_000_000);
        b.observe(t, total + 1_000_000);
        // A counter that went back starts over without a negative rate.
        b.observe(t + Duration::from_secs(1), 0);
        b.observe(t + Duration::from_secs(2), 0);
        assert!(b.usage(t + Duration::from_secs(2)).used_bps <= 5 * MBPS);
    }

    #[test]
    fn the_gate_prices_a_viewer_at_the_stream_rate_and_names_the_edge() {
        let settings = BudgetSettings { upload_mbps: 10.0, edge_url: "https://cdn.example/{stream}/".into() };
        let gate = BudgetGate::new(&settings);
        let t = Instant::now();
        // 3 Mb/s + 5 % each: three fit in 10 Mb/s, a fourth does not.
        for _ in 0..3 {
            assert_eq!(gate.admit(t, 3000), Admission::Admit);
        }
        assert_eq!(gate.admit(t, 3000), Admission::Full);
        assert_eq!(gate.usage(t).used_bps, 3 * 3_150_000);
        assert_eq!(gate.edge_page("show").as_deref(), Some("https://cdn.example/show/"));
        assert!(gate.is_on());
        gate.set_upload_mbps(0.0);
        assert!(!gate.is_on());
        assert_eq!(gate.admit(t, 3000), Admission::Admit);
        assert_eq!(BudgetGate::new(&BudgetSettings::default()).edge_page("show"), None);
        // An unknown stream rate counts as a 6 Mb/s viewer.
        assert_eq!(
            BudgetGate::new(&BudgetSettings { upload_mbps: 5.0, ..Default::default() }).admit(t, 0),
            Admission::Full
        );
    }

    #[test]
    fn turning_the_budget_off_and_on() {
        let mut b = Budget::new(6 * MBPS);
        let t = Instant::now();
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Full);
        b.set_capacity(0);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        b.set_capacity(12 * MBPS);
        // The reservation made while off is not there; the first one still is.
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Admit);
        assert_eq!(b.admit(t, 6 * MBPS), Admission::Full);
    }
}
