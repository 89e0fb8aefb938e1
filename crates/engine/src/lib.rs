//! The OnAir engine: RTMP ingest with signed publish URLs → one hub per stream → in-memory
//! LL-HLS/HLS and WebRTC (WHEP, all viewers on one UDP port) → HTTP (playlists, WHEP, status API,
//! viewer and embed pages).
//!
//! Front ends (the `onair` CLI, the tray app) resolve configuration and secrets, then call
//! [`Engine::start`] and keep the handle; [`Engine::shutdown`] stops everything cleanly. What the
//! streamer does while it runs (Go live, titles, chat) goes through [`Engine::control`].

pub mod acme;
pub mod budget;
pub mod config;
pub mod control;
pub mod control_api;
pub mod error;
pub mod events;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod obs;
pub mod reach;
pub mod restream;
pub mod rtmp;
pub mod secrets;
pub mod serve;
pub mod startup;
pub mod stats;
pub mod status;
pub mod tls;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::Config;
pub use control::{Control, ControlError};
pub use events::{EndReason, EngineEvent};
pub use hub::Registry;
pub use onair_webrtc::WebrtcServer;
pub use secrets::SigningKey;

/// A name a stream may have: 1–64 ASCII letters, digits, `-` or `_`, and not a route of ours.
pub fn is_valid_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !matches!(name, "api" | "live" | "embed" | "assets" | "healthz" | "metrics")
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot start WebRTC: {0}")]
    Webrtc(#[from] onair_webrtc::WebrtcError),
    #[error("webrtc.turn_urls are set but no TURN secret was given (keyring entry `turn-secret` or ONAIR_TURN_SECRET)")]
    NoTurnSecret,
    #[error("cannot write the control API file {path}: {source}")]
    ControlFile { path: std::path::PathBuf, source: std::io::Error },
}

