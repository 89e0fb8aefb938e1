//! Engine configuration: TOML with serde, every field defaulted, `ONAIR_*` environment overrides.
//!
//! Precedence, lowest first: built-in defaults, the config file, `ONAIR_*` variables, then
//! whatever the front end sets explicitly (command-line flags). An environment variable names a key
//! by its path in upper case joined with `_`: `http` → `ONAIR_HTTP`, `hls.part_target_ms` →
//! `ONAIR_HLS_PART_TARGET_MS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::net::HostPort;

/// The commented reference configuration; it parses to [`Config::default`] (a test checks).
pub const REFERENCE_TOML: &str = include_str!("../onair.toml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}={value:?} is not valid: {message}")]
    Env { var: String, value: String, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address (playlists, pages, API).
    pub http: SocketAddr,
    /// RTMP listen address (publishers).
    pub rtmp: SocketAddr,
    /// Where OnAir keeps its state; empty = the platform data directory.
    pub data_dir: PathBuf,
    /// Host viewers and OBS use to reach this machine, optionally with the HTTP port viewers use
    /// (OBS always gets the RTMP port); empty (None) = the listeners' addresses, the LAN address
    /// for a wildcard bind. See [`crate::startup::PublicUrls`].
    #[serde(with = "crate::net::optional")]
    pub public_host: Option<HostPort>,
    /// The RTMP application publishers use: `rtmp://host:1935/<app>/<stream>`.
    pub app: String,
    /// The stream whose OBS settings `onair serve` prints at start.
    pub default_stream: String,
    /// Publishes are accepted only after Go live (the tray app turns this on, so nobody goes
    /// live by accident); off: any publish with a valid signed key goes live.
    pub require_go_live: bool,
    /// Seconds a stream whose publisher's connection dropped (no clean unpublish) waits for it to
    /// come back: viewers keep their players, and a publish of the same stream within this time
    /// continues the same broadcast. 0: the stream ends at once.
    pub publish_grace_s: u64,
    pub hls: HlsSettings,
    pub webrtc: WebrtcSettings,
    pub matrix: MatrixSettings,
    pub limits: LimitsSettings,
    pub metrics: MetricsSettings,
    pub reach: ReachSettings,
    pub tls: TlsSettings,
    pub restream: RestreamSettings,
    pub budget: BudgetSettings,
    /// The config file these settings were read from (where edits such as restream
    /// destinations are saved); not a key of the file.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// The upload budget (see `[budget]` in `onair.toml` and [`crate::budget`]): how much upload OnAir
/// may use for direct viewers and restream destinations, and where viewers beyond it go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSettings {
    /// Upload in megabits per second OnAir may use; 0: no budget (every viewer is admitted).
    pub upload_mbps: f64,
    /// The page viewers beyond the budget are sent to (a CDN-hosted player, an OvenMediaEngine
    /// edge's player); `{stream}` is replaced by the stream's name. Empty: none — HLS players go
    /// to `hls.public_base_url` when set, the others are told that the stream is full.
    pub edge_url: String,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        Self { upload_mbps: 0.0, edge_url: String::new() }
    }
}

impl BudgetSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.upload_mbps.is_finite() || !(0.0..=100_000.0).contains(&self.upload_mbps) {
            return Err(ConfigError::Invalid {
                key: "budget.upload_mbps",
                message: format!("{}: use 0 (no budget) up to 100000", self.upload_mbps),
            });
        }
        let scheme_ok = self.edge_url.starts_with("https://") || self.edge_url.starts_with("http://");
        if !self.edge_url.is_empty() && (!scheme_ok || self.edge_url.contains(char::is_whitespace)) {
            return Err(ConfigError::Invalid {
                key: "budget.edge_url",
                message: format!("{:?}: use an http:// or https:// URL", self.edge_url),
            });
        }
        Ok(())
    }

    /// The budget in bits per second (0: none).
    pub fn capacity_bps(&self) -> u64 {
        (self.upload_mbps * 1e6) as u64
    }
}

/// Restream: each stream relayed, as published, to RTMP/RTMPS destinations (see `[restream]` in
/// `onair.toml` and docs/restream.md). Destination stream keys (and OME secrets) live in the OS
/// keyring, entry `restream/<stream>/<name>`, never here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestreamSettings {
    /// A PEM file of CA certificates to trust for `rtmps://` destinations besides the public
    /// roots (a private CA); empty: the public roots only.
    pub ca_file: PathBuf,
    /// Bytes of media queued per destination before it counts as lagging: its queue is dropped
    /// and sending resumes at the next keyframe.
    pub max_queue_bytes: usize,
    /// The destinations, `[[restream.destination]]` tables.
    pub destination: Vec<RestreamDestination>,
}

impl Default for RestreamSettings {
    fn default() -> Self {
        Self { ca_file: PathBuf::new(), max_queue_bytes: 8 * 1024 * 1024, destination: Vec::new() }
    }
}

