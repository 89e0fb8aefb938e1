//! What both front ends (the `onair` CLI and the desktop app) do around [`crate::Engine::start`],
//! written once: the log filter (`ONAIR_LOG`), the secrets (OS keyring or `ONAIR_*` overrides),
//! the data directory, the public URLs people are given (viewer, embed, LL-HLS, WHEP, the RTMP
//! server for OBS) and how long an OBS stream key stays valid.
//!
//! With `hls.public_base_url` (a CDN or caching proxy in front), the LL-HLS link names that base.
//!
//! Host names and ports are parsed by [`crate::net::HostPort`] only. `public_host` names the host
//! viewers and OBS reach; a port on it is the HTTP port (a reverse proxy on :80, say) and OBS is
//! always given the RTMP port. Without `public_host`, a listener bound to a wildcard address
//! (`0.0.0.0`, `::`) is advertised at this machine's LAN address, one bound to a specific address
//! at that address.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;

use crate::net::{self, HostPort};
use crate::obs::{ObsError, ObsSettings};
use crate::secrets::{
    KEYRING_NAME, SIGNING_KEY_ENV, SecretError, SecretStore, SigningKey, TURN_SECRET, TURN_SECRET_ENV,
};
use crate::{Config, Secrets};

/// The environment variable with the log filter (`tracing` `EnvFilter` syntax).
pub const LOG_ENV: &str = "ONAIR_LOG";
/// The log filter without `ONAIR_LOG`: info, minus a warning rtc's DTLS layer prints for every
/// WebRTC session (`conn.remote_addr is empty`, expected with our single-port sockets); minus
/// matrix-sdk's info line per sync and warning per failed request (OnAir reports the Matrix state
/// itself); minus obws' warning about the version override OnAir uses for OBS 28–30.1 after
/// checking the version itself.
pub const DEFAULT_LOG: &str =
    "info,rtc_dtls::config=error,matrix_sdk=warn,matrix_sdk_base=warn,matrix_sdk::http_client=off,obws=error";
/// Logs in to Matrix once when the keyring holds no session yet; used once, never stored.
pub const MATRIX_PASSWORD_ENV: &str = "ONAIR_MATRIX_PASSWORD";
/// How long the OBS stream keys the front ends hand out can start new publishes.
pub const KEY_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// What the streamer must do about the OS firewall, where it asks: Windows Defender Firewall
/// shows its "allow access" question the first time OnAir listens, and only the networks ticked
/// there can reach OnAir. `None` on systems that do not ask.
pub const FIREWALL_NOTE: Option<&str> = if cfg!(windows) {
    Some(
        "Windows Firewall asks once whether OnAir may use the network: tick both Private and Public \
         networks and choose Allow, or viewers and OBS on other machines cannot connect. (Changed \
         your mind? Windows Security → Firewall → Allow an app through firewall → OnAir.)",
    )
} else {
    None
};

/// Why a front end cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "webrtc.turn_urls are set but no TURN secret was given: store it in the OS keyring \
         (entry {TURN_SECRET:?}) or set {TURN_SECRET_ENV}"
    )]
    NoTurnSecret,
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
}

// ---------- logs ----------

/// The filter for `value` (the `ONAIR_LOG` variable, if set): it, else [`DEFAULT_LOG`]. An
/// unusable `value` also gives the warning to log once logging runs.
pub fn log_filter(value: Option<&str>) -> (EnvFilter, Option<String>) {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (EnvFilter::new(DEFAULT_LOG), None),
        Some(v) => match EnvFilter::try_new(v) {
            Ok(filter) => (filter, None),
            Err(e) => {
                (EnvFilter::new(DEFAULT_LOG), Some(format!("ignoring {LOG_ENV}={v:?} ({e}); logging {DEFAULT_LOG:?}")))
            }
        },
    }
}

/// Logs to stderr with [`log_filter`] of `ONAIR_LOG`. Call once, first thing in `main`.
pub fn init_logging() {
    let (filter, warning) = log_filter(std::env::var(LOG_ENV).ok().as_deref());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
}

