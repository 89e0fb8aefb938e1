//! OBS settings: the custom server and the signed stream key.

use onair_policy::Policy;
use serde::Serialize;

use crate::secrets::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum ObsError {
    #[error("invalid stream name {0:?}: use 1-64 letters, digits, '-' or '_'")]
    BadStream(String),
    #[error("cannot sign the URL: {0}")]
    Sign(#[from] onair_policy::PolicyError),
    #[error(transparent)]
    Host(#[from] crate::net::HostPortError),
}

/// What to type into OBS (Settings → Stream → Service: Custom).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ObsSettings {
    /// "Server": `rtmp://HOST:PORT/<app>`.
    pub server: String,
    /// "Stream Key": `<stream>?policy=…&signature=…`.
    pub stream_key: String,
    /// The whole publish URL (for ffmpeg and other tools).
    pub url: String,
    /// When the key stops working for new publishes (epoch ms).
    pub expires_ms: u64,
}

impl ObsSettings {
    /// Signs `stream` on `server` (`rtmp://host:port/<app>`, as built by
    /// [`crate::startup::PublicUrls`] or [`crate::startup::rtmp_server`]).
    pub fn new(key: &SigningKey, server: &str, stream: &str, expires_ms: u64) -> Result<Self, ObsError> {
        if !crate::is_valid_stream_name(stream) {
            return Err(ObsError::BadStream(stream.into()));
        }
        let policy = Policy { url_expire: expires_ms, ..Default::default() };
        let url = onair_policy::sign_url(key.as_bytes(), &format!("{server}/{stream}"), &policy)?;
        let stream_key = url[server.len() + 1..].to_owned();
        Ok(Self { server: server.to_owned(), stream_key, url, expires_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn settings_verify_as_obs_dials_them() {
        let key = SigningKey::new("k");
        let s = ObsSettings::new(&key, "rtmp://192.168.1.5:1935/live", "show", 4_000_000_000_000).unwrap();
        assert_eq!(s.server, "rtmp://192.168.1.5:1935/live");
        assert!(s.stream_key.starts_with("show?policy="), "{}", s.stream_key);
        // OBS connects with tcUrl = server and publishes the stream key: the server rebuilds this.
        let dialled = format!("{}/{}", s.server, s.stream_key);
        assert_eq!(dialled, s.url);
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(onair_policy::verify(b"k", &dialled, client, 1).is_ok());
        assert!(ObsSettings::new(&key, "rtmp://h:1935/live", "bad/name", 1).is_err());
    }
}