/// One restream destination of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestreamDestination {
    /// The OnAir stream relayed.
    pub stream: String,
    /// The destination's name (1-64 letters, digits, '-' or '_'), unique per stream.
    pub name: String,
    /// `rtmp://host[:port]/app` or `rtmps://…` (the stream key is kept in the keyring). For an
    /// OME origin, the full publish URL `rtmp://host:port/app/stream` (signed by OnAir).
    pub url: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Not 0: an OvenMediaEngine origin with SignedPolicy: the URL is signed with the origin's
    /// secret (kept in the keyring as the key), valid for this many seconds from each connect.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ome_policy_expires_s: u64,
}

fn yes() -> bool {
    true
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl RestreamSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_queue_bytes < 256 * 1024 {
            return Err(ConfigError::Invalid {
                key: "restream.max_queue_bytes",
                message: format!("{} bytes: use at least 262144 (a keyframe must fit)", self.max_queue_bytes),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.destination {
            d.validate().map_err(|message| ConfigError::Invalid { key: "restream.destination", message })?;
            if !seen.insert((&d.stream, &d.name)) {
                return Err(ConfigError::Invalid {
                    key: "restream.destination",
                    message: format!("stream {:?} has two destinations named {:?}", d.stream, d.name),
                });
            }
        }
        Ok(())
    }
}

impl RestreamDestination {
    /// Explains a destination that cannot work (never repeating a secret: there is none here).
    pub fn validate(&self) -> Result<(), String> {
        if !crate::is_valid_stream_name(&self.stream) {
            return Err(format!("stream {:?}: use 1-64 letters, digits, '-' or '_'", self.stream));
        }
        if !crate::is_valid_stream_name(&self.name) {
            return Err(format!("name {:?}: use 1-64 letters, digits, '-' or '_'", self.name));
        }
        crate::restream::Endpoint::parse(&self.url, self.ome_policy_expires_s > 0)
            .map(drop)
            .map_err(|e| format!("{}/{}: {e}", self.stream, self.name))
    }
}

/// How viewers on the internet reach this machine (see `[reach]` in `onair.toml` and
/// [`crate::reach`]): the router's port mapping and the public address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReachSettings {
    /// Ask the router (UPnP-IGD, else NAT-PMP/PCP) to forward OnAir's ports while a stream is
    /// live (from Go live to End stream).
    pub port_mapping: bool,
    /// Also forward the RTMP port (publishing from outside this network).
    pub map_rtmp: bool,
    /// Seconds each mapping is asked for; renewed at half of it.
    pub lease_s: u64,
    /// STUN servers (`host:port`) that tell this network's public address; empty: none asked.
    pub stun_servers: Vec<String>,
    /// The router's address for NAT-PMP/PCP; empty: the default gateway (UPnP finds its router
    /// by discovery).
    pub gateway: String,
}

impl Default for ReachSettings {
    fn default() -> Self {
        Self {
            port_mapping: true,
            map_rtmp: false,
            lease_s: 3600,
            stun_servers: vec!["stun.l.google.com:19302".into(), "stun.cloudflare.com:3478".into()],
            gateway: String::new(),
        }
    }
}

impl ReachSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(120..=604_800).contains(&self.lease_s) {
            return Err(ConfigError::Invalid {
                key: "reach.lease_s",
                message: format!("{} s: use 120..=604800", self.lease_s),
            });
        }
        for s in &self.stun_servers {
            let ok = s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "reach.stun_servers",
                    message: format!("{s:?}: use host:port, e.g. \"stun.example.org:3478\""),
                });
            }
        }
        if !self.gateway.is_empty() && self.gateway.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: "reach.gateway",
                message: format!("{:?} is not an IP address", self.gateway),
            });
        }
        Ok(())
    }
}

/// Bounds on what untrusted clients can make OnAir hold (see `[limits]` in `onair.toml`).
/// Defaults are sized for a home PC; a client over a limit is refused before anything is
/// allocated for it, with a status code and one log line naming the limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// WebRTC (WHEP) sessions in total, per stream, per client IP, and still connecting.
    pub webrtc_sessions: usize,
    pub webrtc_sessions_per_stream: usize,
    pub webrtc_sessions_per_ip: usize,
    pub webrtc_connecting: usize,
    /// ICE-TCP connections open at once.
    pub ice_tcp_connections: usize,
    /// RTMP connections that have not published with a valid key yet: in total and per IP (IPv4
    /// address or IPv6 /64), and how long one may take to get there (handshake, connect, publish)
    /// before it is closed.
    pub rtmp_pending: usize,
    pub rtmp_pending_per_ip: usize,
    pub rtmp_auth_timeout_s: u64,
    /// HTTP connections open at once, requests being answered at once (each over: 503).
    pub http_connections: usize,
    pub http_in_flight: usize,
    /// Time a client has to send a request's headers (also the idle keep-alive time) / its body.
    pub http_header_timeout_s: u64,
    pub http_body_timeout_s: u64,
    /// Playlist and media requests (blocking reloads, preload-hinted parts are held) one client
    /// IP may have open at once (over: 503).
    pub reload_waiters_per_ip: usize,
    /// Seconds a refused client is asked to wait (`Retry-After`).
    pub retry_after_s: u64,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            webrtc_sessions: 200,
            webrtc_sessions_per_stream: 200,
            webrtc_sessions_per_ip: 8,
            webrtc_connecting: 32,
            ice_tcp_connections: 128,
            rtmp_pending: 16,
            rtmp_pending_per_ip: 4,
            rtmp_auth_timeout_s: 10,
            http_connections: 1024,
            http_in_flight: 512,
            http_header_timeout_s: 10,
            http_body_timeout_s: 10,
            reload_waiters_per_ip: 64,
            retry_after_s: 10,
        }
    }
}

