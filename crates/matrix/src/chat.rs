//! The streamer's Matrix account: one room per stream, kept in step with OnAir.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::room::Room;
use matrix_sdk::ruma::api::Direction;
use matrix_sdk::ruma::api::client::alias::get_alias;
use matrix_sdk::ruma::api::client::filter::{FilterDefinition, LazyLoadOptions};
use matrix_sdk::ruma::api::client::message::{get_message_events, send_message_event};
use matrix_sdk::ruma::api::client::room::{Visibility, create_room, get_room_event};
use matrix_sdk::ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat;
use matrix_sdk::ruma::api::client::state::{get_state_event_for_key, send_state_event};
use matrix_sdk::ruma::api::client::sync::sync_events;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::room::guest_access::{GuestAccess, RoomGuestAccessEventContent};
use matrix_sdk::ruma::events::room::history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent};
use matrix_sdk::ruma::events::room::message::{OriginalSyncRoomMessageEvent, Relation, RoomMessageEventContent};
use matrix_sdk::ruma::events::room::name::{OriginalSyncRoomNameEvent, RoomNameEventContent};
use matrix_sdk::ruma::events::{EmptyStateKey, InitialStateEvent, Mentions, StateEventType};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, RoomAliasId, RoomOrAliasId, TransactionId, UInt, UserId};
use matrix_sdk::{Client, ClientBuildError};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::MatrixConfig;
use crate::error::{Classify, Error, Result};
use crate::store::{SESSION_ENTRY, SessionStore, StoredSession};

/// Timeout of one request (a sync long-poll gets this on top of its own wait).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one sync request waits for news. Short enough that a name set in another client
/// arrives within seconds (it arrives as soon as it happens; this only bounds idle requests).
const SYNC_WAIT: Duration = Duration::from_secs(25);
/// Reconnect backoff: doubles from the first value up to the second. The cap bounds how long a
/// homeserver that is back waits to be noticed (and pending titles to reach their rooms); one
/// refused connection every 10 s costs nothing.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(10));
/// Messages kept for a slow subscriber before it starts missing some.
const EVENT_BUFFER: usize = 512;

/// A stream's room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// `!opaque:server`.
    pub room_id: String,
    /// `#onair_<stream>:server` (or whatever the alias template makes of it).
    pub alias: String,
    /// Whether this call created the room (rather than finding it).
    pub created: bool,
}

/// A room's name as the homeserver has it: the text of its latest `m.room.name` event and when
/// that event was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomName {
    /// Empty when the name was removed.
    pub name: String,
    /// The event's `origin_server_ts` (milliseconds since the Unix epoch, by the homeserver's
    /// clock); `None` when the homeserver did not say (one that ignores `?format=event`).
    pub ts_ms: Option<u64>,
}

/// What happens in the stream rooms, as OnAir sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// A chat message (text, emote or notice), including the streamer's own.
    Message {
        stream: String,
        event_id: String,
        /// `@user:server`.
        sender: String,
        /// The sender's display name in the room, else the user id's localpart.
        display_name: String,
        body: String,
        /// Milliseconds since the Unix epoch, by the homeserver's clock.
        ts_ms: u64,
    },
    /// The room name changed in another Matrix client (changes made through [`Chat::set_title`]
    /// are not echoed back). An empty title means the name was removed.
    TitleChanged {
        stream: String,
        title: String,
        /// When the name was changed: the event's `origin_server_ts` (ms since the Unix epoch).
        ts_ms: u64,
    },
}

/// The state of the connection to the homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixStatus {
    /// Restored from the secret store; the first sync has not answered yet.
    Connecting,
    Connected,
    /// The homeserver does not answer (the reason says how); the sync keeps retrying with
    /// backoff and comes back to `Connected` by itself.
    Unreachable(String),
    /// The access token was revoked (logged out elsewhere, device deleted): log in again.
    LoggedOut,
}

impl std::fmt::Display for MatrixStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatrixStatus::Connecting => f.write_str("connecting"),
            MatrixStatus::Connected => f.write_str("connected"),
            MatrixStatus::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            MatrixStatus::LoggedOut => f.write_str("logged out: log in again"),
        }
    }
}