/// The secrets a front end resolves (OS keyring, environment) before starting the engine.
#[derive(Clone)]
pub struct Secrets {
    pub signing_key: SigningKey,
    /// coturn `use-auth-secret` shared secret, needed only with `webrtc.turn_urls`.
    pub turn_secret: Option<String>,
    /// Where the Matrix session is kept (the OS keyring in the front ends).
    pub store: Arc<dyn secrets::SecretStore>,
    /// Logs in to Matrix when `store` holds no session yet (`ONAIR_MATRIX_PASSWORD`); used once,
    /// never stored.
    pub matrix_password: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl From<SigningKey> for Secrets {
    /// Only a signing key: no TURN, Matrix sessions kept in memory.
    fn from(signing_key: SigningKey) -> Self {
        Secrets {
            signing_key,
            turn_secret: None,
            store: Arc::new(secrets::MemoryStore::default()),
            matrix_password: None,
        }
    }
}

/// A running engine.
pub struct Engine {
    http_addr: SocketAddr,
    rtmp_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    rtmps_addr: Option<SocketAddr>,
    registry: Arc<Registry>,
    control: Arc<Control>,
    refusals: Arc<limits::Refusals>,
    http_server: Arc<serve::HttpServer>,
    rtmp_limits: rtmp::RtmpLimits,
    config: Config,
    signing_key: SigningKey,
    urls: startup::PublicUrls,
    webrtc: Option<onair_webrtc::WebrtcServer>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Binds the HTTP, RTMP and WebRTC listeners and starts serving.
    pub async fn start(config: Config, secrets: Secrets) -> Result<Engine, EngineError> {
        let Secrets { signing_key, turn_secret, store, matrix_password } = secrets;
        if !config.webrtc.turn_urls.is_empty() && turn_secret.is_none() {
            return Err(EngineError::NoTurnSecret);
        }
        raise_open_files_limit(&config.limits);
        let http =
            net::listen(config.http).map_err(|source| EngineError::Bind { what: "HTTP", addr: config.http, source })?;
        let rtmp =
            net::listen(config.rtmp).map_err(|source| EngineError::Bind { what: "RTMP", addr: config.rtmp, source })?;
        let http_addr = http.local_addr().expect("bound");
        let rtmp_addr = rtmp.local_addr().expect("bound");
        // ---- [tls]: listeners and the certificate in use (set by the manager task below) ----
        let tls = &config.tls;
        let (https, rtmps) = if tls.mode == config::TlsMode::Off {
            (None, None)
        } else {
            let https = net::listen(tls.https).map_err(|source| EngineError::Bind {
                what: "HTTPS",
                addr: tls.https,
                source,
            })?;
            let rtmps = match tls.rtmps_addr() {
                Some(addr) => {
                    Some(net::listen(addr).map_err(|source| EngineError::Bind { what: "RTMPS", addr, source })?)
                }
                None => None,
            };
            (Some(https), rtmps)
        };
        let https_addr = https.as_ref().map(|l| l.local_addr().expect("bound"));
        let rtmps_addr = rtmps.as_ref().map(|l| l.local_addr().expect("bound"));
        let cert_resolver = Arc::new(tls::CertResolver::default());
        let challenges = acme::Challenges::default();
        let urls = startup::PublicUrls::new(&config, http_addr, rtmp_addr).with_tls(
            &config.tls,
            https_addr.map_or(0, |a| config.tls.link_port(a.port())),
            rtmps_addr.map(|a| a.port()),
            &config.app,
        );
        let registry = Registry::new(config.hls.packager_config());
        let refusals = Arc::new(limits::Refusals::default());
        registry.set_require_go_live(config.require_go_live);
        registry.set_publish_grace(std::time::Duration::from_secs(config.publish_grace_s));
        let (shutdown, _) = watch::channel(false);

        let ingest = Arc::new(rtmp::IngestContext {
            registry: registry.clone(),
            signing_key: signing_key.clone(),
            app: config.app.clone(),
        });
        let rtmp_limits = rtmp::RtmpLimits::new(&config.limits, refusals.clone());
        let mut tasks = Vec::new();
        if let Some(rtmps) = rtmps {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(cert_resolver.clone(), &[]));
            tasks.push(tokio::spawn(rtmp::serve_tls(
                rtmps,
                ingest.clone(),
                rtmp_limits.clone(),
                acceptor,
                shutdown.subscribe(),
            )));
        }
        let rtmp_task = tokio::spawn(rtmp::serve(rtmp, ingest, rtmp_limits.clone(), shutdown.subscribe()));