impl LimitsSettings {
    /// Every cap of the HTTP and RTMP servers lets at least one client in, and none is so large
    /// it could not be a count of sockets.
    fn validate(&self) -> Result<(), ConfigError> {
        let caps: [(&'static str, u64); 9] = [
            ("limits.rtmp_pending", self.rtmp_pending as u64),
            ("limits.rtmp_pending_per_ip", self.rtmp_pending_per_ip as u64),
            ("limits.rtmp_auth_timeout_s", self.rtmp_auth_timeout_s),
            ("limits.http_connections", self.http_connections as u64),
            ("limits.http_in_flight", self.http_in_flight as u64),
            ("limits.http_header_timeout_s", self.http_header_timeout_s),
            ("limits.http_body_timeout_s", self.http_body_timeout_s),
            ("limits.reload_waiters_per_ip", self.reload_waiters_per_ip as u64),
            ("limits.retry_after_s", self.retry_after_s),
        ];
        for (key, value) in caps {
            if !(1..=1_000_000).contains(&value) {
                return Err(ConfigError::Invalid { key, message: format!("{value}: use 1..=1000000") });
            }
        }
        Ok(())
    }
}

/// Prometheus metrics at `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// Answer `/metrics` only to clients on this machine (loopback).
    pub loopback_only: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { enabled: true, loopback_only: false }
    }
}

/// Chat and titles through Matrix. Empty `homeserver`: no chat, titles kept by OnAir itself.
/// The password is never configured: it is used once to log in (`ONAIR_MATRIX_PASSWORD` or the
/// app), and the session lives in the OS keyring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatrixSettings {
    /// `https://matrix.example.org` (or a server name resolved through `.well-known`).
    pub homeserver: String,
    /// `@me:example.org` or `me`.
    pub user: String,
    /// Each stream's room alias; placeholders `{stream}`, `{server}`, `{site}`. The Cactus
    /// Comments scheme is `#comments_{site}_{stream}:{server}`.
    pub alias_template: String,
    /// `{site}` of the alias template (the Cactus Comments site name).
    pub site: String,
    /// Post "🔴 <title> is live: <link>" when a stream goes live, and a notice when it ends.
    pub notify_live: bool,
    /// Make those notices mention @room (notifies every member of the room).
    pub mention_room: bool,
}

impl Default for MatrixSettings {
    fn default() -> Self {
        let d = onair_matrix::MatrixConfig::default();
        Self {
            homeserver: d.homeserver,
            user: d.user,
            alias_template: d.alias_template,
            site: d.site.unwrap_or_default(),
            notify_live: d.notify_live,
            mention_room: d.mention_room,
        }
    }
}

impl MatrixSettings {
    /// Whether chat through Matrix is configured at all.
    pub fn enabled(&self) -> bool {
        !self.homeserver.trim().is_empty()
    }

