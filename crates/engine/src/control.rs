//! What a streamer controls while the engine runs: Go live / End stream, titles, chat through
//! Matrix, and the engine events front ends listen to. The tray app calls it in-process; `onair`
//! commands reach it through the loopback control API ([`crate::control_api`]).
//!
//! Titles are kept by OnAir (`<data_dir>/titles.json`, each with when it was set); with Matrix the
//! title of a stream is also its room's name, both ways, and the newer of the two wins
//! ([`titles::reconcile`]): a title set while Matrix is not ready or unreachable reaches the room
//! when it is back. Chat: the streamer's Matrix account (onair-matrix) restores its session from
//! the OS keyring, or logs in once with a password.

mod titles;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use onair_matrix::{Chat, ChatEvent, MatrixStatus, RoomName, SessionStore, StoreError};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::MatrixSettings;
use crate::events::{EndReason, EngineEvent};
use crate::hub::Registry;
use crate::secrets::SecretStore;
use crate::status::{ChatInfo, HttpsStatus, ReachStatus, StreamStatus};
use titles::{Reconcile, Title};

/// Longest title accepted (Matrix room names have no hard limit; players show one line).
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest chat message accepted from the control API.
pub const MAX_MESSAGE_CHARS: usize = 4000;
/// After a publisher drops, how long it may come back before the "ended" notice is posted (and
/// without a new "live" notice when it does).
pub const RECONNECT_GRACE: Duration = Duration::from_secs(60);
/// How often live streams' figures are pushed as [`EngineEvent::Stats`].
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How long a status request waits for a stream's room to be found or created.
const ENSURE_WAIT: Duration = Duration::from_secs(5);
/// After titles could not all be reconciled (the homeserver went away mid-way), when to try again
/// once it answers.
const RECONCILE_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("invalid stream name {0:?}: use 1-64 letters, digits, '-' or '_'")]
    BadStream(String),
    #[error("{0}")]
    BadInput(String),
    #[error("chat is not available: {0}")]
    NoChat(String),
    #[error(transparent)]
    Matrix(#[from] onair_matrix::Error),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
}

/// The Matrix side as front ends show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixState {
    /// No homeserver configured: no chat, titles are OnAir's own.
    Off,
    /// Configured, but no session in the keyring and no password given.
    NotLoggedIn,
    Connecting,
    Connected,
    Unreachable(String),
    /// The session was revoked elsewhere: log in again.
    LoggedOut,
    /// Login or restore failed for another reason (wrong password, keyring unavailable, …).
    Failed(String),
}

impl std::fmt::Display for MatrixState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatrixState::Off => f.write_str("off"),
            MatrixState::NotLoggedIn => f.write_str("not logged in"),
            MatrixState::Connecting => f.write_str("connecting"),
            MatrixState::Connected => f.write_str("connected"),
            MatrixState::Unreachable(r) => write!(f, "unreachable: {r}"),
            MatrixState::LoggedOut => f.write_str("logged out: log in again"),
            MatrixState::Failed(r) => write!(f, "error: {r}"),
        }
    }
}

impl From<MatrixStatus> for MatrixState {
    fn from(s: MatrixStatus) -> Self {
        match s {
            MatrixStatus::Connecting => MatrixState::Connecting,
            MatrixStatus::Connected => MatrixState::Connected,
            MatrixStatus::Unreachable(r) => MatrixState::Unreachable(r),
            MatrixStatus::LoggedOut => MatrixState::LoggedOut,
        }
    }
}

/// `GET /api/control/status`.
#[derive(Debug, Serialize, ts_rs::TS)]
pub struct ControlStatus {
    pub require_go_live: bool,
    pub default_stream: String,
    pub viewer_base: String,
    pub matrix: MatrixInfo,
    /// The default stream, every live stream and every stream with a title or Go live.
    pub streams: Vec<StreamControlStatus>,
    /// How viewers on the internet reach the engine.
    pub reach: ReachStatus,
    /// HTTPS and RTMPS.
    pub https: HttpsStatus,
    /// The upload budget and its use.
    pub budget: BudgetStatus,
    /// What to answer the OS firewall's question on first start (Windows), else null.
    pub firewall_note: Option<String>,
}

/// The upload budget (`[budget]`) and what OnAir sends now.
#[derive(Debug, Clone, Copy, Serialize, ts_rs::TS)]
pub struct BudgetStatus {
    /// The budget in Mb/s; 0: none set.
    pub upload_mbps: f64,
    /// What OnAir sends now (viewers and restream), with the viewers just admitted, in Mb/s.
    pub used_mbps: f64,
    /// Direct viewers not admitted since the start (sent to the edge, or told it is full).
    pub refused: u64,
}

