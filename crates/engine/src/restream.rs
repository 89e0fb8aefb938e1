//! Restream: each live stream relayed, as published, to the RTMP/RTMPS destinations configured
//! for it (`[[restream.destination]]`, edited through the control API; keys in the OS keyring).
//!
//! When a stream becomes live, one task per enabled destination subscribes to the hub's FLV tag
//! feed ([`crate::hub::Stream::restream_feed`]) and publishes it through the sans-IO
//! [`push::PushSession`] over TCP or TLS. A destination that drops or cannot be reached is tried
//! again with backoff ([`retry::Retry`]); one that refuses the key stays *refused* until the next
//! broadcast or an edit of it. Refusing is answering the publish with an error status, or (as
//! nginx-rtmp and the big platforms do with a wrong key) closing the connection when asked to
//! publish, twice in a row. The task ends when the broadcast does (End stream, unpublish).
//! Each destination's state is in the stream's status and pushed as [`EngineEvent::Restream`];
//! a destination failing persistently sends [`EngineEvent::RestreamFailing`] once.
//!
//! Secrets: a destination's key (or, for an OME origin, its SignedPolicy secret) is read from the
//! secret store at each connect, never logged, never in status or config; logs name the URL
//! without it.

pub mod push;
pub mod retry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{RestreamDestination, RestreamSettings};
use crate::events::EngineEvent;
use crate::hub::{Registry, Stream};
use crate::secrets::SecretStore;
use push::{PushEvent, PushSession, Target};
use retry::Retry;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection checks its deadline and publishes its figures (bitrate, queue).
const TICK: Duration = Duration::from_secs(1);
/// How long the goodbye (`deleteStream`) may take to send at the end.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The keyring entry of a destination's key.
pub fn key_entry(stream: &str, name: &str) -> String {
    format!("restream/{stream}/{name}")
}

/// A destination URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub app: String,
    /// OME kind: the stream name from the URL and the policy lifetime.
    pub ome: Option<(String, u64)>,
}

impl Endpoint {
    /// `rtmp[s]://host[:port]/app` (`ome`: `…/app/stream`). Errors name what is wrong.
    pub fn parse(url: &str, ome: bool) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("rtmp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rtmps://") {
            (true, r)
        } else {
            return Err("the URL must start with rtmp:// or rtmps://".into());
        };
        if rest.contains(['?', '#', '@', ' ']) {
            return Err("the URL may not hold a query, credentials or spaces (the key is kept apart)".into());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hp: crate::net::HostPort = authority.parse().map_err(|e| format!("host {authority:?}: {e}"))?;
        let port = hp.port.unwrap_or(if tls { 443 } else { 1935 });
        let host = hp.host.to_string();
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Err("the URL has no application path (rtmp://host/app)".into());
        }
        let (app, ome) = if ome {
            let (app, stream) = path.rsplit_once('/').ok_or("an OME URL ends with /app/stream")?;
            (app.to_owned(), Some((stream.to_owned(), 0)))
        } else {
            if path.rsplit('/').next().is_some_and(looks_like_a_key) {
                return Err("the URL seems to end with the stream key: give the server URL here and the key \
                            apart (it is kept in the OS keyring, never in the config file)"
                    .into());
            }
            (path.to_owned(), None)
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Endpoint { tls, host, port, app, ome })
    }

    fn base(&self) -> String {
        let scheme = if self.tls { "rtmps" } else { "rtmp" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{host}:{}/{}", self.port, self.app)
    }

    /// What to publish to with `secret` (the key; for OME the signing secret) at `now_ms`.
    pub fn target(&self, secret: &str, now_ms: u64) -> Target {
        let tc_url = self.base();
        let stream = match &self.ome {
            None => secret.to_owned(),
            Some((stream, expires_s)) => {
                let policy = onair_policy::Policy { url_expire: now_ms + expires_s * 1000, ..Default::default() };
                let signed = onair_policy::sign_url(secret.as_bytes(), &format!("{tc_url}/{stream}"), &policy)
                    .expect("the base URL has a scheme, host and port");
                signed.rsplit_once('/').map_or(signed.clone(), |(_, s)| s.to_owned())
            }
        };
        Target { app: self.app.clone(), stream, tc_url }
    }
}