    pub fn matrix_config(&self) -> onair_matrix::MatrixConfig {
        onair_matrix::MatrixConfig {
            homeserver: self.homeserver.trim().into(),
            user: self.user.trim().into(),
            alias_template: self.alias_template.clone(),
            site: (!self.site.is_empty()).then(|| self.site.clone()),
            notify_live: self.notify_live,
            mention_room: self.mention_room,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebrtcSettings {
    /// Offer WebRTC playback (WHEP) at all.
    pub enabled: bool,
    /// The one UDP port that carries the media of every WebRTC viewer.
    pub udp: SocketAddr,
    /// Also accept ICE over TCP (for networks that block UDP) on `tcp`.
    pub ice_tcp: bool,
    pub tcp: SocketAddr,
    /// Addresses to advertise to viewers (NAT 1:1: your public IP behind a router with port
    /// forwarding). Empty: the addresses of this machine.
    pub public_ips: Vec<String>,
    /// STUN servers handed to players, e.g. "stun:stun.example.org:3478".
    pub stun_urls: Vec<String>,
    /// TURN servers handed to players, e.g. "turn:turn.example.org:3478?transport=udp". Their
    /// time-limited credentials are computed from the shared secret (coturn `use-auth-secret`),
    /// which lives in the OS keyring (entry `turn-secret`) or `ONAIR_TURN_SECRET`.
    pub turn_urls: Vec<String>,
    /// How long handed-out TURN credentials stay valid, in seconds.
    pub turn_ttl_s: u64,
}

impl Default for WebrtcSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            udp: SocketAddr::from(([0, 0, 0, 0], 8189)),
            ice_tcp: true,
            tcp: SocketAddr::from(([0, 0, 0, 0], 8189)),
            public_ips: Vec::new(),
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_ttl_s: 86_400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsSettings {
    /// LL-HLS part target in milliseconds (parts are at most this long).
    pub part_target_ms: u32,
    /// A keyframe starts a new segment once the current one is at least this long.
    pub min_segment_ms: u32,
    /// Complete segments kept in memory per stream (the sliding window).
    pub window_segments: usize,
    /// Bytes a part may hold before it is cut; a frame larger than this is dropped.
    pub max_part_bytes: usize,
    /// Bytes a segment may hold before it is cut (even without a keyframe).
    pub max_segment_bytes: usize,
    /// Bytes of media kept per stream: the oldest segments are dropped beyond this.
    pub max_window_bytes: usize,
    /// The base URL of a CDN or caching proxy in front of this server (`https://cdn.example.org`,
    /// maybe with a path): the viewer and embed pages load `<base>/live/<stream>/llhls.m3u8`
    /// from it, and the links handed out name it. Empty: players load HLS from this server.
    pub public_base_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            rtmp: SocketAddr::from(([0, 0, 0, 0], 1935)),
            data_dir: PathBuf::new(),
            public_host: None,
            app: "live".into(),
            default_stream: "stream".into(),
            require_go_live: false,
            publish_grace_s: 10,
            hls: HlsSettings::default(),
            webrtc: WebrtcSettings::default(),
            matrix: MatrixSettings::default(),
            limits: LimitsSettings::default(),
            metrics: MetricsSettings::default(),
            reach: ReachSettings::default(),
            tls: TlsSettings::default(),
            restream: RestreamSettings::default(),
            budget: BudgetSettings::default(),
            file: None,
        }
    }
}

impl Default for HlsSettings {
    fn default() -> Self {
        let d = onair_hls::HlsConfig::default();
        Self {
            part_target_ms: d.part_target_ms,
            min_segment_ms: d.min_segment_ms,
            window_segments: d.window_segments,
            max_part_bytes: d.max_part_bytes,
            max_segment_bytes: d.max_segment_bytes,
            max_window_bytes: d.max_window_bytes,
            public_base_url: String::new(),
        }
    }
}

impl HlsSettings {
    /// `public_base_url` without its trailing `/`; None when empty.
    pub fn public_base(&self) -> Option<&str> {
        Some(self.public_base_url.trim().trim_end_matches('/')).filter(|b| !b.is_empty())
    }

    /// Why `public_base_url` cannot be used: it must be an `http://` or `https://` URL with a
    /// host (and maybe a port and a path), without a query, fragment, user name or spaces.
    fn check_public_base_url(&self) -> Result<(), String> {
        let Some(base) = self.public_base() else { return Ok(()) };
        let lower = base.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://")) else {
            return Err(format!("{base:?}: use an http:// or https:// URL"));
        };
        if let Some(c) = rest
            .chars()
            .find(|c| matches!(c, '?' | '#' | '@' | '"' | '<' | '>' | '\\') || c.is_whitespace() || c.is_control())
        {
            return Err(format!("{base:?}: no {c:?} allowed (no query, fragment or user name)"));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        authority.parse::<HostPort>().map_err(|e| format!("{base:?}: {e}"))?;
        Ok(())
    }

