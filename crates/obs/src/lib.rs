//! One-click OBS setup for OnAir, three ways, best first:
//!
//! 1. [`ws`]: through obs-websocket v5 (built into OBS ≥ 28): set the stream service to OnAir's
//!    custom server and signed key, set the encoder options WebRTC playback needs as far as the
//!    protocol allows, read everything back and report what the user must still click.
//! 2. [`profile`]: write an OBS profile (`basic.ini`, `service.json`, `streamEncoder.json`) into
//!    OBS' profile folder, to select in OBS (Profile → OnAir).
//! 3. The front end copies server and key to the clipboard (nothing to do here).
//!
//! What to set is decided by pure functions ([`x264`], [`profile::profile_files`],
//! [`ws::simple_output_params`]); the websocket and file I/O only carry the result out.
//! The crate does not depend on the engine: it takes the server and stream key as strings.

pub mod profile;
pub mod ws;
pub mod x264;

pub use profile::{ProfileError, ProfileFiles, ProfileSettings, ProfileSpec};
pub use ws::{ApplyError, ApplyReport, ObsClient, ObsUrl, OutputMode};

/// The keyring entry (service `onair`) that holds the obs-websocket password.
pub const PASSWORD_ENTRY: &str = "obs-websocket-password";
/// The environment variable that overrides the keyring's obs-websocket password.
pub const PASSWORD_ENV: &str = "ONAIR_OBS_PASSWORD";
/// The default obs-websocket URL.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:4455";
/// The keyframe interval OnAir asks for: short enough for a quick WebRTC start, long enough for
/// LL-HLS segments.
pub const DEFAULT_KEYINT_S: u32 = 2;
/// The video bitrate written into a new profile (kbit/s).
pub const DEFAULT_VIDEO_BITRATE_KBPS: u32 = 2500;
/// The audio bitrate written into a new profile (kbit/s).
pub const DEFAULT_AUDIO_BITRATE_KBPS: u32 = 160;
/// The x264 preset written into a new profile.
pub const DEFAULT_PRESET: &str = "veryfast";

/// What OnAir wants OBS to stream with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObsTarget {
    /// Settings → Stream → Server: `rtmp://HOST:PORT/live`.
    pub server: String,
    /// Settings → Stream → Stream Key: `<stream>?policy=…&signature=…`.
    pub stream_key: String,
    /// Keyframe interval in seconds (OBS takes whole seconds).
    pub keyint_s: u32,
    /// Video bitrate (kbit/s); `None` keeps what OBS has (a new profile gets
    /// [`DEFAULT_VIDEO_BITRATE_KBPS`]).
    pub video_bitrate_kbps: Option<u32>,
    /// x264 preset; `None` keeps what OBS has (a new profile gets [`DEFAULT_PRESET`]).
    pub preset: Option<String>,
}

impl ObsTarget {
    /// The server and key of a stream (from `onair_engine::obs::ObsSettings`), with OnAir's
    /// defaults for the rest.
    pub fn new(server: impl Into<String>, stream_key: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            stream_key: stream_key.into(),
            keyint_s: DEFAULT_KEYINT_S,
            video_bitrate_kbps: None,
            preset: None,
        }
    }

    /// The stream name: the key up to its `?`.
    pub fn stream_name(&self) -> &str {
        self.stream_key.split('?').next().unwrap_or_default()
    }
}

/// The key with its signature hidden, for reports and logs.
pub fn redact_key(key: &str) -> String {
    match key.split_once('?') {
        Some((name, _)) => format!("{name}?policy=…&signature=…"),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_defaults_and_redaction() {
        let t = ObsTarget::new("rtmp://h:1935/live", "show?policy=abc&signature=xyz");
        assert_eq!(t.keyint_s, 2);
        assert_eq!(t.stream_name(), "show");
        assert_eq!(redact_key(&t.stream_key), "show?policy=…&signature=…");
        assert_eq!(redact_key("plain"), "plain");
    }
}
