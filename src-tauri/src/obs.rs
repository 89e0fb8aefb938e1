//! One-click OBS from the window, three ways, best first (the `onair-obs` crate does the work;
//! `onair obs --apply / --write-profile` is the same for headless use):
//!
//! 1. [`Core::obs_apply`]: over obs-websocket v5, set the custom server and signed key and the
//!    encoder settings WebRTC needs, read them back, and report what the user must still click.
//!    The password comes from `ONAIR_OBS_PASSWORD`, else the keyring entry
//!    `obs-websocket-password` ([`Core::obs_save_password`] stores it there; never in a file or
//!    a log line).
//! 2. [`Core::obs_write_profile`]: write an OBS profile "OnAir" into OBS' profile folder (or a
//!    chosen folder), read it back, and say what to select in OBS.
//! 3. The window copies server and key to the clipboard (nothing to do here).

use std::path::PathBuf;

use onair_obs::profile::{self, DEFAULT_PROFILE_NAME};
use onair_obs::{ApplyReport, ObsTarget, ObsUrl, ProfileSpec};
use serde::Serialize;
use tracing::info;

use onair_engine::secrets::SecretStore;
use onair_engine::startup::{self, SecretSource};

use crate::core::{Core, CoreError};

/// `ONAIR_OBS_PASSWORD`, else `store`'s entry `obs-websocket-password`, else none. Blocking.
fn password_from(store: &dyn SecretStore) -> Result<(Option<String>, SecretSource), CoreError> {
    Ok(startup::optional_secret(store, onair_obs::PASSWORD_ENV, onair_obs::PASSWORD_ENTRY)?)
}

/// What the OBS panel shows before anything was clicked (`obs_setup_info`).
#[derive(Debug, Clone, Serialize)]
pub struct ObsSetupInfo {
    /// The obs-websocket address to offer (`ws://127.0.0.1:4455`).
    pub default_url: &'static str,
    pub password: SecretSource,
    /// The folder "Write OBS profile" writes to (None: OBS' settings folder is unknown here).
    pub profile_dir: Option<PathBuf>,
}

/// The result of the websocket setup (`obs_apply`).
#[derive(Debug, Clone, Serialize)]
pub struct ApplyOutcome {
    /// The obs-websocket address used.
    pub url: String,
    pub password: SecretSource,
    /// Set, verified, mismatched, still to click (see [`ApplyReport`]).
    pub report: ApplyReport,
    /// Everything set and verified; nothing left but Start Streaming.
    pub complete: bool,
}

/// The result of writing the OBS profile (`obs_write_profile`).
#[derive(Debug, Clone, Serialize)]
pub struct ProfileOutcome {
    pub dir: PathBuf,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// What read back differently than it was written (empty when all is well).
    pub problems: Vec<String>,
    /// What the user must still click in OBS.
    pub todo: Vec<String>,
}

impl Core {
    /// OnAir's OBS target for the app's stream (server and a key valid for a year).
    pub fn obs_target(&self) -> Result<ObsTarget, CoreError> {
        let s = self.obs_settings()?;
        Ok(ObsTarget::new(s.server, s.stream_key))
    }

    /// The obs-websocket password: `ONAIR_OBS_PASSWORD`, else the keyring entry, else none.
    /// Blocking (the keyring): call from a blocking thread.
    pub fn obs_password(&self) -> Result<(Option<String>, SecretSource), CoreError> {
        password_from(&**self.secret_store())
    }

    /// Stores the obs-websocket password in the keyring (an empty one removes it). Blocking.
    pub fn obs_save_password(&self, password: &str) -> Result<(), CoreError> {
        let store = self.secret_store();
        if password.is_empty() {
            store.delete(onair_obs::PASSWORD_ENTRY)?;
            info!("obs-websocket password removed from the keyring");
        } else {
            store.set(onair_obs::PASSWORD_ENTRY, password)?;
            info!("obs-websocket password stored in the keyring");
        }
        Ok(())
    }

    /// What the OBS panel needs before anything was clicked. Blocking (the keyring).
    pub fn obs_setup_info(&self) -> ObsSetupInfo {
        let password = match self.obs_password() {
            Ok((_, source)) => source,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the obs-websocket password");
                SecretSource::None
            }
        };
        ObsSetupInfo {
            default_url: onair_obs::DEFAULT_URL,
            password,
            profile_dir: profile::default_profile_dir(DEFAULT_PROFILE_NAME).ok(),
        }
    }

    /// Way 1: applies OnAir's settings to the OBS at `url` (default `ws://127.0.0.1:4455`) and
    /// reads them back.
    pub async fn obs_apply(&self, url: Option<&str>) -> Result<ApplyOutcome, CoreError> {
        let url = ObsUrl::parse(url.map(str::trim).filter(|u| !u.is_empty()).unwrap_or(onair_obs::DEFAULT_URL))?;
        let target = self.obs_target()?;
        let (password, source) = {
            // The keyring is a blocking D-Bus call.
            let store = self.secret_store().clone();
            tokio::task::spawn_blocking(move || password_from(&*store)).await.map_err(|_| CoreError::Stopped)??
        };
        info!(%url, password = ?source, "applying the OBS settings over obs-websocket");
        let report = onair_obs::ws::apply(&url, password.as_deref(), &target).await?;
        info!(
            %url,
            done = report.done.len(),
            verified = report.verified.len(),
            mismatches = report.mismatches.len(),
            todo = report.todo.len(),
            "OBS set up"
        );
        Ok(ApplyOutcome { url: url.to_string(), password: source, complete: report.complete(), report })
    }

    /// Way 2: writes the OBS profile "OnAir" into `dir` (default: the profile folder of this
    /// user's OBS) and reads it back.
    pub fn obs_write_profile(&self, dir: Option<PathBuf>) -> Result<ProfileOutcome, CoreError> {
        let target = self.obs_target()?;
        let (dir, chosen) = match dir {
            Some(d) => (d, true),
            None => (profile::default_profile_dir(DEFAULT_PROFILE_NAME)?, false),
        };
        let files = profile::profile_files(&target, &ProfileSpec::default());
        let written = profile::write_profile(&dir, &files)?;
        let problems = profile::read_profile(&dir)?.problems(&target);
        let mut todo = Vec::new();
        if chosen {
            todo.push(format!("In OBS: Profile → Import → choose {}", dir.display()));
            todo.push("Profile → OnAir".to_owned());
        } else {
            todo.push("In OBS: Profile → OnAir (restart OBS first if it is running)".to_owned());
        }
        todo.push("Start Streaming".to_owned());
        info!(dir = %dir.display(), problems = problems.len(), "OBS profile written");
        Ok(ProfileOutcome { dir, files: written, problems, todo })
    }
}
