//! `onair`: the OnAir engine without any GUI.

mod remote;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::{Parser, Subcommand};
use onair_engine::net::HostPort;
use onair_engine::secrets::KeyringStore;
use onair_engine::startup::{self, PublicUrls};
use onair_engine::{Config, Engine, Secrets, obs::ObsSettings};

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
    /// Set a stream's title (the Matrix room name, with chat) on the running OnAir.
    Title {
        stream: String,
        /// The new title (empty: back to the stream name).
        title: String,
        #[command(flatten)]
        at: Running,
    },
    /// Print a stream's chat as it arrives, or send a message (--send) as the streamer.
    Chat {
        stream: String,
        /// Send this message instead of following the chat.
        #[arg(long, value_name = "TEXT")]
        send: Option<String>,
        /// One engine event JSON per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: Running,
    },
    /// Go live: the running OnAir accepts publishes of the stream (with require_go_live).
    GoLive {
        stream: String,
        #[command(flatten)]
        at: Running,
    },
    /// End stream: disconnect the stream's publisher; with require_go_live, refuse it until the
    /// next go-live.
    End {
        stream: String,
        #[command(flatten)]
        at: Running,
    },
    /// Show the running OnAir: streams, titles, health, chat connection.
    Status {
        /// Print the JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: Running,
    },
    /// Restream destinations of a stream on the running OnAir (Twitch, YouTube, an OME origin, any
    /// RTMP/RTMPS server): the stream as published is relayed to them while it is live. Keys go
    /// to the OS keyring, the rest to the config file.
    Restream {
        stream: String,
        #[command(subcommand)]
        action: RestreamAction,
        #[command(flatten)]
        at: Running,
    },
    /// Print the OBS settings (server, signed stream key) for a stream.
    Obs {
        /// The stream name.
        stream: String,
        /// Host (or host:port) OBS reaches this machine at: a name, IPv4, IPv6 (`::1`, `[::1]:1935`)
        /// (default: public_host, else the RTMP listen address or the LAN address; the RTMP port
        /// when none is given).
        #[arg(long)]
        host: Option<HostPort>,
        /// How long the key can start new publishes, e.g. 30d, 12h (default 365d).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Set up a running OBS (28 or newer) over its WebSocket: server, key and encoder settings, read
        /// back. Password: ONAIR_OBS_PASSWORD, else the keyring entry obs-websocket-password.
        #[arg(long)]
        apply: bool,
        /// OBS' WebSocket address for --apply (Tools → WebSocket Server Settings).
        #[arg(long, value_name = "ws://HOST:PORT", default_value = onair_obs::DEFAULT_URL)]
        obs_url: String,
        /// Write an OBS profile "OnAir" into DIR (default: OBS' profile folder for this user), to pick
        /// in OBS under Profile.
        #[arg(long, value_name = "DIR")]
        write_profile: Option<Option<PathBuf>>,
        /// Keyframe interval in seconds for --apply and --write-profile (WebRTC wants 1-2).
        #[arg(long, default_value_t = onair_obs::DEFAULT_KEYINT_S, value_parser = clap::value_parser!(u32).range(1..=10))]
        keyint: u32,
    },
}

#[derive(Subcommand)]
enum RestreamAction {
    /// Add a destination (or replace one of the same name): rtmp:// or rtmps://host[:port]/app.
    Add {
        name: String,
        url: String,
        /// The stream key (it shows in `ps`: prefer --key-stdin). Omitted when replacing: kept.
        #[arg(long, conflicts_with = "key_stdin")]
        key: Option<String>,
        /// Read the stream key from the first line of standard input.
        #[arg(long)]
        key_stdin: bool,
        /// An OvenMediaEngine origin with SignedPolicy: URL is rtmp://host:port/app/stream, the
        /// key is the origin's secret, and each signed URL is valid this long (e.g. 1h).
        #[arg(long, value_name = "VALIDITY", value_parser = humantime::parse_duration)]
        ome: Option<Duration>,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List the destinations and their state.
    List {
        /// Print the JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a destination (and its key from the keyring).
    Remove { name: String },
    /// Enable a destination (it starts at once when the stream is live).
    Enable { name: String },
    /// Disable a destination (it stops at once).
    Disable { name: String },
}

/// Which running OnAir a command talks to: the one with this data dir.
#[derive(clap::Args)]
struct Running {
    /// Its data dir (default: the configured one; env ONAIR_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Config file.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Running {
    fn remote(&self) -> Result<remote::Remote> {
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => Config::load(self.config.as_deref())?.data_dir(),
        };
        remote::Remote::find(&data_dir)
    }
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    startup::init_logging();
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
            // Resolve the secrets before the runtime starts: keyring calls block.
            let secrets = startup::resolve_secrets(&cfg, Arc::new(KeyringStore))?;
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(cfg, secrets))
        }
        Command::Title { stream, title, at } => {
            let remote = at.remote()?;
            block_on(remote.set_title(&stream, &title))?;
            println!("Title of {stream}: {}", if title.trim().is_empty() { &stream } else { title.trim() });
            Ok(())
        }
        Command::Chat { stream, send, json, at } => {
            let remote = at.remote()?;
            match send {
                Some(text) => block_on(remote.send_chat(&stream, &text)),
                None => block_on(remote.follow_chat(&stream, json, &mut std::io::stdout())),
            }
        }
        Command::GoLive { stream, at } => {
            block_on(at.remote()?.post(&format!("/streams/{stream}/go-live")))?;
            println!("{stream}: publishes are accepted");
            Ok(())
        }
        Command::End { stream, at } => {
            block_on(at.remote()?.post(&format!("/streams/{stream}/end")))?;
            println!("{stream}: ended");
            Ok(())
        }
        Command::Restream { stream, action, at } => block_on(restream(&at.remote()?, &stream, action)),
        Command::Status { json, at } => {
            let status = block_on(at.remote()?.status())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                remote::print_status(&status);
            }
            Ok(())
        }
        Command::Obs { stream, host, expires, json, config, apply, obs_url, write_profile, keyint } => {
            let cfg = Config::load(config.as_deref())?;
            let key = startup::signing_key(&KeyringStore)?;
            let server = match host {
                Some(host) => startup::rtmp_server(&host, cfg.rtmp.port(), &cfg.app),
                None => PublicUrls::new(&cfg, cfg.http, cfg.rtmp).rtmp_server().to_owned(),
            };
            let expires = startup::expires_ms(SystemTime::now(), expires.unwrap_or(startup::KEY_VALIDITY));
            let settings = ObsSettings::new(&key, &server, &stream, expires)?;
            if apply || write_profile.is_some() {
                let mut target = onair_obs::ObsTarget::new(&settings.server, &settings.stream_key);
                target.keyint_s = keyint;
                return obs_one_click(&target, apply.then_some(obs_url.as_str()), write_profile, json);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
            } else {
                print_obs(&settings);
            }
            Ok(())
        }
    }
}