    pub fn packager_config(&self) -> onair_hls::HlsConfig {
        onair_hls::HlsConfig {
            part_target_ms: self.part_target_ms,
            min_segment_ms: self.min_segment_ms,
            window_segments: self.window_segments,
            max_part_bytes: self.max_part_bytes,
            max_segment_bytes: self.max_segment_bytes,
            max_window_bytes: self.max_window_bytes,
        }
    }
}

impl Config {
    /// The platform config file (`~/.config/onair/config.toml` on Linux).
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "onair").map(|d| d.config_dir().join("config.toml"))
    }

    /// Defaults, then `file` (or the platform file, if it exists), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Config::default()).expect("defaults serialize");
        let path = file.map(Path::to_path_buf).or_else(|| Self::default_path().filter(|p| p.exists()));
        if let Some(path) = path {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.clone(), message: e.to_string() })?;
            merge(&mut value, file_value);
            // Unknown keys and wrong types are reported against the file.
            value.clone().try_into::<Config>().map_err(|e| ConfigError::Parse { path, message: e.to_string() })?;
        }
        apply_env(&mut value, "ONAIR", std::env::vars())?;
        let mut config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid { key: "environment", message: e.to_string() })?;
        config.validate()?;
        config.file = file.map(Path::to_path_buf).or_else(Self::default_path);
        Ok(config)
    }

    /// Explains values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !crate::is_valid_stream_name(&self.default_stream) {
            return Err(ConfigError::Invalid {
                key: "default_stream",
                message: format!("{:?}: use 1-64 letters, digits, '-' or '_'", self.default_stream),
            });
        }
        if self.app.is_empty() || self.app.contains(['/', '?', ' ']) {
            return Err(ConfigError::Invalid { key: "app", message: format!("{:?}: one path segment", self.app) });
        }
        if !(100..=2000).contains(&self.hls.part_target_ms) {
            return Err(ConfigError::Invalid {
                key: "hls.part_target_ms",
                message: format!("{} ms: use 100..=2000", self.hls.part_target_ms),
            });
        }
        if self.hls.min_segment_ms < self.hls.part_target_ms {
            return Err(ConfigError::Invalid {
                key: "hls.min_segment_ms",
                message: "must be at least hls.part_target_ms".into(),
            });
        }
        if self.publish_grace_s > 300 {
            return Err(ConfigError::Invalid {
                key: "publish_grace_s",
                message: format!("{} s: use 0..=300", self.publish_grace_s),
            });
        }
        if let Err(message) = self.hls.check_public_base_url() {
            return Err(ConfigError::Invalid { key: "hls.public_base_url", message });
        }
        if !(2..=60).contains(&self.hls.window_segments) {
            return Err(ConfigError::Invalid {
                key: "hls.window_segments",
                message: format!("{}: use 2..=60", self.hls.window_segments),
            });
        }
        let h = &self.hls;
        if h.max_part_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid {
                key: "hls.max_part_bytes",
                message: format!("{} bytes: use at least 65536 (a keyframe must fit)", h.max_part_bytes),
            });
        }
        if h.max_segment_bytes < h.max_part_bytes.saturating_mul(2) {
            return Err(ConfigError::Invalid {
                key: "hls.max_segment_bytes",
                message: "must be at least twice hls.max_part_bytes".into(),
            });
        }
        if h.max_window_bytes < h.max_segment_bytes.saturating_mul(2) {
            return Err(ConfigError::Invalid {
                key: "hls.max_window_bytes",
                message: "must be at least twice hls.max_segment_bytes".into(),
            });
        }
        for ip in &self.webrtc.public_ips {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid {
                    key: "webrtc.public_ips",
                    message: format!("{ip:?} is not an IP address"),
                });
            }
        }
        for url in self.webrtc.stun_urls.iter().chain(&self.webrtc.turn_urls) {
            if !(url.starts_with("stun:")
                || url.starts_with("stuns:")
                || url.starts_with("turn:")
                || url.starts_with("turns:"))
            {
                return Err(ConfigError::Invalid {
                    key: "webrtc.stun_urls/turn_urls",
                    message: format!("{url:?}: expected stun:, stuns:, turn: or turns: URLs"),
                });
            }
        }
        self.limits.validate()?;
        self.reach.validate()?;
        self.tls.validate()?;
        self.restream.validate()?;
        self.budget.validate()?;
        if self.matrix.enabled() {
            if self.matrix.user.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "matrix.user",
                    message: "set the Matrix user (e.g. @me:example.org) along with matrix.homeserver".into(),
                });
            }
            if let Err(e) = self.matrix.matrix_config().alias_for("stream", "example.org") {
                return Err(ConfigError::Invalid { key: "matrix.alias_template", message: e.to_string() });
            }
        }
        Ok(())
    }

    /// The data directory: the configured one, or the platform data dir.
    pub fn data_dir(&self) -> PathBuf {
        if !self.data_dir.as_os_str().is_empty() {
            return self.data_dir.clone();
        }
        directories::ProjectDirs::from("", "", "onair")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".onair"))
    }
}

// ---------- [tls]: HTTPS and RTMPS ----------

/// Where HTTPS and RTMPS certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain HTTP and RTMP only.
    Off,
    /// The user's PEM certificate chain and key (`cert_file`, `key_file`).
    File,
    /// Automatic certificates from an ACME CA for `domain`.
    Acme,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::File => "file",
            TlsMode::Acme => "acme",
        }
    }
}