#[derive(Debug, Serialize, ts_rs::TS)]
pub struct MatrixInfo {
    pub state: String,
    pub homeserver: String,
    pub user: String,
}

#[derive(Debug, Serialize, ts_rs::TS)]
pub struct StreamControlStatus {
    /// Publishes are accepted (always, without `require_go_live`).
    pub armed: bool,
    #[serde(flatten)]
    pub status: StreamStatus,
}

/// What the control needs from the engine at start.
pub struct ControlSetup {
    pub registry: Arc<Registry>,
    pub webrtc: Option<onair_webrtc::WebrtcServer>,
    pub default_stream: String,
    /// `http://host:port` for viewer links.
    pub viewer_base: String,
    pub data_dir: PathBuf,
    pub matrix: MatrixSettings,
    pub store: Arc<dyn SecretStore>,
    /// The restream destinations (their state shows in each stream's status).
    pub restream: Arc<crate::restream::Restream>,
    /// The upload budget.
    pub budget: Arc<crate::budget::BudgetGate>,
}

/// The streamer's controls. Cheap to share (`Arc`).
pub struct Control {
    registry: Arc<Registry>,
    webrtc: Option<onair_webrtc::WebrtcServer>,
    default_stream: String,
    viewer_base: String,
    titles_path: PathBuf,
    /// Current titles by stream, with when they were set (see [`titles`]).
    titles: Mutex<HashMap<String, Title>>,
    /// Streams the streamer has used (rooms are found or created only for these, so a visitor
    /// cannot make the engine create rooms for made-up names).
    known: Mutex<HashSet<String>>,
    settings: Mutex<MatrixSettings>,
    store: Arc<dyn SecretStore>,
    chat: Mutex<Option<Arc<Chat>>>,
    /// Forwards the chat's events and status; replaced on login, stopped on logout.
    chat_tasks: Mutex<Vec<JoinHandle<()>>>,
    state: watch::Sender<MatrixState>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Title changes and room set-up one at a time, so a room name read while titles are
    /// reconciled cannot overwrite a title set meanwhile.
    titling: tokio::sync::Mutex<()>,
    reach: Mutex<ReachStatus>,
    https: Mutex<HttpsStatus>,
    /// Streams put live with Go live and not ended since (`crate::reach` maps the router's
    /// ports while any is).
    on_air: watch::Sender<HashSet<String>>,
    restream: Arc<crate::restream::Restream>,
    budget: Arc<crate::budget::BudgetGate>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    /// Starts the background work (Matrix connection, live notices, stats events). Call within
    /// a tokio runtime. `password` logs in when the keyring holds no session yet.
    pub fn start(setup: ControlSetup, password: Option<String>) -> Arc<Control> {
        let titles_path = setup.data_dir.join("titles.json");
        let titles = titles::load(&titles_path);
        let mut known: HashSet<String> = titles.keys().cloned().collect();
        known.insert(setup.default_stream.clone());
        let state = if setup.matrix.enabled() { MatrixState::Connecting } else { MatrixState::Off };
        let control = Arc::new(Control {
            registry: setup.registry,
            webrtc: setup.webrtc,
            default_stream: setup.default_stream,
            viewer_base: setup.viewer_base,
            titles_path,
            titles: Mutex::new(titles),
            known: Mutex::new(known),
            settings: Mutex::new(setup.matrix),
            store: setup.store,
            chat: Mutex::new(None),
            chat_tasks: Mutex::new(Vec::new()),
            state: watch::Sender::new(state),
            tasks: Mutex::new(Vec::new()),
            titling: tokio::sync::Mutex::new(()),
            reach: Mutex::new(ReachStatus::default()),
            https: Mutex::new(HttpsStatus::default()),
            on_air: watch::Sender::new(HashSet::new()),
            restream: setup.restream,
            budget: setup.budget,
        });
        let tasks = vec![
            tokio::spawn(notices(Arc::downgrade(&control), control.registry.subscribe())),
            tokio::spawn(stats_events(Arc::downgrade(&control))),
        ];
        if lock(&control.settings).enabled() {
            let c = control.clone();
            lock(&control.chat_tasks).push(tokio::spawn(async move { c.connect(password).await }));
        }
        *lock(&control.tasks) = tasks;
        control
    }

    /// The restream destinations: their edits and state.
    pub fn restream(&self) -> &Arc<crate::restream::Restream> {
        &self.restream
    }

    /// Stops the background work (the engine calls this on shutdown).
    pub fn stop(&self) {
        self.restream.stop();
        for t in lock(&self.tasks).drain(..).chain(lock(&self.chat_tasks).drain(..)) {
            t.abort();
        }
        if let Some(chat) = lock(&self.chat).take() {
            chat.stop_sync();
        }
    }