/// A logged-in Matrix account and the stream rooms it looks after.
///
/// Dropping it stops the background sync.
pub struct Chat {
    client: Client,
    config: MatrixConfig,
    shared: Arc<Shared>,
    sync_task: Mutex<Option<JoinHandle<()>>>,
    /// One room lookup/creation at a time, so concurrent callers do not both create a room.
    ensuring: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("homeserver", &self.shared.homeserver)
            .field("user_id", &self.client.user_id())
            .field("status", &*self.shared.status.borrow())
            .finish_non_exhaustive()
    }
}

/// What the sync task and the event handlers share with the handle.
struct Shared {
    homeserver: String,
    rooms: Mutex<Rooms>,
    events: broadcast::Sender<ChatEvent>,
    status: watch::Sender<MatrixStatus>,
}

#[derive(Default)]
struct Rooms {
    by_stream: HashMap<String, StreamRoom>,
    by_id: HashMap<OwnedRoomId, String>,
}

struct StreamRoom {
    info: RoomInfo,
    room_id: OwnedRoomId,
    /// The room name as last seen or set by OnAir.
    title: Option<String>,
    /// The newest event when the room was taken over: it and anything older is history, not chat.
    watermark: Watermark,
    /// Name changes sent by OnAir, so their echo is not reported as a change from elsewhere.
    own_title_events: HashSet<OwnedEventId>,
}

#[derive(Debug, Clone, Default)]
struct Watermark {
    ts_ms: u64,
    event_id: Option<OwnedEventId>,
}

impl Shared {
    fn set_status(&self, status: MatrixStatus) {
        self.status.send_if_modified(|s| {
            if *s == status {
                return false;
            }
            match &status {
                MatrixStatus::Connected => info!(homeserver = %self.homeserver, "Matrix connected"),
                MatrixStatus::Unreachable(reason) => {
                    warn!(homeserver = %self.homeserver, %reason, "Matrix homeserver unreachable")
                }
                MatrixStatus::LoggedOut => warn!(homeserver = %self.homeserver, "Matrix session revoked: log in again"),
                MatrixStatus::Connecting => {}
            }
            *s = status;
            true
        });
    }

    /// Reflects the outcome of a request in the status.
    fn note<T>(&self, result: &Result<T>) {
        match result {
            Ok(_) => self.set_status(MatrixStatus::Connected),
            Err(Error::Unreachable { reason, .. }) => self.set_status(MatrixStatus::Unreachable(reason.clone())),
            Err(Error::LoggedOut) => self.set_status(MatrixStatus::LoggedOut),
            Err(_) => {}
        }
    }

    /// The stream of a room event that is news: in a stream room and newer than its watermark.
    fn news(rooms: &Rooms, room_id: &OwnedRoomId, event_id: &OwnedEventId, ts_ms: u64) -> Option<String> {
        let stream = rooms.by_id.get(room_id)?;
        let wm = &rooms.by_stream.get(stream)?.watermark;
        if ts_ms < wm.ts_ms || wm.event_id.as_ref() == Some(event_id) {
            return None;
        }
        Some(stream.clone())
    }

    fn on_message(&self, ev: &OriginalSyncRoomMessageEvent, room_id: &OwnedRoomId) -> Option<String> {
        let rooms = self.rooms.lock().expect("not poisoned");
        Self::news(&rooms, room_id, &ev.event_id, u64::from(ev.origin_server_ts.0))
    }

    fn on_name(&self, ev: &OriginalSyncRoomNameEvent, room_id: &OwnedRoomId) {
        let mut rooms = self.rooms.lock().expect("not poisoned");
        // The same name event can come twice (timeline, then room state), and old ones come with
        // the room state of a first sync: only news counts.
        let ts_ms = u64::from(ev.origin_server_ts.0);
        let Some(stream) = Self::news(&rooms, room_id, &ev.event_id, ts_ms) else {
            return;
        };
        let Some(room) = rooms.by_stream.get_mut(&stream) else { return };
        if room.own_title_events.contains(&ev.event_id) {
            return;
        }
        let title = ev.content.name.clone();
        if room.title.as_deref().unwrap_or("") == title {
            return;
        }
        debug!(%stream, "the room name changed in another Matrix client");
        room.title = (!title.is_empty()).then(|| title.clone());
        let _ = self.events.send(ChatEvent::TitleChanged { stream, title, ts_ms });
    }
}