async fn restream(remote: &remote::Remote, stream: &str, action: RestreamAction) -> Result<()> {
    match action {
        RestreamAction::Add { name, url, key, key_stdin, ome, disabled } => {
            let key = if key_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim().to_owned()).filter(|k| !k.is_empty())
            } else {
                key
            };
            let body = serde_json::json!({
                "url": url,
                "key": key,
                "enabled": !disabled,
                "ome_policy_expires_s": ome.map_or(0, |d| d.as_secs().max(1)),
            });
            remote.restream_put(stream, &name, body).await?;
            println!(
                "{stream}: restream destination {name} saved (its key in {})",
                onair_engine::secrets::KEYRING_NAME
            );
        }
        RestreamAction::List { json } => {
            let list = remote.restream_list(stream).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.as_array().is_none_or(|l| l.is_empty()) {
                println!("{stream}: no restream destinations");
            } else {
                for d in list.as_array().into_iter().flatten() {
                    println!("{}", remote::restream_line(d));
                }
            }
        }
        RestreamAction::Remove { name } => {
            remote.restream_remove(stream, &name).await?;
            println!("{stream}: restream destination {name} removed");
        }
        RestreamAction::Enable { name } => {
            remote.post(&format!("/streams/{stream}/restream/{name}/enable")).await?;
            println!("{stream}: restream destination {name} enabled");
        }
        RestreamAction::Disable { name } => {
            remote.post(&format!("/streams/{stream}/restream/{name}/disable")).await?;
            println!("{stream}: restream destination {name} disabled");
        }
    }
    Ok(())
}

fn print_obs(s: &ObsSettings) {
    println!("OBS → Settings → Stream → Service: Custom");
    println!("  Server:      {}", s.server);
    println!("  Stream Key:  {}", s.stream_key);
    println!("Publish URL (ffmpeg -f flv …): {}", s.url);
    let until = std::time::UNIX_EPOCH + Duration::from_millis(s.expires_ms);
    println!("The key starts publishes until {} (UTC).", humantime::format_rfc3339_seconds(until));
}

async fn serve(cfg: Config, secrets: Secrets) -> Result<()> {
    let data_dir = startup::create_data_dir(&cfg)?;
    let signing_key = secrets.signing_key.clone();
    let engine = Engine::start(cfg.clone(), secrets).await?;
    let urls = engine.urls();
    let stream = &cfg.default_stream;
    println!("OnAir is running.");
    if let Some(note) = onair_engine::startup::FIREWALL_NOTE {
        println!("  {note}");
    }
    println!("  HTTP  {}   RTMP  {}   data {}", engine.http_addr(), engine.rtmp_addr(), data_dir.display());
    println!("  Viewer page:  {}", urls.viewer(stream));
    println!("  Embed page:   {}", urls.embed(stream));
    println!("  LL-HLS:       {}", urls.llhls(stream));
    if let Some(w) = engine.webrtc() {
        let tcp = w.tcp_addr().map(|a| format!(", ICE-TCP {a}")).unwrap_or_default();
        println!("  WebRTC WHEP:  {}   (media on UDP {}{tcp})", urls.whep(stream), w.udp_addr());
    }
    let expires = startup::expires_ms(SystemTime::now(), startup::KEY_VALIDITY);
    print_obs(&urls.obs_settings(&signing_key, stream, expires)?);
    println!("Press Ctrl-C to stop.");
    // How viewers on the internet get in is learnt after the start (router, STUN): say it once
    // it is known and whenever it changes (subscribed first, so no change is missed).
    let control = engine.control();
    let mut events = control.subscribe();
    let status = serde_json::to_value(control.control_status()).unwrap_or_default();
    if status["reach"]["state"] != "checking" {
        print!("{}", remote::reach_lines(&status, stream));
    }
    let stream_name = stream.clone();
    let reach_lines = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(onair_engine::EngineEvent::Reach { .. }) => {
                    let status = serde_json::to_value(control.control_status()).unwrap_or_default();
                    print!("{}", remote::reach_lines(&status, &stream_name));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });

    let signal = onair_engine::shutdown_signal().await;
    reach_lines.abort();
    tracing::info!(%signal, "shutting down");
    engine.shutdown().await;
    Ok(())
}