    /// Engine events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.registry.subscribe()
    }

    pub fn default_stream(&self) -> &str {
        &self.default_stream
    }

    /// The viewer page of `stream`, as shared with viewers.
    pub fn viewer_url(&self, stream: &str) -> String {
        format!("{}/{stream}", self.viewer_base)
    }

    /// Go live: publishes of `stream` are accepted (with `require_go_live`).
    pub fn go_live(&self, stream: &str) -> Result<(), ControlError> {
        check_stream(stream)?;
        self.remember(stream);
        if self.registry.set_armed(stream, true) {
            info!(%stream, "Go live: publishes are accepted");
        }
        self.on_air.send_if_modified(|s| s.insert(stream.to_owned()));
        Ok(())
    }

    /// End stream: the publisher is disconnected and refused until the next Go live (with
    /// `require_go_live`; without it the publisher may simply reconnect).
    pub fn end_stream(&self, stream: &str) -> Result<(), ControlError> {
        check_stream(stream)?;
        let live = self.registry.get(stream).is_some();
        self.registry.set_armed(stream, false);
        self.on_air.send_if_modified(|s| s.remove(stream));
        info!(%stream, disconnected = live, "End stream");
        Ok(())
    }

    /// The streams put live with Go live and not ended since, now and as they change.
    pub fn watch_on_air(&self) -> watch::Receiver<HashSet<String>> {
        self.on_air.subscribe()
    }

    pub fn is_armed(&self, stream: &str) -> bool {
        self.registry.is_armed(stream)
    }

    /// The stream's title (the room name, with Matrix); the stream name when none is set.
    pub fn title(&self, stream: &str) -> String {
        lock(&self.titles)
            .get(stream)
            .map(|t| t.title.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| stream.to_owned())
    }

    /// Sets the title (empty: back to the stream name), and with Matrix the room name. The title
    /// is kept (across restarts too) whatever Matrix does: while the session is not ready or the
    /// homeserver is unreachable, the room name follows once it is back (unless the room is
    /// renamed later still). An error means the homeserver refused the name.
    pub async fn set_title(&self, stream: &str, title: &str) -> Result<(), ControlError> {
        check_stream(stream)?;
        let title = title.trim();
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(ControlError::BadInput(format!("the title is longer than {MAX_TITLE_CHARS} characters")));
        }
        self.remember(stream);
        let _one_at_a_time = self.titling.lock().await;
        self.keep_title(stream, Title { title: title.to_owned(), set_ms: now_ms() });
        let Some(chat) = self.chat() else {
            info!(%stream, matrix = %self.matrix_state(), "title kept; the room name follows when Matrix is connected");
            return Ok(());
        };
        // Set now, it is newer than any name the room has: no need to compare.
        let name_if_created = if title.is_empty() { stream } else { title };
        let result = match chat.ensure_room_named(stream, name_if_created).await {
            Ok(room) if room.created => Ok(()),
            Ok(_) => chat.set_title(stream, title).await.map(|set_ms| self.delivered(stream, title, set_ms)),
            Err(e) => Err(e),
        };
        match result {
            Err(e @ (onair_matrix::Error::Unreachable { .. } | onair_matrix::Error::LoggedOut)) => {
                warn!(%stream, error = %e, "title kept; the room name follows when Matrix is back");
                Ok(())
            }
            other => other.map_err(ControlError::from),
        }
    }

    /// Sends a chat message as the streamer.
    pub async fn send_chat(&self, stream: &str, text: &str) -> Result<(), ControlError> {
        check_stream(stream)?;
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(ControlError::BadInput(format!("a message has 1 to {MAX_MESSAGE_CHARS} characters")));
        }
        let chat = self.chat().ok_or_else(|| ControlError::NoChat(self.matrix_state().to_string()))?;
        self.remember(stream);
        self.ensure(&chat, stream).await?;
        chat.send(stream, text).await?;
        Ok(())
    }

    pub fn matrix_state(&self) -> MatrixState {
        self.state.borrow().clone()
    }

    /// Logs in to `homeserver` as `user` (replacing any current session); the session goes to
    /// the keyring, the password nowhere.
    pub async fn matrix_login(
        self: &Arc<Self>,
        homeserver: &str,
        user: &str,
        password: &str,
    ) -> Result<(), ControlError> {
        let mut settings = lock(&self.settings).clone();
        settings.homeserver = homeserver.trim().into();
        settings.user = user.trim().into();
        if !settings.enabled() || settings.user.is_empty() {
            return Err(ControlError::BadInput("give a homeserver and a user".into()));
        }
        self.detach();
        let chat = Chat::login(settings.matrix_config(), password, &StoreAdapter(self.store.clone())).await;
        *lock(&self.settings) = settings;
        match chat {
            Ok(chat) => {
                self.attach(chat).await;
                Ok(())
            }
            Err(e) => {
                self.set_state(MatrixState::Failed(e.to_string()));
                Err(e.into())
            }
        }
    }

    /// Logs out (the session is revoked and removed from the keyring); chat turns off.
    pub async fn matrix_logout(&self) -> Result<(), ControlError> {
        let chat = self.detach();
        let result = match chat.map(Arc::try_unwrap) {
            Some(Ok(chat)) => chat.logout(&StoreAdapter(self.store.clone())).await.map_err(ControlError::from),
            // Still borrowed by a request in flight: forget the session; the token expires with it.
            Some(Err(_)) | None => StoreAdapter(self.store.clone()).delete(onair_matrix::SESSION_ENTRY).map_err(|e| {
                ControlError::Secret(crate::secrets::SecretError::Store {
                    entry: onair_matrix::SESSION_ENTRY.into(),
                    reason: e.0,
                })
            }),
        };
        let enabled = lock(&self.settings).enabled();
        self.set_state(if enabled { MatrixState::NotLoggedIn } else { MatrixState::Off });
        result
    }

    pub fn matrix_info(&self) -> MatrixInfo {
        let settings = lock(&self.settings);
        let chat = self.chat();
        MatrixInfo {
            state: self.matrix_state().to_string(),
            homeserver: chat.as_ref().map_or_else(|| settings.homeserver.clone(), |c| c.homeserver_url().to_owned()),
            user: chat.as_ref().map_or_else(|| settings.user.clone(), |c| c.user_id()),
        }
    }

    /// `GET /api/streams/<stream>`: the stream's status with its title and chat room. A known
    /// stream's room is found or created first (for up to a few seconds).
    pub async fn stream_status(&self, stream: &str) -> StreamStatus {
        if let Some(chat) = self.chat()
            && chat.room(stream).is_none()
            && lock(&self.known).contains(stream)
            && let Ok(Err(e)) = tokio::time::timeout(ENSURE_WAIT, self.ensure(&chat, stream)).await
        {
            warn!(%stream, error = %e, "cannot set up the stream's Matrix room");
        }
        self.status(stream)
    }

    /// The stream's status with its title and chat room, as known now.
    pub fn status(&self, stream: &str) -> StreamStatus {
        let live = self.registry.get(stream);
        let webrtc = self.webrtc.as_ref().map_or(0, |w| w.sessions(stream));
        let mut s = crate::status::stream_status(stream, live.as_deref(), webrtc, std::time::Instant::now());
        s.title = self.title(stream);
        s.chat = self.chat_info(stream);
        s.restream = self.restream.status(stream);
        s
    }

    /// Everything a front end shows at a glance.
    pub fn control_status(&self) -> ControlStatus {
        let mut names: HashSet<String> = lock(&self.known).clone();
        names.extend(self.registry.list().iter().map(|s| s.name().to_owned()));
        names.extend(self.restream.streams());
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        ControlStatus {
            require_go_live: self.registry.requires_go_live(),
            default_stream: self.default_stream.clone(),
            viewer_base: self.viewer_base.clone(),
            matrix: self.matrix_info(),
            streams: names
                .iter()
                .map(|n| StreamControlStatus { armed: self.is_armed(n), status: self.status(n) })
                .collect(),
            reach: self.reach(),
            https: self.https(),
            budget: self.budget(),
            firewall_note: crate::startup::FIREWALL_NOTE.map(str::to_owned),
        }
    }

    /// Sets the upload budget (Mb/s, 0: none) until the engine stops (`[budget]` keeps the
    /// configured one). A non-finite or negative value is refused.
    pub fn set_upload_budget(&self, mbps: f64) -> Result<(), ControlError> {
        if !mbps.is_finite() || !(0.0..=100_000.0).contains(&mbps) {
            return Err(ControlError::BadInput(format!("upload budget {mbps} Mb/s: use 0 (none) up to 100000")));
        }
        self.budget.set_upload_mbps(mbps);
        tracing::info!(upload_mbps = mbps, "upload budget set");
        Ok(())
    }

    /// The upload budget and its use now.
    pub fn budget(&self) -> BudgetStatus {
        let u = self.budget.usage(std::time::Instant::now());
        BudgetStatus {
            upload_mbps: u.capacity_bps as f64 / 1e6,
            used_mbps: (u.used_bps as f64 / 1e4).round() / 100.0,
            refused: u.refused,
        }
    }

    /// How viewers on the internet reach the engine now.
    pub fn reach(&self) -> ReachStatus {
        lock(&self.reach).clone()
    }

    /// Sets what [`Control::reach`] reports (from `crate::reach`); front ends get an
    /// [`EngineEvent::Reach`] when the state or the public link changes.
    pub fn set_reach(&self, reach: ReachStatus) {
        let changed = {
            let mut now = lock(&self.reach);
            let changed = now.state != reach.state || now.public_base != reach.public_base;
            *now = reach;
            changed
        };
        if changed {
            self.emit_reach();
        }
    }

    /// HTTPS and RTMPS as served now.
    pub fn https(&self) -> HttpsStatus {
        lock(&self.https).clone()
    }

    /// Sets what [`Control::https`] reports (from `crate::tls`); front ends get an
    /// [`EngineEvent::Reach`] when its state changes.
    pub fn set_https(&self, https: HttpsStatus) {
        let changed = {
            let mut now = lock(&self.https);
            let changed = now.state != https.state;
            *now = https;
            changed
        };
        if changed {
            self.emit_reach();
        }
    }

    fn emit_reach(&self) {
        let reach = self.reach();
        let https = lock(&self.https).state.clone();
        self.registry.emit(EngineEvent::Reach { state: reach.state, public_base: reach.public_base, https });
    }

    fn chat_info(&self, stream: &str) -> Option<ChatInfo> {
        let settings = lock(&self.settings);
        if !settings.enabled() {
            return None;
        }
        let chat = self.chat();
        let alias = match &chat {
            Some(c) => c.alias_for(stream).ok(),
            // Not logged in yet: the alias from the configured user's server, when it says.
            None => settings
                .user
                .split_once(':')
                .and_then(|(_, server)| settings.matrix_config().alias_for(stream, server).ok()),
        };
        let room = chat.as_ref().and_then(|c| c.room(stream));
        Some(ChatInfo {
            homeserver: chat.as_ref().map_or_else(|| settings.homeserver.clone(), |c| c.homeserver_url().to_owned()),
            alias: room.as_ref().map(|r| r.alias.clone()).or(alias),
            room_id: room.map(|r| r.room_id),
            status: self.matrix_state().to_string(),
        })
    }

    fn chat(&self) -> Option<Arc<Chat>> {
        lock(&self.chat).clone()
    }

    fn set_state(&self, state: MatrixState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                return false;
            }
            *s = state.clone();
            true
        });
        self.registry.emit(EngineEvent::Matrix { state: state.to_string() });
    }

    /// Notes a stream the streamer uses: its room is set up when first needed.
    fn remember(&self, stream: &str) {
        lock(&self.known).insert(stream.to_owned());
    }

    /// Records and saves a title; tells the front ends when the title shown changed.
    fn keep_title(&self, stream: &str, title: Title) {
        let before = self.title(stream);
        {
            let mut titles = lock(&self.titles);
            titles.insert(stream.to_owned(), title);
            titles::save(&self.titles_path, &titles);
        }
        let shown = self.title(stream);
        if shown != before {
            self.registry.emit(EngineEvent::Title { stream: stream.into(), title: shown });
        }
    }

    /// `title` became the room name at `set_ms` (by the homeserver's clock): from now on it is
    /// compared with later names by that clock alone, whatever OnAir's clock says.
    fn delivered(&self, stream: &str, title: &str, set_ms: Option<u64>) {
        let Some(set_ms) = set_ms else { return };
        let mut titles = lock(&self.titles);
        if let Some(t) = titles.get_mut(stream).filter(|t| t.title == title && t.set_ms != set_ms) {
            t.set_ms = set_ms;
            titles::save(&self.titles_path, &titles);
        }
    }

    /// The room was renamed in another client while OnAir is connected: adopted if newer than
    /// OnAir's title. (An older one is a change OnAir's title already superseded; if that title
    /// has not reached the room yet, the next reconciliation puts it there.)
    fn room_renamed(&self, stream: &str, name: RoomName) {
        let own = lock(&self.titles).get(stream).cloned();
        match titles::reconcile(own.as_ref(), Some(&name)) {
            Reconcile::Adopt(title) => {
                info!(%stream, title = %title.title, "the room name changed in another Matrix client");
                self.keep_title(stream, title);
            }
            Reconcile::Push(_) => {
                info!(%stream, name = %name.name, "a room name older than OnAir's title is not adopted");
            }
            Reconcile::Keep => {}
        }
    }

    /// Restores the session from the keyring, else logs in with `password`; while the homeserver
    /// is unreachable, tries again with backoff.
    async fn connect(self: Arc<Self>, password: Option<String>) {
        let config = lock(&self.settings).matrix_config();
        let store = StoreAdapter(self.store.clone());
        let mut wait = Duration::from_secs(2);
        loop {
            let chat = match Chat::restore(config.clone(), &store).await {
                Ok(Some(chat)) => Ok(Some(chat)),
                Ok(None) => match password.as_deref().filter(|p| !p.is_empty()) {
                    Some(password) => Chat::login(config.clone(), password, &store).await.map(Some),
                    None => Ok(None),
                },
                Err(e) => Err(e),
            };
            match chat {
                Ok(Some(chat)) => return self.attach(chat).await,
                Ok(None) => {
                    warn!(
                        "Matrix is configured but not logged in: set ONAIR_MATRIX_PASSWORD once (the session is then kept in the OS keyring), or log in from the app"
                    );
                    return self.set_state(MatrixState::NotLoggedIn);
                }
                Err(onair_matrix::Error::Unreachable { reason, .. }) => {
                    warn!(homeserver = %config.homeserver, %reason, retry_in = ?wait, "Matrix homeserver unreachable");
                    self.set_state(MatrixState::Unreachable(reason));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    warn!(error = %e, "Matrix chat is unavailable");
                    return self.set_state(MatrixState::Failed(e.to_string()));
                }
            }
        }
    }

    /// Takes `chat` into use: forwards its events and status, syncs, sets up the known rooms.
    async fn attach(self: &Arc<Self>, chat: Chat) {
        let chat = Arc::new(chat);
        info!(user = %chat.user_id(), homeserver = %chat.homeserver_url(), "Matrix chat ready");
        // In place before the state says "connected", so whoever sees that state finds the chat.
        *lock(&self.chat) = Some(chat.clone());
        let me = chat.user_id();
        let mut events = chat.subscribe();
        let mut status = chat.watch_status();
        let weak = Arc::downgrade(self);
        let forward_events = tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(control) = weak.upgrade() else { break };
                match event {
                    Ok(ChatEvent::Message { stream, event_id, sender, display_name, body, ts_ms }) => {
                        let mentions_me = sender != me && mentions(&body, &me);
                        control.registry.emit(EngineEvent::Chat {
                            stream,
                            event_id,
                            sender,
                            display_name,
                            body,
                            ts_ms,
                            mentions_me,
                        });
                    }
                    Ok(ChatEvent::TitleChanged { stream, title, ts_ms }) => {
                        control.room_renamed(&stream, RoomName { name: title, ts_ms: Some(ts_ms) });
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => warn!(missed = n, "chat events were dropped"),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        let weak = Arc::downgrade(self);
        let forward_status = tokio::spawn(async move {
            loop {
                let s: MatrixState = status.borrow_and_update().clone().into();
                let Some(control) = weak.upgrade() else { break };
                control.set_state(s);
                drop(control);
                if status.changed().await.is_err() {
                    break;
                }
            }
        });
        // Each time the homeserver answers again (the first time included), the known streams'
        // rooms are set up and their titles reconciled: what was set meanwhile reaches the room.
        let weak = Arc::downgrade(self);
        let mut status = chat.watch_status();
        // Weak: logging out needs the only reference to the chat.
        let weak_chat = Arc::downgrade(&chat);
        let reconcile = tokio::spawn(async move {
            loop {
                if status.wait_for(|s| *s == MatrixStatus::Connected).await.is_err() {
                    break;
                }
                let (Some(control), Some(chat)) = (weak.upgrade(), weak_chat.upgrade()) else { break };
                let done = control.reconcile_all(&chat).await;
                drop((control, chat));
                if !done {
                    // The homeserver went away mid-way; the status may already say "connected"
                    // again, so try again shortly rather than wait for the next outage.
                    tokio::time::sleep(RECONCILE_RETRY).await;
                    continue;
                }
                if status.wait_for(|s| *s != MatrixStatus::Connected).await.is_err() {
                    break;
                }
            }
        });
        chat.start_sync();
        lock(&self.chat_tasks).extend([forward_events, forward_status, reconcile]);
    }

    /// Sets up the room of every known stream and brings its title and room name in step; stops
    /// at the first sign that the homeserver is gone. Answers whether it went through.
    async fn reconcile_all(&self, chat: &Chat) -> bool {
        let mut known: Vec<String> = lock(&self.known).iter().cloned().collect();
        known.sort();
        for stream in known {
            let _one_at_a_time = self.titling.lock().await;
            match self.reconcile_locked(chat, &stream).await {
                Ok(()) => {}
                Err(
                    e @ ControlError::Matrix(onair_matrix::Error::Unreachable { .. } | onair_matrix::Error::LoggedOut),
                ) => {
                    warn!(%stream, error = %e, "titles are reconciled when Matrix is back");
                    return false;
                }
                Err(e) => warn!(%stream, error = %e, "cannot set up the stream's Matrix room"),
            }
        }
        true
    }

    /// Stops using the current chat (if any) and answers it.
    fn detach(&self) -> Option<Arc<Chat>> {
        for t in lock(&self.chat_tasks).drain(..) {
            t.abort();
        }
        let chat = lock(&self.chat).take();
        if let Some(c) = &chat {
            c.stop_sync();
        }
        chat
    }

    /// Finds or creates the stream's room (once per session) and reconciles its title.
    async fn ensure(&self, chat: &Chat, stream: &str) -> Result<(), ControlError> {
        let _one_at_a_time = self.titling.lock().await;
        if chat.room(stream).is_some() {
            return Ok(());
        }
        self.reconcile_locked(chat, stream).await
    }

    /// Finds or creates the stream's room (a room created now is named with OnAir's title) and
    /// brings title and room name in step: the newer wins ([`titles::reconcile`]). Call with
    /// `titling` held.
    async fn reconcile_locked(&self, chat: &Chat, stream: &str) -> Result<(), ControlError> {
        let own = lock(&self.titles).get(stream).cloned();
        let name_if_created = own.as_ref().map(|t| t.title.as_str()).filter(|t| !t.is_empty()).unwrap_or(stream);
        if chat.ensure_room_named(stream, name_if_created).await?.created {
            return Ok(());
        }
        let name = chat.title(stream).await?;
        match titles::reconcile(own.as_ref(), name.as_ref()) {
            Reconcile::Keep => {}
            Reconcile::Adopt(title) => {
                info!(%stream, title = %title.title, "the room name is newer than OnAir's title: adopted");
                self.keep_title(stream, title);
            }
            Reconcile::Push(title) => {
                info!(%stream, %title, "OnAir's title is newer than the room name: the room is renamed");
                let set_ms = chat.set_title(stream, &title).await?;
                self.delivered(stream, &title, set_ms);
            }
        }
        Ok(())
    }
}

/// Now, in milliseconds since the Unix epoch (the clock titles are dated with).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn check_stream(stream: &str) -> Result<(), ControlError> {
    if crate::is_valid_stream_name(stream) { Ok(()) } else { Err(ControlError::BadStream(stream.into())) }
}