impl Chat {
    /// Logs in with a password and keeps the session (access token, device id) in `store` under
    /// [`SESSION_ENTRY`], for [`Chat::restore`] on the next start.
    pub async fn login(config: MatrixConfig, password: &str, store: &dyn SessionStore) -> Result<Chat> {
        check_config(&config)?;
        let client = build_client(&config.homeserver).await?;
        let homeserver = client.homeserver().to_string();
        let login = client
            .matrix_auth()
            .login_username(&config.user, password)
            .initial_device_display_name("OnAir")
            .send()
            .await;
        if let Err(e) = login {
            return Err(match e.client_api_error_kind() {
                Some(ErrorKind::Forbidden) | Some(ErrorKind::InvalidUsername) => {
                    Error::BadCredentials { user: config.user.clone() }
                }
                _ => Error::from_sdk("log in", &homeserver, &e),
            });
        }
        let session = client
            .matrix_auth()
            .session()
            .ok_or_else(|| Error::Refused { action: "log in", reason: "no session after login".into() })?;
        let stored = StoredSession {
            configured_homeserver: config.homeserver.clone(),
            homeserver_url: homeserver.clone(),
            session,
        };
        let json = serde_json::to_string(&stored).map_err(|e| Error::Store(e.to_string()))?;
        if let Err(e) = store.set(SESSION_ENTRY, &json) {
            // A session that cannot be kept would be lost on restart: do not leave the device behind.
            let _ = client.matrix_auth().logout().await;
            return Err(Error::Store(e.0));
        }
        info!(user = %stored.session.meta.user_id, device = %stored.session.meta.device_id, %homeserver,
              "logged in to Matrix; session kept in the secret store");
        Ok(Chat::new(client, config, homeserver, MatrixStatus::Connected))
    }

    /// The session kept by an earlier [`Chat::login`], without logging in again and without
    /// touching the network (a homeserver that is down shows up in [`Chat::status`] once syncing).
    /// `None` when there is no session, or it belongs to another homeserver or user than `config`.
    pub async fn restore(config: MatrixConfig, store: &dyn SessionStore) -> Result<Option<Chat>> {
        check_config(&config)?;
        let Some(json) = store.get(SESSION_ENTRY).map_err(|e| Error::Store(e.0))? else {
            return Ok(None);
        };
        let stored: StoredSession = match serde_json::from_str(&json) {
            Ok(s) => s,
            Err(e) => {
                warn!("the saved Matrix session is unreadable ({e}); log in again");
                return Ok(None);
            }
        };
        if stored.configured_homeserver != config.homeserver || !same_user(&config.user, &stored.session.meta.user_id) {
            info!(saved_user = %stored.session.meta.user_id, "the saved Matrix session is for another account; log in again");
            return Ok(None);
        }
        let client = build_client(&stored.homeserver_url).await?;
        let (user, device) = (stored.session.meta.user_id.clone(), stored.session.meta.device_id.clone());
        client
            .restore_session(stored.session)
            .await
            .map_err(|e| Error::Store(format!("the saved Matrix session cannot be restored: {e}")))?;
        info!(%user, %device, homeserver = %stored.homeserver_url, "Matrix session restored");
        Ok(Some(Chat::new(client, config, stored.homeserver_url, MatrixStatus::Connecting)))
    }

    /// Logs this device out on the homeserver (best effort) and forgets the saved session.
    pub async fn logout(self, store: &dyn SessionStore) -> Result<()> {
        self.stop_sync();
        if let Err(e) = self.client.matrix_auth().logout().await {
            warn!(
                "Matrix logout failed ({}); forgetting the session anyway",
                Error::from_sdk("log out", &self.shared.homeserver, &e)
            );
        }
        store.delete(SESSION_ENTRY).map_err(|e| Error::Store(e.0))
    }

