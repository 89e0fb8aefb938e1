//! The Synapse harness (crate onair-synapse) plus helpers that wait for onair-matrix events.
#![allow(dead_code, unused_imports)] // each test binary uses its own part of this

use std::time::Duration;

use onair_matrix::{ChatEvent, MatrixConfig, MatrixStatus};
pub use onair_synapse::*;
use tokio::sync::{broadcast, watch};

/// The Synapse of this test binary (with logs from `ONAIR_LOG`).
pub fn synapse() -> &'static Synapse {
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("ONAIR_LOG").unwrap_or_default()).try_init();
    onair_synapse::synapse()
}

/// A Matrix config for `user` on the test homeserver.
pub fn config(user: &str) -> MatrixConfig {
    MatrixConfig::new(&synapse().base_url, user)
}

/// The next event matching `pred`, within `within`.
pub async fn next_event(
    rx: &mut broadcast::Receiver<ChatEvent>,
    within: Duration,
    mut pred: impl FnMut(&ChatEvent) -> bool,
) -> Option<ChatEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if pred(&ev) => return Some(ev),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

/// Waits until the status satisfies `pred`; answers the last status seen.
pub async fn wait_status(
    rx: &mut watch::Receiver<MatrixStatus>,
    within: Duration,
    pred: impl Fn(&MatrixStatus) -> bool,
) -> Result<MatrixStatus, MatrixStatus> {
    let got = tokio::time::timeout(within, rx.wait_for(|s| pred(s))).await.ok().and_then(|r| r.ok().map(|s| s.clone()));
    got.ok_or_else(|| rx.borrow().clone())
}
