//! The OnAir engine: RTMP ingest with signed publish URLs → one hub per stream → in-memory
//! LL-HLS/HLS and WebRTC (WHEP, all viewers on one UDP port) → HTTP (playlists, WHEP, status API,
//! viewer and embed pages).
//!
//! Front ends (the `onair` CLI, the tray app) resolve configuration and secrets, then call
//! [`Engine::start`] and keep the handle; [`Engine::shutdown`] stops everything cleanly.

pub mod config;
pub mod http;
pub mod hub;
pub mod net;
pub mod obs;
pub mod rtmp;
pub mod secrets;
pub mod stats;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::Config;
pub use hub::Registry;
pub use onair_webrtc::WebrtcServer;
pub use secrets::SigningKey;

/// A name a stream may have: 1–64 ASCII letters, digits, `-` or `_`, and not a route of ours.
pub fn is_valid_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !matches!(name, "api" | "live" | "embed" | "assets" | "healthz")
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot start WebRTC: {0}")]
    Webrtc(#[from] onair_webrtc::WebrtcError),
    #[error("webrtc.turn_urls are set but no TURN secret was given (keyring entry `turn-secret` or ONAIR_TURN_SECRET)")]
    NoTurnSecret,
}

/// The secrets a front end resolves (OS keyring, environment) before starting the engine.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub signing_key: SigningKey,
    /// coturn `use-auth-secret` shared secret, needed only with `webrtc.turn_urls`.
    pub turn_secret: Option<String>,
}

impl From<SigningKey> for Secrets {
    fn from(signing_key: SigningKey) -> Self {
        Secrets { signing_key, turn_secret: None }
    }
}

/// A running engine.
pub struct Engine {
    http_addr: SocketAddr,
    rtmp_addr: SocketAddr,
    registry: Arc<Registry>,
    config: Config,
    signing_key: SigningKey,
    webrtc: Option<onair_webrtc::WebrtcServer>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Binds the HTTP, RTMP and WebRTC listeners and starts serving.
    pub async fn start(config: Config, secrets: Secrets) -> Result<Engine, EngineError> {
        let Secrets { signing_key, turn_secret } = secrets;
        if !config.webrtc.turn_urls.is_empty() && turn_secret.is_none() {
            return Err(EngineError::NoTurnSecret);
        }
        let http = TcpListener::bind(config.http).await.map_err(|source| EngineError::Bind {
            what: "HTTP",
            addr: config.http,
            source,
        })?;
        let rtmp = TcpListener::bind(config.rtmp).await.map_err(|source| EngineError::Bind {
            what: "RTMP",
            addr: config.rtmp,
            source,
        })?;
        let http_addr = http.local_addr().expect("bound");
        let rtmp_addr = rtmp.local_addr().expect("bound");
        let registry = Registry::new(config.hls.packager_config());
        let (shutdown, _) = watch::channel(false);

        let ingest = Arc::new(rtmp::IngestContext {
            registry: registry.clone(),
            signing_key: signing_key.clone(),
            app: config.app.clone(),
        });
        let rtmp_task = tokio::spawn(rtmp::serve(rtmp, ingest, shutdown.subscribe()));

        let webrtc = if config.webrtc.enabled {
            let w = &config.webrtc;
            let server = onair_webrtc::WebrtcServer::start(onair_webrtc::WebrtcConfig {
                udp: w.udp,
                tcp: w.ice_tcp.then_some(w.tcp),
                public_ips: w.public_ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
                ice_servers: Vec::new(),
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
        let app = http::router(http::AppState {
            registry: registry.clone(),
            default_stream: config.default_stream.clone(),
            webrtc: webrtc.clone(),
            ice: Arc::new(ice),
        });
        let mut stop = shutdown.subscribe();
        let http_task = tokio::spawn(async move {
            let served = axum::serve(http, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        info!(%http_addr, %rtmp_addr, "engine started");
        Ok(Engine {
            http_addr,
            rtmp_addr,
            registry,
            config,
            signing_key,
            webrtc,
            shutdown,
            tasks: vec![rtmp_task, http_task],
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp_addr
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The WebRTC server, unless WebRTC is disabled.
    pub fn webrtc(&self) -> Option<&onair_webrtc::WebrtcServer> {
        self.webrtc.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// OBS settings for `stream`, reachable at `host` (host or host:port; the RTMP port is added
    /// when missing), valid until `expires_ms` (epoch ms).
    pub fn obs_settings(&self, stream: &str, host: &str, expires_ms: u64) -> Result<obs::ObsSettings, obs::ObsError> {
        obs::ObsSettings::new(&self.signing_key, host, self.rtmp_addr.port(), &self.config.app, stream, expires_ms)
    }

    /// Stops accepting, ends every connection and waits for the servers to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        if let Some(webrtc) = self.webrtc {
            webrtc.shutdown().await;
        }
        info!("engine stopped");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_names() {
        for ok in ["stream", "my-show_2", "A", &"x".repeat(64)] {
            assert!(super::is_valid_stream_name(ok), "{ok}");
        }
        for bad in ["", "a/b", "a?b", "a b", "ü", "..", "api", "live", "embed", "assets", "healthz", &"x".repeat(65)] {
            assert!(!super::is_valid_stream_name(bad), "{bad}");
        }
    }
}