    fn new(client: Client, config: MatrixConfig, homeserver: String, status: MatrixStatus) -> Chat {
        let shared = Arc::new(Shared {
            homeserver,
            rooms: Mutex::new(Rooms::default()),
            events: broadcast::channel(EVENT_BUFFER).0,
            status: watch::channel(status).0,
        });
        add_handlers(&client, &shared);
        Chat { client, config, shared, sync_task: Mutex::new(None), ensuring: tokio::sync::Mutex::new(()) }
    }

    pub fn config(&self) -> &MatrixConfig {
        &self.config
    }

    /// `@user:server`.
    pub fn user_id(&self) -> String {
        self.client.user_id().map(|u| u.to_string()).unwrap_or_default()
    }

    pub fn device_id(&self) -> String {
        self.client.device_id().map(|d| d.to_string()).unwrap_or_default()
    }

    /// The homeserver's client-server API base URL (what the viewer page talks to).
    pub fn homeserver_url(&self) -> &str {
        &self.shared.homeserver
    }

    pub fn status(&self) -> MatrixStatus {
        self.shared.status.borrow().clone()
    }

    /// Follows [`Chat::status`] as it changes.
    pub fn watch_status(&self) -> watch::Receiver<MatrixStatus> {
        self.shared.status.subscribe()
    }

    /// Chat messages and title changes of the stream rooms, from the background sync
    /// ([`Chat::start_sync`]). Only what happens after [`Chat::ensure_room`] is reported.
    pub fn subscribe(&self) -> broadcast::Receiver<ChatEvent> {
        self.shared.events.subscribe()
    }

    /// The room of `stream`, if [`Chat::ensure_room`] has set it up in this run.
    pub fn room(&self, stream: &str) -> Option<RoomInfo> {
        self.shared.rooms.lock().expect("not poisoned").by_stream.get(stream).map(|r| r.info.clone())
    }

    /// The alias of `stream`'s room (from the alias template and the user's server name).
    pub fn alias_for(&self, stream: &str) -> Result<String> {
        let server = self.client.user_id().map(|u| u.server_name().to_string()).unwrap_or_default();
        self.config.alias_for(stream, &server)
    }

    /// Starts the background sync (idempotent): it delivers [`ChatEvent`]s, keeps
    /// [`Chat::status`] current and reconnects with backoff. Needs a Tokio runtime.
    pub fn start_sync(&self) {
        let mut task = self.sync_task.lock().expect("not poisoned");
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        *task = Some(tokio::spawn(sync_loop(self.client.clone(), self.shared.clone())));
    }

    /// Stops the background sync (also done on drop).
    pub fn stop_sync(&self) {
        if let Some(task) = self.sync_task.lock().expect("not poisoned").take() {
            task.abort();
        }
    }

    /// Finds or creates `stream`'s room and joins it. A new room gets what guests need to read
    /// and write — public join rule, `world_readable` history, guest access `can_join` — is named
    /// after the stream and published in the room directory where the server allows it. An
    /// existing room (say, from Cactus Comments) is used as it is. Idempotent; a room already set
    /// up is answered from memory.
    pub async fn ensure_room(&self, stream: &str) -> Result<RoomInfo> {
        self.ensure_room_named(stream, stream).await
    }

    /// [`Chat::ensure_room`], naming a room created now `name` rather than after the stream.
    pub async fn ensure_room_named(&self, stream: &str, name: &str) -> Result<RoomInfo> {
        let _one_at_a_time = self.ensuring.lock().await;
        if let Some(info) = self.room(stream) {
            return Ok(RoomInfo { created: false, ..info });
        }
        let result = self.ensure_room_inner(stream, name).await;
        self.shared.note(&result);
        result
    }