// ---------- secrets ----------

/// The stream signing key: `ONAIR_SIGNING_KEY`, else `store`'s entry (generated and saved on
/// first use). Logs where it came from, never the key. Blocks (the keyring): call before the
/// async runtime starts or in `spawn_blocking`.
pub fn signing_key(store: &dyn SecretStore) -> Result<SigningKey, StartupError> {
    signing_key_with(store, &env)
}

/// Everything [`crate::Engine::start`] needs besides the config: the signing key, the TURN
/// secret when `config` uses TURN (`ONAIR_TURN_SECRET`, else the keyring; never generated: it
/// must match the TURN server's), the Matrix password for a first login (`ONAIR_MATRIX_PASSWORD`)
/// and `store` for the Matrix session. Blocks like [`signing_key`].
pub fn resolve_secrets(config: &Config, store: Arc<dyn SecretStore>) -> Result<Secrets, StartupError> {
    resolve_secrets_with(config, store, &env)
}

/// Where an optional secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// Its environment variable.
    Environment,
    /// Its OS keyring entry.
    Keyring,
    /// Neither holds it.
    None,
}

/// A secret that may be absent (the obs-websocket password, say): the environment variable
/// `var` when set, else `store`'s `entry`. Blocks like [`signing_key`].
pub fn optional_secret(
    store: &dyn SecretStore,
    var: &str,
    entry: &str,
) -> Result<(Option<String>, SecretSource), SecretError> {
    optional_secret_with(store, var, entry, &env)
}

