//! What the tray shows and offers, without any GUI: the stream's state derived from engine events
//! (a small state machine), the menu's items, and [`TrayView`], all `tray.rs` needs to draw.

use std::time::{Duration, Instant};

use onair_engine::events::EngineEvent;
use onair_engine::restream::{RestreamState, RestreamStatus};
use onair_engine::status::ReachState;
use serde::Serialize;

/// A refused publish (OBS trying to connect before Go live) counts as "OBS is there" this long.
/// OBS retries every few seconds, so the state stays "ready" while it keeps trying.
pub const KNOCK_WINDOW: Duration = Duration::from_secs(15);

/// The three tray icons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrayState {
    /// Nothing is publishing and Go live is off.
    Offline,
    /// OBS is connected (or knocking) but the stream is not live, or Go live is on and OnAir
    /// waits for OBS.
    Ready,
    /// The stream is live.
    Live,
}

impl TrayState {
    /// The tray's tooltip: the stream's state, then who can watch (`reach`).
    pub fn tooltip(self, stream: &str, reach: ReachState) -> String {
        let state = match self {
            TrayState::Offline => "offline",
            TrayState::Ready => "ready, not live",
            TrayState::Live => "LIVE",
        };
        format!("OnAir — {stream}: {state}\n{}", reach_note(reach))
    }
}

/// The restream destinations in one tooltip line (`None` without any enabled one):
/// `Restream: twitch live, youtube retrying`.
pub fn restream_note(destinations: &[RestreamStatus]) -> Option<String> {
    let parts: Vec<String> = destinations
        .iter()
        .filter(|d| d.enabled)
        .map(|d| {
            let state = match d.state {
                RestreamState::Idle => "idle",
                RestreamState::Connecting => "connecting",
                RestreamState::Live => "live",
                RestreamState::Retrying => "retrying",
                RestreamState::Refused => "refused",
            };
            format!("{} {state}", d.name)
        })
        .collect();
    (!parts.is_empty()).then(|| format!("Restream: {}", parts.join(", ")))
}

/// Who can open the viewer link, in a few words (tray tooltip).
pub fn reach_note(reach: ReachState) -> &'static str {
    match reach {
        ReachState::Checking => "Checking how viewers reach you…",
        ReachState::Reachable => "Viewers on the internet can watch",
        ReachState::LanOnly => "Only viewers on your network can watch",
        ReachState::Cgnat => "Behind carrier-grade NAT: only your network can watch",
    }
}

/// The tray menu's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuAction {
    /// Go live ⇄ End stream.
    ToggleLive,
    CopyObsSettings,
    CopyViewerLink,
    Open,
    Quit,
}

impl MenuAction {
    pub const ALL: [MenuAction; 5] = [
        MenuAction::ToggleLive,
        MenuAction::CopyObsSettings,
        MenuAction::CopyViewerLink,
        MenuAction::Open,
        MenuAction::Quit,
    ];

    /// The menu item id.
    pub fn id(self) -> &'static str {
        match self {
            MenuAction::ToggleLive => "toggle-live",
            MenuAction::CopyObsSettings => "copy-obs",
            MenuAction::CopyViewerLink => "copy-viewer-link",
            MenuAction::Open => "open",
            MenuAction::Quit => "quit",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }

    /// The fixed labels (the toggle's comes from [`StreamTracker::toggle_label`]).
    pub fn label(self) -> &'static str {
        match self {
            MenuAction::ToggleLive => "Go live",
            MenuAction::CopyObsSettings => "Copy OBS settings",
            MenuAction::CopyViewerLink => "Copy viewer link",
            MenuAction::Open => "Open OnAir",
            MenuAction::Quit => "Quit",
        }
    }
}

/// What the tray draws: its icon's state, the tooltip and the toggle item's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayView {
    pub state: TrayState,
    pub tooltip: String,
    pub toggle_label: &'static str,
}

/// Follows one stream's events.
#[derive(Debug, Clone)]
pub struct StreamTracker {
    stream: String,
    pub armed: bool,
    pub publishing: bool,
    pub live: bool,
    last_refused: Option<Instant>,
}

impl StreamTracker {
    pub fn new(stream: &str, armed: bool, live: bool) -> Self {
        StreamTracker { stream: stream.to_owned(), armed, publishing: live, live, last_refused: None }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Feeds one event; returns whether anything the tray shows changed.
    pub fn on_event(&mut self, event: &EngineEvent, now: Instant) -> bool {
        if let EngineEvent::Reach { .. } = event {
            return true; // the tooltip says who can watch
        }
        if event.stream() != Some(self.stream.as_str()) {
            return false;
        }
        if let EngineEvent::Restream { .. } = event {
            return true; // the tooltip has a line for the destinations
        }
        let before = (self.armed, self.publishing, self.live, self.state(now));
        match event {
            EngineEvent::PublishStarted { .. } => {
                self.publishing = true;
                self.last_refused = None;
            }
            EngineEvent::Live { .. } => {
                self.publishing = true;
                self.live = true;
            }
            EngineEvent::PublishEnded { .. } => {
                self.publishing = false;
                self.live = false;
            }
            EngineEvent::PublishRefused { .. } => self.last_refused = Some(now),
            EngineEvent::Armed { armed, .. } => self.armed = *armed,
            _ => {}
        }
        before != (self.armed, self.publishing, self.live, self.state(now))
    }

    pub fn state(&self, now: Instant) -> TrayState {
        if self.live {
            TrayState::Live
        } else if self.publishing || self.armed || self.last_refused.is_some_and(|t| now - t < KNOCK_WINDOW) {
            TrayState::Ready
        } else {
            TrayState::Offline
        }
    }

    /// When the state changes by itself (a knock ageing out of [`KNOCK_WINDOW`]) if no event
    /// comes first: the tray redraws then.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let until = self.last_refused? + KNOCK_WINDOW;
        (until > now && self.state(until) != self.state(now)).then_some(until)
    }