    async fn ensure_room_inner(&self, stream: &str, name: &str) -> Result<RoomInfo> {
        let alias_text = self.alias_for(stream)?;
        let alias = <&RoomAliasId>::try_from(alias_text.as_str())
            .map_err(|e| Error::Config(format!("{alias_text:?} is not a room alias: {e}")))?;
        let (room_id, created) = match self.resolve(alias).await? {
            Some(room_id) => {
                self.join(alias, &room_id).await?;
                (room_id, false)
            }
            None => match self.create(stream, name, alias).await? {
                Some(room_id) => (room_id, true),
                None => {
                    // Someone else created it in between.
                    let room_id = self.resolve(alias).await?.ok_or_else(|| Error::Room {
                        alias: alias_text.clone(),
                        reason: "the alias is taken but does not resolve".into(),
                    })?;
                    self.join(alias, &room_id).await?;
                    (room_id, false)
                }
            },
        };
        let title = self.fetch_name(&room_id).await?.map(|n| n.name).filter(|n| !n.is_empty());
        let watermark = self.newest_event(&room_id).await?;
        let info = RoomInfo { room_id: room_id.to_string(), alias: alias_text, created };
        let mut rooms = self.shared.rooms.lock().expect("not poisoned");
        if let Some(old) = rooms.by_stream.get(stream)
            && old.room_id != room_id
        {
            let old_id = old.room_id.clone();
            rooms.by_id.remove(&old_id);
        }
        rooms.by_id.insert(room_id.clone(), stream.to_owned());
        rooms.by_stream.insert(
            stream.to_owned(),
            StreamRoom { info: info.clone(), room_id, title, watermark, own_title_events: HashSet::new() },
        );
        info!(%stream, room = %info.room_id, alias = %info.alias, created, "Matrix room ready");
        Ok(info)
    }