/// Whether a URL's last path segment looks like a platform's stream key (Twitch `live_…`,
/// YouTube `xxxx-xxxx-xxxx-xxxx[-xxxx]`), pasted into the URL by mistake.
fn looks_like_a_key(segment: &str) -> bool {
    let youtube = {
        let groups: Vec<&str> = segment.split('-').collect();
        (4..=5).contains(&groups.len())
            && groups.iter().all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    segment.starts_with("live_") || youtube
}

/// A destination as the status API shows it (never its key).
#[derive(Debug, Clone, Serialize, PartialEq, ts_rs::TS)]
pub struct RestreamStatus {
    pub name: String,
    /// The configured URL (it holds no key).
    pub url: String,
    pub enabled: bool,
    /// An OvenMediaEngine origin with a SignedPolicy URL.
    pub ome: bool,
    pub state: RestreamState,
    /// Sending bitrate while live.
    pub bitrate_kbps: u64,
    /// Why the last attempt failed (retrying) or what the destination answered (refused).
    pub last_error: Option<String>,
    /// Seconds until the next attempt (retrying).
    pub next_attempt_s: Option<f64>,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// Frames dropped because the destination could not keep up (skipped to the next keyframe).
    pub dropped_frames: u64,
    /// Bytes waiting to be sent (bounded by `restream.max_queue_bytes`).
    pub queued_bytes: u64,
}

/// Where a destination stands.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum RestreamState {
    /// Not running: the stream is not live, or the destination is disabled.
    Idle,
    Connecting,
    Live,
    /// The last attempt failed; the next one is scheduled.
    Retrying,
    /// The destination rejected the key or the publish: not retried until the next broadcast
    /// or an edit.
    Refused,
}

/// `PUT /api/control/streams/{stream}/restream/{name}`: add or replace a destination.
#[derive(Debug, Clone, Serialize, Deserialize, ts_rs::TS)]
pub struct DestinationBody {
    pub url: String,
    /// The stream key (OME: the origin's signing secret); omitted: keep the stored one.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Not 0: an OME origin whose URL OnAir signs, valid this many seconds.
    #[serde(default)]
    pub ome_policy_expires_s: u64,
}

fn yes() -> bool {
    true
}

/// Why a restream edit failed.
#[derive(Debug, thiserror::Error)]
pub enum RestreamError {
    #[error("{0}")]
    Invalid(String),
    #[error("stream {stream:?} has no restream destination {name:?}")]
    NoSuch { stream: String, name: String },
    #[error("destination {0:?} needs a stream key (none is stored)")]
    NoKey(String),
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("cannot save the config file {path}: {reason}")]
    Save { path: PathBuf, reason: String },
    #[error("the edit did not complete: {0}")]
    Interrupted(String),
}

type Key = (String, String);

/// A running destination's task, with the broadcast it follows.
type Running = (Arc<Stream>, JoinHandle<()>);

/// The runtime state of one destination.
#[derive(Debug, Clone)]
struct Runtime {
    state: RestreamState,
    last_error: Option<String>,
    next_attempt: Option<Instant>,
    attempts: u32,
    bitrate_kbps: u64,
    dropped_frames: u64,
    queued_bytes: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            state: RestreamState::Idle,
            last_error: None,
            next_attempt: None,
            attempts: 0,
            bitrate_kbps: 0,
            dropped_frames: 0,
            queued_bytes: 0,
        }
    }
}

/// What the destination tasks share with the manager.
struct Shared {
    registry: Arc<Registry>,
    runtime: Mutex<HashMap<Key, Runtime>>,
    tls: tokio_rustls::TlsConnector,
    max_queue_bytes: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Updates a destination's runtime; sends an event when its state changed.
    fn update(&self, key: &Key, f: impl FnOnce(&mut Runtime)) {
        let (before, after, error) = {
            let mut map = lock(&self.runtime);
            let rt = map.entry(key.clone()).or_default();
            let before = rt.state;
            f(rt);
            (before, rt.state, rt.last_error.clone())
        };
        if before != after {
            self.registry.emit(EngineEvent::Restream {
                stream: key.0.clone(),
                name: key.1.clone(),
                state: after,
                error: if after == RestreamState::Live { None } else { error },
            });
        }
    }
}