    /// The label of the Go live ⇄ End stream menu item.
    pub fn toggle_label(&self) -> &'static str {
        if self.armed { "End stream" } else { "Go live" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair_engine::events::EndReason;

    fn ev_started() -> EngineEvent {
        EngineEvent::PublishStarted { stream: "s".into(), remote: "127.0.0.1:5000".into() }
    }

    #[test]
    fn offline_ready_live_and_back() {
        let t0 = Instant::now();
        let mut t = StreamTracker::new("s", false, false);
        assert_eq!(t.state(t0), TrayState::Offline);
        assert_eq!(t.toggle_label(), "Go live");
        // OBS knocks before Go live: ready for a while, then offline again.
        assert!(t.on_event(&EngineEvent::PublishRefused { stream: "s".into(), reason: "not live".into() }, t0));
        assert_eq!(t.state(t0 + Duration::from_secs(1)), TrayState::Ready);
        assert_eq!(t.next_change(t0 + Duration::from_secs(1)), Some(t0 + KNOCK_WINDOW));
        assert_eq!(t.state(t0 + KNOCK_WINDOW), TrayState::Offline);
        assert_eq!(t.next_change(t0 + KNOCK_WINDOW), None);
        // Go live, OBS connects, the stream plays.
        assert!(t.on_event(&EngineEvent::Armed { stream: "s".into(), armed: true }, t0));
        assert_eq!(t.toggle_label(), "End stream");
        assert_eq!(t.state(t0), TrayState::Ready);
        assert_eq!(t.next_change(t0), None, "armed: ready however old the knock");
        t.on_event(&ev_started(), t0);
        assert_eq!(t.state(t0), TrayState::Ready);
        assert!(t.on_event(&EngineEvent::Live { stream: "s".into() }, t0));
        assert_eq!(t.state(t0), TrayState::Live);
        // Other streams' events change nothing.
        assert!(!t.on_event(&EngineEvent::PublishEnded { stream: "other".into(), reason: EndReason::Finished }, t0));
        assert_eq!(t.state(t0), TrayState::Live);
        // End stream.
        t.on_event(&EngineEvent::Armed { stream: "s".into(), armed: false }, t0);
        t.on_event(&EngineEvent::PublishEnded { stream: "s".into(), reason: EndReason::EndedByStreamer }, t0);
        assert_eq!(t.state(t0), TrayState::Offline);
        assert_eq!(t.toggle_label(), "Go live");
    }

    #[test]
    fn menu_ids_round_trip() {
        for a in MenuAction::ALL {
            assert_eq!(MenuAction::from_id(a.id()), Some(a));
        }
        assert_eq!(MenuAction::from_id("nope"), None);
    }

    #[test]
    fn the_tooltip_has_a_line_for_the_restream_destinations() {
        let d = |name: &str, state, enabled| RestreamStatus {
            name: name.into(),
            url: "rtmp://h/app".into(),
            enabled,
            ome: false,
            state,
            bitrate_kbps: 0,
            last_error: None,
            next_attempt_s: None,
            attempts: 0,
            dropped_frames: 0,
            queued_bytes: 0,
        };
        assert_eq!(restream_note(&[]), None);
        assert_eq!(
            restream_note(&[
                d("twitch", RestreamState::Live, true),
                d("yt", RestreamState::Retrying, true),
                d("off", RestreamState::Idle, false)
            ]),
            Some("Restream: twitch live, yt retrying".into())
        );
        let mut t = StreamTracker::new("s", false, false);
        let ev =
            EngineEvent::Restream { stream: "s".into(), name: "yt".into(), state: RestreamState::Live, error: None };
        assert!(t.on_event(&ev, Instant::now()), "a destination's state redraws the tooltip");
    }

    #[test]
    fn the_tooltip_says_who_can_watch() {
        assert_eq!(
            TrayState::Live.tooltip("s", ReachState::Reachable),
            "OnAir — s: LIVE\nViewers on the internet can watch"
        );
        assert!(
            TrayState::Offline
                .tooltip("s", ReachState::Cgnat)
                .ends_with("carrier-grade NAT: only your network can watch")
        );
        let mut t = StreamTracker::new("s", false, false);
        let reach = EngineEvent::Reach { state: ReachState::LanOnly, public_base: None, https: "off".into() };
        assert!(t.on_event(&reach, Instant::now()), "a reach change redraws the tooltip");
    }

    #[test]
    fn stats_do_not_redraw_the_tray() {
        let mut t = StreamTracker::new("s", true, true);
        let stats = EngineEvent::Stats { stream: "s".into(), status: serde_json::json!({}) };
        assert!(!t.on_event(&stats, Instant::now()));
    }
}