/// Whether `body` mentions the user `me` (`@me:server`) by id or localpart, as a word.
fn mentions(body: &str, me: &str) -> bool {
    let body = body.to_lowercase();
    let me = me.to_lowercase();
    let local = me.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
    body.contains(&me)
        || (!local.is_empty()
            && body.match_indices(&local).any(|(i, m)| {
                let before = body[..i].chars().next_back();
                let after = body[i + m.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
            }))
}

/// The engine's secret store as onair-matrix's session store. Keyring calls block (D-Bus), so
/// on a multi-threaded runtime they leave the worker thread first.
struct StoreAdapter(Arc<dyn SecretStore>);

impl StoreAdapter {
    fn run<T>(
        &self,
        f: impl FnOnce(&dyn SecretStore) -> Result<T, crate::secrets::SecretError>,
    ) -> Result<T, StoreError> {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if multi { tokio::task::block_in_place(|| f(&*self.0)) } else { f(&*self.0) };
        result.map_err(|e| StoreError(e.to_string()))
    }
}

impl SessionStore for StoreAdapter {
    fn get(&self, entry: &str) -> Result<Option<String>, StoreError> {
        self.run(|s| s.get(entry))
    }

    fn set(&self, entry: &str, value: &str) -> Result<(), StoreError> {
        self.run(|s| s.set(entry, value))
    }

    fn delete(&self, entry: &str) -> Result<(), StoreError> {
        self.run(|s| s.delete(entry))
    }
}

/// When to post "live" and "ended" notices: once per broadcast, not per reconnect. A publisher
/// that drops and comes back within [`RECONNECT_GRACE`] continues the same broadcast.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NoticePolicy {
    /// Streams announced live, with when they dropped (if they did, and have not come back).
    announced: HashMap<String, Option<tokio::time::Instant>>,
}