    async fn resolve(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        match self.client.send(get_alias::v3::Request::new(alias.to_owned())).await {
            Ok(r) => Ok(Some(r.room_id)),
            Err(e) if matches!(e.client_api_error_kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(self.err("look up the room alias", &e)),
        }
    }

    async fn join(&self, alias: &RoomAliasId, room_id: &OwnedRoomId) -> Result<()> {
        // By alias, so the homeserver knows where to join a room it is not in yet. Joining a room
        // the user is already in changes nothing.
        let target = <&RoomOrAliasId>::from(alias);
        match self.client.join_room_by_id_or_alias(target, &[]).await {
            Ok(room) if room.room_id() == room_id => Ok(()),
            Ok(_) => Err(Error::Room { alias: alias.to_string(), reason: "the alias moved to another room".into() }),
            Err(e) => match Error::from_sdk("join the room", &self.shared.homeserver, &e) {
                Error::Refused { reason, .. } => Err(Error::Room { alias: alias.to_string(), reason }),
                other => Err(other),
            },
        }
    }

    /// A room named `name`; `None` when the alias was taken meanwhile.
    async fn create(&self, stream: &str, name: &str, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        let own_server = self.client.user_id().map(|u| u.server_name().to_owned());
        if own_server.as_deref() != Some(alias.server_name()) {
            return Err(Error::Room {
                alias: alias.to_string(),
                reason: format!(
                    "it does not exist, and OnAir can only create rooms with aliases on its own server ({})",
                    own_server.map(|s| s.to_string()).unwrap_or_default()
                ),
            });
        }
        let mut visibility = Visibility::Public;
        loop {
            let mut request = create_room::v3::Request::new();
            request.room_alias_name = Some(alias.alias().to_owned());
            request.name = Some(name.to_owned());
            request.preset = Some(create_room::v3::RoomPreset::PublicChat);
            request.visibility = visibility.clone();
            request.initial_state = vec![
                InitialStateEvent::with_empty_state_key(RoomHistoryVisibilityEventContent::new(
                    HistoryVisibility::WorldReadable,
                ))
                .to_raw_any(),
                InitialStateEvent::with_empty_state_key(RoomGuestAccessEventContent::new(GuestAccess::CanJoin))
                    .to_raw_any(),
            ];
            match self.client.create_room(request).await {
                Ok(room) => return Ok(Some(room.room_id().to_owned())),
                Err(e) => match e.client_api_error_kind() {
                    Some(ErrorKind::RoomInUse) => return Ok(None),
                    Some(ErrorKind::Exclusive) => {
                        return Err(Error::Room {
                            alias: alias.to_string(),
                            reason: "the alias belongs to an application service (Cactus Comments?) that has \
                                     not created the room yet: open the comments section once, then retry"
                                .into(),
                        });
                    }
                    Some(ErrorKind::Forbidden) if visibility == Visibility::Public => {
                        // Some servers refuse to publish in their directory: an unlisted room still works.
                        warn!(%stream, "the homeserver refused to publish the room in its directory; creating it unlisted");
                        visibility = Visibility::Private;
                    }
                    _ => return Err(self.err("create the room", &e)),
                },
            }
        }
    }

    /// The room's `m.room.name` event; `None` when the room never had a name.
    async fn fetch_name(&self, room_id: &OwnedRoomId) -> Result<Option<RoomName>> {
        let mut request =
            get_state_event_for_key::v3::Request::new(room_id.clone(), StateEventType::RoomName, String::new());
        request.format = StateEventFormat::Event;
        match self.client.send(request).await {
            Ok(r) => Ok(Some(parse_name(r.event_or_content.get()))),
            Err(e) if matches!(e.client_api_error_kind(), Some(ErrorKind::NotFound)) => Ok(None),
            Err(e) => Err(self.err("read the room name", &e)),
        }
    }

    async fn newest_event(&self, room_id: &OwnedRoomId) -> Result<Watermark> {
        let mut request = get_message_events::v3::Request::new(room_id.clone(), Direction::Backward);
        request.limit = UInt::from(1u32);
        let response = self.client.send(request).await.map_err(|e| self.err("read the room timeline", &e))?;
        let Some(newest) = response.chunk.first() else { return Ok(Watermark::default()) };
        let ts_ms = newest.get_field::<u64>("origin_server_ts").ok().flatten().unwrap_or(0);
        let event_id = newest.get_field::<OwnedEventId>("event_id").ok().flatten();
        Ok(Watermark { ts_ms, event_id })
    }

    /// The room of `stream`, set up on first use.
    async fn room_id(&self, stream: &str) -> Result<OwnedRoomId> {
        let known = self.shared.rooms.lock().expect("not poisoned").by_stream.get(stream).map(|r| r.room_id.clone());
        match known {
            Some(id) => Ok(id),
            None => Ok(self.ensure_room(stream).await?.room_id.parse().expect("a room id from the server")),
        }
    }

    /// Sets `stream`'s title as its room name (`m.room.name`). Answers when the homeserver says
    /// the name was set (the event's `origin_server_ts`), if it says.
    pub async fn set_title(&self, stream: &str, title: &str) -> Result<Option<u64>> {
        let room_id = self.room_id(stream).await?;
        let previous = self.swap_title(stream, Some(title.to_owned()));
        let request = send_state_event::v3::Request::new(
            room_id.clone(),
            &EmptyStateKey,
            &RoomNameEventContent::new(title.to_owned()),
        )
        .map_err(|e| Error::Refused { action: "set the room name", reason: e.to_string() })?;
        let result = self.client.send(request).await.map_err(|e| self.err("set the room name", &e));
        self.shared.note(&result);
        match result {
            Ok(response) => {
                if let Some(room) = self.shared.rooms.lock().expect("not poisoned").by_stream.get_mut(stream) {
                    room.own_title_events.insert(response.event_id.clone());
                }
                // The name is set; its time is a bonus (a failure here changes nothing).
                let event = self.client.send(get_room_event::v3::Request::new(room_id, response.event_id)).await;
                Ok(event.ok().and_then(|r| r.event.get_field::<u64>("origin_server_ts").ok().flatten()))
            }
            Err(e) => {
                self.swap_title(stream, previous);
                Err(e)
            }
        }
    }

    fn swap_title(&self, stream: &str, title: Option<String>) -> Option<String> {
        let mut rooms = self.shared.rooms.lock().expect("not poisoned");
        rooms.by_stream.get_mut(stream).and_then(|r| std::mem::replace(&mut r.title, title))
    }

    /// `stream`'s title: its room name as the homeserver has it now, with when it was set; `None`
    /// when the room never had a name.
    pub async fn title(&self, stream: &str) -> Result<Option<RoomName>> {
        let room_id = self.room_id(stream).await?;
        let result = self.fetch_name(&room_id).await;
        self.shared.note(&result);
        result
    }

    /// Sends a chat message as the streamer. Returns the event id.
    pub async fn send(&self, stream: &str, text: &str) -> Result<String> {
        self.send_content(stream, RoomMessageEventContent::text_plain(text)).await
    }

    /// Posts `🔴 <title> is live: <link>` when [`MatrixConfig::notify_live`] is on (with an `@room`
    /// mention when [`MatrixConfig::mention_room`] is on). Returns the event id, if one was sent.
    pub async fn notice_live(&self, stream: &str, title: &str, link: &str) -> Result<Option<String>> {
        if !self.config.notify_live {
            return Ok(None);
        }
        let body = format!("🔴 {title} is live: {link}");
        let content = if self.config.mention_room {
            // A plain message, not m.notice: the default push rules silence notices, mentions included.
            RoomMessageEventContent::text_plain(format!("@room {body}")).add_mentions(Mentions::with_room_mention())
        } else {
            RoomMessageEventContent::notice_plain(body)
        };
        self.send_content(stream, content).await.map(Some)
    }

    /// Posts `⚫ <title> has ended.` when [`MatrixConfig::notify_live`] is on (never mentioning
    /// `@room`). Returns the event id, if one was sent.
    pub async fn notice_ended(&self, stream: &str, title: &str) -> Result<Option<String>> {
        if !self.config.notify_live {
            return Ok(None);
        }
        let content = RoomMessageEventContent::notice_plain(format!("⚫ {title} has ended."));
        self.send_content(stream, content).await.map(Some)
    }

    async fn send_content(&self, stream: &str, content: RoomMessageEventContent) -> Result<String> {
        let room_id = self.room_id(stream).await?;
        let request = send_message_event::v3::Request::new(room_id, TransactionId::new(), &content)
            .map_err(|e| Error::Refused { action: "send a message", reason: e.to_string() })?;
        let result =
            self.client.send(request).await.map(|r| r.event_id.to_string()).map_err(|e| self.err("send a message", &e));
        self.shared.note(&result);
        result
    }

    fn err(&self, action: &'static str, e: &impl Classify) -> Error {
        Error::from_sdk(action, &self.shared.homeserver, e)
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        self.stop_sync();
    }
}

fn check_config(config: &MatrixConfig) -> Result<()> {
    if config.homeserver.trim().is_empty() {
        return Err(Error::Config("no homeserver set".into()));
    }
    if config.user.trim().is_empty() {
        return Err(Error::Config("no user set".into()));
    }
    Ok(())
}

/// A `GET /rooms/{id}/state/m.room.name/?format=event` answer: the whole event, or only its
/// content from a homeserver that ignores `format` (then the time is unknown).
fn parse_name(json: &str) -> RoomName {
    #[derive(Deserialize)]
    struct Content {
        #[serde(default)]
        name: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum EventOrContent {
        Event { content: Content, origin_server_ts: u64 },
        Content(Content),
    }
    match serde_json::from_str::<EventOrContent>(json) {
        Ok(EventOrContent::Event { content, origin_server_ts }) => {
            RoomName { name: content.name, ts_ms: Some(origin_server_ts) }
        }
        Ok(EventOrContent::Content(content)) => RoomName { name: content.name, ts_ms: None },
        Err(_) => RoomName { name: String::new(), ts_ms: None },
    }
}

/// `configured` is `@me:server` or `me`.
fn same_user(configured: &str, saved: &UserId) -> bool {
    let configured = configured.trim();
    if configured.starts_with('@') { configured == saved.as_str() } else { configured == saved.localpart() }
}

async fn build_client(homeserver: &str) -> Result<Client> {
    let homeserver = homeserver.trim();
    let builder = Client::builder()
        .request_config(RequestConfig::new().timeout(REQUEST_TIMEOUT).retry_limit(2))
        .user_agent(concat!("OnAir/", env!("CARGO_PKG_VERSION")));
    let builder = if homeserver.starts_with("http://") || homeserver.starts_with("https://") {
        builder.homeserver_url(homeserver)
    } else {
        builder.server_name_or_homeserver_url(homeserver)
    };
    builder.build().await.map_err(|e| match e {
        ClientBuildError::Url(_) | ClientBuildError::InvalidServerName | ClientBuildError::MissingHomeserver => {
            Error::Config(format!("homeserver {homeserver:?}: {e}"))
        }
        other => Error::Unreachable { homeserver: homeserver.to_owned(), reason: other.to_string() },
    })
}

fn add_handlers(client: &Client, shared: &Arc<Shared>) {
    let s = shared.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
        let shared = s.clone();
        async move {
            if matches!(ev.content.relates_to, Some(Relation::Replacement(_))) {
                return; // an edit: the original was reported already
            }
            let room_id = room.room_id().to_owned();
            let Some(stream) = shared.on_message(&ev, &room_id) else { return };
            let display_name = match room.get_member_no_sync(&ev.sender).await {
                Ok(Some(member)) => member.display_name().map(str::to_owned),
                _ => None,
            }
            .unwrap_or_else(|| ev.sender.localpart().to_owned());
            let _ = shared.events.send(ChatEvent::Message {
                stream,
                event_id: ev.event_id.to_string(),
                sender: ev.sender.to_string(),
                display_name,
                body: ev.content.body().to_owned(),
                ts_ms: u64::from(ev.origin_server_ts.0),
            });
        }
    });
    let s = shared.clone();
    client.add_event_handler(move |ev: OriginalSyncRoomNameEvent, room: Room| {
        let shared = s.clone();
        async move { shared.on_name(&ev, &room.room_id().to_owned()) }
    });
}