/// HTTPS and RTMPS (see `[tls]` in `onair.toml` and docs/https.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// HTTPS listen address (the same pages and API as `http`).
    pub https: SocketAddr,
    /// The HTTPS port viewers use (the router's, e.g. 443 forwarded to `https`); 0: the
    /// listener's port. Links and redirects use it.
    pub https_public_port: u16,
    /// RTMPS listen address (OBS `rtmps://`); empty: no RTMPS.
    pub rtmps: String,
    /// Mode file: PEM certificate chain (leaf first, then intermediates) and PEM private key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The DNS name viewers and OBS use; the certificate's name in mode acme.
    pub domain: String,
    /// The ACME CA's directory URL.
    pub acme_directory: String,
    /// Contact address given to the CA (expiry notices); empty: none.
    pub acme_email: String,
    /// A PEM root certificate to trust (instead of the system's) for the ACME directory's own
    /// HTTPS (test CAs); empty: the system's roots.
    pub acme_ca_file: PathBuf,
    /// Renew an automatic certificate this many days before it expires.
    pub renew_before_days: u32,
    /// Seconds between checks of the certificate (renewal; the files re-read in mode file).
    pub renew_check_s: u64,
    /// Send `Strict-Transport-Security` on HTTPS responses.
    pub hsts: bool,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: TlsMode::Off,
            https: SocketAddr::from(([0, 0, 0, 0], 8443)),
            https_public_port: 0,
            rtmps: "0.0.0.0:1936".into(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            domain: String::new(),
            acme_directory: LETS_ENCRYPT_DIRECTORY.into(),
            acme_email: String::new(),
            acme_ca_file: PathBuf::new(),
            renew_before_days: 30,
            renew_check_s: 43_200,
            hsts: false,
        }
    }
}

impl TlsSettings {
    /// The HTTPS port in links and redirects: `https_public_port`, else the bound `listener` port.
    pub fn link_port(&self, listener: u16) -> u16 {
        if self.https_public_port != 0 { self.https_public_port } else { listener }
    }

