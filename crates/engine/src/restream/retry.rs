//! When a restream destination is tried again: exponential backoff from 1 s, capped at 30 s,
//! and when its failures count as persistent (worth a notification). Pure: time comes in.

use std::time::{Duration, Instant};

/// The first wait after a failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// A connection live this long before it failed starts the backoff afresh.
pub const STABLE: Duration = Duration::from_secs(30);
/// Failures in a row beyond this many count as persistent…
pub const PERSISTENT_FAILURES: u32 = 5;
/// …and so does failing for this long.
pub const PERSISTENT_AFTER: Duration = Duration::from_secs(120);

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// Failures in a row, this one included.
    pub attempts: u32,
    /// The failures just became persistent (reported once per run of failures).
    pub persistent: bool,
}

/// The retry state of one destination.
#[derive(Debug, Clone, Default)]
pub struct Retry {
    failures: u32,
    failing_since: Option<Instant>,
    live_since: Option<Instant>,
    reported: bool,
}

impl Retry {
    /// The destination accepted the publish at `now`.
    pub fn live(&mut self, now: Instant) {
        self.live_since = Some(now);
    }

    /// The attempt (or the live connection) failed at `now`.
    pub fn failed(&mut self, now: Instant) -> Failure {
        if self.live_since.take().is_some_and(|since| now.saturating_duration_since(since) >= STABLE) {
            *self = Retry::default();
        }
        self.failures = self.failures.saturating_add(1);
        let since = *self.failing_since.get_or_insert(now);
        let delay = FIRST_DELAY.saturating_mul(1 << (self.failures - 1).min(10)).min(MAX_DELAY);
        let persistent = !self.reported
            && (self.failures > PERSISTENT_FAILURES || now.saturating_duration_since(since) >= PERSISTENT_AFTER);
        self.reported |= persistent;
        Failure { delay, attempts: self.failures, persistent }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_persistence_is_reported_once() {
        let t0 = Instant::now();
        let mut r = Retry::default();
        let mut now = t0;
        let mut delays = Vec::new();
        let mut persistent_at = Vec::new();
        for _ in 0..9 {
            let f = r.failed(now);
            delays.push(f.delay.as_secs());
            if f.persistent {
                persistent_at.push(f.attempts);
            }
            now += f.delay;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(persistent_at, [6], "more than 5 failures in a row, once");
    }

    #[test]
    fn failing_for_two_minutes_is_persistent_and_a_stable_connection_resets() {
        let t0 = Instant::now();
        let mut r = Retry::default();
        assert!(!r.failed(t0).persistent);
        // Live briefly (flapping): the backoff goes on growing.
        r.live(t0 + Duration::from_secs(1));
        let f = r.failed(t0 + Duration::from_secs(5));
        assert_eq!((f.delay, f.attempts), (Duration::from_secs(2), 2));
        let f = r.failed(t0 + PERSISTENT_AFTER);
        assert!(f.persistent && f.attempts == 3);
        // Live for longer than STABLE: the next failure starts afresh.
        let t1 = t0 + Duration::from_secs(600);
        r.live(t1);
        let f = r.failed(t1 + STABLE);
        assert_eq!((f.delay, f.attempts, f.persistent), (FIRST_DELAY, 1, false));
    }
}
