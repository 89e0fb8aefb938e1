//! Desktop notifications (notify-rust): went live, publisher dropped, stream ended, OBS connected,
//! a chat message mentioning the streamer, a restream destination refusing the key or failing
//! persistently. Each kind can be turned off; a machine without a
//! notification daemon only gets a log line.

use onair_engine::events::{EndReason, EngineEvent};
use onair_engine::restream::RestreamState;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// Which notifications are shown (the window's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyToggles {
    pub went_live: bool,
    pub publisher_dropped: bool,
    pub stream_ended: bool,
    pub obs_connected: bool,
    pub chat_mention: bool,
    pub restream_failing: bool,
}

impl Default for NotifyToggles {
    fn default() -> Self {
        NotifyToggles {
            went_live: true,
            publisher_dropped: true,
            stream_ended: true,
            obs_connected: true,
            chat_mention: true,
            restream_failing: true,
        }
    }
}

/// One notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub summary: String,
    pub body: String,
}

/// The notification an event deserves, if any (only the app's stream, only the kinds turned on).
pub fn note_for(event: &EngineEvent, stream: &str, on: &NotifyToggles) -> Option<Note> {
    if event.stream() != Some(stream) {
        return None;
    }
    let note = |summary: &str, body: String| Some(Note { summary: summary.to_owned(), body });
    match event {
        EngineEvent::Live { .. } if on.went_live => note("You are live", format!("{stream} is on air.")),
        EngineEvent::PublishStarted { remote, .. } if on.obs_connected => {
            note("OBS connected", format!("A publisher from {remote} is sending {stream}."))
        }
        EngineEvent::PublishEnded { reason: EndReason::Dropped, .. } if on.publisher_dropped => note(
            "Publisher dropped",
            format!("The connection from OBS for {stream} broke. It is live again as soon as OBS reconnects."),
        ),
        EngineEvent::PublishEnded { reason, .. } if *reason != EndReason::Dropped && on.stream_ended => {
            let why = match reason {
                EndReason::EndedByStreamer => "you pressed End stream",
                EndReason::Expired => "its stream key expired",
                _ => "OBS stopped streaming",
            };
            note("Stream ended", format!("{stream} is offline: {why}."))
        }
        EngineEvent::Chat { display_name, sender, body, mentions_me: true, .. } if on.chat_mention => {
            let who = if display_name.is_empty() { sender } else { display_name };
            note(&format!("{who} mentioned you"), body.chars().take(200).collect())
        }
        EngineEvent::RestreamFailing { name, error, attempts, .. } if on.restream_failing => note(
            &format!("Restream to {name} is failing"),
            format!("{error} ({attempts} attempts). OnAir keeps trying; viewers here are not affected."),
        ),
        EngineEvent::Restream { name, state: RestreamState::Refused, error, .. } if on.restream_failing => note(
            &format!("{name} refused the stream"),
            format!(
                "{}. Check the stream key of {name} (onair restream {stream} add {name} … --key-stdin).",
                error.as_deref().unwrap_or("The destination rejected the publish")
            ),
        ),
        _ => None,
    }
}

/// The app's identifier (tauri.conf.json), registered as its AppUserModelID by the Windows
/// installer (installers/windows/onair.nsi).
#[cfg(windows)]
const WINDOWS_APP_ID: &str = "org.onair.desktop";

/// Shows `note` through the desktop's notification service. Blocks (D-Bus): call it off the
/// async workers. A missing daemon is logged, not an error.
pub fn show(note: &Note) {
    let mut n = notify_rust::Notification::new();
    n.appname("OnAir")
        .summary(&note.summary)
        .body(&note.body)
        .icon("onair-desktop")
        .timeout(notify_rust::Timeout::Milliseconds(6000));
    // Windows shows a toast under the AppUserModelID the installer registers (name and icon);
    // without it the toast would be attributed to PowerShell.
    #[cfg(windows)]
    n.app_id(WINDOWS_APP_ID);
    let shown = n.show();
    match shown {
        Ok(_) => debug!(summary = %note.summary, "notification shown"),
        Err(e) => warn!(summary = %note.summary, error = %e, "cannot show a notification (no notification daemon?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(mentions_me: bool) -> EngineEvent {
        EngineEvent::Chat {
            stream: "s".into(),
            event_id: "$1".into(),
            sender: "@bob:example.org".into(),
            display_name: "Bob".into(),
            body: "hey alice, nice stream".into(),
            ts_ms: 1,
            mentions_me,
        }
    }

    #[test]
    fn restream_failures_are_told_once_per_run_and_can_be_turned_off() {
        let on = NotifyToggles::default();
        let failing = EngineEvent::RestreamFailing {
            stream: "s".into(),
            name: "twitch".into(),
            error: "connection refused".into(),
            attempts: 6,
        };
        let n = note_for(&failing, "s", &on).unwrap();
        assert_eq!(n.summary, "Restream to twitch is failing");
        assert!(n.body.starts_with("connection refused (6 attempts)"), "{}", n.body);
        let refused = EngineEvent::Restream {
            stream: "s".into(),
            name: "yt".into(),
            state: RestreamState::Refused,
            error: Some("NetStream.Publish.BadName".into()),
        };
        assert_eq!(note_for(&refused, "s", &on).unwrap().summary, "yt refused the stream");
        let live =
            EngineEvent::Restream { stream: "s".into(), name: "yt".into(), state: RestreamState::Live, error: None };
        assert_eq!(note_for(&live, "s", &on), None);
        assert_eq!(note_for(&failing, "s", &NotifyToggles { restream_failing: false, ..on }), None);
    }

    #[test]
    fn each_kind_and_its_toggle() {
        let on = NotifyToggles::default();
        let live = EngineEvent::Live { stream: "s".into() };
        assert_eq!(note_for(&live, "s", &on).unwrap().summary, "You are live");
        assert_eq!(note_for(&live, "other", &on), None, "only the app's stream");
        assert_eq!(note_for(&live, "s", &NotifyToggles { went_live: false, ..on }), None);

        let dropped = EngineEvent::PublishEnded { stream: "s".into(), reason: EndReason::Dropped };
        assert_eq!(note_for(&dropped, "s", &on).unwrap().summary, "Publisher dropped");
        assert_eq!(note_for(&dropped, "s", &NotifyToggles { publisher_dropped: false, ..on }), None);

        let ended = EngineEvent::PublishEnded { stream: "s".into(), reason: EndReason::EndedByStreamer };
        let n = note_for(&ended, "s", &on).unwrap();
        assert_eq!(n.summary, "Stream ended");
        assert!(n.body.contains("End stream"), "{}", n.body);
        assert_eq!(note_for(&ended, "s", &NotifyToggles { stream_ended: false, ..on }), None);

        let obs = EngineEvent::PublishStarted { stream: "s".into(), remote: "10.0.0.2:5000".into() };
        assert_eq!(note_for(&obs, "s", &on).unwrap().summary, "OBS connected");
        assert_eq!(note_for(&obs, "s", &NotifyToggles { obs_connected: false, ..on }), None);

        assert_eq!(note_for(&chat(true), "s", &on).unwrap().summary, "Bob mentioned you");
        assert_eq!(note_for(&chat(false), "s", &on), None, "only mentions");
        assert_eq!(note_for(&chat(true), "s", &NotifyToggles { chat_mention: false, ..on }), None);

        let stats = EngineEvent::Stats { stream: "s".into(), status: serde_json::json!({}) };
        assert_eq!(note_for(&stats, "s", &on), None);
    }
}