/// What the sync asks for: room timelines and just enough state, nothing else.
fn sync_filter(first: bool) -> sync_events::v3::Filter {
    let mut filter = FilterDefinition::default();
    // The first sync only needs the current state; later ones must not miss a burst of chat.
    filter.room.timeline.limit = Some(UInt::from(if first { 1u32 } else { 100 }));
    filter.room.state.lazy_load_options = LazyLoadOptions::Enabled { include_redundant_members: false };
    filter.room.timeline.lazy_load_options = LazyLoadOptions::Enabled { include_redundant_members: false };
    filter.room.ephemeral.types = Some(Vec::new());
    filter.room.account_data.types = Some(Vec::new());
    filter.presence.types = Some(Vec::new());
    filter.account_data.types = Some(Vec::new());
    sync_events::v3::Filter::FilterDefinition(filter)
}

async fn sync_loop(client: Client, shared: Arc<Shared>) {
    let mut first = true;
    let mut backoff = BACKOFF.0;
    loop {
        // The first sync, and the first after a failure, answer at once: a homeserver that is back
        // shows as connected (and what waited for it proceeds) without a long-poll's wait.
        let connected = *shared.status.borrow() == MatrixStatus::Connected;
        let wait = if first || !connected { Duration::ZERO } else { SYNC_WAIT };
        let settings = SyncSettings::new().timeout(wait).filter(sync_filter(first));
        match client.sync_once(settings).await {
            Ok(_) => {
                first = false;
                backoff = BACKOFF.0;
                shared.set_status(MatrixStatus::Connected);
            }
            Err(e) => {
                match Error::from_sdk("sync", &shared.homeserver, &e) {
                    Error::LoggedOut => {
                        shared.set_status(MatrixStatus::LoggedOut);
                        return;
                    }
                    Error::Unreachable { reason, .. } => shared.set_status(MatrixStatus::Unreachable(reason)),
                    other => shared.set_status(MatrixStatus::Unreachable(other.to_string())),
                }
                debug!(retry_in = ?backoff, "Matrix sync failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_name_with_its_time_or_without_one() {
        let event = r#"{"type":"m.room.name","state_key":"","content":{"name":"Friday"},"origin_server_ts":1700000000123,
                        "sender":"@me:x","event_id":"$e","room_id":"!r:x"}"#;
        assert_eq!(parse_name(event), RoomName { name: "Friday".into(), ts_ms: Some(1_700_000_000_123) });
        // A homeserver that ignores `?format=event` answers the content only.
        assert_eq!(parse_name(r#"{"name":"Friday"}"#), RoomName { name: "Friday".into(), ts_ms: None });
        // A removed name.
        assert_eq!(
            parse_name(r#"{"content":{},"origin_server_ts":5}"#),
            RoomName { name: String::new(), ts_ms: Some(5) }
        );
    }
}