    /// The RTMPS listen address; None when RTMPS is off (TLS off, or `rtmps` empty).
    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        if self.mode == TlsMode::Off {
            return None;
        }
        self.rtmps.trim().parse().ok()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let rtmps = self.rtmps.trim();
        if !rtmps.is_empty() && !matches!(rtmps, "off") && rtmps.parse::<SocketAddr>().is_err() {
            return invalid("tls.rtmps", format!("{rtmps:?}: an address such as 0.0.0.0:1936, or empty for none"));
        }
        if !(1..=3650).contains(&self.renew_before_days) {
            return invalid("tls.renew_before_days", format!("{}: use 1..=3650", self.renew_before_days));
        }
        if !(1..=604_800).contains(&self.renew_check_s) {
            return invalid("tls.renew_check_s", format!("{}: use 1..=604800", self.renew_check_s));
        }
        match self.mode {
            TlsMode::Off => {}
            TlsMode::File => {
                if self.cert_file.as_os_str().is_empty() || self.key_file.as_os_str().is_empty() {
                    return invalid("tls.cert_file", "mode \"file\" needs tls.cert_file and tls.key_file".into());
                }
            }
            TlsMode::Acme => {
                let d = self.domain.trim();
                if d.is_empty() || d.parse::<std::net::IpAddr>().is_ok() || d.contains(['/', ':', ' ']) {
                    return invalid(
                        "tls.domain",
                        format!("{d:?}: mode \"acme\" needs the DNS name of this host (e.g. tv.example.org)"),
                    );
                }
                if !self.acme_directory.starts_with("https://") {
                    return invalid("tls.acme_directory", format!("{:?}: an https:// URL", self.acme_directory));
                }
            }
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Overrides every leaf of `value` that has a `PREFIX_PATH_TO_KEY` variable in `vars`.
fn apply_env(
    value: &mut toml::Value,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    fn walk(value: &mut toml::Value, name: &str, vars: &[(String, String)]) -> Result<(), ConfigError> {
        if let toml::Value::Table(table) = value {
            for (key, child) in table.iter_mut() {
                walk(child, &format!("{name}_{}", key.to_ascii_uppercase()), vars)?;
            }
            return Ok(());
        }
        let Some((var, raw)) = vars.iter().find(|(k, _)| k == name) else { return Ok(()) };
        let err = |message: String| ConfigError::Env { var: var.clone(), value: raw.clone(), message };
        *value = match value {
            toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|e| err(format!("{e}")))?),
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => return Err(err("expected true or false".into())),
            }),
            toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().map_err(|e| err(format!("{e}")))?),
            // Lists: comma-separated.
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| toml::Value::String(v.into()))
                    .collect(),
            ),
            _ => toml::Value::String(raw.clone()),
        };
        Ok(())
    }
    walk(value, prefix, &vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_config_is_the_default() {
        let parsed: Config = toml::from_str(REFERENCE_TOML).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn env_overrides_any_key() {
        let mut value = toml::Value::try_from(Config::default()).unwrap();
        let vars = [
            ("ONAIR_HTTP".to_string(), "127.0.0.1:9000".to_string()),
            ("ONAIR_HLS_PART_TARGET_MS".to_string(), "500".to_string()),
            ("ONAIR_DATA_DIR".to_string(), "/tmp/x".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
            ("ONAIR_WEBRTC_PUBLIC_IPS".to_string(), "203.0.113.9, 198.51.100.7".to_string()),
            ("ONAIR_WEBRTC_ICE_TCP".to_string(), "false".to_string()),
            ("ONAIR_MATRIX_HOMESERVER".to_string(), "http://127.0.0.1:8008".to_string()),
            ("ONAIR_MATRIX_USER".to_string(), "streamer".to_string()),
            ("ONAIR_TLS_MODE".to_string(), "acme".to_string()),
            ("ONAIR_TLS_RENEW_BEFORE_DAYS".to_string(), "10".to_string()),
        ];
        apply_env(&mut value, "ONAIR", vars).unwrap();
        let c: Config = value.try_into().unwrap();
        assert_eq!(c.http, "127.0.0.1:9000".parse::<SocketAddr>().unwrap());
        assert_eq!(c.hls.part_target_ms, 500);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.rtmp, Config::default().rtmp);
        assert_eq!(c.webrtc.public_ips, ["203.0.113.9", "198.51.100.7"]);
        assert!(!c.webrtc.ice_tcp);
        assert_eq!(c.matrix.homeserver, "http://127.0.0.1:8008");
        assert_eq!(c.matrix.user, "streamer");
        assert_eq!((c.tls.mode, c.tls.renew_before_days), (TlsMode::Acme, 10));
    }

    #[test]
    fn public_host_is_a_typed_host_port() {
        let mut value = toml::Value::try_from(Config::default()).unwrap();
        apply_env(&mut value, "ONAIR", [("ONAIR_PUBLIC_HOST".into(), "[2001:db8::1]:8080".into())]).unwrap();
        let c: Config = value.try_into().unwrap();
        assert_eq!(c.public_host, Some("[2001:db8::1]:8080".parse().unwrap()));
        let c: Config = toml::from_str("public_host = \"tv.example.org\"").unwrap();
        assert_eq!(c.public_host.unwrap().to_string(), "tv.example.org");
        let e = toml::from_str::<Config>("public_host = \"http://tv.example.org\"").unwrap_err().to_string();
        assert!(e.contains("public_host") && e.contains("not a URL"), "{e}");
    }

    #[test]
    fn bad_env_value_is_named() {
        let mut value = toml::Value::try_from(Config::default()).unwrap();
        let err = apply_env(&mut value, "ONAIR", [("ONAIR_HLS_WINDOW_SEGMENTS".into(), "many".into())]).unwrap_err();
        assert!(err.to_string().contains("ONAIR_HLS_WINDOW_SEGMENTS"), "{err}");
    }

    #[test]
    fn file_merges_over_defaults_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("onair-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "rtmp = \"127.0.0.1:1936\"\n[hls]\nwindow_segments = 4\n").unwrap();
        let c = Config::load(Some(&good)).unwrap();
        assert_eq!(c.rtmp, "127.0.0.1:1936".parse::<SocketAddr>().unwrap());
        assert_eq!(c.hls.window_segments, 4);
        assert_eq!(c.hls.part_target_ms, HlsSettings::default().part_target_ms);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "htp = \"x\"\n").unwrap();
        assert!(matches!(Config::load(Some(&bad)), Err(ConfigError::Parse { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn validate_explains() {
        let c = Config { default_stream: "a/b".into(), ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("default_stream"));
        let mut c = Config::default();
        c.hls.part_target_ms = 5;
        assert!(c.validate().unwrap_err().to_string().contains("part_target_ms"));
        let mut c = Config::default();
        c.matrix.homeserver = "https://matrix.example.org".into();
        assert!(c.validate().unwrap_err().to_string().contains("matrix.user"));
        c.matrix.user = "me".into();
        c.validate().unwrap();
        c.matrix.alias_template = "#comments_{site}_{stream}:{server}".into();
        assert!(c.validate().unwrap_err().to_string().contains("alias_template"), "no site set");
        let mut c = Config::default();
        c.tls.mode = TlsMode::Acme;
        assert!(c.validate().unwrap_err().to_string().contains("tls.domain"));
        c.tls.domain = "tv.example.org".into();
        c.validate().unwrap();
        c.tls.rtmps = "nonsense".into();
        assert!(c.validate().unwrap_err().to_string().contains("tls.rtmps"));
        c.tls.rtmps = String::new();
        c.validate().unwrap();
        assert_eq!(c.tls.rtmps_addr(), None);
        assert_eq!(c.tls.link_port(8443), 8443);
        c.tls.https_public_port = 443;
        assert_eq!(c.tls.link_port(8443), 443);
        c.tls.mode = TlsMode::File;
        assert!(c.validate().unwrap_err().to_string().contains("tls.cert_file"));
        let mut c = Config::default();
        c.limits.http_header_timeout_s = 0;
        assert!(c.validate().unwrap_err().to_string().contains("limits.http_header_timeout_s"));
        let mut c = Config::default();
        c.reach.stun_servers = vec!["stun.example.org".into()];
        assert!(c.validate().unwrap_err().to_string().contains("reach.stun_servers"));
        c.reach.stun_servers = vec!["[2001:db8::1]:3478".into(), "11.77.0.50:3478".into()];
        c.validate().unwrap();
        c.reach.gateway = "router".into();
        assert!(c.validate().unwrap_err().to_string().contains("reach.gateway"));
    }

    #[test]
    fn public_base_url_is_checked() {
        let with = |url: &str| Config {
            hls: HlsSettings { public_base_url: url.into(), ..Default::default() },
            ..Config::default()
        };
        for good in [
            "",
            "https://cdn.example.org",
            "http://127.0.0.1:8081/",
            "https://cdn.example.org/onair/",
            "HTTPS://[2001:db8::1]:8443",
        ] {
            with(good).validate().unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(with("https://cdn.example.org/onair/").hls.public_base(), Some("https://cdn.example.org/onair"));
        assert_eq!(with(" ").hls.public_base(), None);
        for bad in [
            "cdn.example.org",
            "ftp://cdn.example.org",
            "https://",
            "https:///live",
            "https://cdn.example.org/?x=1",
            "https://cdn.example.org/#x",
            "https://user@cdn.example.org",
            "https://cdn example.org",
            "https://cdn.example.org:99999",
            "https://cdn.example.org/\"><script>",
        ] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("hls.public_base_url"), "{bad}: {e}");
        }
        let mut value = toml::Value::try_from(Config::default()).unwrap();
        let vars = [("ONAIR_HLS_PUBLIC_BASE_URL".to_string(), "https://cdn.example.org".to_string())];
        apply_env(&mut value, "ONAIR", vars).unwrap();
        let c: Config = value.try_into().unwrap();
        assert_eq!(c.hls.public_base(), Some("https://cdn.example.org"));
    }

    #[test]
    fn restream_destinations_parse_and_are_validated() {
        let text = r#"
            [restream]
            ca_file = "/etc/ssl/my-ca.pem"
            [[restream.destination]]
            stream = "show"
            name = "twitch"
            url = "rtmp://live.twitch.tv/app"
            [[restream.destination]]
            stream = "show"
            name = "ome"
            url = "rtmp://origin.example.org:1935/app/show"
            enabled = false
            ome_policy_expires_s = 3600
        "#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        let d = &c.restream.destination;
        assert_eq!((d[0].name.as_str(), d[0].enabled, d[0].ome_policy_expires_s), ("twitch", true, 0));
        assert_eq!((d[1].enabled, d[1].ome_policy_expires_s), (false, 3600));
        assert_eq!(c.restream.max_queue_bytes, RestreamSettings::default().max_queue_bytes);
        // A saved destination list reads back the same (what the control API writes).
        let saved = toml::to_string(&c.restream).unwrap();
        assert!(!saved.contains("ome_policy_expires_s = 0"), "{saved}");
        assert_eq!(toml::from_str::<RestreamSettings>(&saved).unwrap(), c.restream);
        let mut dup = c.clone();
        dup.restream.destination[1].name = "twitch".into();
        assert!(dup.validate().unwrap_err().to_string().contains("two destinations named"));
        let mut bad = c.clone();
        bad.restream.destination[0].url = "http://live.twitch.tv/app".into();
        assert!(bad.validate().unwrap_err().to_string().contains("rtmp://"));
        let mut small = c;
        small.restream.max_queue_bytes = 1000;
        assert!(small.validate().unwrap_err().to_string().contains("restream.max_queue_bytes"));
        assert!(
            toml::from_str::<Config>(
                "[[restream.destination]]\nstream = \"s\"\nname = \"n\"\nurl = \"rtmp://h/a\"\nkey = \"x\"\n"
            )
            .is_err(),
            "no key in the file"
        );
    }

    #[test]
    fn reach_env() {
        let mut value = toml::Value::try_from(Config::default()).unwrap();
        let vars = [
            ("ONAIR_REACH_PORT_MAPPING".to_string(), "off".to_string()),
            ("ONAIR_REACH_STUN_SERVERS".to_string(), "11.77.0.50:3478".to_string()),
            ("ONAIR_REACH_LEASE_S".to_string(), "600".to_string()),
        ];
        apply_env(&mut value, "ONAIR", vars).unwrap();
        let c: Config = value.try_into().unwrap();
        assert!(!c.reach.port_mapping);
        assert_eq!(c.reach.stun_servers, ["11.77.0.50:3478"]);
        assert_eq!(c.reach.lease_s, 600);
    }
}
