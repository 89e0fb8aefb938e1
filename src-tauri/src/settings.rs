//! The window's settings: the engine keys a streamer changes (stream name, ports, public host) go
//! to OnAir's config file (`~/.config/onair/config.toml`, the one `onair serve` reads) and apply at
//! the next start; the app's own (notifications) go to `desktop.json` beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use onair_engine::Config;
use onair_engine::net::HostPort;
use serde::{Deserialize, Serialize};

use crate::notify::NotifyToggles;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("no config directory on this system")]
    NoConfigDir,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// What the settings panel shows and edits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The stream the app controls (`default_stream`).
    pub stream: String,
    /// HTTP listen address (`http`).
    pub http: String,
    /// RTMP listen address (`rtmp`).
    pub rtmp: String,
    /// Host viewers and OBS reach this machine at (`public_host`); empty = the LAN address.
    pub public_host: String,
    pub notifications: NotifyToggles,
}

/// The app's own settings file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DesktopFile {
    pub notifications: NotifyToggles,
}

/// Where the settings live.
#[derive(Debug, Clone)]
pub struct SettingsPaths {
    /// OnAir's config file (shared with `onair serve`).
    pub config: PathBuf,
    /// `desktop.json`.
    pub desktop: PathBuf,
}

impl SettingsPaths {
    /// The platform locations (`$XDG_CONFIG_HOME/onair/…` on Linux).
    pub fn platform() -> Result<Self, SettingsError> {
        let config = Config::default_path().ok_or(SettingsError::NoConfigDir)?;
        let desktop = config.with_file_name("desktop.json");
        Ok(SettingsPaths { config, desktop })
    }

    pub fn in_dir(dir: &Path) -> Self {
        SettingsPaths { config: dir.join("config.toml"), desktop: dir.join("desktop.json") }
    }

    pub fn load_desktop(&self) -> DesktopFile {
        match std::fs::read_to_string(&self.desktop) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %self.desktop.display(), error = %e, "ignoring an unreadable desktop.json");
                DesktopFile::default()
            }),
            Err(_) => DesktopFile::default(),
        }
    }

    /// The settings as they stand: the running engine's configuration and the app's file.
    pub fn current(&self, config: &Config) -> Settings {
        Settings {
            stream: config.default_stream.clone(),
            http: config.http.to_string(),
            rtmp: config.rtmp.to_string(),
            public_host: config.public_host.as_ref().map(ToString::to_string).unwrap_or_default(),
            notifications: self.load_desktop().notifications,
        }
    }

    /// Validates and saves `new`. Returns whether the engine must restart to apply it (anything
    /// but the notifications changed compared to `running`).
    pub fn save(&self, running: &Config, new: &Settings) -> Result<bool, SettingsError> {
        let listen = |what: &str, v: &str| -> Result<SocketAddr, SettingsError> {
            v.trim().parse().map_err(|_| {
                SettingsError::Invalid(format!(
                    "{what} listen address {v:?}: an IP address and a port, e.g. 0.0.0.0:8080 or [::]:8080"
                ))
            })
        };
        let http = listen("HTTP", &new.http)?;
        let rtmp = listen("RTMP", &new.rtmp)?;
        let stream = new.stream.trim();
        if !onair_engine::is_valid_stream_name(stream) {
            return Err(SettingsError::Invalid(format!(
                "stream name {stream:?}: use 1-64 letters, digits, '-' or '_'"
            )));
        }
        let public_host: Option<HostPort> = match new.public_host.trim() {
            "" => None,
            h => Some(h.parse().map_err(|e| SettingsError::Invalid(format!("public host {e}")))?),
        };

        let desktop = DesktopFile { notifications: new.notifications };
        write_atomic(&self.desktop, serde_json::to_string_pretty(&desktop).expect("serializes").as_bytes())?;

        let restart = stream != running.default_stream
            || http != running.http
            || rtmp != running.rtmp
            || public_host != running.public_host;
        if restart {
            let mut doc: toml::Table = match std::fs::read_to_string(&self.config) {
                Ok(text) => toml::from_str(&text)
                    .map_err(|e| SettingsError::Parse { path: self.config.clone(), message: e.to_string() })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
                Err(source) => return Err(SettingsError::Read { path: self.config.clone(), source }),
            };
            doc.insert("default_stream".into(), stream.into());
            doc.insert("http".into(), http.to_string().into());
            doc.insert("rtmp".into(), rtmp.to_string().into());
            doc.insert("public_host".into(), public_host.map(|h| h.to_string()).unwrap_or_default().into());
            let text = toml::to_string(&doc).map_err(|e| SettingsError::Invalid(e.to_string()))?;
            write_atomic(&self.config, text.as_bytes())?;
        }
        Ok(restart)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SettingsError> {
    let err = |source| SettingsError::Write { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_engine_keys_to_the_config_file_and_toggles_beside_it() {
        let dir = std::env::temp_dir().join(format!("onair-desktop-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = SettingsPaths::in_dir(&dir);
        // A config file with a key the app does not touch: it is kept.
        std::fs::write(&paths.config, "app = \"live\"\n[hls]\npart_target_ms = 500\n").unwrap();
        let running = Config::default();
        let mut s = paths.current(&running);
        assert_eq!(s.stream, "stream");
        assert!(s.notifications.went_live);

        s.notifications.chat_mention = false;
        assert!(!paths.save(&running, &s).unwrap(), "toggles apply at once");
        assert!(!paths.current(&running).notifications.chat_mention);

        s.stream = "show".into();
        s.http = "127.0.0.1:9090".into();
        s.public_host = "tv.example.org".into();
        assert!(paths.save(&running, &s).unwrap(), "engine keys need a restart");
        let loaded = Config::load(Some(&paths.config)).unwrap();
        assert_eq!(loaded.default_stream, "show");
        assert_eq!(loaded.http, "127.0.0.1:9090".parse::<SocketAddr>().unwrap());
        assert_eq!(loaded.public_host, Some("tv.example.org".parse().unwrap()));
        assert_eq!(loaded.hls.part_target_ms, 500, "other keys are kept");

        s.stream = "a/b".into();
        assert!(matches!(paths.save(&running, &s), Err(SettingsError::Invalid(_))));
        s.stream = "show".into();
        s.public_host = "http://tv.example.org".into();
        let e = paths.save(&running, &s).unwrap_err().to_string();
        assert!(e.contains("public host") && e.contains("not a URL"), "{e}");
        s.public_host = "[::1]:8080".into();
        assert!(paths.save(&running, &s).unwrap());
        assert_eq!(Config::load(Some(&paths.config)).unwrap().public_host, Some("[::1]:8080".parse().unwrap()));
        assert_eq!(paths.current(&Config::load(Some(&paths.config)).unwrap()).public_host, "[::1]:8080");
        s.rtmp = "nope".into();
        assert!(matches!(paths.save(&running, &s), Err(SettingsError::Invalid(_))));
        std::fs::remove_dir_all(&dir).ok();
    }
}