// ---------- `onair obs --apply / --write-profile` ----------

/// The obs-websocket password: `ONAIR_OBS_PASSWORD`, else the keyring entry
/// `obs-websocket-password`, else none (OBS may run without authentication).
fn obs_password() -> Option<String> {
    match startup::optional_secret(&KeyringStore, onair_obs::PASSWORD_ENV, onair_obs::PASSWORD_ENTRY) {
        Ok((v, _)) => v,
        Err(e) => {
            tracing::debug!("no obs-websocket password from the keyring: {e}");
            None
        }
    }
}

/// Applies `target` over the WebSocket at `obs_url` and/or writes an OBS profile; prints what was
/// done and what the user must still click. Fails when OBS read back something else than was set.
fn obs_one_click(
    target: &onair_obs::ObsTarget,
    obs_url: Option<&str>,
    write_profile: Option<Option<PathBuf>>,
    json: bool,
) -> Result<()> {
    let mut out = serde_json::Map::new();
    let mut failed = None;
    if let Some(dir) = write_profile {
        let (dir, explicit) = match dir {
            Some(d) => (d, true),
            None => (onair_obs::profile::default_profile_dir(onair_obs::profile::DEFAULT_PROFILE_NAME)?, false),
        };
        let files = onair_obs::profile::profile_files(target, &onair_obs::ProfileSpec::default());
        let written = onair_obs::profile::write_profile(&dir, &files)?;
        let problems = onair_obs::profile::read_profile(&dir)?.problems(target);
        let next = if explicit {
            format!("in OBS: Profile → Import → choose {}, then Profile → OnAir, then Start Streaming", dir.display())
        } else {
            "in OBS: Profile → OnAir (restart OBS first if it is running), then Start Streaming".to_owned()
        };
        if json {
            out.insert(
                "profile".into(),
                serde_json::json!({ "dir": dir, "files": written, "problems": problems, "todo": [next] }),
            );
        } else {
            println!("Wrote the OBS profile \"OnAir\" to {}:", dir.display());
            for f in &written {
                println!("  ✓ {}", f.file_name().unwrap_or_default().to_string_lossy());
            }
            println!("  Simple output mode, x264: a keyframe every {} s, bframes=0, scenecut=0, CBR", target.keyint_s);
            println!("Still to do: {next}.");
            println!("  (OBS rewrites a profile it has open when it exits: switch OBS to another profile first.)");
        }
        if !problems.is_empty() {
            failed = Some(format!("the profile read back with problems: {}", problems.join("; ")));
        }
    }
    if let Some(url) = obs_url {
        let url = onair_obs::ObsUrl::parse(url)?;
        let password = obs_password();
        // obws' warning about its "dangerous" version override is off in startup::DEFAULT_LOG.
        let report = block_on(async { Ok(onair_obs::ws::apply(&url, password.as_deref(), target).await?) })?;
        if json {
            out.insert("apply".into(), serde_json::to_value(&report)?);
        } else {
            print_apply_report(&url, &report);
        }
        if !report.mismatches.is_empty() {
            failed = Some(format!("OBS read back other settings than were set: {}", report.mismatches.join("; ")));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    match failed {
        Some(f) => anyhow::bail!(f),
        None => Ok(()),
    }
}

fn print_apply_report(url: &onair_obs::ObsUrl, r: &onair_obs::ApplyReport) {
    let mode = match r.output_mode {
        Some(onair_obs::OutputMode::Advanced) => "Advanced",
        _ => "Simple",
    };
    println!(
        "OBS {} (obs-websocket {}) at {url}: profile \"{}\", {mode} output mode, {:.2} fps",
        r.obs_version, r.websocket_version, r.profile, r.fps
    );
    println!("Set:");
    for d in &r.done {
        println!("  ✓ {d}");
    }
    println!("Verified (read back from OBS):");
    for v in &r.verified {
        println!("  ✓ {v}");
    }
    for m in &r.mismatches {
        println!("  ✗ {m}");
    }
    println!("Still to do in OBS:");
    for t in &r.todo {
        println!("  • {t}");
    }
    println!("  • click Start Streaming");
}