        let webrtc = if config.webrtc.enabled {
            let (w, l) = (&config.webrtc, &config.limits);
            let server = onair_webrtc::WebrtcServer::start(onair_webrtc::WebrtcConfig {
                udp: w.udp,
                tcp: w.ice_tcp.then_some(w.tcp),
                public_ips: w.public_ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                ice_servers: Vec::new(),
                limits: onair_webrtc::WebrtcLimits {
                    sessions: l.webrtc_sessions,
                    sessions_per_stream: l.webrtc_sessions_per_stream,
                    sessions_per_ip: l.webrtc_sessions_per_ip,
                    connecting: l.webrtc_connecting,
                    ice_tcp_connections: l.ice_tcp_connections,
                    retry_after: std::time::Duration::from_secs(l.retry_after_s),
                    ..Default::default()
                },
            })
            .await?;
            info!(udp = %server.udp_addr(), tcp = ?server.tcp_addr(), "WebRTC (WHEP) ready");
            Some(server)
        } else {
            None
        };
        let ice = http::IceSettings {
            stun_urls: config.webrtc.stun_urls.clone(),
            turn_urls: config.webrtc.turn_urls.clone(),
            turn_secret,
            turn_ttl: std::time::Duration::from_secs(config.webrtc.turn_ttl_s),
        };
        let data_dir = config.data_dir();
        let tls_store = store.clone();
        let restream =
            restream::Restream::start(&config.restream, registry.clone(), store.clone(), config.file.clone());
        let metrics = Arc::new(metrics::Metrics::new(config.metrics.clone()));
        let budget = Arc::new(budget::BudgetGate::new(&config.budget));
        tasks.push(budget.clone().spawn_sampler(
            metrics.clone(),
            webrtc.clone(),
            restream.clone(),
            shutdown.subscribe(),
        ));
        let control = Control::start(
            control::ControlSetup {
                registry: registry.clone(),
                webrtc: webrtc.clone(),
                default_stream: config.default_stream.clone(),
                viewer_base: urls.http_base().to_owned(),
                data_dir: data_dir.clone(),
                matrix: config.matrix.clone(),
                store,
                restream,
                budget: budget.clone(),
            },
            matrix_password,
        );
        // Local clients (`onair title|chat|status`) find the control API through this file.
        let endpoint = control_api::ControlEndpoint {
            url: format!("http://{}", net::loopback_for(http_addr)),
            token: control_api::new_token(),
        };
        endpoint.write(&data_dir).map_err(|source| EngineError::ControlFile {
            path: control_api::ControlEndpoint::path(&data_dir),
            source,
        })?;
        let app = http::router(http::AppState {
            registry: registry.clone(),
            webrtc: webrtc.clone(),
            ice: Arc::new(ice),
            control: control.clone(),
            control_token: endpoint.token.into(),
            refusals: refusals.clone(),
            metrics: metrics.clone(),
            reload_waiters: Arc::new(http::ReloadWaiters::new(&config.limits)),
            hls: Arc::new(http::HlsHttp::new(&config.hls)),
            budget: budget.clone(),
        });
        let web_tls = https_addr.map(|a| {
            Arc::new(tls::WebTls {
                resolver: cert_resolver.clone(),
                challenges: challenges.clone(),
                hsts: config.tls.hsts,
                https_port: config.tls.link_port(a.port()),
                acceptor: tokio_rustls::TlsAcceptor::from(tls::server_config(cert_resolver.clone(), &[b"http/1.1"])),
            })
        });
        let http_server = serve::HttpServer::new_with_tls(&config.limits, refusals.clone(), web_tls);
        if let (Some(https), Some(https_addr)) = (https, https_addr) {
            tasks.push(tokio::spawn(http_server.clone().serve_https(https, app.clone(), shutdown.subscribe())));
            let manager = tls::CertManager {
                settings: config.tls.clone(),
                data_dir: data_dir.clone(),
                resolver: cert_resolver,
                challenges,
                store: tls_store,
                control: control.clone(),
                https_port: https_addr.port(),
                rtmps_port: rtmps_addr.map(|a| a.port()),
            };
            tasks.push(tokio::spawn(manager.run(shutdown.subscribe())));
            info!(%https_addr, ?rtmps_addr, mode = config.tls.mode.as_str(), "HTTPS listening");
        }
        let http_task = tokio::spawn(http_server.clone().serve(http, app, shutdown.subscribe()));
        tasks.push(rtmp_task);
        tasks.push(http_task);
        // Port mapping and the public address; ends (mappings removed) on shutdown. The public
        // link is the configured host's or the HTTPS domain's when there is one (else reach
        // makes it from the public address it learns).
        let named = config.public_host.is_some() || (https_addr.is_some() && !config.tls.domain.trim().is_empty());
        let public_base = named.then(|| urls.http_base().to_owned());
        let mut reach =
            reach::ReachSetup::new(&config, http_addr, rtmp_addr, public_base, webrtc.as_ref(), control.clone());
        if let Some(a) = https_addr {
            reach.ports.insert(1, reach::Port::new("HTTPS", reach::Protocol::Tcp, a));
        }
        if let (Some(a), true) = (rtmps_addr, config.reach.map_rtmp) {
            reach.ports.push(reach::Port::new("RTMPS", reach::Protocol::Tcp, a));
        }
        tasks.push(reach::start(reach, shutdown.subscribe()));
        info!(%http_addr, %rtmp_addr, "engine started");
        Ok(Engine {
            http_addr,
            rtmp_addr,
            https_addr,
            rtmps_addr,
            registry,
            control,
            refusals,
            http_server,
            rtmp_limits,
            config,
            signing_key,
            urls,
            webrtc,
            shutdown,
            tasks,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp_addr
    }

    /// The HTTPS listener, when `[tls]` is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The RTMPS listener, when `[tls]` is on with `rtmps` set.
    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        self.rtmps_addr
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Clients refused by the limits of `[limits]`, by reason.
    pub fn refusals(&self) -> &Arc<limits::Refusals> {
        &self.refusals
    }

    /// HTTP connections open now (bounded by `limits.http_connections`).
    pub fn http_connections(&self) -> usize {
        self.http_server.connections()
    }

    /// HTTP requests being answered now (bounded by `limits.http_in_flight`).
    pub fn http_in_flight(&self) -> usize {
        self.http_server.in_flight()
    }

    /// RTMP connections that have not published yet (bounded by `limits.rtmp_pending`).
    pub fn rtmp_pending(&self) -> usize {
        self.rtmp_limits.pending.in_use()
    }

    /// Go live / End stream, titles, chat, engine events.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The WebRTC server, unless WebRTC is disabled.
    pub fn webrtc(&self) -> Option<&onair_webrtc::WebrtcServer> {
        self.webrtc.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The links people are given: viewer, embed, LL-HLS, WHEP, OBS' RTMP server.
    pub fn urls(&self) -> &startup::PublicUrls {
        &self.urls
    }

    /// OBS settings for `stream`, reachable at `host` (host or host:port, see [`net::HostPort`];
    /// the RTMP port when it has none), valid until `expires_ms` (epoch ms).
    pub fn obs_settings(&self, stream: &str, host: &str, expires_ms: u64) -> Result<obs::ObsSettings, obs::ObsError> {
        let server = startup::rtmp_server(&host.parse()?, self.rtmp_addr.port(), &self.config.app);
        obs::ObsSettings::new(&self.signing_key, &server, stream, expires_ms)
    }

    /// Stops accepting, ends every connection and waits for the servers to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.control.stop();
        for task in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        if let Some(webrtc) = self.webrtc {
            webrtc.shutdown().await;
        }
        info!("engine stopped");
    }
}

/// Makes room for the file descriptors `[limits]` lets clients hold (connections of every kind)
/// plus the engine's own: many desktops start programs with a soft limit of 1024, below the
/// default `http_connections` alone. Raises the soft limit up to the hard one (a no-op where
/// there is no such limit, as on Windows); says so in one line when that is not enough.
fn raise_open_files_limit(limits: &config::LimitsSettings) {
    let needed = (limits.http_connections + limits.rtmp_pending + limits.ice_tcp_connections + 512) as u64;
    match rlimit::increase_nofile_limit(needed) {
        Ok(got) if got < needed => tracing::warn!(
            limit = got,
            needed,
            "the open-files limit is below what [limits] allows: lower limits.http_connections or raise it (ulimit -n)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

/// Waits for Ctrl-C, or SIGTERM on Unix, or on Windows the console window closing or the user
/// signing off / the system shutting down — the events front ends shut down cleanly on; answers
/// which one came.
pub async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let (term, term_name) = (
        async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        },
        "SIGTERM",
    );
    #[cfg(windows)]
    let (term, term_name) = (
        async {
            use tokio::signal::windows::{ctrl_close, ctrl_logoff, ctrl_shutdown};
            match (ctrl_close(), ctrl_logoff(), ctrl_shutdown()) {
                (Ok(mut close), Ok(mut logoff), Ok(mut shutdown)) => {
                    tokio::select! {
                        _ = close.recv() => {}
                        _ = logoff.recv() => {}
                        _ = shutdown.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        },
        "the console closing or Windows signing off",
    );
    #[cfg(not(any(unix, windows)))]
    let (term, term_name) = (std::future::pending::<()>(), "");
    tokio::select! {
        _ = ctrl_c => "interrupt",
        _ = term => term_name,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_names() {
        for ok in ["stream", "my-show_2", "A", &"x".repeat(64)] {
            assert!(super::is_valid_stream_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "a?b",
            "a b",
            "ü",
            "..",
            "api",
            "live",
            "embed",
            "assets",
            "healthz",
            "metrics",
            &"x".repeat(65),
        ] {
            assert!(!super::is_valid_stream_name(bad), "{bad}");
        }
    }
}