/// What to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Live,
    Ended,
}

impl NoticePolicy {
    /// The stream became playable.
    pub fn on_live(&mut self, stream: &str) -> Option<Notice> {
        match self.announced.insert(stream.into(), None) {
            Some(_) => None,
            None => Some(Notice::Live),
        }
    }

    /// The publish ended; a drop waits for the grace period ([`NoticePolicy::on_tick`]).
    pub fn on_end(&mut self, stream: &str, reason: EndReason, now: tokio::time::Instant) -> Option<Notice> {
        let slot = self.announced.get_mut(stream)?;
        if reason == EndReason::Dropped {
            *slot = Some(now);
            return None;
        }
        self.announced.remove(stream);
        Some(Notice::Ended)
    }

    /// Streams whose drop outlasted the grace period: they have ended.
    pub fn on_tick(&mut self, now: tokio::time::Instant) -> Vec<String> {
        let over: Vec<String> = self
            .announced
            .iter()
            .filter(|(_, dropped)| dropped.is_some_and(|at| now.duration_since(at) >= RECONNECT_GRACE))
            .map(|(s, _)| s.clone())
            .collect();
        for s in &over {
            self.announced.remove(s);
        }
        over
    }
}

/// Posts live/ended notices in the stream rooms as publishes come and go.
async fn notices(control: std::sync::Weak<Control>, mut events: broadcast::Receiver<EngineEvent>) {
    let mut policy = NoticePolicy::default();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let (stream, notice) = tokio::select! {
            ev = events.recv() => match ev {
                Ok(EngineEvent::Live { stream }) => match policy.on_live(&stream) {
                    Some(n) => (stream, n),
                    None => continue,
                },
                Ok(EngineEvent::PublishEnded { stream, reason }) => {
                    match policy.on_end(&stream, reason, tokio::time::Instant::now()) {
                        Some(n) => (stream, n),
                        None => continue,
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let ended = policy.on_tick(tokio::time::Instant::now());
                let Some(control) = control.upgrade() else { return };
                for stream in ended {
                    post(&control, &stream, Notice::Ended).await;
                }
                continue;
            }
        };
        let Some(control) = control.upgrade() else { return };
        post(&control, &stream, notice).await;
    }
}

async fn post(control: &Control, stream: &str, notice: Notice) {
    control.remember(stream);
    let Some(chat) = control.chat() else { return };
    if let Err(e) = control.ensure(&chat, stream).await {
        warn!(%stream, error = %e, "cannot post the {notice:?} notice: the stream's room is not available");
        return;
    }
    let title = control.title(stream);
    let result = match notice {
        Notice::Live => chat.notice_live(stream, &title, &control.viewer_url(stream)).await,
        Notice::Ended => chat.notice_ended(stream, &title).await,
    };
    if let Err(e) = result {
        warn!(%stream, error = %e, "cannot post the {notice:?} notice in the stream's room");
    }
}

/// Pushes the figures of live streams every few seconds (the app's health panel).
async fn stats_events(control: std::sync::Weak<Control>) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    loop {
        tick.tick().await;
        let Some(control) = control.upgrade() else { return };
        for stream in control.registry.list() {
            let status = control.status(stream.name());
            let status = serde_json::to_value(&status).unwrap_or_default();
            control.registry.emit(EngineEvent::Stats { stream: stream.name().to_owned(), status });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A control without Matrix over `registry`, its state in a fresh temp dir.
    pub(crate) fn control(registry: &Arc<Registry>) -> Arc<Control> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store: Arc<dyn SecretStore> = Arc::new(crate::secrets::MemoryStore::default());
        let restream = crate::restream::Restream::start(&Default::default(), registry.clone(), store.clone(), None);
        Control::start(
            ControlSetup {
                registry: registry.clone(),
                webrtc: None,
                default_stream: "stream".into(),
                viewer_base: "http://tv.example:8080".into(),
                data_dir: std::env::temp_dir().join(format!("onair-control-{}-{n}", std::process::id())),
                matrix: MatrixSettings::default(),
                store,
                restream,
                budget: Default::default(),
            },
            None,
        )
    }

    #[test]
    fn mentions_by_id_or_localpart_as_a_word() {
        assert!(mentions("hi @Alice:example.org!", "@alice:example.org"));
        assert!(mentions("alice, you're live", "@alice:example.org"));
        assert!(mentions("great stream ALICE", "@alice:example.org"));
        assert!(!mentions("malice aforethought", "@alice:example.org"));
        assert!(!mentions("alicea", "@alice:example.org"));
        assert!(!mentions("hello", "@alice:example.org"));
    }

    #[test]
    fn one_live_and_one_ended_notice_per_broadcast() {
        let t0 = tokio::time::Instant::now();
        let mut p = NoticePolicy::default();
        assert_eq!(p.on_end("s", EndReason::Finished, t0), None, "never announced");
        assert_eq!(p.on_live("s"), Some(Notice::Live));
        assert_eq!(p.on_live("s"), None, "a codec restart is not a new broadcast");
        // A drop, back within the grace period: nothing is posted.
        assert_eq!(p.on_end("s", EndReason::Dropped, t0), None);
        assert!(p.on_tick(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(p.on_live("s"), None);
        // A drop that lasts: "ended" once the grace period is over.
        assert_eq!(p.on_end("s", EndReason::Dropped, t0), None);
        assert_eq!(p.on_tick(t0 + RECONNECT_GRACE), vec!["s".to_string()]);
        assert!(p.on_tick(t0 + RECONNECT_GRACE * 2).is_empty());
        // A clean end: "ended" at once; the next publish is a new broadcast.
        assert_eq!(p.on_live("s"), Some(Notice::Live));
        assert_eq!(p.on_end("s", EndReason::EndedByStreamer, t0), Some(Notice::Ended));
        assert_eq!(p.on_live("s"), Some(Notice::Live));
        assert_eq!(p.on_end("s", EndReason::Finished, t0), Some(Notice::Ended));
    }
}
