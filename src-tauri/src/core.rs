//! The app's logic over the engine, in plain Rust (no GUI): what the tray's menu items and the
//! window's commands do. The Tauri glue in `tray.rs`, `commands.rs` and `app.rs` stays thin;
//! links, secrets and key validity come from the engine's `startup` module, as in `onair`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use onair_engine::obs::ObsSettings;
use onair_engine::secrets::SecretStore;
use onair_engine::startup::{self, PublicUrls};
use onair_engine::status::{ReachState, ReachStatus};
use onair_engine::{Config, Control, ControlError, Engine, EngineError, EngineEvent, Secrets, SigningKey, net};
use serde::Serialize;
use tracing::info;

use crate::notify::NotifyToggles;
use crate::settings::SettingsPaths;
use crate::state::{MenuAction, StreamTracker, TrayState, TrayView};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Obs(#[from] onair_engine::obs::ObsError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    ObsApply(#[from] onair_obs::ApplyError),
    #[error(transparent)]
    ObsProfile(#[from] onair_obs::ProfileError),
    #[error(transparent)]
    Secret(#[from] onair_engine::secrets::SecretError),
    #[error("cannot make a QR code: {0}")]
    Qr(String),
    #[error("the engine has stopped")]
    Stopped,
}

/// What the glue must do after a menu action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more (the engine's events update the tray and the window).
    None,
    /// Put this text on the clipboard.
    Clipboard(String),
    ShowWindow,
    Quit,
}

/// Everything the window needs at start (`app_info`).
#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    pub version: &'static str,
    /// The stream the app controls.
    pub stream: String,
    /// `http://127.0.0.1:<port>`: the preview plays from here.
    pub engine_url: String,
    /// The link viewers open.
    pub viewer_url: String,
    /// The viewer link as a QR code (SVG).
    pub viewer_qr_svg: String,
    /// Whether the viewer link uses a configured public host (else the public address OnAir
    /// learnt when viewers on the internet can reach it, or the LAN address).
    pub public_host_configured: bool,
    pub obs: ObsInfo,
    pub armed: bool,
    pub require_go_live: bool,
    pub tray: TrayState,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObsInfo {
    pub server: String,
    pub stream_key: String,
    /// The whole publish URL (`ffmpeg … -f flv <url>`).
    pub url: String,
}

/// The running engine and what the app keeps beside it.
pub struct Core {
    engine: Mutex<Option<Engine>>,
    control: Arc<Control>,
    config: Config,
    stream: String,
    engine_url: String,
    http_addr: std::net::SocketAddr,
    rtmp_addr: std::net::SocketAddr,
    /// The links viewers and OBS are given (the engine's).
    urls: PublicUrls,
    /// Signs the OBS stream keys the app hands out.
    signing_key: SigningKey,
    tracker: Mutex<StreamTracker>,
    settings: Option<SettingsPaths>,
    toggles: Mutex<NotifyToggles>,
    /// The OS keyring in the app (the engine's Matrix session store): the obs-websocket password.
    store: Arc<dyn SecretStore>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    /// Starts the engine (call within the async runtime). `settings`: where the window's settings
    /// are saved (None: not saved, e.g. in tests).
    pub async fn start(
        config: Config,
        secrets: Secrets,
        settings: Option<SettingsPaths>,
    ) -> Result<Arc<Core>, EngineError> {
        let store = secrets.store.clone();
        let signing_key = secrets.signing_key.clone();
        let engine = Engine::start(config.clone(), secrets).await?;
        let control = engine.control();
        let urls = engine.urls().clone();
        let stream = config.default_stream.clone();
        let http = engine.http_addr();
        let rtmp_addr = engine.rtmp_addr();
        let engine_url = format!("http://{}", net::loopback_for(http));
        let live = control.status(&stream).live;
        let tracker = StreamTracker::new(&stream, control.is_armed(&stream), live);
        let toggles = settings.as_ref().map(|s| s.load_desktop().notifications).unwrap_or_default();
        info!(%stream, %engine_url, require_go_live = config.require_go_live, "desktop engine started");
        Ok(Arc::new(Core {
            engine: Mutex::new(Some(engine)),
            control,
            config,
            stream,
            engine_url,
            http_addr: http,
            rtmp_addr,
            urls,
            signing_key,
            tracker: Mutex::new(tracker),
            settings,
            toggles: Mutex::new(toggles),
            store,
        }))
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Where the app keeps secrets (the OS keyring; in memory in tests).
    pub fn secret_store(&self) -> &Arc<dyn SecretStore> {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The stream the tray controls.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.http_addr
    }

    pub fn rtmp_addr(&self) -> std::net::SocketAddr {
        self.rtmp_addr
    }

    pub fn engine_url(&self) -> &str {
        &self.engine_url
    }

    /// Go live ⇄ End stream; returns whether the stream is now armed.
    pub fn toggle_live(&self) -> Result<bool, ControlError> {
        if self.control.is_armed(&self.stream) {
            self.control.end_stream(&self.stream)?;
        } else {
            self.control.go_live(&self.stream)?;
        }
        let armed = self.control.is_armed(&self.stream);
        lock(&self.tracker).armed = armed;
        Ok(armed)
    }

    /// OBS settings for the app's stream at the engine's public RTMP server, the key valid for
    /// [`startup::KEY_VALIDITY`].
    pub fn obs_settings(&self) -> Result<ObsSettings, CoreError> {
        if !self.is_running() {
            return Err(CoreError::Stopped);
        }
        let expires = startup::expires_ms(SystemTime::now(), startup::KEY_VALIDITY);
        Ok(self.urls.obs_settings(&self.signing_key, &self.stream, expires)?)
    }

    /// The clipboard text of "Copy OBS settings".
    pub fn obs_clipboard_text(&self) -> Result<String, CoreError> {
        let s = self.obs_settings()?;
        Ok(format!("OBS → Settings → Stream → Service: Custom\nServer: {}\nStream Key: {}\n", s.server, s.stream_key))
    }

    /// The link to share: see [`share_link`].
    pub fn viewer_link(&self) -> String {
        share_link(&self.urls, &self.control.reach(), &self.stream)
    }

    pub fn app_info(&self) -> Result<AppInfo, CoreError> {
        let obs = self.obs_settings()?;
        let viewer_url = self.viewer_link();
        Ok(AppInfo {
            version: env!("CARGO_PKG_VERSION"),
            stream: self.stream.clone(),
            engine_url: self.engine_url.clone(),
            viewer_qr_svg: qr_svg(&viewer_url)?,
            viewer_url,
            public_host_configured: self.urls.public_host_configured(),
            obs: ObsInfo { server: obs.server, stream_key: obs.stream_key, url: obs.url },
            armed: self.control.is_armed(&self.stream),
            require_go_live: self.config.require_go_live,
            tray: self.tray_state(),
        })
    }

    /// Runs a tray menu item.
    pub fn menu_action(&self, action: MenuAction) -> Result<Effect, CoreError> {
        Ok(match action {
            MenuAction::ToggleLive => {
                self.toggle_live()?;
                Effect::None
            }
            MenuAction::CopyObsSettings => Effect::Clipboard(self.obs_clipboard_text()?),
            MenuAction::CopyViewerLink => Effect::Clipboard(self.viewer_link()),
            MenuAction::Open => Effect::ShowWindow,
            MenuAction::Quit => Effect::Quit,
        })
    }

    /// Feeds an engine event to the tray state; returns whether the tray must be redrawn.
    pub fn on_event(&self, event: &EngineEvent) -> bool {
        lock(&self.tracker).on_event(event, Instant::now())
    }

    /// When the tray state changes by itself if no event comes first (see `StreamTracker`).
    pub fn next_tray_change(&self) -> Option<Instant> {
        lock(&self.tracker).next_change(Instant::now())
    }

    pub fn tray_state(&self) -> TrayState {
        lock(&self.tracker).state(Instant::now())
    }

    pub fn toggle_label(&self) -> &'static str {
        lock(&self.tracker).toggle_label()
    }

    /// What the tray draws now.
    pub fn tray_view(&self) -> TrayView {
        let tracker = lock(&self.tracker);
        let state = tracker.state(Instant::now());
        let reach = self.control.reach().state;
        let mut tooltip = state.tooltip(&self.stream, reach);
        if let Some(line) = crate::state::restream_note(&self.control.restream().status(&self.stream)) {
            tooltip = format!("{tooltip}\n{line}");
        }
        TrayView { state, tooltip, toggle_label: tracker.toggle_label() }
    }

    pub fn notify_toggles(&self) -> NotifyToggles {
        *lock(&self.toggles)
    }

    pub fn settings(&self) -> Option<&SettingsPaths> {
        self.settings.as_ref()
    }

    pub fn set_notify_toggles(&self, toggles: NotifyToggles) {
        *lock(&self.toggles) = toggles;
    }

    /// Stops the engine (once; later calls do nothing).
    pub async fn shutdown(&self) {
        let engine = lock(&self.engine).take();
        if let Some(engine) = engine {
            engine.shutdown().await;
        }
    }

    pub fn is_running(&self) -> bool {
        lock(&self.engine).is_some()
    }
}

/// The viewer link to share: the public one once viewers on the internet can open it (reach
/// state `reachable`: the configured public host or HTTPS domain, else the public address OnAir
/// opened on the router), else the engine's own link — the LAN one, which works on this network
/// only, or the configured host's, which is the streamer's call.
pub fn share_link(urls: &PublicUrls, reach: &ReachStatus, stream: &str) -> String {
    match (&reach.public_base, reach.state) {
        (Some(base), ReachState::Reachable) => format!("{}/{stream}", base.trim_end_matches('/')),
        _ => urls.viewer(stream),
    }
}

/// `text` as a QR code in SVG (dark modules on white, with the quiet zone).
pub fn qr_svg(text: &str) -> Result<String, CoreError> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| CoreError::Qr(e.to_string()))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(180, 180)
        .dark_color(svg::Color("#0c0e13"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_link_is_the_one_that_works_for_viewers() {
        let lan = || "192.168.1.20".parse().unwrap();
        let urls =
            PublicUrls::resolve(None, "0.0.0.0:8080".parse().unwrap(), "0.0.0.0:1935".parse().unwrap(), "live", lan);
        let mut reach = ReachStatus::default();
        assert_eq!(share_link(&urls, &reach, "s"), "http://192.168.1.20:8080/s", "checking: the LAN link");
        reach.public_base = Some("http://11.77.0.1:8080".into());
        reach.state = ReachState::LanOnly;
        assert_eq!(share_link(&urls, &reach, "s"), "http://192.168.1.20:8080/s", "not mapped: the LAN link");
        reach.state = ReachState::Reachable;
        assert_eq!(share_link(&urls, &reach, "s"), "http://11.77.0.1:8080/s");
        let host = "tv.example.org".parse().unwrap();
        let urls = PublicUrls::resolve(
            Some(&host),
            "0.0.0.0:8080".parse().unwrap(),
            "0.0.0.0:1935".parse().unwrap(),
            "live",
            lan,
        );
        reach.state = ReachState::LanOnly;
        assert_eq!(
            share_link(&urls, &reach, "s"),
            "http://tv.example.org:8080/s",
            "a configured host is the streamer's call"
        );
    }

    #[test]
    fn qr_code_is_svg() {
        let svg = qr_svg("http://192.168.1.20:8080/stream").unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<path") || svg.contains("<rect"));
    }
}
