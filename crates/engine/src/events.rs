//! What happens in the engine, pushed to front ends (the tray app's window, `onair chat`, the
//! control API's event stream) instead of being polled.

use serde::Serialize;

/// Why a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The publisher stopped cleanly (OBS "Stop Streaming": `deleteStream`).
    Finished,
    /// The connection broke or the publisher sent something unreadable, and it did not come back
    /// within the grace period (`publish_grace_s`; a return continues the same broadcast).
    Dropped,
    /// The streamer pressed End stream.
    EndedByStreamer,
    /// The signed key's `stream_expire` passed.
    Expired,
}

/// One engine event. Serialized as `{"type": "live", "stream": "…", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EngineEvent {
    /// A publisher was accepted (OBS connected); the stream is not playable yet — or, when a
    /// dropped publisher came back within the grace period, it goes on playing.
    PublishStarted {
        stream: String,
        remote: String,
    },
    /// The stream became playable.
    Live {
        stream: String,
    },
    PublishEnded {
        stream: String,
        reason: EndReason,
    },
    /// A publish was refused; `reason` never contains a secret.
    PublishRefused {
        stream: String,
        reason: String,
    },
    /// The publisher sends B-frames (WebRTC players stutter): set Max B-frames to 0 in OBS.
    Bframes {
        stream: String,
    },
    /// Go live / End stream.
    Armed {
        stream: String,
        armed: bool,
    },
    /// The title changed (set in OnAir or, with Matrix, as the room name in any client).
    Title {
        stream: String,
        title: String,
    },
    /// A chat message in the stream's Matrix room (the streamer's own included).
    Chat {
        stream: String,
        event_id: String,
        sender: String,
        display_name: String,
        body: String,
        ts_ms: u64,
        /// The message mentions the streamer (their display name, user id or localpart).
        mentions_me: bool,
    },
    /// The Matrix connection changed state (see [`crate::control::MatrixState`]).
    Matrix {
        state: String,
    },
    /// How viewers on the internet reach the engine, or its HTTPS, changed: the new state and
    /// the public base URL (`null` while there is none); `GET /api/control/status` has the rest.
    Reach {
        #[ts(as = "crate::status::ReachState")]
        state: crate::status::ReachState,
        public_base: Option<String>,
        /// HTTPS: `off`, `ok`, `obtaining`, `renewing`, `error`.
        https: String,
    },
    /// A restream destination's state changed (`error`: why it is retrying or refused).
    Restream {
        stream: String,
        name: String,
        #[ts(as = "crate::restream::RestreamState")]
        state: crate::restream::RestreamState,
        error: Option<String>,
    },
    /// A restream destination has failed more than 5 times in a row or for 2 minutes (once per
    /// run of failures): worth telling the streamer.
    RestreamFailing {
        stream: String,
        name: String,
        error: String,
        attempts: u32,
    },
    /// A live stream's figures (the `/api/streams/<stream>` JSON), every 2 s.
    Stats {
        stream: String,
        #[ts(as = "crate::status::StreamStatus")]
        status: serde_json::Value,
    },
}

impl EngineEvent {
    /// The stream the event is about, if any.
    pub fn stream(&self) -> Option<&str> {
        match self {
            EngineEvent::PublishStarted { stream, .. }
            | EngineEvent::Live { stream }
            | EngineEvent::PublishEnded { stream, .. }
            | EngineEvent::PublishRefused { stream, .. }
            | EngineEvent::Bframes { stream }
            | EngineEvent::Armed { stream, .. }
            | EngineEvent::Title { stream, .. }
            | EngineEvent::Chat { stream, .. }
            | EngineEvent::Restream { stream, .. }
            | EngineEvent::RestreamFailing { stream, .. }
            | EngineEvent::Stats { stream, .. } => Some(stream),
            EngineEvent::Matrix { .. } | EngineEvent::Reach { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_type_tag() {
        let e = EngineEvent::PublishEnded { stream: "s".into(), reason: EndReason::EndedByStreamer };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type": "publish_ended", "stream": "s", "reason": "ended_by_streamer"})
        );
        assert_eq!(e.stream(), Some("s"));
        assert_eq!(EngineEvent::Matrix { state: "connected".into() }.stream(), None);
    }
}