/// The restream manager of an engine. Cheap to share (`Arc`).
pub struct Restream {
    shared: Arc<Shared>,
    store: Arc<dyn SecretStore>,
    destinations: Mutex<Vec<RestreamDestination>>,
    config_file: Option<PathBuf>,
    running: Mutex<HashMap<Key, Running>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl Restream {
    /// Starts following the registry's broadcasts (call within a tokio runtime). Edits are saved
    /// to `config_file` (without keys).
    pub fn start(
        settings: &RestreamSettings,
        registry: Arc<Registry>,
        store: Arc<dyn SecretStore>,
        config_file: Option<PathBuf>,
    ) -> Arc<Restream> {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&settings.ca_file)));
        let restream = Arc::new(Restream {
            shared: Arc::new(Shared {
                registry: registry.clone(),
                runtime: Mutex::new(HashMap::new()),
                tls,
                max_queue_bytes: settings.max_queue_bytes,
            }),
            store,
            destinations: Mutex::new(settings.destination.clone()),
            config_file,
            running: Mutex::new(HashMap::new()),
            watcher: Mutex::new(None),
        });
        let weak = Arc::downgrade(&restream);
        let mut events = registry.subscribe();
        let watcher = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(EngineEvent::Live { stream }) => match weak.upgrade() {
                        Some(r) => r.start_stream(&stream, true),
                        None => return,
                    },
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        *lock(&restream.watcher) = Some(watcher);
        restream
    }

    /// Stops every destination (engine shutdown).
    pub fn stop(&self) {
        if let Some(w) = lock(&self.watcher).take() {
            w.abort();
        }
        for (_, (_, task)) in lock(&self.running).drain() {
            task.abort();
        }
    }

    /// The streams that have destinations.
    pub fn streams(&self) -> Vec<String> {
        lock(&self.destinations).iter().map(|d| d.stream.clone()).collect()
    }

    /// The destinations of `stream` with their state.
    pub fn status(&self, stream: &str) -> Vec<RestreamStatus> {
        let dests: Vec<RestreamDestination> =
            lock(&self.destinations).iter().filter(|d| d.stream == stream).cloned().collect();
        let runtime = lock(&self.shared.runtime);
        let now = Instant::now();
        dests
            .into_iter()
            .map(|d| {
                let rt = runtime.get(&(d.stream.clone(), d.name.clone())).cloned().unwrap_or_default();
                RestreamStatus {
                    name: d.name,
                    url: d.url,
                    enabled: d.enabled,
                    ome: d.ome_policy_expires_s > 0,
                    state: rt.state,
                    bitrate_kbps: if rt.state == RestreamState::Live { rt.bitrate_kbps } else { 0 },
                    last_error: rt.last_error,
                    next_attempt_s: rt
                        .next_attempt
                        .filter(|_| rt.state == RestreamState::Retrying)
                        .map(|at| (at.saturating_duration_since(now).as_secs_f64() * 10.0).round() / 10.0),
                    attempts: rt.attempts,
                    dropped_frames: rt.dropped_frames,
                    queued_bytes: rt.queued_bytes,
                }
            })
            .collect()
    }

    /// Adds or replaces destination `name` of `stream`; the key (if given) goes to the secret
    /// store, the rest to the config file. A live stream starts (or restarts) it at once.
    pub fn put(&self, stream: &str, name: &str, body: DestinationBody) -> Result<(), RestreamError> {
        let dest = RestreamDestination {
            stream: stream.to_owned(),
            name: name.to_owned(),
            url: body.url.trim().to_owned(),
            enabled: body.enabled,
            ome_policy_expires_s: body.ome_policy_expires_s,
        };
        dest.validate().map_err(RestreamError::Invalid)?;
        let entry = key_entry(stream, name);
        match body.key.as_deref().map(str::trim) {
            Some(k) if !k.is_empty() => self.store.set(&entry, k)?,
            _ if self.store.get(&entry)?.is_some() => {}
            _ => return Err(RestreamError::NoKey(name.to_owned())),
        }
        {
            let mut dests = lock(&self.destinations);
            match dests.iter_mut().find(|d| d.stream == stream && d.name == name) {
                Some(d) => *d = dest.clone(),
                None => dests.push(dest.clone()),
            }
        }
        self.save()?;
        info!(%stream, %name, url = %dest.url, enabled = dest.enabled, "restream destination saved (its key in the keyring)");
        self.restart(&dest);
        Ok(())
    }

    /// Removes a destination and its key.
    pub fn remove(&self, stream: &str, name: &str) -> Result<(), RestreamError> {
        let removed = {
            let mut dests = lock(&self.destinations);
            let before = dests.len();
            dests.retain(|d| !(d.stream == stream && d.name == name));
            before != dests.len()
        };
        if !removed {
            return Err(RestreamError::NoSuch { stream: stream.into(), name: name.into() });
        }
        let key = (stream.to_owned(), name.to_owned());
        if let Some((_, task)) = lock(&self.running).remove(&key) {
            task.abort();
        }
        lock(&self.shared.runtime).remove(&key);
        self.store.delete(&key_entry(stream, name))?;
        self.save()?;
        info!(%stream, %name, "restream destination removed");
        Ok(())
    }

    /// Enables or disables a destination (a disabled one stops at once).
    pub fn set_enabled(&self, stream: &str, name: &str, enabled: bool) -> Result<(), RestreamError> {
        let dest = {
            let mut dests = lock(&self.destinations);
            let d = dests
                .iter_mut()
                .find(|d| d.stream == stream && d.name == name)
                .ok_or_else(|| RestreamError::NoSuch { stream: stream.into(), name: name.into() })?;
            d.enabled = enabled;
            d.clone()
        };
        self.save()?;
        info!(%stream, %name, enabled, "restream destination {}", if enabled { "enabled" } else { "disabled" });
        self.restart(&dest);
        Ok(())
    }

    /// Stops `dest`'s task and starts it afresh when it is enabled and its stream live.
    fn restart(&self, dest: &RestreamDestination) {
        let key = (dest.stream.clone(), dest.name.clone());
        if let Some((_, task)) = lock(&self.running).remove(&key) {
            task.abort();
        }
        self.shared.update(&key, |rt| *rt = Runtime::default());
        if dest.enabled {
            self.start_stream(&dest.stream, false);
        }
    }

    /// Starts the enabled destinations of `stream` that are not running (`fresh`: a new
    /// broadcast, which also retries refused ones).
    fn start_stream(&self, stream: &str, fresh: bool) {
        let Some(live) = self.shared.registry.get(stream) else { return };
        let dests: Vec<RestreamDestination> =
            lock(&self.destinations).iter().filter(|d| d.stream == stream && d.enabled).cloned().collect();
        let mut running = lock(&self.running);
        // A task still finishing an earlier broadcast (sending its goodbye) gives way.
        running.retain(|(of, _), (s, t)| {
            let keep = of != stream || (Arc::ptr_eq(s, &live) && !t.is_finished());
            if !keep {
                t.abort();
            }
            keep
        });
        for d in dests {
            let key = (d.stream.clone(), d.name.clone());
            if running.contains_key(&key) {
                continue;
            }
            let refused = lock(&self.shared.runtime).get(&key).is_some_and(|r| r.state == RestreamState::Refused);
            if refused && !fresh {
                continue;
            }
            let endpoint = match Endpoint::parse(&d.url, d.ome_policy_expires_s > 0) {
                Ok(mut e) => {
                    if let Some((_, expires)) = &mut e.ome {
                        *expires = d.ome_policy_expires_s;
                    }
                    e
                }
                Err(e) => {
                    warn!(stream = %d.stream, name = %d.name, error = %e, "restream destination skipped");
                    continue;
                }
            };
            let task = Destination {
                shared: self.shared.clone(),
                store: self.store.clone(),
                key: key.clone(),
                url: d.url.clone(),
                endpoint,
                stream: live.clone(),
            };
            running.insert(key, (live.clone(), tokio::spawn(task.run())));
        }
    }

    /// Writes the destinations to the config file (keys are not part of them).
    fn save(&self) -> Result<(), RestreamError> {
        let Some(path) = &self.config_file else { return Ok(()) };
        let err = |reason: String| RestreamError::Save { path: path.clone(), reason };
        let mut doc: toml::Table = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        let dests = toml::Value::try_from(&*lock(&self.destinations)).map_err(|e| err(e.to_string()))?;
        let section = doc.entry("restream").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(table) = section.as_table_mut() else { return Err(err("[restream] is not a table".into())) };
        table.insert("destination".into(), dests);
        let text = toml::to_string(&doc).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }
}