fn optional_secret_with(
    store: &dyn SecretStore,
    var: &str,
    entry: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Option<String>, SecretSource), SecretError> {
    if let Some(v) = env(var) {
        return Ok((Some(v), SecretSource::Environment));
    }
    Ok(match store.get(entry)?.filter(|v| !v.is_empty()) {
        Some(v) => (Some(v), SecretSource::Keyring),
        None => (None, SecretSource::None),
    })
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn signing_key_with(store: &dyn SecretStore, env: &dyn Fn(&str) -> Option<String>) -> Result<SigningKey, StartupError> {
    if let Some(v) = env(SIGNING_KEY_ENV) {
        tracing::info!("stream signing key from the {SIGNING_KEY_ENV} environment variable");
        return Ok(SigningKey::new(v));
    }
    let (key, generated) = SigningKey::from_store(store)?;
    let how = if generated { " (generated now)" } else { "" };
    tracing::info!("stream signing key from {KEYRING_NAME}{how}");
    Ok(key)
}

fn resolve_secrets_with(
    config: &Config,
    store: Arc<dyn SecretStore>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secrets, StartupError> {
    let signing_key = signing_key_with(&*store, env)?;
    let turn_secret = if config.webrtc.turn_urls.is_empty() {
        None
    } else {
        let (secret, _) = optional_secret_with(&*store, TURN_SECRET_ENV, TURN_SECRET, env)?;
        Some(secret.ok_or(StartupError::NoTurnSecret)?)
    };
    let matrix_password = env(MATRIX_PASSWORD_ENV);
    Ok(Secrets { signing_key, turn_secret, store, matrix_password })
}

// ---------- data directory ----------

/// Creates the configured data directory (and its parents); returns it.
pub fn create_data_dir(config: &Config) -> Result<PathBuf, StartupError> {
    let path = config.data_dir();
    std::fs::create_dir_all(&path).map_err(|source| StartupError::DataDir { path: path.clone(), source })?;
    Ok(path)
}

// ---------- key validity ----------

/// Epoch milliseconds `validity` after `now`: the expiry of a key handed out at `now`.
pub fn expires_ms(now: SystemTime, validity: Duration) -> u64 {
    (now + validity).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

// ---------- public URLs ----------

/// `rtmp://HOST:PORT/<app>`, OBS' "Server": `host`'s own port if it has one, else `rtmp_port`.
pub fn rtmp_server(host: &HostPort, rtmp_port: u16, app: &str) -> String {
    format!("rtmp://{}/{app}", host.authority(rtmp_port))
}

/// The links to this engine that people are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    http_base: String,
    rtmp_server: String,
    public_host_configured: bool,
    /// The plain-HTTP base and RTMP server, kept when HTTPS/RTMPS links replace them.
    plain_http_base: String,
    plain_rtmp_server: String,
    /// `hls.public_base_url`: where players load HLS from, instead of `http_base`.
    hls_base: Option<String>,
}

impl PublicUrls {
    /// The URLs of an engine with `config` listening on `http` and `rtmp` (the bound addresses,
    /// or the configured ones when it is not running).
    pub fn new(config: &Config, http: SocketAddr, rtmp: SocketAddr) -> Self {
        Self::resolve(config.public_host.as_ref(), http, rtmp, &config.app, net::lan_ip)
            .with_hls_base(config.hls.public_base())
    }

    /// With `base` (`hls.public_base_url`, no trailing `/`), the LL-HLS link is
    /// `<base>/live/<stream>/llhls.m3u8`.
    pub fn with_hls_base(mut self, base: Option<&str>) -> Self {
        self.hls_base = base.map(str::to_owned);
        self
    }

    /// [`PublicUrls::new`] with the LAN address given by `lan` (asked only for wildcard binds).
    pub fn resolve(
        public_host: Option<&HostPort>,
        http: SocketAddr,
        rtmp: SocketAddr,
        app: &str,
        lan: impl Fn() -> IpAddr,
    ) -> Self {
        let (http_host, rtmp_host) = match public_host {
            Some(p) => (p.clone(), HostPort { host: p.host.clone(), port: None }),
            None => (
                HostPort { host: net::reachable_host(http.ip(), &lan), port: None },
                HostPort { host: net::reachable_host(rtmp.ip(), &lan), port: None },
            ),
        };
        let http_base = format!("http://{}", http_host.authority(http.port()));
        let rtmp_server = rtmp_server(&rtmp_host, rtmp.port(), app);
        PublicUrls {
            plain_http_base: http_base.clone(),
            plain_rtmp_server: rtmp_server.clone(),
            http_base,
            rtmp_server,
            public_host_configured: public_host.is_some(),
            hls_base: None,
        }
    }

    /// With `[tls]` on: the links become `https://<host>:<https port>` (no `:443`) and OBS'
    /// server `rtmps://<host>:<rtmps port>/<app>` (when RTMPS listens), where the host is
    /// `tls.domain`, else `public_host`'s, else that of the plain links. The plain ones stay at
    /// [`PublicUrls::plain_http_base`] and [`PublicUrls::plain_rtmp_server`].
    pub fn with_tls(
        mut self,
        tls: &crate::config::TlsSettings,
        https_port: u16,
        rtmps_port: Option<u16>,
        app: &str,
    ) -> Self {
        if tls.mode == crate::config::TlsMode::Off {
            return self;
        }
        let host = match tls.domain.trim() {
            "" => authority_host(&self.plain_http_base),
            d => d.to_ascii_lowercase(),
        };
        self.http_base = crate::tls::https_base(&host, https_port);
        if let Some(port) = rtmps_port {
            self.rtmp_server = crate::tls::rtmps_server(&host, port, app);
        }
        self
    }

    /// `http://host:port` of the plain HTTP listener (the LAN link), no trailing slash.
    pub fn plain_http_base(&self) -> &str {
        &self.plain_http_base
    }

    /// `rtmp://host:port/<app>`: plain RTMP, also when RTMPS is offered.
    pub fn plain_rtmp_server(&self) -> &str {
        &self.plain_rtmp_server
    }

    /// `http://host:port` (`https://…` with TLS on), no trailing slash.
    pub fn http_base(&self) -> &str {
        &self.http_base
    }

    /// Whether `public_host` is configured (else the links hold the LAN address: reachable from
    /// this network only).
    pub fn public_host_configured(&self) -> bool {
        self.public_host_configured
    }

    /// The viewer page.
    pub fn viewer(&self, stream: &str) -> String {
        format!("{}/{stream}", self.http_base)
    }

    /// The page to embed in an `<iframe>`.
    pub fn embed(&self, stream: &str) -> String {
        format!("{}/embed/{stream}", self.http_base)
    }

    /// The LL-HLS playlist: at `hls.public_base_url` when set.
    pub fn llhls(&self, stream: &str) -> String {
        format!("{}/live/{stream}/llhls.m3u8", self.hls_base.as_deref().unwrap_or(&self.http_base))
    }

    /// The WHEP endpoint (WebRTC playback).
    pub fn whep(&self, stream: &str) -> String {
        format!("{}/live/{stream}/whep", self.http_base)
    }

    /// OBS' "Server": `rtmp://host:port/<app>` (`rtmps://…` with RTMPS on).
    pub fn rtmp_server(&self) -> &str {
        &self.rtmp_server
    }

    /// OBS settings for `stream` at [`PublicUrls::rtmp_server`], the key valid until
    /// `expires_ms` (see [`expires_ms`]).
    pub fn obs_settings(&self, key: &SigningKey, stream: &str, expires_ms: u64) -> Result<ObsSettings, ObsError> {
        ObsSettings::new(key, &self.rtmp_server, stream, expires_ms)
    }
}

/// The host of `scheme://host:port` as it goes in a URL (IPv6 in brackets).
fn authority_host(base: &str) -> String {
    let authority = base.split_once("://").map_or(base, |(_, a)| a);
    match authority.parse::<HostPort>() {
        Ok(hp) => hp.host.in_url(),
        Err(_) => authority.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::MemoryStore;

    #[test]
    fn tls_links_are_https_and_rtmps_and_the_plain_ones_stay() {
        let mut tls = crate::config::TlsSettings::default();
        let u = urls("", "0.0.0.0:8080", "0.0.0.0:1935");
        assert_eq!(u.clone().with_tls(&tls, 8443, Some(1936), "live"), u, "TLS off changes nothing");
        tls.mode = crate::config::TlsMode::Acme;
        tls.domain = "TV.example.org".into();
        let t = u.clone().with_tls(&tls, 443, Some(1936), "live");
        assert_eq!(t.viewer("s"), "https://tv.example.org/s");
        assert_eq!(t.embed("s"), "https://tv.example.org/embed/s");
        assert_eq!(t.llhls("s"), "https://tv.example.org/live/s/llhls.m3u8");
        assert_eq!(t.whep("s"), "https://tv.example.org/live/s/whep");
        assert_eq!(t.rtmp_server(), "rtmps://tv.example.org:1936/live");
        assert_eq!(t.plain_http_base(), "http://192.168.1.20:8080");
        assert_eq!(t.plain_rtmp_server(), "rtmp://192.168.1.20:1935/live");
        let t = u.clone().with_tls(&tls, 8443, None, "live");
        assert_eq!(t.http_base(), "https://tv.example.org:8443");
        assert_eq!(t.rtmp_server(), "rtmp://192.168.1.20:1935/live", "no RTMPS: plain RTMP for OBS");
        tls.mode = crate::config::TlsMode::File;
        tls.domain = String::new();
        let t = urls("[::1]:8080", "[::]:8080", "[::]:1935").with_tls(&tls, 8443, Some(1936), "live");
        assert_eq!(t.http_base(), "https://[::1]:8443");
        assert_eq!(t.rtmp_server(), "rtmps://[::1]:1936/live");
    }

    const LAN: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));

    fn urls(public_host: &str, http: &str, rtmp: &str) -> PublicUrls {
        let public_host = (!public_host.is_empty()).then(|| public_host.parse::<HostPort>().unwrap());
        PublicUrls::resolve(public_host.as_ref(), http.parse().unwrap(), rtmp.parse().unwrap(), "live", || LAN)
    }

    #[test]
    fn wildcard_binds_are_advertised_at_the_lan_address() {
        let u = urls("", "0.0.0.0:8080", "0.0.0.0:1935");
        assert_eq!(u.http_base(), "http://192.168.1.20:8080");
        assert_eq!(u.viewer("show"), "http://192.168.1.20:8080/show");
        assert_eq!(u.embed("show"), "http://192.168.1.20:8080/embed/show");
        assert_eq!(u.llhls("show"), "http://192.168.1.20:8080/live/show/llhls.m3u8");
        assert_eq!(u.whep("show"), "http://192.168.1.20:8080/live/show/whep");
        assert_eq!(u.rtmp_server(), "rtmp://192.168.1.20:1935/live");
        assert!(!u.public_host_configured());
        assert_eq!(urls("", "[::]:8080", "[::]:1935").rtmp_server(), "rtmp://192.168.1.20:1935/live");
    }

    #[test]
    fn default_config_gives_the_default_ports_at_the_lan_address() {
        let c = Config::default();
        let u = PublicUrls::resolve(c.public_host.as_ref(), c.http, c.rtmp, &c.app, || LAN);
        assert_eq!(u.viewer("stream"), "http://192.168.1.20:8080/stream");
        assert_eq!(u.rtmp_server(), "rtmp://192.168.1.20:1935/live");
    }

    #[test]
    fn specific_binds_are_advertised_as_bound() {
        let u = urls("", "127.0.0.1:9000", "[::1]:1936");
        assert_eq!(u.viewer("s"), "http://127.0.0.1:9000/s");
        assert_eq!(u.rtmp_server(), "rtmp://[::1]:1936/live");
        let u = urls("", "[2001:db8::5]:8080", "10.0.0.2:1935");
        assert_eq!(u.whep("s"), "http://[2001:db8::5]:8080/live/s/whep");
        assert_eq!(u.rtmp_server(), "rtmp://10.0.0.2:1935/live");
    }

    #[test]
    fn public_host_wins_and_its_port_is_the_http_one() {
        let u = urls("tv.example.org", "0.0.0.0:8080", "0.0.0.0:1935");
        assert_eq!(u.viewer("s"), "http://tv.example.org:8080/s");
        assert_eq!(u.rtmp_server(), "rtmp://tv.example.org:1935/live");
        assert!(u.public_host_configured());
        let u = urls("tv.example.org:80", "0.0.0.0:8080", "0.0.0.0:1935");
        assert_eq!(u.viewer("s"), "http://tv.example.org:80/s");
        assert_eq!(u.rtmp_server(), "rtmp://tv.example.org:1935/live", "OBS gets the RTMP port");
        // IPv6, bare or bracketed, with and without a port.
        assert_eq!(urls("::1", "0.0.0.0:8080", "0.0.0.0:1935").viewer("s"), "http://[::1]:8080/s");
        assert_eq!(urls("[::1]:8080", "[::]:9", "[::]:1935").viewer("s"), "http://[::1]:8080/s");
        let u = urls("[2001:db8::1]:81", "0.0.0.0:8080", "0.0.0.0:1940");
        assert_eq!(u.embed("s"), "http://[2001:db8::1]:81/embed/s");
        assert_eq!(u.rtmp_server(), "rtmp://[2001:db8::1]:1940/live");
        assert_eq!(
            urls("203.0.113.7", "127.0.0.1:8080", "127.0.0.1:1935").llhls("s"),
            "http://203.0.113.7:8080/live/s/llhls.m3u8"
        );
    }

    #[test]
    fn the_llhls_link_names_the_public_base_url() {
        let mut config = Config::default();
        config.hls.public_base_url = "https://cdn.example.org/tv/".into();
        let u = PublicUrls::new(&config, "127.0.0.1:8080".parse().unwrap(), "127.0.0.1:1935".parse().unwrap());
        assert_eq!(u.llhls("s"), "https://cdn.example.org/tv/live/s/llhls.m3u8");
        assert_eq!(u.viewer("s"), "http://127.0.0.1:8080/s", "the pages stay on OnAir");
        assert_eq!(u.whep("s"), "http://127.0.0.1:8080/live/s/whep");
        let tls = crate::config::TlsSettings {
            mode: crate::config::TlsMode::Acme,
            domain: "tv.example.org".into(),
            ..Default::default()
        };
        let t = u.with_tls(&tls, 443, None, "live");
        assert_eq!(t.llhls("s"), "https://cdn.example.org/tv/live/s/llhls.m3u8");
        assert_eq!(t.viewer("s"), "https://tv.example.org/s");
    }

    #[test]
    fn an_explicit_rtmp_host_keeps_its_port() {
        let h = |s: &str| s.parse::<HostPort>().unwrap();
        assert_eq!(rtmp_server(&h("h:1940"), 1935, "live"), "rtmp://h:1940/live");
        assert_eq!(rtmp_server(&h("h"), 1935, "live"), "rtmp://h:1935/live");
        assert_eq!(rtmp_server(&h("::1"), 1935, "app"), "rtmp://[::1]:1935/app");
        assert_eq!(rtmp_server(&h("[::1]:1"), 1935, "app"), "rtmp://[::1]:1/app");
    }

    #[test]
    fn obs_settings_sign_the_advertised_server_until_the_expiry() {
        let u = urls("", "0.0.0.0:8080", "0.0.0.0:1935");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expires = expires_ms(now, KEY_VALIDITY);
        assert_eq!(expires, (1_000_000 + 365 * 86_400) * 1000);
        let s = u.obs_settings(&SigningKey::new("k"), "show", expires).unwrap();
        assert_eq!(s.server, "rtmp://192.168.1.20:1935/live");
        assert_eq!(s.expires_ms, expires);
        let policy = onair_policy::verify(b"k", &s.url, LAN, 1_000_000_000).unwrap();
        assert_eq!(policy.url_expire, expires);
        assert_eq!(expires_ms(UNIX_EPOCH - Duration::from_secs(10), Duration::ZERO), 0, "before 1970");
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_environment_key_wins_over_the_keyring() {
        let store = Arc::new(MemoryStore::default());
        store.set(crate::secrets::SIGNING_KEY, "from-keyring").unwrap();
        let env = |v: &str| (v == SIGNING_KEY_ENV).then(|| "from-env".to_string());
        let s = resolve_secrets_with(&Config::default(), store.clone(), &env).unwrap();
        assert_eq!(s.signing_key.as_bytes(), b"from-env");
        let s = resolve_secrets_with(&Config::default(), store, &no_env).unwrap();
        assert_eq!(s.signing_key.as_bytes(), b"from-keyring");
        assert!(s.turn_secret.is_none() && s.matrix_password.is_none());
    }

    #[test]
    fn a_key_is_generated_once_in_an_empty_keyring() {
        let store = Arc::new(MemoryStore::default());
        let a = resolve_secrets_with(&Config::default(), store.clone(), &no_env).unwrap().signing_key;
        let b = signing_key_with(&*store, &no_env).unwrap();
        assert_eq!(a.as_bytes().len(), 32);
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    /// A keyring that cannot be reached (no Secret Service on the session bus).
    struct NoKeyring;

    impl SecretStore for NoKeyring {
        fn get(&self, entry: &str) -> Result<Option<String>, SecretError> {
            Err(SecretError::Unavailable { entry: entry.into(), reason: "no D-Bus session".into() })
        }
        fn set(&self, entry: &str, _: &str) -> Result<(), SecretError> {
            self.get(entry).map(|_| ())
        }
        fn delete(&self, entry: &str) -> Result<(), SecretError> {
            self.get(entry).map(|_| ())
        }
    }

    #[test]
    fn no_keyring_says_how_to_fix_it_and_the_environment_is_enough() {
        let e = resolve_secrets_with(&Config::default(), Arc::new(NoKeyring), &no_env).unwrap_err().to_string();
        assert!(e.contains("no OS keyring is reachable") && e.contains(SIGNING_KEY_ENV), "{e}");
        let env = |v: &str| (v == SIGNING_KEY_ENV).then(|| "k".to_string());
        assert!(resolve_secrets_with(&Config::default(), Arc::new(NoKeyring), &env).is_ok());
    }

    #[test]
    fn turn_needs_its_secret_and_matrix_its_password_once() {
        let mut config = Config::default();
        config.webrtc.turn_urls = vec!["turn:turn.example.org:3478".into()];
        let store = Arc::new(MemoryStore::default());
        let e = resolve_secrets_with(&config, store.clone(), &no_env).unwrap_err();
        assert!(matches!(e, StartupError::NoTurnSecret), "{e}");
        assert!(e.to_string().contains(TURN_SECRET_ENV) && e.to_string().contains(TURN_SECRET), "{e}");
        store.set(TURN_SECRET, "t-keyring").unwrap();
        assert_eq!(
            resolve_secrets_with(&config, store.clone(), &no_env).unwrap().turn_secret.as_deref(),
            Some("t-keyring")
        );
        let env = |v: &str| match v {
            TURN_SECRET_ENV => Some("t-env".to_string()),
            MATRIX_PASSWORD_ENV => Some("pw".to_string()),
            _ => None,
        };
        let s = resolve_secrets_with(&config, store, &env).unwrap();
        assert_eq!(s.turn_secret.as_deref(), Some("t-env"));
        assert_eq!(s.matrix_password.as_deref(), Some("pw"));
    }

    #[test]
    fn optional_secrets_say_where_they_came_from() {
        let store = MemoryStore::default();
        let env = |v: &str| (v == "X_ENV").then(|| "from-env".to_string());
        let get = |env: &dyn Fn(&str) -> Option<String>| optional_secret_with(&store, "X_ENV", "x", env).unwrap();
        assert_eq!(get(&no_env), (None, SecretSource::None));
        store.set("x", "").unwrap();
        assert_eq!(get(&no_env), (None, SecretSource::None), "an empty entry is none");
        store.set("x", "from-keyring").unwrap();
        assert_eq!(get(&no_env), (Some("from-keyring".into()), SecretSource::Keyring));
        assert_eq!(get(&env), (Some("from-env".into()), SecretSource::Environment));
        assert!(optional_secret_with(&NoKeyring, "X_ENV", "x", &no_env).is_err());
        assert_eq!(serde_json::to_value(SecretSource::Environment).unwrap(), "environment");
    }

    #[test]
    fn log_filter_defaults_and_explains_a_bad_one() {
        assert_eq!(log_filter(None).0.to_string(), EnvFilter::new(DEFAULT_LOG).to_string());
        assert_eq!(log_filter(Some("  ")).0.to_string(), EnvFilter::new(DEFAULT_LOG).to_string());
        let (f, warning) = log_filter(Some("onair_engine=debug"));
        assert_eq!((f.to_string(), warning), ("onair_engine=debug".to_string(), None));
        let (f, warning) = log_filter(Some("onair_engine=loud"));
        assert_eq!(f.to_string(), EnvFilter::new(DEFAULT_LOG).to_string());
        let warning = warning.expect("a warning");
        assert!(warning.contains("ONAIR_LOG=\"onair_engine=loud\""), "{warning}");
    }

    #[test]
    fn data_dir_is_created_or_the_error_names_it() {
        let base = std::env::temp_dir().join(format!("onair-startup-{}", std::process::id()));
        let config = Config { data_dir: base.join("a/b"), ..Config::default() };
        assert_eq!(create_data_dir(&config).unwrap(), base.join("a/b"));
        assert!(base.join("a/b").is_dir());
        std::fs::write(base.join("file"), b"").unwrap();
        let config = Config { data_dir: base.join("file/x"), ..Config::default() };
        let e = create_data_dir(&config).unwrap_err().to_string();
        assert!(e.contains("file/x"), "{e}");
        std::fs::remove_dir_all(&base).ok();
    }
}
