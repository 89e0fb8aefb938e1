//! The app's logic over the engine, in plain Rust (no GUI): what the tray's menu items and the
//! window's commands do. The Tauri glue in `tray.rs`, `commands.rs` and `app.rs` stays thin.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use onair_engine::obs::ObsSettings;
use onair_engine::secrets::SecretStore;
use onair_engine::{Config, Control, ControlError, Engine, EngineError, EngineEvent, Secrets, net};
use serde::Serialize;
use tracing::info;

use crate::notify::NotifyToggles;
use crate::settings::SettingsPaths;
use crate::state::{StreamTracker, TrayState};

/// How long the OBS stream keys the app hands out can start new publishes.
pub const KEY_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

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
    /// Whether the viewer link uses a configured public host (else the LAN address: reachable
    /// from this network only).
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
        let engine = Engine::start(config.clone(), secrets).await?;
        let control = engine.control();
        let stream = config.default_stream.clone();
        let http = engine.http_addr();
        let rtmp_addr = engine.rtmp_addr();
        let loopback = if http.ip().is_unspecified() {
            match http {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            }
        } else {
            http.ip()
        };
        let engine_url = format!("http://{}", std::net::SocketAddr::new(loopback, http.port()));
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

    /// OBS settings for the app's stream, valid for a year, reachable at the public host (or the
    /// LAN address).
    pub fn obs_settings(&self) -> Result<ObsSettings, CoreError> {
        let host = net::public_host(&self.config.public_host);
        // A configured public host may carry the HTTP port: OBS needs the RTMP one.
        let host = match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.parse::<u16>().is_ok() => h.to_owned(),
            _ => host,
        };
        let expires = (SystemTime::now() + KEY_VALIDITY).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let engine = lock(&self.engine);
        let engine = engine.as_ref().ok_or(CoreError::Stopped)?;
        Ok(engine.obs_settings(&self.stream, &host, expires)?)
    }

    /// The clipboard text of "Copy OBS settings".
    pub fn obs_clipboard_text(&self) -> Result<String, CoreError> {
        let s = self.obs_settings()?;
        Ok(format!("OBS → Settings → Stream → Service: Custom\nServer: {}\nStream Key: {}\n", s.server, s.stream_key))
    }

    pub fn viewer_link(&self) -> String {
        self.control.viewer_url(&self.stream)
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
            public_host_configured: !self.config.public_host.is_empty(),
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
    fn menu_ids_round_trip() {
        for a in MenuAction::ALL {
            assert_eq!(MenuAction::from_id(a.id()), Some(a));
        }
        assert_eq!(MenuAction::from_id("nope"), None);
    }

    #[test]
    fn qr_code_is_svg() {
        let svg = qr_svg("http://192.168.1.20:8080/stream").unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("<path") || svg.contains("<rect"));
    }
}