/// The TLS client settings for `rtmps://`: the public roots, plus `ca_file`'s certificates.
fn client_tls(ca_file: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if !ca_file.as_os_str().is_empty() {
        match std::fs::read(ca_file) {
            Ok(pem) => {
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    if let Err(e) = roots.add(cert) {
                        warn!(file = %ca_file.display(), error = %e, "a certificate of restream.ca_file is not usable");
                    }
                }
            }
            Err(e) => warn!(file = %ca_file.display(), error = %e, "cannot read restream.ca_file"),
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// How one connection ended.
enum Outcome {
    /// The broadcast ended.
    Ended,
    Refused(String),
    Failed(String),
    /// The destination closed the connection when asked to publish (a wrong key, mostly).
    ClosedAtPublish,
}

/// What the destination's task does after a connection.
enum Verdict {
    Ended,
    Refused(String),
    Retry(String),
}

/// What a connection closed at the publish request is, the first time (a retry follows).
const CLOSED_AT_PUBLISH: &str = "the destination closed the connection when asked to publish (a wrong stream key?)";

/// One destination's task: connect, publish, retry, until the broadcast ends or it is refused.
struct Destination {
    shared: Arc<Shared>,
    store: Arc<dyn SecretStore>,
    key: Key,
    /// The configured URL, for logs (it holds no key).
    url: String,
    endpoint: Endpoint,
    stream: Arc<Stream>,
}

impl Destination {
    async fn run(self) {
        let (stream, name) = (&self.key.0, &self.key.1);
        let mut retry = Retry::default();
        let mut closed_at_publish = false;
        loop {
            let Some((headers, feed)) = self.stream.restream_feed() else { break };
            self.shared.update(&self.key, |rt| {
                rt.state = RestreamState::Connecting;
                rt.next_attempt = None;
            });
            let outcome = match self.secret().await {
                Ok(secret) => {
                    let target = self.endpoint.target(&secret, now_ms());
                    self.connect_and_push(target, headers, feed, &mut retry).await
                }
                Err(e) => Outcome::Refused(e),
            };
            // Closed at the publish request twice in a row: refused; once: a failure.
            let again = std::mem::replace(&mut closed_at_publish, matches!(outcome, Outcome::ClosedAtPublish));
            let verdict = match outcome {
                Outcome::Ended => Verdict::Ended,
                Outcome::ClosedAtPublish if again => Verdict::Refused(CLOSED_AT_PUBLISH.into()),
                Outcome::ClosedAtPublish => Verdict::Retry(CLOSED_AT_PUBLISH.into()),
                Outcome::Refused(reason) => Verdict::Refused(reason),
                Outcome::Failed(error) => Verdict::Retry(error),
            };
            match verdict {
                Verdict::Ended => break,
                Verdict::Refused(reason) => {
                    warn!(%stream, %name, url = %self.url, %reason, "the restream destination refused the publish: not retried until the next broadcast or an edit");
                    self.shared.update(&self.key, |rt| {
                        rt.state = RestreamState::Refused;
                        rt.last_error = Some(reason);
                        rt.bitrate_kbps = 0;
                    });
                    return;
                }
                Verdict::Retry(error) => {
                    let now = Instant::now();
                    let f = retry.failed(now);
                    warn!(%stream, %name, url = %self.url, %error, retry_in_s = f.delay.as_secs(), attempts = f.attempts, "restream destination failed");
                    self.shared.update(&self.key, |rt| {
                        rt.state = RestreamState::Retrying;
                        rt.last_error = Some(error.clone());
                        rt.next_attempt = Some(now + f.delay);
                        rt.attempts = f.attempts;
                        rt.bitrate_kbps = 0;
                        rt.queued_bytes = 0;
                    });
                    if f.persistent {
                        self.shared.registry.emit(EngineEvent::RestreamFailing {
                            stream: stream.clone(),
                            name: name.clone(),
                            error,
                            attempts: f.attempts,
                        });
                    }
                    if !self.wait_or_end(f.delay).await {
                        break;
                    }
                }
            }
        }
        self.shared.update(&self.key, |rt| {
            rt.state = RestreamState::Idle;
            rt.bitrate_kbps = 0;
            rt.queued_bytes = 0;
            rt.next_attempt = None;
        });
    }

    /// The key (or OME secret) from the store; keyring calls block, so off the runtime.
    async fn secret(&self) -> Result<String, String> {
        let store = self.store.clone();
        let entry = key_entry(&self.key.0, &self.key.1);
        let got = tokio::task::spawn_blocking(move || store.get(&entry)).await.map_err(|e| e.to_string())?;
        match got {
            Ok(Some(k)) => Ok(k),
            Ok(None) => Err("no stream key is stored for this destination".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits `delay`; answers false if the broadcast ended meanwhile.
    async fn wait_or_end(&self, delay: Duration) -> bool {
        let Some((_, mut feed)) = self.stream.restream_feed() else { return false };
        let ended = async {
            loop {
                if let Err(broadcast::error::RecvError::Closed) = feed.recv().await {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = ended => false,
        }
    }

    async fn connect_and_push(
        &self,
        target: Target,
        headers: crate::hub::SequenceHeaders,
        feed: broadcast::Receiver<Arc<crate::hub::FlvTag>>,
        retry: &mut Retry,
    ) -> Outcome {
        let e = &self.endpoint;
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((e.host.as_str(), e.port)))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(err)) => return Outcome::Failed(format!("cannot connect to {}:{}: {err}", e.host, e.port)),
            Err(_) => return Outcome::Failed(format!("connecting to {}:{} timed out", e.host, e.port)),
        };
        let _ = tcp.set_nodelay(true);
        if !e.tls {
            return self.push(tcp, target, headers, feed, retry).await;
        }
        let name = match rustls::pki_types::ServerName::try_from(e.host.clone()) {
            Ok(n) => n,
            Err(err) => return Outcome::Failed(format!("{:?} is not a TLS server name: {err}", e.host)),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, self.shared.tls.connect(name, tcp)).await {
            Ok(Ok(tls)) => self.push(tls, target, headers, feed, retry).await,
            Ok(Err(err)) => Outcome::Failed(format!("TLS with {} failed: {err}", e.host)),
            Err(_) => Outcome::Failed(format!("TLS with {} timed out", e.host)),
        }
    }

    /// Drives a [`PushSession`] over `io` until the broadcast ends or the connection fails.
    async fn push<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        target: Target,
        headers: crate::hub::SequenceHeaders,
        mut feed: broadcast::Receiver<Arc<crate::hub::FlvTag>>,
        retry: &mut Retry,
    ) -> Outcome {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut session = PushSession::new(target, headers, self.shared.max_queue_bytes, Instant::now());
        let mut pending = Bytes::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut live = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if pending.is_empty() {
                pending = session.poll_output(Instant::now()).unwrap_or_default();
            }
            tokio::select! {
                read = rd.read(&mut buf) => {
                    let n = match read {
                        Ok(0) if session.phase() == push::Phase::Publishing => return Outcome::ClosedAtPublish,
                        Ok(0) => return Outcome::Failed(if live {
                            "the destination closed the connection".into()
                        } else {
                            "the destination closed the connection before accepting the publish".into()
                        }),
                        Ok(n) => n,
                        Err(err) => return Outcome::Failed(format!("reading from the destination failed: {err}")),
                    };
                    match session.handle_input(&buf[..n]) {
                        Ok(events) => {
                            for ev in events {
                                match ev {
                                    PushEvent::Live => {
                                        live = true;
                                        retry.live(Instant::now());
                                        info!(stream = %self.key.0, name = %self.key.1, url = %self.url, "restream destination live");
                                        self.shared.update(&self.key, |rt| {
                                            rt.state = RestreamState::Live;
                                            rt.last_error = None;
                                            rt.attempts = 0;
                                        });
                                    }
                                    PushEvent::Refused(reason) => return Outcome::Refused(reason),
                                }
                            }
                        }
                        Err(err) => return Outcome::Failed(err.to_string()),
                    }
                }
                tag = feed.recv() => match tag {
                    Ok(tag) => session.push(tag),
                    Err(broadcast::error::RecvError::Lagged(n)) => session.lagged(n),
                    Err(broadcast::error::RecvError::Closed) => {
                        let mut bye: Vec<Bytes> = vec![std::mem::take(&mut pending)];
                        bye.extend(session.finish());
                        let _ = tokio::time::timeout(FINISH_TIMEOUT, async {
                            for b in bye {
                                wr.write_all(&b).await?;
                            }
                            wr.shutdown().await
                        })
                        .await;
                        info!(stream = %self.key.0, name = %self.key.1, "the broadcast ended: restream destination stopped");
                        return Outcome::Ended;
                    }
                },
                written = wr.write(&pending), if !pending.is_empty() => match written {
                    Ok(0) => return Outcome::Failed("the destination stopped reading".into()),
                    Ok(n) => pending.advance(n),
                    Err(err) => return Outcome::Failed(format!("writing to the destination failed: {err}")),
                },
                _ = tick.tick() => {
                    if let Err(err) = session.handle_timeout(Instant::now()) {
                        return Outcome::Failed(err.to_string());
                    }
                    let (rate, dropped, queued) = (session.bitrate_kbps(), session.dropped_frames(), session.queued_bytes());
                    self.shared.update(&self.key, |rt| {
                        rt.bitrate_kbps = rate;
                        rt.dropped_frames = dropped;
                        rt.queued_bytes = queued as u64;
                    });
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let e = Endpoint::parse("rtmp://live.twitch.tv/app", false).unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port, e.app.as_str()), (false, "live.twitch.tv", 1935, "app"));
        let t = e.target("live_123", 0);
        assert_eq!(
            (t.app.as_str(), t.stream.as_str(), t.tc_url.as_str()),
            ("app", "live_123", "rtmp://live.twitch.tv:1935/app")
        );
        let e = Endpoint::parse("rtmps://a.rtmps.youtube.com/live2/", false).unwrap();
        assert_eq!((e.tls, e.port, e.app.as_str()), (true, 443, "live2"));
        let e = Endpoint::parse("rtmp://[::1]:1936/a/b", false).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.app.as_str()), ("::1", 1936, "a/b"));
        assert_eq!(e.target("k", 0).tc_url, "rtmp://[::1]:1936/a/b");
        let pasted = Endpoint::parse("rtmp://live.twitch.tv/app/live_12345_abcdef", false).unwrap_err();
        assert!(pasted.contains("stream key") && !pasted.contains("live_12345"), "{pasted}");
        assert!(Endpoint::parse("rtmp://a.rtmp.youtube.com/live2/ab12-cd34-ef56-gh78-ij90", false).is_err());
        assert!(Endpoint::parse("rtmp://a.rtmp.youtube.com/live2", false).is_ok());
        for bad in ["http://x/app", "rtmp://x", "rtmp://x/", "rtmp://x/app?key=1", "rtmp://u:p@x/app", "rtmp://:1/a"] {
            assert!(Endpoint::parse(bad, false).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("rtmp://x/app", true).is_err(), "OME needs /app/stream");
    }

    /// OnAir's push URL for an OME origin verifies with OnAir's verifier, and its signature is
    /// what OME's documented algorithm (HMAC-SHA1 over the URL, base64url) gives.
    #[test]
    fn ome_push_url_is_signed_with_the_origin_secret() {
        let mut e = Endpoint::parse("rtmp://192.168.0.100:1935/app/stream", true).unwrap();
        e.ome.as_mut().unwrap().1 = 3600;
        let now = 1_399_721_000_000;
        let t = e.target("1kU^b6", now);
        assert_eq!(t.app, "app");
        assert_eq!(t.tc_url, "rtmp://192.168.0.100:1935/app");
        assert!(t.stream.starts_with("stream?policy="), "{}", t.stream);
        let full = format!("{}/{}", t.tc_url, t.stream);
        let ip = "127.0.0.1".parse().unwrap();
        let policy = onair_policy::verify(b"1kU^b6", &full, ip, now + 1000).unwrap();
        assert_eq!(policy.url_expire, now + 3_600_000);
        assert!(onair_policy::verify(b"other", &full, ip, now).is_err());
        // OME's documented vector: the same signer gives the same signature for its URL.
        let vector = "ws://192.168.0.100:3333/app/stream?policy=eyJ1cmxfZXhwaXJlIjoxMzk5NzIxNTgxfQ";
        assert_eq!(onair_policy::signature(b"1kU^b6", vector), "dvVdBpoxAeCPl94Kt5RoiqLI0YE");
    }
}
