//! `onair`: the OnAir engine without any GUI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use onair_engine::secrets::{self, KeyringStore, SigningKey};
use onair_engine::{Config, Engine, Secrets, net, obs::ObsSettings};
use tracing_subscriber::EnvFilter;

/// The log filter without `ONAIR_LOG`: info, minus a warning rtc's DTLS layer prints for every
/// WebRTC session (`conn.remote_addr is empty`), which is expected with our single-port sockets.
const DEFAULT_LOG: &str = "info,rtc_dtls::config=error";

#[derive(Parser)]
#[command(name = "onair", version, about = "OnAir: RTMP in, LL-HLS out, viewer pages — headless")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine: RTMP ingest, LL-HLS/HLS, viewer pages, status API.
    Serve {
        /// HTTP listen address (default 0.0.0.0:8080; env ONAIR_HTTP).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// RTMP listen address (default 0.0.0.0:1935; env ONAIR_RTMP).
        #[arg(long)]
        rtmp: Option<SocketAddr>,
        /// Where OnAir keeps its state (default: the platform data dir; env ONAIR_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Config file (default: the platform config dir's config.toml, if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the OBS settings (server, signed stream key) for a stream.
    Obs {
        /// The stream name.
        stream: String,
        /// Host (or host:port) OBS reaches this machine at (default: public_host or the LAN address, RTMP port).
        #[arg(long)]
        host: Option<String>,
        /// How long the key can start new publishes, e.g. 30d, 12h (default 365d).
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        expires: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ONAIR_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { http, rtmp, data_dir, config } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(a) = http {
                cfg.http = a;
            }
            if let Some(a) = rtmp {
                cfg.rtmp = a;
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            // Resolve the secret before the runtime starts: keyring calls block.
            let (signing_key, source) = SigningKey::resolve(&KeyringStore)?;
            tracing::info!("stream signing key from {source}");
            let turn_secret = if cfg.webrtc.turn_urls.is_empty() { None } else { secrets::turn_secret(&KeyringStore)? };
            let secrets = Secrets { signing_key, turn_secret };
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(cfg, secrets))
        }
        Command::Obs { stream, host, expires, json, config } => {
            let cfg = Config::load(config.as_deref())?;
            let (key, _) = SigningKey::resolve(&KeyringStore)?;
            let host = host.unwrap_or_else(|| net::public_host(&cfg.public_host));
            let settings = ObsSettings::new(&key, &host, cfg.rtmp.port(), &cfg.app, &stream, expires_at(expires))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
            } else {
                print_obs(&settings);
            }
            Ok(())
        }
    }
}

fn expires_at(d: Duration) -> u64 {
    (SystemTime::now() + d).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn print_obs(s: &ObsSettings) {
    println!("OBS → Settings → Stream → Service: Custom");
    println!("  Server:      {}", s.server);
    println!("  Stream Key:  {}", s.stream_key);
    println!("Publish URL (ffmpeg -f flv …): {}", s.url);
}

async fn serve(cfg: Config, secrets: Secrets) -> Result<()> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let engine = Engine::start(cfg.clone(), secrets).await?;
    let host = net::public_host(&cfg.public_host);
    let http_host = if cfg.public_host.is_empty() || !cfg.public_host.contains(':') {
        format!("{host}:{}", engine.http_addr().port())
    } else {
        host.clone()
    };
    let stream = &cfg.default_stream;
    println!("OnAir is running.");
    println!("  HTTP  {}   RTMP  {}   data {}", engine.http_addr(), engine.rtmp_addr(), data_dir.display());
    println!("  Viewer page:  http://{http_host}/{stream}");
    println!("  Embed page:   http://{http_host}/embed/{stream}");
    println!("  LL-HLS:       http://{http_host}/live/{stream}/llhls.m3u8");
    if let Some(w) = engine.webrtc() {
        let tcp = w.tcp_addr().map(|a| format!(", ICE-TCP {a}")).unwrap_or_default();
        println!("  WebRTC WHEP:  http://{http_host}/live/{stream}/whep   (media on UDP {}{tcp})", w.udp_addr());
    }
    let rtmp_host = host.split(':').next().unwrap_or(&host).to_owned();
    let settings = engine.obs_settings(stream, &rtmp_host, expires_at(Duration::from_secs(365 * 86_400)))?;
    print_obs(&settings);
    println!("Press Ctrl-C to stop.");

    shutdown_signal().await;
    tracing::info!("shutting down");
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
